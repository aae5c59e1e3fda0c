"""Hand poses: the two hands, wrist orientations (hand local -> table) and right-hand MANO finger poses (open, relaxed
and flat hands, power grasps, the pinch family and its thumb-index gaps); the left hand mirrors them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from modeling_pela.mano import BuiltinHandKinematics

from .geometry import UP, _horizontal, _rot_about

SIDES = ("left", "right")
# Palm centre on the palm surface, in the right hand's rest frame (the left hand mirrors x).
PALM_LOCAL = np.array([-0.068, -0.014, -0.004])
# Thumb axis-angles (thumb1-3) that bring the thumb tip onto the index tip when the index is curled by
# PINCH_INDEX_CURL (fitted once on the built-in skeleton; checked in the tests).
PINCH_INDEX_CURL = 0.65
THUMB_PINCH = np.array([[0.182, -0.231, 0.079], [0.526, -0.394, 0.309], [0.336, -0.25, 0.215]])
_CURL_ANGLES = np.array([1.35, 1.55, 1.0])  # MCP, PIP, DIP flexion of a fully curled finger (rad)
_SPREAD_ANGLES = np.array([0.18, 0.0, -0.28, -0.12])  # abduction at full spread: index, middle, pinky, ring
_THUMB_FLEX = np.array([[0.25, -0.10, 0.22], [0.45, 0.0, 0.39], [0.35, 0.0, 0.30]])  # power-grasp thumb
_MIRROR_ROT = np.array([1.0, -1.0, -1.0])


def _mirror(side: str) -> np.ndarray:
    """Factor turning a right-hand local point into the ``side`` hand's (x -> -x for the left hand)."""
    return np.array([1.0, 1.0, 1.0]) if side == "right" else np.array([-1.0, 1.0, 1.0])


def hand_orientation(side: str, approach: np.ndarray, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Wrist rotation (hand local -> table) with the fingers along the horizontal ``approach`` direction.

    ``pitch`` tilts the fingers down (negative: up); with ``roll = 0`` the palm faces the table, and ``roll``
    turns the thumb side up (``pi / 2`` gives the handshake pose: palm facing the body's midline, thumb up).
    The built-in right hand has fingers along -x, palm facing -y, thumb towards +z; the left hand mirrors x.
    """
    a = _horizontal(approach)
    fingers = a * math.cos(pitch) - UP * math.sin(pitch)
    palm = -UP * math.cos(pitch) - a * math.sin(pitch)
    palm = _rot_about(fingers, roll if side == "right" else -roll) @ palm
    x = -fingers if side == "right" else fingers
    y = -palm
    return np.stack([x, y, np.cross(x, y)], axis=1)


def finger_pose(
    curl: float | Sequence[float], spread: float = 0.1, thumb: float = 0.3, pinch: float = 0.0
) -> np.ndarray:
    """(15, 3) right-hand MANO finger pose (flat convention).

    ``curl`` (0 = straight, 1 = fist; scalar or per finger in MANO order index, middle, pinky, ring) flexes the
    four fingers about +z; ``spread`` fans them; ``thumb`` flexes the thumb towards the palm (power grasp);
    ``pinch`` blends the thumb towards :data:`THUMB_PINCH` (thumb pad onto the index tip).
    """
    curl = np.broadcast_to(np.asarray(curl, dtype=np.float64), (4,))
    pose = np.zeros((15, 3))
    for f in range(4):
        pose[3 * f : 3 * f + 3, 2] = curl[f] * _CURL_ANGLES
        pose[3 * f, 1] = spread * _SPREAD_ANGLES[f]
    pose[12:] = (1 - pinch) * thumb * _THUMB_FLEX + pinch * THUMB_PINCH
    return pose


OPEN = finger_pose(0.05, spread=0.6, thumb=0.0)
RELAXED = finger_pose((0.25, 0.3, 0.38, 0.33), spread=0.15, thumb=0.25)
FLAT = finger_pose(0.08, spread=0.1, thumb=0.15)


def pinch_pose(closure: float) -> np.ndarray:
    """Precision-grip family: ``closure`` 0 = open thumb and index, 1 = thumb tip on index tip."""
    index = 0.2 + (PINCH_INDEX_CURL - 0.2) * closure
    return finger_pose((index, 0.45 + 0.2 * closure, 0.6 + 0.2 * closure, 0.5 + 0.2 * closure), 0.1, 0.0, closure)


def _keypoints_local(pose: np.ndarray) -> np.ndarray:
    """(21, 3) right-hand keypoints of a finger pose with the wrist at the origin, identity orientation."""
    with torch.no_grad():
        kp = BuiltinHandKinematics().joints(
            torch.as_tensor(pose, dtype=torch.float64),
            torch.zeros(3, dtype=torch.float64),
            torch.zeros(3, dtype=torch.float64),
            "right",
        )
    return kp.numpy()


_PINCH_TABLE: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def _pinch_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(closures, thumb-index gaps, thumb-index midpoints) of :func:`pinch_pose`, computed once per process."""
    global _PINCH_TABLE
    if _PINCH_TABLE is None:
        closures = np.linspace(0.0, 1.0, 21)
        kps = [_keypoints_local(pinch_pose(c)) for c in closures]
        gaps = np.array([np.linalg.norm(kp[4] - kp[8]) for kp in kps])
        mids = np.array([(kp[4] + kp[8]) / 2 for kp in kps])
        _PINCH_TABLE = (closures, gaps, mids)
    return _PINCH_TABLE


def pinch_closure(gap: float) -> tuple[float, np.ndarray]:
    """Closure of :func:`pinch_pose` leaving ``gap`` metres between thumb and index tips, and the midpoint of the
    two tips in the right hand's local frame."""
    closures, gaps, mids = _pinch_table()
    closure = float(np.interp(gap, gaps[::-1], closures[::-1]))
    mid = np.array([np.interp(closure, closures, mids[:, k]) for k in range(3)])
    return closure, mid
