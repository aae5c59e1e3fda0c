"""MANO files with a non-trivial PCA basis, ground-truth world-frame motions and smplx reference forward kinematics."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import smplx
import torch
from synthetic_mano import synthetic_mano_data

from modeling_pela.mano import FINGERTIP_NAMES, MANO_FINGERTIP_VERTEX_IDS, MANO_TO_KEYPOINTS
from modeling_pela.rotations import axis_angle_to_matrix, matrix_to_quaternion


def write_mano_with_pca(folder: Path, *, left_shapedirs_like_right: bool = False) -> Path:
    """Synthetic MANO files whose ``hands_components`` is a random orthonormal basis (not the identity).

    With ``left_shapedirs_like_right`` the left file gets the right file's x shape directions, as in the public MANO
    release (the condition the left-hand sign fix detects).
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = {side: synthetic_mano_data(side, seed=1 if side == "left" else 0) for side in ("right", "left")}
    for seed, side in enumerate(("right", "left")):
        basis, _ = np.linalg.qr(np.random.default_rng(10 + seed).normal(size=(45, 45)))
        data[side]["hands_components"] = basis.T
    if left_shapedirs_like_right:
        data["left"]["shapedirs"][:, 0, :] = data["right"]["shapedirs"][:, 0, :]
    for side, values in data.items():
        with open(folder / f"MANO_{side.upper()}.pkl", "wb") as f:
            pickle.dump(values, f, protocol=2)
    return folder


def smooth(num_frames: int, dim: int, scale: float, seed: int) -> np.ndarray:
    """(T, dim) smooth random signal (sums of sinusoids) of magnitude ~``scale``."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames)[:, None] / 30.0
    freq, phase, amp = rng.uniform(0.2, 1.0, dim), rng.uniform(0, 2 * np.pi, dim), rng.uniform(0.3, 1.0, dim)
    return scale * (amp * np.sin(2 * np.pi * freq * t + phase) + rng.uniform(-0.5, 0.5, dim))


@dataclass
class HandTruth:
    """World-frame ground truth of one hand: coefficients (T, k) of its pose in the source's basis, flat pose."""

    side: str
    coeffs: np.ndarray
    flat_pose: np.ndarray
    global_orient: np.ndarray
    wrist: np.ndarray
    betas: np.ndarray


def make_truth(mano_dir: Path, side: str, num_frames: int, num_comps: int, seed: int) -> HandTruth:
    """Flat pose = hands_mean + coeffs @ hands_components[:k] (k = 45 and identity basis: ``num_comps=0``)."""
    data = pickle.load(open(mano_dir / f"MANO_{side.upper()}.pkl", "rb"))
    if num_comps:
        coeffs = smooth(num_frames, num_comps, 0.4, seed)
        flat = data["hands_mean"] + coeffs @ data["hands_components"][:num_comps]
    else:
        flat = smooth(num_frames, 45, 0.4, seed)
        coeffs = flat - data["hands_mean"]
    orient = smooth(num_frames, 3, 1.2, seed + 1)
    wrist = smooth(num_frames, 3, 0.15, seed + 2) + np.array([0.0, 0.1, 0.2])
    betas = np.random.default_rng(seed + 3).normal(size=10)
    return HandTruth(side, coeffs, flat, orient, wrist, betas)


def _layer(mano_dir: Path, side: str, *, fix_left: bool, **kwargs) -> smplx.MANO:
    layer = smplx.MANO(str(mano_dir), is_rhand=side == "right", **kwargs)
    if fix_left and side == "left":
        right = smplx.MANO(str(mano_dir), is_rhand=True, **kwargs)
        if torch.sum(torch.abs(layer.shapedirs[:, 0, :] - right.shapedirs[:, 0, :])) < 1:
            layer.shapedirs[:, 0, :] *= -1
    return layer


def rest_wrist(mano_dir: Path, side: str, betas: np.ndarray, *, fix_left: bool = False) -> np.ndarray:
    """J_0(betas) computed by smplx itself (zero pose, zero translation)."""
    layer = _layer(mano_dir, side, fix_left=fix_left, use_pca=False, flat_hand_mean=True)
    with torch.no_grad():
        out = layer(betas=torch.tensor(betas[None], dtype=torch.float32))
    return out.joints[0, 0].double().numpy()


def smplx_keypoints(
    mano_dir: Path,
    side: str,
    betas: np.ndarray,
    orient: np.ndarray,
    hand_pose: np.ndarray,
    transl: np.ndarray,
    *,
    fix_left: bool = False,
    **layer_kwargs,
) -> np.ndarray:
    """(T, 21, 3) keypoints of the source's own smplx call (``layer_kwargs``: use_pca, num_pca_comps, flat_hand_mean)."""
    layer = _layer(mano_dir, side, fix_left=fix_left, **layer_kwargs)
    n = len(orient)
    f32 = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        out = layer(
            betas=f32(betas[None]).expand(n, -1),
            global_orient=f32(orient),
            hand_pose=f32(hand_pose),
            transl=f32(transl),
        )
    tips = out.vertices[:, [MANO_FINGERTIP_VERTEX_IDS[name] for name in FINGERTIP_NAMES]]
    return torch.cat([out.joints[:, :16], tips], dim=1)[:, list(MANO_TO_KEYPOINTS)].double().numpy()


def transform_points(extrinsics: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (4, 4) or (T, 4, 4) transforms to (T, N, 3) points."""
    ext = np.broadcast_to(extrinsics, (len(points), 4, 4))
    return np.einsum("tij,tnj->tni", ext[:, :3, :3], points) + ext[:, None, :3, 3]


def moving_camera(num_frames: int, seed: int) -> np.ndarray:
    """(T, 4, 4) smoothly moving camera -> world poses."""
    rot = axis_angle_to_matrix(torch.from_numpy(smooth(num_frames, 3, 0.5, seed))).numpy()
    poses = np.tile(np.eye(4), (num_frames, 1, 1))
    poses[:, :3, :3] = rot
    poses[:, :3, 3] = smooth(num_frames, 3, 0.2, seed + 1) + np.array([0.0, 0.0, -0.5])
    return poses


def static_camera(seed: int) -> np.ndarray:
    """(4, 4) camera -> world pose."""
    rng = np.random.default_rng(seed)
    pose = np.eye(4)
    pose[:3, :3] = axis_angle_to_matrix(torch.from_numpy(rng.normal(size=3))).numpy()
    pose[:3, 3] = rng.normal(size=3)
    return pose


def quat_wxyz(matrix: np.ndarray) -> list[float]:
    """Unit quaternion (w, x, y, z) of a 3 x 3 rotation."""
    return matrix_to_quaternion(torch.from_numpy(matrix)).tolist()
