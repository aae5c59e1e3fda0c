"""Evaluation metrics (Hugging Face evaluate modules and their numpy cores)."""
