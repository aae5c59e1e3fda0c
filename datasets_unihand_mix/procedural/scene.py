"""The tabletop scene: colours and shapes, the camera, the objects and the clip's appearance, and the scene drawn for
a primitive (objects sized and placed on the table, the camera posed).

Frames (right-handed, metres):

* table frame: origin on the table top at the centre of the workspace, X right, Y away from the viewer, Z up;
* canonical camera frame (OpenCV: x right, y down, z forward): the clip's camera. Hand parameters
  (:class:`~modeling_pela.hand_motion.HandMotion`, wrist joint position in ``transl``) and object poses are stored
  in it. ``Camera.table_to_camera`` maps table to camera coordinates; wild clips add a per-frame shake
  (``Camera.shake``) that only the rendered images see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .geometry import UP, _rot_about, rotvec_to_matrix
from .trajectories import smooth_noise

if TYPE_CHECKING:
    from .generator import ProceduralConfig

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
CAMERA_HEIGHT = 0.42
CAMERA_PITCH = math.radians(48.0)
FOCAL_FACTOR = 0.9  # focal length / image width (about 58 degrees horizontal field of view)
SHOULDERS = {"right": np.array([0.20, -0.46, 0.14]), "left": np.array([-0.20, -0.46, 0.14])}
REST_WRIST = {"right": np.array([0.13, -0.21, 0.045]), "left": np.array([-0.13, -0.21, 0.045])}
REST_SPREAD = np.array([0.06, 0.04, 0.02])  # half-range of the uniform start position around REST_WRIST (m)
WORKSPACE = ((-0.18, 0.18), (-0.03, 0.16))  # X and Y range of object centres on the table


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
