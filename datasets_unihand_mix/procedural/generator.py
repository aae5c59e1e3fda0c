"""Clip generation: the config, the clip (scene, instruction, MANO motion, lazy rendering), :func:`generate_clip`
with its junk clips and appearance, and :func:`iter_clips` / :func:`generate_clips` (optionally multiprocess).

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
from modeling_pela.rotations import matrix_to_axis_angle

from .geometry import _unit, rotvec_to_matrix
from .hand_pose import _MIRROR_ROT, SIDES
from .primitives import _object_trajectories, _plan
from .scene import Appearance, Camera, SceneObject, _make_camera
from .trajectories import smooth_noise

STYLES = ("lab", "wild")
CHUNK_LENGTH = 15
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
            # imported on use: importing render runs this package's __init__ (via .scene), which imports this module
            from ..render import render_frame

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
