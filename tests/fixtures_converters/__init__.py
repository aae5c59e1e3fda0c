"""Helpers for tests/test_converters.py: MANO files with a real PCA basis, ground-truth motions, source writers."""
