"""Rotation conversions in torch (axis-angle, rotation matrix, quaternion, continuous 6D).

Conventions:
  * axis-angle: (..., 3) vector whose direction is the axis and whose norm is the angle in radians (MANO's format).
  * matrix: (..., 3, 3), acting on column vectors.
  * quaternion: (..., 4) as (w, x, y, z), real part first.
  * 6D (Zhou et al. 2019): the first two ROWS of the matrix, flattened to (..., 6) (the pytorch3d convention).

All functions are differentiable and batched over any leading dimensions. They are checked against
``scipy.spatial.transform.Rotation`` in the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "axis_angle_to_rotation_6d",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "quaternion_slerp",
    "rotation_6d_to_axis_angle",
    "rotation_6d_to_matrix",
]


def _sinc_half(angle: torch.Tensor) -> torch.Tensor:
    """sin(angle / 2) / angle, with its Taylor expansion near zero."""
    small = angle.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    return torch.where(small, 0.5 - angle * angle / 48.0, torch.sin(safe / 2) / safe)


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 4) unit quaternion (w, x, y, z)."""
    angle = torch.linalg.vector_norm(axis_angle, dim=-1, keepdim=True)
    return torch.cat([torch.cos(angle / 2), axis_angle * _sinc_half(angle)], dim=-1)


def quaternion_to_axis_angle(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion (w, x, y, z) -> (..., 3) axis-angle with angle in [0, pi]."""
    q = F.normalize(quaternion, dim=-1)
    q = torch.where(q[..., :1] < 0, -q, q)  # pick the hemisphere with w >= 0, so angle <= pi
    xyz = q[..., 1:]
    sin_half = torch.linalg.vector_norm(xyz, dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    return xyz / _sinc_half(angle)


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion (w, x, y, z) -> (..., 3, 3) rotation matrix."""
    w, x, y, z = F.normalize(quaternion, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(quaternion.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrix -> (..., 4) unit quaternion (w, x, y, z), w >= 0.

    Uses the numerically best of the four closed-form candidates (largest denominator) for each input.
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * q_i^2 for i = w, x, y, z
    sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    ).clamp_min(0.0)
    root = torch.sqrt(sq)  # 2 * |q_i|
    candidates = torch.stack(
        [
            torch.stack(
                [sq[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
            ),
            torch.stack(
                [m[..., 2, 1] - m[..., 1, 2], sq[..., 1], m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1
            ),
            torch.stack(
                [m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], sq[..., 2], m[..., 2, 1] + m[..., 1, 2]], -1
            ),
            torch.stack(
                [m[..., 1, 0] - m[..., 0, 1], m[..., 2, 0] + m[..., 0, 2], m[..., 2, 1] + m[..., 1, 2], sq[..., 3]], -1
            ),
        ],
        dim=-2,
    ) / (2 * root.clamp_min(1e-8)).unsqueeze(-1)
    best = sq.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrix."""
    return quaternion_to_matrix(axis_angle_to_quaternion(axis_angle))


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrix -> (..., 3) axis-angle with angle in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def rotation_6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two rows; any 6-vector maps to a valid rotation."""
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-2)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two rows."""
    return matrix[..., :2, :].reshape(matrix.shape[:-2] + (6,))


def axis_angle_to_rotation_6d(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 6)."""
    return matrix_to_rotation_6d(axis_angle_to_matrix(axis_angle))


def rotation_6d_to_axis_angle(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3) axis-angle."""
    return matrix_to_axis_angle(rotation_6d_to_matrix(rot6d))


def quaternion_slerp(q0: torch.Tensor, q1: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between unit quaternions (..., 4); ``weight`` (...,) in [0, 1] (0 -> q0)."""
    q0, q1 = F.normalize(q0, dim=-1), F.normalize(q1, dim=-1)
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)  # shortest arc
    dot = dot.abs().clamp(max=1.0)
    w = weight.unsqueeze(-1).to(q0.dtype)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6
    safe = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    a = torch.where(near, 1 - w, torch.sin((1 - w) * theta) / safe)
    b = torch.where(near, w, torch.sin(w * theta) / safe)
    return F.normalize(a * q0 + b * q1, dim=-1)
