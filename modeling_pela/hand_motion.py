"""A typed container for MANO hand motion of one hand.

Convention (used everywhere in PELA, and what the dataset converters produce):
  * ``hand_pose``: (T, 15, 3) axis-angle rotations of the 15 finger joints relative to their parents, in MANO's
    joint order (index 1-3, middle 1-3, pinky 1-3, ring 1-3, thumb 1-3), *flat* convention: all zeros is the flat
    hand (smplx ``flat_hand_mean=True``; add MANO's ``hands_mean`` to mean-relative poses before building one).
  * ``global_orient``: (T, 3) axis-angle rotation of the wrist in the camera frame.
  * ``transl``: (T, 3) position of the WRIST JOINT in the camera frame, in metres. This differs from smplx's
    ``transl`` argument (a mesh offset): wrist = J_0(betas) + transl_smplx. Storing the joint position keeps the
    motion independent of the hand model and of the shape.
  * ``betas``: optional (10,) MANO shape. It is static over a clip and excluded from the motion features.
  * ``shape_convention``: the left-hand shape space ``betas`` were fitted in. The released ``MANO_LEFT.pkl`` has the
    x components of its shape directions equal to the right hand's (a sign error); ``"left_fixed"`` (the default):
    the fit used them sign-corrected, as smplx pipelines that patch the file do (HOT3D's hand_tracking_toolkit);
    ``"released"``: the fit used the file as released (plain ``smplx.MANO``, manopth; DexYCB, ARCTIC). The same
    betas give finger joints up to ~2 cm apart under the two, so the convention travels with the data and every
    MANO forward-kinematics path honours it. It does not matter for right hands or without betas.
  * ``fps``: frames per second (UniHand-Mix chunks are 15 frames = 1 s at 15 fps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .rotations import axis_angle_to_quaternion, quaternion_slerp, quaternion_to_axis_angle

HAND_SIDES = ("left", "right")
SHAPE_CONVENTIONS = ("left_fixed", "released")
DEFAULT_SHAPE_CONVENTION = "left_fixed"
NUM_FINGER_JOINTS = 15


class HandMotionError(ValueError):
    """A hand-motion input is malformed; the message names the sample and the field."""


def _as_tensor(value: Any, field: str, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError) as err:
            raise HandMotionError(f"{where}: field '{field}' is not numeric ({err})") from err
    if not tensor.is_floating_point():
        tensor = tensor.float()
    return tensor


def check_finite(tensor: torch.Tensor, field: str, where: str) -> None:
    """Raise a :class:`HandMotionError` naming the first non-finite frame of ``tensor`` (frames on dim 0)."""
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = (~finite).reshape(tensor.shape[0], -1).any(-1).nonzero() if tensor.dim() else torch.zeros(1, 1)
        frame = int(bad[0, 0]) if len(bad) else 0
        kind = "NaN" if bool(torch.isnan(tensor).any()) else "inf"
        raise HandMotionError(f"{where}: field '{field}' contains {kind} (first at frame {frame})")


def check_shape_convention(convention: Any, where: str) -> None:
    """Raise a :class:`HandMotionError` unless ``convention`` is one of :data:`SHAPE_CONVENTIONS`."""
    if convention not in SHAPE_CONVENTIONS:
        raise HandMotionError(
            f"{where}: field 'shape_convention' is {convention!r}; expected one of {SHAPE_CONVENTIONS} (the left-hand "
            "MANO shape space of the betas: 'released' for DexYCB/ARCTIC fits, 'left_fixed' for HOT3D)"
        )


@dataclass
class HandMotion:
    """MANO motion of one hand over T frames (see the module docstring for conventions).

    Construction validates shapes, finiteness and the side; ``hand_pose`` may be given as (T, 45).
    ``sample_id`` is only used to make error messages point at the offending sample.
    """

    side: str
    hand_pose: torch.Tensor
    global_orient: torch.Tensor
    transl: torch.Tensor
    fps: float = 15.0
    betas: torch.Tensor | None = None
    sample_id: str | None = None
    shape_convention: str = DEFAULT_SHAPE_CONVENTION

    def __post_init__(self) -> None:
        where = f"sample '{self.sample_id}'" if self.sample_id is not None else "hand motion"
        if self.side not in HAND_SIDES:
            raise HandMotionError(f"{where}: unknown hand side {self.side!r}; expected one of {HAND_SIDES}")
        where = f"{where} ({self.side} hand)"
        self.hand_pose = _as_tensor(self.hand_pose, "hand_pose", where)
        self.global_orient = _as_tensor(self.global_orient, "global_orient", where)
        self.transl = _as_tensor(self.transl, "transl", where)
        if self.hand_pose.dim() == 2 and self.hand_pose.shape[-1] == 3 * NUM_FINGER_JOINTS:
            self.hand_pose = self.hand_pose.reshape(-1, NUM_FINGER_JOINTS, 3)
        num_frames = self.hand_pose.shape[0] if self.hand_pose.dim() else 0
        expected = {
            "hand_pose": (num_frames, NUM_FINGER_JOINTS, 3),
            "global_orient": (num_frames, 3),
            "transl": (num_frames, 3),
        }
        for field, shape in expected.items():
            actual = tuple(getattr(self, field).shape)
            if actual != shape:
                raise HandMotionError(
                    f"{where}: field '{field}' has shape {actual}, expected {shape} "
                    "(hand_pose (T, 15, 3) or (T, 45); global_orient and transl (T, 3))"
                )
        if num_frames == 0:
            raise HandMotionError(f"{where}: the motion has no frames")
        for field in expected:
            check_finite(getattr(self, field), field, where)
        if self.betas is not None:
            self.betas = _as_tensor(self.betas, "betas", where).reshape(-1)
            check_finite(self.betas[None], "betas", where)
        check_shape_convention(self.shape_convention, where)
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise HandMotionError(f"{where}: field 'fps' must be a positive number, got {self.fps!r}")
        self.fps = float(self.fps)

    @property
    def num_frames(self) -> int:
        return self.hand_pose.shape[0]

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.fps

    def __len__(self) -> int:
        return self.num_frames

    def slice(self, start: int, stop: int | None = None) -> HandMotion:
        """Frames ``[start, stop)``."""
        sl = slice(start, stop)
        return replace(self, hand_pose=self.hand_pose[sl], global_orient=self.global_orient[sl], transl=self.transl[sl])

    def chunks(self, chunk_length: int = 15) -> list[HandMotion]:
        """Consecutive non-overlapping chunks of ``chunk_length`` frames; a trailing partial chunk is dropped."""
        return [self.slice(s, s + chunk_length) for s in range(0, self.num_frames - chunk_length + 1, chunk_length)]

    def mirrored(self) -> HandMotion:
        """The same motion reflected through the camera's y-z plane (x -> -x), as the other hand.

        MANO's left hand is the mirror image of the right one, so a left-hand motion mirrored this way is a valid
        right-hand motion (and vice versa): axis-angles map (x, y, z) -> (x, -y, -z), positions x -> -x.
        """
        flip_rot = torch.tensor([1.0, -1.0, -1.0], dtype=self.hand_pose.dtype)
        flip_pos = torch.tensor([-1.0, 1.0, 1.0], dtype=self.transl.dtype)
        return replace(
            self,
            side="left" if self.side == "right" else "right",
            hand_pose=self.hand_pose * flip_rot,
            global_orient=self.global_orient * flip_rot,
            transl=self.transl * flip_pos,
        )

    def resample(self, factor: float) -> HandMotion:
        """Time-stretch the motion by ``factor`` keeping ``fps`` (``factor=2`` plays it at half speed).

        Rotations are interpolated by quaternion slerp, translations linearly; the result has
        ``round((T - 1) * factor) + 1`` frames and the same first and last poses.
        """
        if not factor > 0:
            raise HandMotionError(f"resample factor must be positive, got {factor}")
        num_out = max(1, round((self.num_frames - 1) * factor) + 1)
        src = torch.linspace(0, self.num_frames - 1, num_out, dtype=torch.float64)
        lo = src.floor().long().clamp(max=self.num_frames - 1)
        hi = (lo + 1).clamp(max=self.num_frames - 1)
        weight = (src - lo).float()

        def slerp(rot: torch.Tensor) -> torch.Tensor:
            quat = axis_angle_to_quaternion(rot)
            q0, q1 = quat[lo], quat[hi]
            w = weight.reshape((-1,) + (1,) * (rot.dim() - 2)).expand(q0.shape[:-1])
            return quaternion_to_axis_angle(quaternion_slerp(q0, q1, w))

        w3 = weight[:, None]
        return replace(
            self,
            hand_pose=slerp(self.hand_pose),
            global_orient=slerp(self.global_orient),
            transl=self.transl[lo] * (1 - w3) + self.transl[hi] * w3,
        )

    def to(self, *args: Any, **kwargs: Any) -> HandMotion:
        betas = self.betas.to(*args, **kwargs) if self.betas is not None else None
        return replace(
            self,
            hand_pose=self.hand_pose.to(*args, **kwargs),
            global_orient=self.global_orient.to(*args, **kwargs),
            transl=self.transl.to(*args, **kwargs),
            betas=betas,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain python/numpy dict (``hand_pose`` flattened to (T, 45)), the storage layout of UniHand-Mix."""
        return {
            "side": self.side,
            "hand_pose": self.hand_pose.reshape(self.num_frames, -1).cpu().numpy(),
            "global_orient": self.global_orient.cpu().numpy(),
            "transl": self.transl.cpu().numpy(),
            "fps": self.fps,
            "betas": None if self.betas is None else self.betas.cpu().numpy(),
            "shape_convention": self.shape_convention,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], sample_id: str | None = None) -> HandMotion:
        """Inverse of :meth:`to_dict`; missing fields raise :class:`HandMotionError` naming the sample."""
        where = f"sample '{sample_id}'" if sample_id is not None else "hand motion"
        missing = [k for k in ("side", "hand_pose", "global_orient", "transl") if data.get(k) is None]
        if missing:
            raise HandMotionError(f"{where}: missing field(s) {missing}")
        return cls(
            side=data["side"],
            hand_pose=data["hand_pose"],
            global_orient=data["global_orient"],
            transl=data["transl"],
            fps=data.get("fps") or 15.0,
            betas=data.get("betas"),
            sample_id=sample_id,
            shape_convention=data.get("shape_convention") or DEFAULT_SHAPE_CONVENTION,
        )
