"""Geometry helpers (numpy, table frame unless said otherwise): the up axis, rotation vectors and unit vectors."""

from __future__ import annotations

import numpy as np

UP = np.array([0.0, 0.0, 1.0])


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors -> (..., 3, 3) matrices (Rodrigues)."""
    v = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    k = v / np.maximum(angle, 1e-12)
    zero = np.zeros_like(k[..., 0])
    kx = np.stack(
        [zero, -k[..., 2], k[..., 1], k[..., 2], zero, -k[..., 0], -k[..., 1], k[..., 0], zero], axis=-1
    ).reshape(v.shape[:-1] + (3, 3))
    return np.eye(3) + np.sin(angle)[..., None] * kx + (1 - np.cos(angle))[..., None] * (kx @ kx)


def _rot_about(axis: np.ndarray, angle: float) -> np.ndarray:
    return rotvec_to_matrix(_unit(axis) * angle)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _horizontal(v: np.ndarray) -> np.ndarray:
    return _unit(np.array([v[0], v[1], 0.0]))
