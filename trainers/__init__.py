"""PELA training code: trainers and evaluation metrics."""
