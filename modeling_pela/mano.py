"""Hand forward kinematics: MANO parameters -> 21 keypoints, through smplx's MANO or a built-in skeleton.

Two interchangeable back ends (same call signature, same 21-keypoint output, metres):

* :class:`SmplxHandKinematics` runs ``smplx.MANO`` with the user's own licensed MANO model files
  (``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` in ``mano_dir``; they are never shipped). Fingertips are taken from
  the mesh vertices MANO users conventionally pick; :meth:`~SmplxHandKinematics.mesh` also gives the mesh.
* :class:`BuiltinHandKinematics` needs no files: MANO's kinematic tree with generic adult bone lengths laid out like
  MANO's flat-hand template (right hand: fingers along -x, palm facing -y, thumb towards +z; the left hand is its
  mirror image, x -> -x). Metrics computed with it are comparable with each other, not with numbers computed on the
  real MANO mesh; every metric PELA writes records which back end produced it (``HandKinematics.source``).

Both place the wrist joint at ``transl`` (see :mod:`hand_motion` for the convention) and use flat hand poses. Both take
optional ``betas`` and a ``shape_convention`` (the left-hand shape space of the betas, see :mod:`hand_motion`); the
smplx back end honours them, the built-in skeleton has one generic shape and ignores them.

21-keypoint order (the common OpenPose/FreiHAND order): 0 wrist, 1-4 thumb (CMC, MCP, IP, tip), 5-8 index
(MCP, PIP, DIP, tip), 9-12 middle, 13-16 ring, 17-20 pinky.
"""

from __future__ import annotations

import os
from typing import Protocol

import torch

from .hand_motion import (
    DEFAULT_SHAPE_CONVENTION,
    HAND_SIDES,
    HandMotion,
    HandMotionError,
    check_finite,
    check_shape_convention,
)
from .rotations import axis_angle_to_matrix

# MANO's 16 joints and their parents (kinematic tree).
MANO_JOINT_NAMES = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)  # fmt: skip
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
FINGERTIP_NAMES = ("thumb", "index", "middle", "ring", "pinky")
# Last MANO joint of each finger, in FINGERTIP_NAMES order; each tip hangs off it.
FINGERTIP_PARENTS = (15, 3, 6, 12, 9)
# Mesh vertices conventionally used as fingertips on the 778-vertex MANO mesh.
MANO_FINGERTIP_VERTEX_IDS = {"thumb": 744, "index": 320, "middle": 443, "ring": 554, "pinky": 671}

KEYPOINT_NAMES = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip
# Index of each keypoint in the concatenation [16 MANO joints, 5 tips in FINGERTIP_NAMES order].
MANO_TO_KEYPOINTS = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
KEYPOINT_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)


def _builtin_right_hand_rest() -> tuple[torch.Tensor, torch.Tensor]:
    """Rest (flat) pose of the built-in right hand: 16 joint positions and 5 tip positions, wrist at the origin."""

    def unit(x: float, y: float, z: float) -> torch.Tensor:
        v = torch.tensor([x, y, z], dtype=torch.float64)
        return v / v.norm()

    # (wrist->first joint offset, direction of the finger, three bone lengths) with generic adult lengths (m).
    fingers = {
        "index": ((-0.088, 0.000, 0.026), unit(-1.0, 0.0, 0.08), (0.039, 0.023, 0.020)),
        "middle": ((-0.092, 0.002, 0.004), unit(-1.0, 0.0, 0.0), (0.044, 0.026, 0.021)),
        "pinky": ((-0.075, -0.004, -0.033), unit(-1.0, 0.0, -0.14), (0.032, 0.019, 0.018)),
        "ring": ((-0.085, 0.000, -0.016), unit(-1.0, 0.0, -0.06), (0.041, 0.025, 0.020)),
        "thumb": ((-0.022, -0.010, 0.022), unit(-0.65, -0.10, 0.75), (0.040, 0.032, 0.026)),
    }
    joints = [torch.zeros(3, dtype=torch.float64)]
    tips = {}
    for name in ("index", "middle", "pinky", "ring", "thumb"):  # MANO joint order
        base, direction, lengths = fingers[name]
        position = torch.tensor(base, dtype=torch.float64)
        joints.append(position)
        for length in lengths[:2]:
            position = position + length * direction
            joints.append(position)
        tips[name] = position + lengths[2] * direction
    return torch.stack(joints).float(), torch.stack([tips[n] for n in FINGERTIP_NAMES]).float()


def mirror_points(points: torch.Tensor) -> torch.Tensor:
    """Reflect (..., 3) points through the y-z plane (x -> -x): MANO's right <-> left hand relation."""
    return points * points.new_tensor([-1.0, 1.0, 1.0])


def chain_forward_kinematics(
    rest_joints: torch.Tensor,
    rest_tips: torch.Tensor,
    hand_pose: torch.Tensor,
    global_orient: torch.Tensor,
    transl: torch.Tensor,
) -> torch.Tensor:
    """MANO-style FK on a rigid skeleton.

    Args:
        rest_joints: (16, 3) rest joint positions; rest_tips: (5, 3) rest fingertips (FINGERTIP_NAMES order).
        hand_pose: (..., 15, 3) axis-angle per finger joint, expressed like MANO in the rest frame's axes.
        global_orient: (..., 3) wrist rotation; transl: (..., 3) wrist position.
    Returns:
        (..., 21, 3) keypoints in KEYPOINT_NAMES order.
    """
    rots = axis_angle_to_matrix(torch.cat([global_orient.unsqueeze(-2), hand_pose], dim=-2))  # (..., 16, 3, 3)
    rest_joints = rest_joints.to(rots)
    rest_tips = rest_tips.to(rots)
    world_rot: list[torch.Tensor] = [rots[..., 0, :, :]]
    world_pos: list[torch.Tensor] = [transl]
    for k in range(1, len(MANO_PARENTS)):
        parent = MANO_PARENTS[k]
        offset = rest_joints[k] - rest_joints[parent]
        world_pos.append(world_pos[parent] + (world_rot[parent] @ offset.unsqueeze(-1)).squeeze(-1))
        world_rot.append(world_rot[parent] @ rots[..., k, :, :])
    for tip, parent in zip(rest_tips, FINGERTIP_PARENTS, strict=True):
        offset = tip - rest_joints[parent]
        world_pos.append(world_pos[parent] + (world_rot[parent] @ offset.unsqueeze(-1)).squeeze(-1))
    return torch.stack(world_pos, dim=-2)[..., list(MANO_TO_KEYPOINTS), :]


def _check_inputs(
    hand_pose: torch.Tensor,
    global_orient: torch.Tensor,
    transl: torch.Tensor,
    side: str,
    shape_convention: str = DEFAULT_SHAPE_CONVENTION,
) -> None:
    check_shape_convention(shape_convention, f"forward kinematics ({side} hand)")
    if side not in HAND_SIDES:
        raise HandMotionError(f"unknown hand side {side!r}; expected one of {HAND_SIDES}")
    lead = global_orient.shape[:-1]
    if hand_pose.shape != lead + (15, 3) or global_orient.shape[-1:] != (3,) or transl.shape != lead + (3,):
        raise HandMotionError(
            f"forward kinematics expects hand_pose (..., 15, 3), global_orient (..., 3), transl (..., 3) with the "
            f"same leading dims; got {tuple(hand_pose.shape)}, {tuple(global_orient.shape)}, {tuple(transl.shape)}"
        )
    for name, tensor in (("hand_pose", hand_pose), ("global_orient", global_orient), ("transl", transl)):
        check_finite(tensor.reshape(-1, tensor.shape[-1]), name, f"forward kinematics ({side} hand)")


class HandKinematics(Protocol):
    """What both back ends provide. ``source`` names the back end ("builtin" or "mano") for metric provenance."""

    source: str

    def joints(
        self,
        hand_pose: torch.Tensor,
        global_orient: torch.Tensor,
        transl: torch.Tensor,
        side: str,
        betas: torch.Tensor | None = None,
        shape_convention: str = DEFAULT_SHAPE_CONVENTION,
    ) -> torch.Tensor: ...

    def __call__(self, motion: HandMotion) -> torch.Tensor: ...


class _KinematicsBase:
    source = ""

    def joints(
        self,
        hand_pose: torch.Tensor,
        global_orient: torch.Tensor,
        transl: torch.Tensor,
        side: str,
        betas: torch.Tensor | None = None,
        shape_convention: str = DEFAULT_SHAPE_CONVENTION,
    ) -> torch.Tensor:
        """(..., 15, 3), (..., 3), (..., 3) -> (..., 21, 3) keypoints in metres; optional (10,) ``betas`` in the
        left-hand shape space ``shape_convention``. Raises :class:`HandMotionError` for a wrong shape, a non-finite
        value, an unknown side or convention."""
        _check_inputs(hand_pose, global_orient, transl, side, shape_convention)
        return self._joints(hand_pose, global_orient, transl, side, betas, shape_convention)

    def __call__(self, motion: HandMotion) -> torch.Tensor:
        """(T, 21, 3) keypoints of a :class:`HandMotion` (with its ``betas`` and ``shape_convention``)."""
        return self.joints(
            motion.hand_pose, motion.global_orient, motion.transl, motion.side, motion.betas, motion.shape_convention
        )

    def _joints(self, hand_pose, global_orient, transl, side, betas, shape_convention):  # pragma: no cover
        raise NotImplementedError


class BuiltinHandKinematics(_KinematicsBase):
    """MANO-free forward kinematics on a generic adult skeleton (see the module docstring)."""

    source = "builtin"

    def __init__(self) -> None:
        joints, tips = _builtin_right_hand_rest()
        self.rest = {"right": (joints, tips), "left": (mirror_points(joints), mirror_points(tips))}

    def _joints(self, hand_pose, global_orient, transl, side, betas, shape_convention):
        rest_joints, rest_tips = self.rest[side]  # one generic shape: betas and their convention do not apply
        return chain_forward_kinematics(rest_joints, rest_tips, hand_pose, global_orient, transl)


class SmplxHandKinematics(_KinematicsBase):
    """Forward kinematics through ``smplx.MANO`` with the user's MANO model files.

    Args:
        mano_dir: folder holding ``MANO_RIGHT.pkl`` and/or ``MANO_LEFT.pkl`` (or ``.npz`` with ``ext="npz"``).

    Left hands are computed in the shape space their ``shape_convention`` names: ``"released"`` uses
    ``MANO_LEFT`` as stored, ``"left_fixed"`` with the sign of its x shape directions corrected when they equal the
    right hand's (the released file's error; deciding it needs ``MANO_RIGHT`` too, for left hands with betas).
    """

    source = "mano"

    def __init__(self, mano_dir: str | os.PathLike, ext: str = "pkl") -> None:
        import smplx

        self.mano_dir = os.fspath(mano_dir)

        def load(side: str) -> smplx.MANO:
            path = os.path.join(self.mano_dir, f"MANO_{side.upper()}.{ext}")
            return smplx.MANO(model_path=path, is_rhand=side == "right", use_pca=False, flat_hand_mean=True, ext=ext)

        present = [s for s in HAND_SIDES if os.path.exists(os.path.join(self.mano_dir, f"MANO_{s.upper()}.{ext}"))]
        if not present:
            raise FileNotFoundError(
                f"no MANO model found in {self.mano_dir!r}: expected MANO_RIGHT.{ext} and/or MANO_LEFT.{ext} "
                "(download them from https://mano.is.tue.mpg.de; they cannot be redistributed)"
            )
        self.layers = {side: load(side) for side in present}  # the left one as released
        self.left_fixed = None  # the left hand in the "left_fixed" convention (needs both files to decide)
        if len(present) == 2:
            self.left_fixed = load("left")
            shapedirs, right = self.left_fixed.shapedirs, self.layers["right"].shapedirs
            if torch.sum(torch.abs(shapedirs[:, 0, :] - right[:, 0, :])) < 1:
                shapedirs[:, 0, :] *= -1

    def _forward(self, hand_pose, global_orient, transl, side, betas, shape_convention):
        """smplx's MANO pass: (n, 21, 3) keypoints and (n, 778, 3) mesh vertices, wrist joint at ``transl``."""
        if side not in self.layers:
            raise FileNotFoundError(f"no MANO_{side.upper()} model in {self.mano_dir!r}")
        layer = self.layers[side]
        n = global_orient[..., 0].numel()
        dtype = layer.v_template.dtype
        shape = torch.zeros(n, layer.num_betas, dtype=dtype) if betas is None else betas.to(dtype).reshape(1, -1)
        if side == "left" and shape_convention == "left_fixed" and bool(shape.any()):
            if self.left_fixed is None:
                raise FileNotFoundError(
                    f"a left hand with betas in the 'left_fixed' MANO convention needs MANO_RIGHT next to MANO_LEFT "
                    f"in {self.mano_dir!r} (it decides whether the left file needs the sign fix)"
                )
            layer = self.left_fixed
        out = layer(
            betas=shape.expand(n, -1),
            global_orient=global_orient.reshape(n, 3).to(dtype),
            hand_pose=hand_pose.reshape(n, 45).to(dtype),
            transl=torch.zeros(n, 3, dtype=dtype),
        )
        offset = transl.reshape(n, 1, 3).to(dtype) - out.joints[:, :1]  # rest wrist J_0(betas) -> transl
        tips = out.vertices[:, [MANO_FINGERTIP_VERTEX_IDS[name] for name in FINGERTIP_NAMES]]
        keypoints = torch.cat([out.joints[:, :16], tips], dim=1)[:, list(MANO_TO_KEYPOINTS)]
        return keypoints + offset, out.vertices + offset

    def _joints(self, hand_pose, global_orient, transl, side, betas, shape_convention):
        keypoints, _ = self._forward(hand_pose, global_orient, transl, side, betas, shape_convention)
        return keypoints.reshape(global_orient.shape[:-1] + (21, 3)).to(global_orient.dtype)

    def mesh(
        self,
        hand_pose: torch.Tensor,
        global_orient: torch.Tensor,
        transl: torch.Tensor,
        side: str,
        betas: torch.Tensor | None = None,
        shape_convention: str = DEFAULT_SHAPE_CONVENTION,
    ) -> torch.Tensor:
        """(..., 778, 3) MANO mesh vertices in metres, placed like :meth:`joints` (wrist joint at ``transl``); the
        triangles are ``faces(side)``."""
        _check_inputs(hand_pose, global_orient, transl, side, shape_convention)
        _, vertices = self._forward(hand_pose, global_orient, transl, side, betas, shape_convention)
        return vertices.reshape(global_orient.shape[:-1] + vertices.shape[-2:]).to(global_orient.dtype)

    def faces(self, side: str) -> torch.Tensor:
        """(1538, 3) int64 vertex indices of the MANO mesh's triangles of ``side``."""
        if side not in self.layers:
            raise FileNotFoundError(f"no MANO_{side.upper()} model in {self.mano_dir!r}")
        return torch.as_tensor(self.layers[side].faces.astype("int64"))


def load_hand_kinematics(mano_dir: str | os.PathLike | None = None) -> BuiltinHandKinematics | SmplxHandKinematics:
    """The smplx back end when ``mano_dir`` is given, else the built-in skeleton."""
    return SmplxHandKinematics(mano_dir) if mano_dir else BuiltinHandKinematics()
