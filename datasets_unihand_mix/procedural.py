"""Built-in procedural hand-motion clips: PELA's default data for the demo and the tests.

A deterministic, seeded generator of tabletop manipulation clips with known MANO parameters. Each clip has 2-4
objects (cube, ball, can, jar, plate, box; distinct colours) on a table seen by an egocentric camera, an instruction
that names the target object by colour and shape, and one or two hands performing an instruction-conditioned motion
primitive (reach, grasp, lift, place, rotate, push, pinch, wave, and the bimanual lift_both and handover). The
target is chosen among distractors, so the motion depends on both the instruction and the scene.

Two styles share the primitives:

* ``lab``: clean uniform background, fixed camera; labels are meant for training.
* ``wild``: cluttered textured table, per-clip camera pose jitter, small per-frame camera shake, random occluders,
  lighting and colour changes, and motion played ``wild_speedup`` (2x) faster than lab (the dataset pipeline later
  slows wild clips by 0.5). Labels exist but are meant to be hidden from training (``labelled_for_training``).

Frames (right-handed, metres):

* table frame: origin on the table top at the centre of the workspace, X right, Y away from the viewer, Z up;
* canonical camera frame (OpenCV: x right, y down, z forward): the clip's camera. Hand parameters
  (:class:`~modeling_pela.hand_motion.HandMotion`, wrist joint position in ``transl``) and object poses are stored
  in it. ``Camera.table_to_camera`` maps table to camera coordinates; wild clips add a per-frame shake
  (``Camera.shake``) that only the rendered images see.

Clips are whole numbers of 15-frame chunks (at least two). Frames are rendered lazily
(:meth:`ProceduralClip.render_frame`), so a caller can render only the first and the chunk-boundary frames.

``junk_probability`` > 0 turns some clips into curation negatives (``task["junk"]``), the kinds of in-the-wild clip
the UniHand-Mix curation pipeline must drop: ``idle`` (the hands rest while the narration names a task), ``absent``
(the hands are out of view) and ``distractor`` (the narration is no hand activity). Which clips become junk is drawn
from a separate random stream, so every other clip is identical to the one ``junk_probability=0`` gives.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from modeling_pela.hand_motion import HandMotion
from modeling_pela.mano import BuiltinHandKinematics
from modeling_pela.rotations import matrix_to_axis_angle, matrix_to_quaternion, quaternion_slerp, quaternion_to_matrix

STYLES = ("lab", "wild")
CHUNK_LENGTH = 15
SIDES = ("left", "right")
PRIMITIVES = ("reach", "grasp", "lift", "place", "rotate", "push", "pinch", "wave", "lift_both", "handover")
BIMANUAL_PRIMITIVES = ("lift_both", "handover")
# Saturated colours with well separated hues (>= 24 degrees apart), so a colour name identifies pixels.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "orange": (245, 130, 20),
    "yellow": (240, 215, 30),
    "green": (40, 165, 60),
    "cyan": (20, 180, 200),
    "blue": (40, 80, 215),
    "purple": (135, 55, 180),
    "pink": (235, 70, 190),
}
SHAPES = ("cube", "ball", "can", "jar", "plate", "box")
# Shapes each primitive can act on (wave needs no object).
PRIMITIVE_TARGETS: dict[str, tuple[str, ...]] = {
    "reach": ("cube", "ball", "can", "jar", "plate", "box"),
    "grasp": ("cube", "ball", "can", "jar"),
    "lift": ("cube", "ball", "can", "jar"),
    "place": ("cube", "ball", "can"),
    "rotate": ("jar", "cube"),
    "push": ("cube", "ball", "can", "box"),
    "pinch": ("cube", "ball"),
    "wave": (),
    "lift_both": ("box",),
    "handover": ("cube", "ball", "can"),
}
# Paraphrase templates per primitive ({obj} = "the <colour> <shape>").
TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach": ("reach for {obj}", "move your hand to {obj}", "touch {obj}"),
    "grasp": ("grasp {obj}", "grab {obj}", "take hold of {obj}"),
    "lift": ("pick up {obj}", "lift {obj}", "raise {obj} off the table"),
    "place": ("put {obj} {dest}", "place {obj} {dest}", "move {obj} {dest}"),
    "rotate": ("rotate {obj} {turn}", "turn {obj} {turn}"),
    "open": ("open {obj}", "unscrew the lid of {obj}", "twist open {obj}"),
    "push": ("push {obj} {dir}", "slide {obj} {dir}", "shove {obj} {dir}"),
    "pinch": ("pinch {obj}", "pick up {obj} with two fingers", "pinch {obj} between thumb and index finger"),
    "wave": ("wave with your {hand} hand", "wave hello with your {hand} hand", "give a wave with the {hand} hand"),
    "lift_both": ("lift {obj} with both hands", "pick up {obj} using both hands", "raise {obj} with two hands"),
    "handover": (
        "pass {obj} from your {src} hand to your {dst} hand",
        "hand {obj} over to your {dst} hand",
        "transfer {obj} from the {src} hand to the {dst} hand",
    ),
}
JUNK_KINDS = ("idle", "absent", "distractor")
# Narrations of distractor clips: activities that are not hand-centric (as in egocentric video narrations).
DISTRACTOR_NARRATIONS = (
    "Look around the room.",
    "Talk to the person across the table.",
    "Glance at the clock on the wall.",
    "Stand still and think for a moment.",
    "Watch the other person at the table.",
    "Listen to someone speaking nearby.",
)
DIRECTIONS: dict[str, tuple[float, float]] = {
    "to the left": (-1.0, 0.0),
    "to the right": (1.0, 0.0),
    "away from you": (0.0, 1.0),
    "towards you": (0.0, -1.0),
}

UP = np.array([0.0, 0.0, 1.0])
CAMERA_HEIGHT = 0.42
CAMERA_PITCH = math.radians(48.0)
FOCAL_FACTOR = 0.9  # focal length / image width (about 58 degrees horizontal field of view)
SHOULDERS = {"right": np.array([0.20, -0.46, 0.14]), "left": np.array([-0.20, -0.46, 0.14])}
REST_WRIST = {"right": np.array([0.13, -0.21, 0.045]), "left": np.array([-0.13, -0.21, 0.045])}
WORKSPACE = ((-0.18, 0.18), (-0.03, 0.16))  # X and Y range of object centres on the table
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


@dataclass(frozen=True)
class ProceduralConfig:
    """Generation settings. A clip is a deterministic function of (``seed``, index, ``style``) and this config.

    Args:
        style: ``"lab"`` or ``"wild"``.
        seed: base seed of the data set.
        fps: frames per second (chunks are 15 frames).
        image_size: rendered width and height in pixels (64-128 supported).
        num_objects: inclusive (min, max) number of objects on the table.
        max_chunks: longest clip in 15-frame chunks (at least 2).
        supersample: rendering supersampling factor (anti-aliasing).
        wild_speedup: how much faster wild motion is played than lab motion.
        idle_hand_probability: chance that the idle hand of a one-hand task is in the clip.
        junk_probability: chance that a clip is a curation negative (see the module docstring; 0 for none).
    """

    style: str = "lab"
    seed: int = 0
    fps: float = 15.0
    image_size: int = 96
    num_objects: tuple[int, int] = (2, 4)
    max_chunks: int = 6
    supersample: int = 2
    wild_speedup: float = 2.0
    idle_hand_probability: float = 0.5
    junk_probability: float = 0.0

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; expected one of {STYLES}")
        if not 32 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [32, 512], got {self.image_size}")
        lo, hi = self.num_objects
        if not 2 <= lo <= hi <= 4:
            raise ValueError(f"num_objects must satisfy 2 <= min <= max <= 4, got {self.num_objects}")
        if self.max_chunks < 2 or self.fps <= 0 or self.supersample < 1 or self.wild_speedup <= 0:
            raise ValueError("max_chunks >= 2, fps > 0, supersample >= 1 and wild_speedup > 0 are required")
        if not 0.0 <= self.junk_probability <= 1.0:
            raise ValueError(f"junk_probability must be in [0, 1], got {self.junk_probability}")


@dataclass
class Camera:
    """Pinhole camera (OpenCV convention) of one clip; hand and object poses live in its (canonical) frame.

    ``intrinsics`` (3, 3) is for ``width`` x ``height`` images; ``table_to_camera`` (4, 4) maps table coordinates to
    the canonical camera frame; ``shake`` (T, 6) holds, per frame, the rotation vector and translation (m) from the
    canonical frame to the camera that took that frame (zeros for lab clips).
    """

    width: int
    height: int
    intrinsics: np.ndarray
    table_to_camera: np.ndarray
    shake: np.ndarray

    def frame_pose(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(R, tau) with ``p_frame = R @ p_canonical + tau`` for frame ``t``."""
        return rotvec_to_matrix(self.shake[t, :3]), self.shake[t, 3:].astype(np.float64)

    def project(self, points: np.ndarray, t: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(..., 3) canonical-frame points -> ((..., 2) pixel coordinates, (...,) depth) in frame ``t``."""
        rot, tau = self.frame_pose(t)
        cam = points @ rot.T + tau
        depth = cam[..., 2]
        uvw = cam @ self.intrinsics.T
        return uvw[..., :2] / np.maximum(uvw[..., 2:], 1e-6), depth

    def table_to_canonical(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) table-frame points -> canonical camera frame."""
        return points @ self.table_to_camera[:3, :3].T + self.table_to_camera[:3, 3]


@dataclass
class SceneObject:
    """One object: ``size`` (3,) extents along its own x, y, z axes (z up; for round shapes x = y = diameter);
    ``positions`` (T, 3) centre and ``rotations`` (T, 3, 3) object-to-camera rotation in the canonical camera frame."""

    shape: str
    colour: str
    size: np.ndarray
    positions: np.ndarray
    rotations: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]


@dataclass
class Appearance:
    """Rendering parameters drawn with the clip (everything random about its images derives from ``seed``)."""

    seed: int
    table_rgb: tuple[int, int, int]
    skin_rgb: dict[str, tuple[int, int, int]]
    sleeve_rgb: tuple[int, int, int]
    light: np.ndarray  # (3,) unit direction towards the light, table frame
    clutter: int = 0  # number of clutter shapes on the table texture
    occluders: int = 0
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_std: float = 0.0
    supersample: int = 2


@dataclass
class ProceduralClip:
    """One procedural clip: scene, instruction, MANO motion of one or both hands, and lazy rendering.

    ``task`` holds plain metadata: ``target`` (index into ``objects`` or None), ``hands_active``, ``hand_named``
    (the instruction names the hand), ``direction``/``destination``/``turn`` where relevant, and ``phases``
    (hand, phase name, first frame, end frame) of the active hands.
    """

    clip_id: str
    style: str
    instruction: str
    primitive: str
    task: dict[str, Any]
    objects: list[SceneObject]
    camera: Camera
    hands: dict[str, HandMotion]
    fps: float
    appearance: Appearance
    labelled_for_training: bool
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_frames(self) -> int:
        return next(iter(self.hands.values())).num_frames

    @property
    def num_chunks(self) -> int:
        return self.num_frames // CHUNK_LENGTH

    @property
    def target(self) -> SceneObject | None:
        index = self.task.get("target")
        return None if index is None else self.objects[index]

    def boundary_frame_indices(self) -> list[int]:
        """Frames 0, 15, ..., num_frames - 1: each chunk's start and end (``num_chunks + 1`` frames)."""
        return [c * CHUNK_LENGTH for c in range(self.num_chunks)] + [self.num_frames - 1]

    def joints(self) -> dict[str, np.ndarray]:
        """(T, 21, 3) keypoints (canonical camera frame, metres) per hand, from the built-in kinematics (cached)."""
        if "joints" not in self._cache:
            kin = BuiltinHandKinematics()
            with torch.no_grad():
                self._cache["joints"] = {side: kin(motion).double().numpy() for side, motion in self.hands.items()}
        return self._cache["joints"]

    def render_frame(self, t: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of frame ``t`` (cached)."""
        frames = self._cache.setdefault("frames", {})
        if t not in frames:
            from .render import render_frame

            if not 0 <= t < self.num_frames:
                raise IndexError(f"frame {t} out of range for a clip of {self.num_frames} frames")
            frames[t] = render_frame(self, t)
        return frames[t]

    def render_frames(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 images of ``indices`` (all frames when None)."""
        indices = range(self.num_frames) if indices is None else indices
        return np.stack([self.render_frame(int(t)) for t in indices])

    def render_boundary_frames(self) -> np.ndarray:
        """(num_chunks + 1, H, W, 3) images at :meth:`boundary_frame_indices`."""
        return self.render_frames(self.boundary_frame_indices())

    def to_dict(self) -> dict[str, Any]:
        """Plain python/numpy dict with every parameter of the clip (rendered frames excluded)."""
        return {
            "clip_id": self.clip_id,
            "style": self.style,
            "instruction": self.instruction,
            "primitive": self.primitive,
            "task": dict(self.task),
            "fps": self.fps,
            "num_frames": self.num_frames,
            "chunk_length": CHUNK_LENGTH,
            "labelled_for_training": self.labelled_for_training,
            "camera": {
                "width": self.camera.width,
                "height": self.camera.height,
                "intrinsics": self.camera.intrinsics,
                "table_to_camera": self.camera.table_to_camera,
                "shake": self.camera.shake,
            },
            "objects": [
                {
                    "shape": o.shape,
                    "colour": o.colour,
                    "size": o.size,
                    "positions": o.positions,
                    "rotations": o.rotations,
                }
                for o in self.objects
            ],
            "hands": {side: motion.to_dict() for side, motion in self.hands.items()},
            "appearance": dict(vars(self.appearance)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProceduralClip:
        """Inverse of :meth:`to_dict`."""
        return cls(
            clip_id=data["clip_id"],
            style=data["style"],
            instruction=data["instruction"],
            primitive=data["primitive"],
            task=dict(data["task"]),
            objects=[SceneObject(**o) for o in data["objects"]],
            camera=Camera(**data["camera"]),
            hands={s: HandMotion.from_dict(h, sample_id=data["clip_id"]) for s, h in data["hands"].items()},
            fps=data["fps"],
            appearance=Appearance(**data["appearance"]),
            labelled_for_training=data["labelled_for_training"],
        )


# ----------------------------------------------------------------------------------------------------------------
# Geometry helpers (numpy, table frame unless said otherwise)


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


# ----------------------------------------------------------------------------------------------------------------
# Trajectories


def min_jerk(s: np.ndarray) -> np.ndarray:
    """Minimum-jerk time profile on [0, 1]."""
    s = np.clip(s, 0.0, 1.0)
    return s**3 * (10 - 15 * s + 6 * s**2)


@dataclass
class _Key:
    time: float
    pos: np.ndarray
    rot: np.ndarray
    fingers: np.ndarray
    arc: float = 0.0  # height of the vertical bump on the segment ending here
    pivot: np.ndarray | None = None  # the segment ending here turns about the vertical axis through pivot
    turn: float = 0.0


class _Track:
    """Keyframed wrist pose and finger pose of one hand, in the table frame; minimum-jerk between keys."""

    def __init__(self, pos: np.ndarray, rot: np.ndarray, fingers: np.ndarray) -> None:
        self.keys = [_Key(0.0, pos, rot, fingers)]
        self.phases: list[tuple[str, float, float]] = []
        self.waves: list[tuple[float, float, np.ndarray, float, float]] = []

    @property
    def end(self) -> float:
        return self.keys[-1].time

    @property
    def last(self) -> _Key:
        return self.keys[-1]

    def move(
        self,
        duration: float,
        phase: str | None = None,
        pos: np.ndarray | None = None,
        rot: np.ndarray | None = None,
        fingers: np.ndarray | None = None,
        arc: float = 0.0,
    ) -> None:
        k = self.last
        self.keys.append(
            _Key(
                k.time + duration,
                k.pos if pos is None else pos,
                k.rot if rot is None else rot,
                k.fingers if fingers is None else fingers,
                arc,
            )
        )
        if phase:
            self.phases.append((phase, k.time, k.time + duration))

    def wait_until(self, time: float) -> None:
        if time > self.end:
            self.move(time - self.end)

    def turn(self, duration: float, phase: str, pivot: np.ndarray, angle: float) -> None:
        """Rotate the hand by ``angle`` about the vertical axis through ``pivot``."""
        k = self.last
        rz = _rot_about(UP, angle)
        self.keys.append(
            _Key(k.time + duration, pivot + rz @ (k.pos - pivot), rz @ k.rot, k.fingers, 0.0, pivot, angle)
        )
        self.phases.append((phase, k.time, k.time + duration))

    def wave(self, start: float, duration: float, axis: np.ndarray, amplitude: float, frequency: float) -> None:
        """Oscillate the hand about ``axis`` (through the wrist) during ``[start, start + duration]``."""
        self.waves.append((start, duration, axis, amplitude, frequency))
        self.phases.append(("wave", start, start + duration))

    def sample(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Wrist positions (T, 3), rotations (T, 3, 3) and finger poses (T, 15, 3) at ``times`` (seconds)."""
        key_times = np.array([k.time for k in self.keys])
        seg = np.clip(np.searchsorted(key_times, times, side="right"), 1, len(self.keys) - 1)
        t0, t1 = key_times[seg - 1], key_times[seg]
        lin = np.where(t1 > t0, (times - t0) / np.maximum(t1 - t0, 1e-9), 1.0).clip(0.0, 1.0)
        s = min_jerk(lin)
        pos0 = np.stack([k.pos for k in self.keys])
        fing = np.stack([k.fingers for k in self.keys])
        pos = pos0[seg - 1] + s[:, None] * (pos0[seg] - pos0[seg - 1])
        pos += UP * (np.array([k.arc for k in self.keys])[seg] * np.sin(np.pi * lin))[:, None]
        fingers = fing[seg - 1] + s[:, None, None] * (fing[seg] - fing[seg - 1])
        quats = matrix_to_quaternion(torch.as_tensor(np.stack([k.rot for k in self.keys])))
        seg_t = torch.as_tensor(seg)
        rot = quaternion_to_matrix(quaternion_slerp(quats[seg_t - 1], quats[seg_t], torch.as_tensor(s))).numpy()
        for i, k in enumerate(self.keys):
            if k.pivot is not None:
                sel = seg == i
                turns = rotvec_to_matrix(UP * (k.turn * s[sel])[:, None])
                pos[sel] = k.pivot + turns @ (self.keys[i - 1].pos - k.pivot)
        for start, duration, axis, amplitude, frequency in self.waves:
            phase = np.clip((times - start) / duration, 0.0, 1.0)
            envelope = min_jerk(4 * np.minimum(phase, 1 - phase))
            angles = amplitude * envelope * np.sin(2 * np.pi * frequency * (times - start))
            rot = rotvec_to_matrix(_unit(axis) * angles[:, None]) @ rot
        return pos, rot, fingers


def smooth_noise(rng: np.random.Generator, num_frames: int, dims: int, sigma_frames: float) -> np.ndarray:
    """(num_frames, dims) zero-mean, unit-variance Gaussian noise low-passed with a Gaussian of ``sigma_frames``."""
    radius = int(3 * sigma_frames) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    kernel /= np.sqrt((kernel**2).sum())
    white = rng.standard_normal((num_frames + 2 * radius, dims))
    return np.stack([np.convolve(white[:, d], kernel, mode="valid") for d in range(dims)], axis=1)


# ----------------------------------------------------------------------------------------------------------------
# Scene and primitives


@dataclass
class _Obj:
    """An object in the table frame while planning: base centre on the table, yaw, extents."""

    shape: str
    colour: str
    base: np.ndarray
    yaw: float
    size: np.ndarray

    @property
    def height(self) -> float:
        return float(self.size[2])

    @property
    def radius(self) -> float:
        return float(max(self.size[0], self.size[1]) / 2)

    @property
    def centre(self) -> np.ndarray:
        return self.base + UP * self.height / 2

    @property
    def top(self) -> np.ndarray:
        return self.base + UP * self.height


def _object_size(shape: str, rng: np.random.Generator) -> np.ndarray:
    if shape == "cube":
        return np.full(3, rng.uniform(0.045, 0.055))
    if shape == "ball":
        return np.full(3, 2 * rng.uniform(0.027, 0.033))
    if shape == "can":
        d = 2 * rng.uniform(0.031, 0.035)
        return np.array([d, d, rng.uniform(0.10, 0.12)])
    if shape == "jar":
        d = 2 * rng.uniform(0.039, 0.045)
        return np.array([d, d, rng.uniform(0.07, 0.09)])
    if shape == "plate":
        d = 2 * rng.uniform(0.075, 0.09)
        return np.array([d, d, 0.015])
    return np.array([rng.uniform(0.20, 0.24), rng.uniform(0.11, 0.13), rng.uniform(0.09, 0.11)])  # box


@dataclass
class _Attachment:
    obj: int
    side: str
    start: float
    end: float | None
    mode: str  # "rigid" (follows the hand) or "planar" (follows its horizontal motion and yaw, stays on the table)
    surface: float | None = None  # height of the surface the object is put down on (None: held or left as is)


class _Planner:
    """Plans one clip's hand tracks and object attachments in the table frame."""

    def __init__(self, rng: np.random.Generator, tempo: float, objects: list[_Obj]) -> None:
        self.rng = rng
        self.tempo = tempo
        self.speed = rng.uniform(0.9, 1.1)
        self.objects = objects
        self.attachments: list[_Attachment] = []
        self.tracks: dict[str, _Track] = {}
        self.rest: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for side in SIDES:
            pos = REST_WRIST[side] + rng.normal(0.0, [0.008, 0.008, 0.003])
            aim = np.array([0.0, 0.15, 0.0]) + rng.normal(0.0, 0.03, 3)
            rot = hand_orientation(side, aim - SHOULDERS[side], rng.uniform(0.1, 0.3), rng.uniform(0.15, 0.4))
            self.rest[side] = (pos, rot)
            self.tracks[side] = _Track(pos, rot, RELAXED)

    def dur(self, seconds: float) -> float:
        """A phase of nominal length ``seconds`` at this clip's speed and style tempo, jittered by +-6%."""
        return seconds * self.rng.uniform(0.94, 1.06) * self.speed / self.tempo

    def reach_time(self, side: str, wrist: np.ndarray) -> float:
        """Duration of a reach from the hand's current wrist position to ``wrist`` (grows with the distance)."""
        return self.dur(0.55 + 2.0 * float(np.linalg.norm(wrist - self.tracks[side].last.pos)))

    def approach(self, side: str, point: np.ndarray) -> np.ndarray:
        return _horizontal(point - SHOULDERS[side])

    def attach(self, obj: int, side: str, start: float, mode: str = "rigid") -> None:
        self.release(obj, start)
        self.attachments.append(_Attachment(obj, side, start, None, mode))

    def release(self, obj: int, time: float, surface: float | None = None) -> None:
        for att in self.attachments:
            if att.obj == obj and att.end is None:
                att.end = time
                if surface is not None:
                    att.surface = surface

    def wrist_for(self, side: str, rot: np.ndarray, point: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Wrist position that puts the right-hand local point ``local`` (mirrored for the left) at ``point``."""
        return point - rot @ (local * _mirror(side))

    def grasp_pose(self, side: str, obj: _Obj) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(wrist, rotation, closed fingers) of a one-hand grasp: cans from the side, the rest from the top."""
        a = self.approach(side, obj.centre)
        if obj.shape == "can":
            rot = hand_orientation(side, a, self.rng.uniform(0.05, 0.25), math.pi / 2)
            point = (
                obj.base
                + UP * obj.height * self.rng.uniform(0.45, 0.6)
                + rot @ np.array([0, 1.0, 0]) * (obj.radius + 0.006)
            )
            return self.wrist_for(side, rot, point, PALM_LOCAL), rot, finger_pose(0.72, 0.05, 0.8)
        rot = hand_orientation(side, a, self.rng.uniform(0.35, 0.6), self.rng.uniform(0.1, 0.3))
        closure = {"cube": 0.55, "ball": 0.62, "jar": 0.45}[obj.shape]
        point = obj.top + UP * 0.006 + a * 0.01
        return self.wrist_for(side, rot, point, PALM_LOCAL), rot, finger_pose(closure, 0.2, 0.7)

    def reach_and_grasp(self, side: str, index: int) -> np.ndarray:
        """Append reach, approach and grasp phases; attach the object. Returns the grasp wrist position."""
        obj, tr = self.objects[index], self.tracks[side]
        pos, rot, grip = self.grasp_pose(side, obj)
        palm_normal = -rot[:, 1]
        pre = pos - palm_normal * 0.05 + UP * 0.03 - self.approach(side, obj.centre) * 0.02
        tr.move(self.reach_time(side, pre), "reach", pre, rot, OPEN, arc=0.03)
        tr.move(self.dur(0.4), "approach", pos)
        tr.move(self.dur(0.4), "grasp", fingers=grip)
        self.attach(index, side, tr.end)
        return pos


def _primitive_reach(p: _Planner, side: str, target: int, touch: bool) -> None:
    obj, tr = p.objects[target], p.tracks[side]
    a = p.approach(side, obj.centre)
    rot = hand_orientation(side, a, p.rng.uniform(0.3, 0.5), p.rng.uniform(0.1, 0.3))
    point = obj.top + UP * 0.012 + a * 0.01
    wrist = p.wrist_for(side, rot, point, PALM_LOCAL)
    tr.move(p.reach_time(side, wrist), "reach", wrist, rot, FLAT, arc=0.03)
    tr.move(p.dur(0.45), "touch" if touch else "hold")
    if touch:
        tr.move(p.dur(1.05), "retract", *p.rest[side], RELAXED, arc=0.02)


def _primitive_lift(p: _Planner, side: str, target: int, height: float) -> None:
    """Grasp, then lift by ``height`` (no lift when 0) and hold."""
    pos = p.reach_and_grasp(side, target)
    tr = p.tracks[side]
    if height > 0:
        tr.move(p.dur(0.85), "lift", pos + UP * height - p.approach(side, pos) * 0.02)
    tr.move(p.dur(0.6), "hold")


def _primitive_place(p: _Planner, side: str, target: int, dest_xy: np.ndarray, surface: float) -> None:
    obj, tr = p.objects[target], p.tracks[side]
    pos = p.reach_and_grasp(side, target)
    shift = np.array([dest_xy[0] - obj.base[0], dest_xy[1] - obj.base[1], surface])
    height = p.rng.uniform(0.05, 0.08) + surface
    tr.move(p.dur(0.6), "lift", pos + UP * height)
    tr.move(p.dur(0.95), "transport", pos + shift + UP * (height - surface), arc=0.02)
    tr.move(p.dur(0.5), "lower", pos + shift)
    tr.move(p.dur(0.3), "release", fingers=OPEN)
    p.release(target, tr.end, surface)
    tr.move(p.dur(0.55), "retreat", pos + shift + UP * 0.07 - p.approach(side, pos) * 0.04, fingers=RELAXED)


def _primitive_rotate(p: _Planner, side: str, target: int, angle: float) -> None:
    obj, tr = p.objects[target], p.tracks[side]
    pos, rot, grip = p.grasp_pose(side, obj)
    pre_turn = _rot_about(UP, -angle / 2)
    axis = obj.base.copy()
    pos, rot = axis + pre_turn @ (pos - axis), pre_turn @ rot
    tr.move(p.reach_time(side, pos + UP * 0.05), "reach", pos + UP * 0.05, rot, OPEN, arc=0.03)
    tr.move(p.dur(0.4), "approach", pos)
    tr.move(p.dur(0.35), "grasp", fingers=grip)
    p.attach(target, side, tr.end, "planar")
    tr.turn(p.dur(1.1), "turn", axis, angle)
    tr.move(p.dur(0.3), "release", fingers=OPEN)
    p.release(target, tr.end)
    tr.move(p.dur(0.5), "retreat", tr.last.pos + UP * 0.06, fingers=RELAXED)


def _push_pose(p: _Planner, side: str, obj: _Obj, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(contact wrist, rotation, pre-contact wrist) for pushing ``obj`` along the horizontal unit ``d``."""
    extent = abs(d[0]) * obj.size[0] / 2 + abs(d[1]) * obj.size[1] / 2 if obj.shape == "box" else obj.radius
    point = obj.base + UP * max(0.03, min(obj.height / 2, 0.05)) - d * (extent + 0.014)
    if abs(d[0]) > 0.5:  # sideways: edge of the hand, palm facing the midline, thumb up
        rot = hand_orientation(side, p.approach(side, obj.centre), p.rng.uniform(0.1, 0.3), math.pi / 2)
        pre = point - d * 0.04 + UP * 0.05
    elif d[1] > 0:  # away: palm facing forward, fingers up
        rot = hand_orientation(side, d, -p.rng.uniform(0.9, 1.1))
        pre = point - d * 0.04 + UP * 0.04
    else:  # towards the body: hand reaches over the object, palm facing the viewer, fingers down
        rot = hand_orientation(side, -d, p.rng.uniform(1.1, 1.3))
        pre = point + UP * 0.1
    return p.wrist_for(side, rot, point, PALM_LOCAL), rot, p.wrist_for(side, rot, pre, PALM_LOCAL)


def _primitive_push(p: _Planner, side: str, target: int, d: np.ndarray, distance: float) -> None:
    obj, tr = p.objects[target], p.tracks[side]
    pos, rot, pre = _push_pose(p, side, obj, d)
    tr.move(p.reach_time(side, pre), "reach", pre, rot, FLAT, arc=0.03)
    tr.move(p.dur(0.4), "approach", pos)
    p.attach(target, side, tr.end, "planar")
    tr.move(p.dur(1.1), "push", pos + d * distance)
    p.release(target, tr.end)
    tr.move(p.dur(0.5), "retract", pos + d * (distance - 0.04) + UP * 0.05, fingers=RELAXED)


def _primitive_pinch(p: _Planner, side: str, target: int) -> None:
    obj, tr = p.objects[target], p.tracks[side]
    a = p.approach(side, obj.centre)
    rot = hand_orientation(side, a, p.rng.uniform(0.75, 0.95), p.rng.uniform(0.2, 0.45))
    closure, mid = pinch_closure(obj.size[0] + 0.004)
    point = obj.centre + UP * obj.height * 0.15
    pos = p.wrist_for(side, rot, point, mid)
    pre = pos + UP * 0.05 - a * 0.03
    tr.move(p.reach_time(side, pre), "reach", pre, rot, pinch_pose(0.0), arc=0.03)
    tr.move(p.dur(0.4), "approach", pos)
    tr.move(p.dur(0.4), "pinch", fingers=pinch_pose(closure))
    p.attach(target, side, tr.end)
    tr.move(p.dur(0.7), "lift", pos + UP * p.rng.uniform(0.05, 0.08))
    tr.move(p.dur(0.45), "hold")


def _primitive_wave(p: _Planner, side: str) -> None:
    tr = p.tracks[side]
    sign = 1.0 if side == "right" else -1.0
    pos = np.array([sign * p.rng.uniform(0.08, 0.14), p.rng.uniform(-0.1, -0.04), p.rng.uniform(0.14, 0.19)])
    rot = hand_orientation(side, np.array([-0.25 * sign, 1.0, 0.0]), -p.rng.uniform(0.7, 0.95))
    tr.move(p.dur(0.95), "raise", pos, rot, finger_pose(0.05, 0.7, 0.05))
    frequency = p.rng.uniform(1.5, 2.2) * p.tempo
    cycles = int(p.rng.integers(2, 4))
    duration = cycles / frequency
    tr.wave(tr.end, duration, -rot[:, 1], p.rng.uniform(0.4, 0.6), frequency)
    tr.move(duration)
    tr.move(p.dur(0.9), "lower", *p.rest[side], RELAXED)


def _primitive_lift_both(p: _Planner, target: int, height: float) -> None:
    obj = p.objects[target]
    start = p.dur(0.2)
    grasped = 0.0
    poses = {}
    for side in SIDES:
        tr = p.tracks[side]
        sign = 1.0 if side == "right" else -1.0
        rot = hand_orientation(side, np.array([0.0, 1.0, 0.0]), p.rng.uniform(0.1, 0.3), math.pi / 2)
        box_x = _rot_about(UP, obj.yaw) @ np.array([1.0, 0.0, 0.0])
        point = obj.base + UP * obj.height * p.rng.uniform(0.45, 0.6) + sign * box_x * (obj.size[0] / 2 + 0.01)
        pos = p.wrist_for(side, rot, point, PALM_LOCAL)
        poses[side] = pos
        tr.move(start + p.dur(0.05))
        pre = pos + sign * box_x * 0.06 + UP * 0.04
        tr.move(p.reach_time(side, pre), "reach", pre, rot, OPEN, arc=0.03)
        tr.move(p.dur(0.4), "approach", pos)
        tr.move(p.dur(0.3), "grasp", fingers=finger_pose(0.25, 0.1, 0.3))
        grasped = max(grasped, tr.end)
    p.attach(target, "right", grasped)
    lift = p.dur(0.95)
    back = np.array([0.0, -p.rng.uniform(0.0, 0.04), 0.0])
    for side in SIDES:
        tr = p.tracks[side]
        tr.wait_until(grasped)
        tr.move(lift, "lift", poses[side] + UP * height + back)
        tr.move(p.dur(0.55), "hold")


def _primitive_handover(p: _Planner, src: str, target: int) -> None:
    obj = p.objects[target]
    dst = "left" if src == "right" else "right"
    src_tr, dst_tr = p.tracks[src], p.tracks[dst]
    pos = p.reach_and_grasp(src, target)
    meet = np.array([p.rng.uniform(-0.02, 0.02), p.rng.uniform(-0.09, -0.05), p.rng.uniform(0.14, 0.18)])
    carry = meet - obj.centre
    src_tr.move(p.dur(0.6), "lift", pos + UP * 0.08)
    src_tr.move(p.dur(0.9), "carry", pos + carry, arc=0.02)
    dst_sign = 1.0 if dst == "right" else -1.0
    dst_rot = hand_orientation(dst, np.array([0.0, 1.0, 0.0]), p.rng.uniform(0.1, 0.3), math.pi / 2)
    point = meet + np.array([dst_sign * (obj.radius + 0.01), 0.0, 0.0])
    dst_pos = p.wrist_for(dst, dst_rot, point, PALM_LOCAL)
    dst_tr.wait_until(src_tr.end - p.dur(1.0))
    dst_tr.move(src_tr.end + p.dur(0.2) - dst_tr.end, "reach", dst_pos, dst_rot, OPEN, arc=0.02)
    dst_tr.move(p.dur(0.35), "grasp", fingers=finger_pose(0.6, 0.1, 0.7))
    p.attach(target, dst, dst_tr.end)
    src_tr.wait_until(dst_tr.end)
    src_tr.move(p.dur(0.3), "release", fingers=OPEN)
    src_tr.move(p.dur(0.9), "retract", *p.rest[src], RELAXED, arc=0.02)
    dst_tr.wait_until(src_tr.keys[-2].time)
    away = np.array([dst_sign * p.rng.uniform(0.06, 0.1), p.rng.uniform(-0.1, -0.05), 0.0]) - meet * [1, 1, 0]
    dst_tr.move(p.dur(0.9), "carry", dst_pos + away - UP * 0.03)
    dst_tr.move(p.dur(0.3), "hold")


# ----------------------------------------------------------------------------------------------------------------
# Clip generation


def _lab_camera_pose() -> tuple[np.ndarray, np.ndarray]:
    """(rotation camera -> table, camera centre in the table frame) of the fixed lab camera."""
    return _camera_rotation(CAMERA_PITCH, 0.0, 0.0), np.array(
        [0.0, -CAMERA_HEIGHT / math.tan(CAMERA_PITCH), CAMERA_HEIGHT]
    )


def _camera_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Camera -> table rotation of a camera looking ``pitch`` below the horizon, turned by ``yaw``, rolled."""
    s, c = math.sin(pitch), math.cos(pitch)
    base = np.array([[1.0, 0.0, 0.0], [0.0, -s, c], [0.0, -c, -s]])  # columns: camera x, y, z in the table frame
    return _rot_about(UP, yaw) @ base @ _rot_about(np.array([0.0, 0.0, 1.0]), roll)


def _make_camera(rng: np.random.Generator, config: ProceduralConfig, num_frames: int) -> Camera:
    size = config.image_size
    focal = FOCAL_FACTOR * size
    rot, centre = _lab_camera_pose()
    shake = np.zeros((num_frames, 6))
    if config.style == "wild":
        pitch = CAMERA_PITCH + math.radians(rng.uniform(-6, 6))
        rot = _camera_rotation(pitch, math.radians(rng.uniform(-5, 5)), math.radians(rng.uniform(-5, 5)))
        height = CAMERA_HEIGHT + rng.uniform(-0.05, 0.05)
        centre = np.array([rng.uniform(-0.04, 0.04), -height / math.tan(pitch) + rng.uniform(-0.04, 0.04), height])
        focal *= rng.uniform(0.9, 1.1)
        amount = rng.uniform(0.3, 1.0)
        shake[:, :3] = smooth_noise(rng, num_frames, 3, 2.0) * math.radians(0.5) * amount
        shake[:, 3:] = smooth_noise(rng, num_frames, 3, 2.0) * 0.003 * amount
    to_cam = np.eye(4)
    to_cam[:3, :3] = rot.T
    to_cam[:3, 3] = -rot.T @ centre
    intrinsics = np.array([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])
    return Camera(size, size, intrinsics, to_cam, shake)


def _place_objects(rng: np.random.Generator, radii: list[float], fixed: dict[int, np.ndarray]) -> list[np.ndarray]:
    """Base positions (z = 0) of objects with footprint ``radii``, not overlapping (rejection sampling, then the
    least crowded candidate); ``fixed`` pins some of them."""
    positions: list[np.ndarray] = []
    for i, radius in enumerate(radii):
        best, best_gap = None, -np.inf
        for _ in range(100):
            xy = fixed[i] if i in fixed else np.array([rng.uniform(*WORKSPACE[0]), rng.uniform(*WORKSPACE[1])])
            gap = min((np.linalg.norm(xy - q[:2]) - radius - radii[j] for j, q in enumerate(positions)), default=1.0)
            if gap > best_gap:
                best, best_gap = xy, gap
            if gap > 0.02:
                break
        positions.append(np.array([best[0], best[1], 0.0]))
    return positions


def _build_scene(rng: np.random.Generator, config: ProceduralConfig, primitive: str) -> tuple[list[_Obj], int | None]:
    """Objects in random order and the target's index (None for wave)."""
    count = int(rng.integers(config.num_objects[0], config.num_objects[1] + 1))
    colours = [str(c) for c in rng.permutation(list(COLOURS))[:count]]
    allowed = PRIMITIVE_TARGETS[primitive]
    shapes = [str(rng.choice(allowed))] if allowed else []
    while len(shapes) < count:
        shape = str(rng.choice(SHAPES))
        if shape in ("box", "plate") and ("box" in shapes or "plate" in shapes):
            continue  # at most one large object
        shapes.append(shape)
    if primitive == "place" and "plate" not in shapes and "box" not in shapes and rng.random() < 0.6:
        shapes[-1] = str(rng.choice(["plate", "box"]))
    # large objects first, so the small ones fill the gaps
    shapes = shapes[:1] + sorted(shapes[1:], key=lambda s: s not in ("box", "plate"))
    sizes = [_object_size(shape, rng) for shape in shapes]
    radii = [float(np.hypot(*size[:2]) / 2) for size in sizes]
    fixed = {0: np.array([rng.uniform(-0.04, 0.04), rng.uniform(0.02, 0.1)])} if primitive == "lift_both" else {}
    bases = _place_objects(rng, radii, fixed)
    objects = [
        _Obj(shape, colour, base, float(rng.uniform(-0.2, 0.2) if shape == "box" else rng.uniform(0, math.pi)), size)
        for shape, colour, base, size in zip(shapes, colours, bases, sizes, strict=True)
    ]
    order = rng.permutation(count)
    objects = [objects[i] for i in order]
    target = int(np.flatnonzero(order == 0)[0]) if allowed else None
    return objects, target


def _choose_hand(rng: np.random.Generator, obj: _Obj) -> tuple[str, bool]:
    """The acting hand: the one on the object's side, unless the instruction names a hand (25%)."""
    if rng.random() < 0.25:
        return str(rng.choice(SIDES)), True
    return ("right" if obj.base[0] >= 0 else "left"), False


def _plan(rng: np.random.Generator, config: ProceduralConfig, tempo: float) -> tuple[_Planner, str, str, dict]:
    """Draw a primitive and a scene, plan the motion; returns (planner, primitive, instruction, task metadata)."""
    primitive = str(rng.choice(PRIMITIVES))
    objects, target = _build_scene(rng, config, primitive)
    p = _Planner(rng, tempo, objects)
    obj = objects[target] if target is not None else None
    task: dict[str, Any] = {"target": target, "hand_named": False, "direction": None, "destination": None}
    phrase = f"the {obj.colour} {obj.shape}" if obj is not None else ""
    for tr in p.tracks.values():
        tr.move(p.dur(0.25))  # reaction time
    if primitive in BIMANUAL_PRIMITIVES:
        if primitive == "lift_both":
            _primitive_lift_both(p, target, rng.uniform(0.1, 0.16))
            instruction = str(rng.choice(TEMPLATES["lift_both"])).format(obj=phrase)
        else:
            src = "right" if obj.base[0] >= 0 else "left"
            dst = "left" if src == "right" else "right"
            _primitive_handover(p, src, target)
            instruction = str(rng.choice(TEMPLATES["handover"])).format(obj=phrase, src=src, dst=dst)
        task["hands_active"] = list(SIDES)
    else:
        if primitive == "wave":
            side, named = str(rng.choice(SIDES)), True
        else:
            side, named = _choose_hand(rng, obj)
        task["hand_named"] = named
        template = str(rng.choice(TEMPLATES["open" if primitive == "rotate" and obj.shape == "jar" else primitive]))
        fields: dict[str, str] = {"obj": phrase, "hand": side}
        if primitive == "reach":
            _primitive_reach(p, side, target, touch=template.startswith("touch"))
        elif primitive in ("grasp", "lift"):
            _primitive_lift(p, side, target, 0.0 if primitive == "grasp" else rng.uniform(0.08, 0.14))
        elif primitive == "place":
            fields["dest"], dest_xy, surface = _choose_destination(rng, objects, target)
            task["destination"] = fields["dest"]
            _primitive_place(p, side, target, dest_xy, surface)
        elif primitive == "rotate":
            if obj.shape == "jar":
                angle = rng.uniform(1.2, 1.9)  # counterclockwise seen from above unscrews
            else:
                clockwise = bool(rng.random() < 0.5)
                fields["turn"] = "clockwise" if clockwise else "counterclockwise"
                angle = rng.uniform(1.35, 1.75) * (-1 if clockwise else 1)
            task["turn"] = float(angle)
            _primitive_rotate(p, side, target, angle)
        elif primitive == "push":
            name, d = _choose_push(rng, obj)
            fields["dir"] = name
            task["direction"] = name
            _primitive_push(p, side, target, d, rng.uniform(0.09, 0.14))
        elif primitive == "pinch":
            _primitive_pinch(p, side, target)
        else:
            _primitive_wave(p, side)
        instruction = template.format(**fields)
        if named and primitive != "wave":
            instruction += f" with your {side} hand"
        task["hands_active"] = [side]
    return p, primitive, instruction[0].upper() + instruction[1:] + ".", task


def _choose_destination(rng: np.random.Generator, objects: list[_Obj], target: int) -> tuple[str, np.ndarray, float]:
    """(phrase, destination base xy, surface height) of a place task: onto a plate/box if any, else a direction."""
    obj = objects[target]
    holders = [o for i, o in enumerate(objects) if i != target and o.shape in ("plate", "box")]
    if holders and rng.random() < 0.7:
        holder = holders[int(rng.integers(len(holders)))]
        return f"on the {holder.colour} {holder.shape}", holder.base[:2].copy(), holder.height
    options = []
    for name, d in DIRECTIONS.items():
        xy = obj.base[:2] + np.array(d) * 0.14
        if abs(xy[0]) < 0.22 and -0.08 < xy[1] < 0.2:
            options.append((name.replace("away from you", "further away").replace("towards you", "closer to you"), xy))
    name, xy = options[int(rng.integers(len(options)))]
    return name, xy, 0.0


def _choose_push(rng: np.random.Generator, obj: _Obj) -> tuple[str, np.ndarray]:
    names = [n for n, d in DIRECTIONS.items() if abs(obj.base[0] + 0.12 * d[0]) < 0.24]
    name = names[int(rng.integers(len(names)))]
    return name, np.array([*DIRECTIONS[name], 0.0])


def _object_trajectories(
    objects: list[_Obj], attachments: list[_Attachment], wrists: dict[str, tuple[np.ndarray, np.ndarray]], fps: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per object, (T, 3) centres and (T, 3, 3) rotations in the table frame, following the hands that hold it."""
    num_frames = len(next(iter(wrists.values()))[0])
    out = []
    for i, obj in enumerate(objects):
        pos = np.tile(obj.centre, (num_frames, 1))
        rot = np.tile(_rot_about(UP, obj.yaw), (num_frames, 1, 1))
        for att in sorted((a for a in attachments if a.obj == i), key=lambda a: a.start):
            f0 = min(int(round(att.start * fps)), num_frames - 1)
            f1 = num_frames if att.end is None else min(int(round(att.end * fps)), num_frames)
            hand_pos, hand_rot = wrists[att.side]
            if att.mode == "rigid":
                rel_pos = hand_rot[f0].T @ (pos[f0] - hand_pos[f0])
                rel_rot = hand_rot[f0].T @ rot[f0]
                pos[f0:f1] = hand_pos[f0:f1] + np.einsum("tij,j->ti", hand_rot[f0:f1], rel_pos)
                rot[f0:f1] = hand_rot[f0:f1] @ rel_rot
            else:
                delta = hand_rot[f0:f1] @ hand_rot[f0].T
                yaw = np.arctan2(delta[:, 1, 0], delta[:, 0, 0])
                offset = (pos[f0] - hand_pos[f0])[:2]
                c, s = np.cos(yaw), np.sin(yaw)
                pos[f0:f1, 0] = hand_pos[f0:f1, 0] + c * offset[0] - s * offset[1]
                pos[f0:f1, 1] = hand_pos[f0:f1, 1] + s * offset[0] + c * offset[1]
                rot[f0:f1] = rotvec_to_matrix(UP * yaw[:, None]) @ rot[f0]
            if f1 < num_frames:
                pos[f1:], rot[f1:] = pos[f1 - 1], rot[f1 - 1]
                if att.surface is not None:  # put down: rest level on the surface
                    pos[f1:, 2] = att.surface + obj.height / 2
                    rot[f1:] = _rot_about(UP, math.atan2(rot[f1 - 1, 1, 0], rot[f1 - 1, 0, 0]))
        out.append((pos, rot))
    return out


def generate_clip(index: int, config: ProceduralConfig | None = None) -> ProceduralClip:
    """The clip ``index`` of the data set defined by ``config``: a deterministic function of
    (``config.seed``, ``index``, ``config.style``) and the other config fields."""
    config = config or ProceduralConfig()
    style_id = STYLES.index(config.style)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, index, style_id]))
    tempo = config.wild_speedup if config.style == "wild" else 1.0
    planner, primitive, instruction, task = _plan(rng, config, tempo)

    end = max(tr.end for tr in planner.tracks.values()) + planner.dur(0.2)
    limit = config.max_chunks * CHUNK_LENGTH / config.fps
    scale = min(1.0, (limit - 1.5 / config.fps) / end)  # compress overlong motions to fit max_chunks
    num_chunks = int(np.clip(math.ceil(end * scale * config.fps / CHUNK_LENGTH), 2, config.max_chunks))
    num_frames = num_chunks * CHUNK_LENGTH
    times = np.arange(num_frames) / config.fps / scale

    active = set(task["hands_active"])
    present = [s for s in SIDES if s in active or rng.random() < config.idle_hand_probability]
    noise_sigma = 3.0 / tempo
    wrists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    fingers: dict[str, np.ndarray] = {}
    for side in SIDES:
        pos, rot, fing = planner.tracks[side].sample(times)
        amount = rng.uniform(0.5, 1.5) * (1.0 if side in active else 1.6)
        pos = pos + smooth_noise(rng, num_frames, 3, noise_sigma) * 0.003 * amount
        jitter = smooth_noise(rng, num_frames, 3, noise_sigma) * 0.025 * amount
        rot = rotvec_to_matrix(jitter) @ rot
        fing = (
            fing
            + rng.normal(0.0, 0.05, (1, 15, 3))
            + smooth_noise(rng, num_frames, 45, noise_sigma).reshape(num_frames, 15, 3) * 0.03 * amount
        )
        wrists[side], fingers[side] = (pos, rot), fing

    camera = _make_camera(rng, config, num_frames)
    to_cam = camera.table_to_camera
    clip_id = f"procedural-{config.style}-{config.seed}-{index:07d}"
    hands = {}
    for side in present:
        pos, rot = wrists[side]
        orient = matrix_to_axis_angle(torch.as_tensor(to_cam[:3, :3] @ rot)).float()
        hand_pose = fingers[side] * (_MIRROR_ROT if side == "left" else 1.0)
        hands[side] = HandMotion(
            side=side,
            hand_pose=torch.as_tensor(hand_pose, dtype=torch.float32),
            global_orient=orient,
            transl=torch.as_tensor(camera.table_to_canonical(pos), dtype=torch.float32),
            fps=config.fps,
            sample_id=clip_id,
        )
    objects = []
    for obj, (pos, rot) in zip(
        planner.objects,
        _object_trajectories(planner.objects, planner.attachments, wrists, config.fps * scale),
        strict=True,
    ):
        objects.append(
            SceneObject(
                obj.shape,
                obj.colour,
                obj.size.astype(np.float32),
                camera.table_to_canonical(pos).astype(np.float32),
                (to_cam[:3, :3] @ rot).astype(np.float32),
            )
        )
    task["phases"] = [
        (side, name, int(round(a * scale * config.fps)), min(num_frames, int(round(b * scale * config.fps))))
        for side in task["hands_active"]
        for name, a, b in planner.tracks[side].phases
    ]
    clip = ProceduralClip(
        clip_id=clip_id,
        style=config.style,
        instruction=instruction,
        primitive=primitive,
        task=task,
        objects=objects,
        camera=camera,
        hands=hands,
        fps=config.fps,
        appearance=_make_appearance(rng, config),
        labelled_for_training=config.style == "lab",
    )
    if config.junk_probability > 0:
        junk_rng = np.random.default_rng(np.random.SeedSequence([config.seed, index, style_id, 1]))
        if junk_rng.random() < config.junk_probability:
            _make_junk(clip, str(junk_rng.choice(JUNK_KINDS)), junk_rng)
    return clip


def _make_junk(clip: ProceduralClip, kind: str, rng: np.random.Generator) -> None:
    """Turn ``clip`` into a curation negative of ``kind`` (in place; see the module docstring)."""
    clip.task["junk"] = kind
    if kind == "distractor":
        clip.instruction = str(rng.choice(DISTRACTOR_NARRATIONS))
        return
    num_frames = clip.num_frames
    for obj in clip.objects:  # nothing is manipulated: objects stay where they start
        obj.positions[:] = obj.positions[0]
        obj.rotations[:] = obj.rotations[0]
    clip.task["phases"] = []
    for side, motion in clip.hands.items():
        if kind == "idle":  # resting hands with a slight tremor
            tremor = torch.as_tensor(smooth_noise(rng, num_frames, 3, 4.0) * 0.002, dtype=torch.float32)
            curl = torch.as_tensor(smooth_noise(rng, num_frames, 45, 4.0) * 0.01, dtype=torch.float32)
            clip.hands[side] = replace(
                motion,
                hand_pose=motion.hand_pose[:1] + curl.reshape(num_frames, 15, 3),
                global_orient=motion.global_orient[:1].expand(num_frames, 3).clone(),
                transl=motion.transl[:1] + tremor,
            )
        else:  # absent: the hands are held below the camera's view (camera y points down, 2 x depth: 63 deg)
            offset = torch.zeros_like(motion.transl)
            offset[:, 1] = 2.0 * motion.transl[:, 2]
            clip.hands[side] = replace(motion, transl=motion.transl + offset)


def _make_appearance(rng: np.random.Generator, config: ProceduralConfig) -> Appearance:
    seed = int(rng.integers(2**31))
    light = _unit(np.array([0.3, -0.4, 1.0]))
    if config.style == "lab":
        skin = {"left": (226, 168, 142), "right": (232, 184, 140)}
        return Appearance(seed, (196, 198, 194), skin, (70, 80, 100), light, supersample=config.supersample)
    tone = rng.uniform(0.6, 1.1)
    skin = {
        "left": tuple(int(np.clip(c * tone, 0, 255)) for c in (226, 168, 142)),
        "right": tuple(int(np.clip(c * tone, 0, 255)) for c in (232, 184, 140)),
    }
    table = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.05, 0.45), rng.uniform(0.3, 0.85))
    sleeve = tuple(int(c) for c in rng.integers(20, 220, 3))
    light = _unit(np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.4), 1.0]))
    gain = tuple(float(g) for g in rng.uniform(0.85, 1.15, 3) * rng.uniform(0.7, 1.2))
    return Appearance(
        seed,
        table,
        skin,
        sleeve,
        light,
        clutter=int(rng.integers(8, 25)),
        occluders=int(rng.integers(0, 3)),
        gain=gain,
        noise_std=float(rng.uniform(2.0, 7.0)),
        supersample=config.supersample,
    )


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    rgb = v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)
    return tuple(int(round(255 * c)) for c in rgb)  # type: ignore[return-value]


RENDER_MODES = ("none", "first", "boundary")


def _generate_payload(args: tuple[int, ProceduralConfig, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A clip as (:meth:`ProceduralClip.to_dict`, its cache of rendered frames and keypoints)."""
    index, config, render = args
    clip = generate_clip(index, config)
    for t in {"none": [], "first": [0], "boundary": clip.boundary_frame_indices()}[render]:
        clip.render_frame(t)
    return clip.to_dict(), {k: v for k, v in clip._cache.items() if k in ("frames", "joints")}


def _worker_init() -> None:
    torch.set_num_threads(1)


def iter_clips(
    num_clips: int,
    config: ProceduralConfig | None = None,
    num_workers: int = 0,
    start_index: int = 0,
    render: str = "none",
) -> Iterator[ProceduralClip]:
    """Yield clips ``start_index .. start_index + num_clips - 1`` in order, generated by ``num_workers`` processes
    (0 or 1: in this process); the result does not depend on ``num_workers``.

    ``render`` = ``"first"`` or ``"boundary"`` has the workers also render the first frame, or the first and
    chunk-boundary frames (cached on the clips; others still render lazily).
    """
    if render not in RENDER_MODES:
        raise ValueError(f"render must be one of {RENDER_MODES}, got {render!r}")
    config = config or ProceduralConfig()
    jobs = [(start_index + i, config, render) for i in range(num_clips)]
    if num_workers <= 1:
        for data, cache in map(_generate_payload, jobs):
            yield _restore(data, cache)
        return
    # fork (where available) needs no `if __name__ == "__main__"` guard in the calling script
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ctx.Pool(num_workers, initializer=_worker_init) as pool:
        chunksize = max(1, min(32, num_clips // (4 * num_workers)))
        for data, cache in pool.imap(_generate_payload, jobs, chunksize=chunksize):
            yield _restore(data, cache)


def _restore(data: dict[str, Any], cache: dict[str, Any]) -> ProceduralClip:
    """Rebuild a clip from :meth:`ProceduralClip.to_dict` (identical whether made here or in a worker)."""
    clip = ProceduralClip.from_dict(data)
    clip._cache.update(cache)
    return clip


def generate_clips(
    num_clips: int,
    config: ProceduralConfig | None = None,
    num_workers: int = 0,
    start_index: int = 0,
    render: str = "none",
) -> list[ProceduralClip]:
    """A list of :func:`iter_clips` (for large data sets iterate instead: rendered frames take memory)."""
    return list(iter_clips(num_clips, config, num_workers, start_index, render))
