"""Approximate MANO motion from 21 hand keypoints: camera-frame lifting and a kinematic fit.

Keypoint models (:mod:`datasets_unihand_mix.hand_landmarker`) give, per frame, pixel keypoints and metric keypoints
around the hand's centre. :func:`camera_keypoints` places the metric hand in the camera frame by weak perspective:
with an assumed pinhole camera of horizontal field of view ``fov_degrees`` (focal length
``f = width / (2 tan(fov / 2))`` px, principal point at the image centre), the hand's depth is
``f * (RMS spread of the metric x, y) / (RMS spread of the pixel x, y)`` and its centre is the back-projection of the
pixel centroid at that depth. Depth is therefore only as good as the assumed field of view and the model's metric
hand size: these are approximate labels.

:func:`fit_hand_motion` fits PELA's MANO convention (:mod:`modeling_pela.hand_motion`: flat finger pose, wrist
rotation and WRIST-JOINT position in the camera frame) on the MANO-free skeleton of
:class:`~modeling_pela.mano.BuiltinHandKinematics`: ``transl`` is the observed wrist; ``global_orient`` starts from
the rotation that best aligns the skeleton's palm (wrist and the four finger bases, Kabsch) and is refined with the
15 finger rotations by Adam on the directions of the 20 bones (independent of bone lengths), with a small pull of the
finger rotations towards the flat hand. The fit runs on one thread, so it gives the same numbers in every process.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

from modeling_pela.hand_motion import HandMotion
from modeling_pela.mano import KEYPOINT_PARENTS, BuiltinHandKinematics
from modeling_pela.rotations import matrix_to_axis_angle

DEFAULT_FOV_DEGREES = 60.0
PALM_KEYPOINTS = (0, 5, 9, 13, 17)  # wrist, index/middle/ring/pinky bases
_BONES = [(k, p) for k, p in enumerate(KEYPOINT_PARENTS) if p >= 0]


def camera_keypoints(
    image: np.ndarray, world: np.ndarray, width: int, height: int, fov_degrees: float = DEFAULT_FOV_DEGREES
) -> np.ndarray:
    """(N, 21, 2) pixels + (N, 21, 3) metric (hand-centred) -> (N, 21, 3) camera-frame keypoints in metres."""
    focal = 0.5 * width / math.tan(math.radians(fov_degrees) / 2)
    centre_px = image.mean(axis=1, keepdims=True)
    spread_px = np.sqrt(((image - centre_px) ** 2).sum(-1).mean(-1))
    centred = world - world.mean(axis=1, keepdims=True)
    spread_m = np.sqrt((centred[..., :2] ** 2).sum(-1).mean(-1))
    depth = focal * spread_m / np.maximum(spread_px, 1e-6)
    offset = np.stack(
        [(centre_px[:, 0, 0] - width / 2) * depth / focal, (centre_px[:, 0, 1] - height / 2) * depth / focal, depth],
        axis=-1,
    )
    return (centred + offset[:, None, :]).astype(np.float32)


@contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _kabsch(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, K, 3) centred point sets -> (N, 3, 3) rotations R minimising |R source - target| (det +1)."""
    u, _, vh = torch.linalg.svd(target.transpose(-1, -2) @ source)
    sign = torch.sign(torch.linalg.det(u @ vh))
    fix = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], dim=-1))
    return u @ fix @ vh


def _bone_directions(points: torch.Tensor) -> torch.Tensor:
    children, parents = zip(*_BONES, strict=True)
    bones = points[..., list(children), :] - points[..., list(parents), :]
    return bones / bones.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def fit_hand_motion(
    keypoints: np.ndarray,
    side: str,
    fps: float,
    *,
    steps: int = 150,
    lr: float = 0.05,
    pose_prior: float = 1e-3,
    sample_id: str | None = None,
) -> tuple[HandMotion, float]:
    """Fit MANO motion to (T, 21, 3) camera-frame keypoints (module docstring).

    Returns the :class:`HandMotion` and the fit's mean keypoint distance in metres (it includes the difference
    between the generic skeleton's bone lengths and the observed hand's).
    """
    if keypoints.ndim != 3 or keypoints.shape[1:] != (21, 3) or not np.isfinite(keypoints).all():
        raise ValueError(f"{sample_id}: keypoints must be finite (T, 21, 3), got {keypoints.shape}")
    kinematics = BuiltinHandKinematics()
    with _one_thread():
        target = torch.as_tensor(keypoints, dtype=torch.float32)
        wrist = target[:, 0]
        n = len(target)
        zeros_pose = torch.zeros(n, 15, 3)
        rest = kinematics.joints(zeros_pose[:1], torch.zeros(1, 3), torch.zeros(1, 3), side)[0]
        palm_rest = rest[list(PALM_KEYPOINTS)] - rest[0]
        palm_seen = target[:, list(PALM_KEYPOINTS)] - wrist[:, None]
        orient = matrix_to_axis_angle(_kabsch(palm_rest.expand(n, -1, -1), palm_seen))
        global_orient = orient.clone().requires_grad_(True)
        hand_pose = zeros_pose.clone().requires_grad_(True)
        goal = _bone_directions(target)
        optimizer = torch.optim.Adam([global_orient, hand_pose], lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            fitted = kinematics.joints(hand_pose, global_orient, wrist, side)
            loss = ((_bone_directions(fitted) - goal) ** 2).sum(-1).mean() + pose_prior * (hand_pose**2).sum(-1).mean()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            fitted = kinematics.joints(hand_pose, global_orient, wrist, side)
            error = float((fitted - target).norm(dim=-1).mean())
        motion = HandMotion(
            side=side,
            hand_pose=hand_pose.detach().clone(),
            global_orient=global_orient.detach().clone(),
            transl=wrist.clone(),
            fps=fps,
            sample_id=sample_id,
        )
    return motion, error
