"""What every UniHand-Mix source converter produces, and the helpers they share.

A converter (:mod:`datasets_unihand_mix.converters`) reads one public data set in its own documented on-disk layout
and yields :class:`SourceClip` objects: 1-10 s clips whose lengths are whole multiples of the 15-frame chunk, at
15 fps, with MANO motion in PELA's convention (:mod:`modeling_pela.hand_motion`: flat finger pose, global orientation
and WRIST-JOINT position in a camera frame, metres).

Helpers:
  * :func:`segment_recording` cuts a recording into such clips (resampling it to the target fps first).
  * :class:`ManoModel` undoes the MANO conventions the sources store:
      - PCA pose:            full axis-angle = coeffs (k,) @ hands_components[:k]          (:meth:`~ManoModel.pca_to_axis_angle`)
      - mean-relative pose:  flat = pose + hands_mean (smplx/manopth ``flat_hand_mean=False``)  (:meth:`~ManoModel.mean_relative_to_flat`)
      - mesh translation:    wrist = J_0(betas) + transl_smplx, with J_0 = J_regressor[0] @ (v_template + shapedirs @ betas)
                             (:meth:`~ManoModel.smplx_transl_to_wrist`)
    :func:`load_mano_models` reads both hands, with or without the left-hand shape fix, as the source's tools did.
  * :func:`world_to_camera` / :func:`segment_to_camera` express world-frame motion in a camera frame (static camera,
    or a moving one fixed at each clip's first frame or taken per frame); :func:`rigid_inverse` inverts extrinsics.
  * :func:`read_array` validates a source field (presence, shape, finiteness) with an error naming file, field, frame.
  * :class:`ImageFiles` is a lazy frame loader over one image file per clip frame.

All malformed-input errors are :class:`SourceDataError` (a :class:`~modeling_pela.hand_motion.HandMotionError`, so a
``ValueError``) whose message names the file, the field and, where it applies, the frame.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from modeling_pela.hand_motion import HAND_SIDES, HandMotion, HandMotionError, check_shape_convention
from modeling_pela.rotations import axis_angle_to_matrix, matrix_to_axis_angle

from .schema import CHUNK_LENGTH, SUBSETS

FrameLoader = Callable[[Sequence[int]], list[Image.Image]]


class SourceDataError(HandMotionError):
    """A source file is malformed; the message names the file, the field and (where it applies) the frame."""


@dataclass
class SourceClip:
    """One clip of one source recording, in PELA's conventions.

    Attributes:
        clip_id: unique within the source (``<recording>/<clip index>``).
        source / license / citation: data-set name, its license and how to cite it.
        subset: ``"lab"`` or ``"wild"``.
        fps: frame rate of ``hands`` and of the frame indices given to ``frames``.
        hands: ``{"left"|"right": HandMotion}``, one or both sides, all with the same number of frames T.
        frames: lazy loader, clip frame indices (0..T-1) -> RGB ``PIL.Image`` list; None if the source has no RGB.
        instruction / description: text from the source's own annotations, else None.
        metadata: source-specific provenance (recording, camera, source frame indices, ...).
    """

    clip_id: str
    source: str
    license: str
    citation: str
    subset: str
    fps: float
    hands: dict[str, HandMotion]
    frames: FrameLoader | None = None
    instruction: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"clip '{self.source}/{self.clip_id}'"
        if self.subset not in SUBSETS:
            raise ValueError(f"{where}: subset must be one of {SUBSETS}, got {self.subset!r}")
        if not self.hands:
            raise ValueError(f"{where}: a clip needs at least one hand")
        for side, motion in self.hands.items():
            if side not in HAND_SIDES or motion.side != side:
                raise ValueError(f"{where}: hands[{side!r}] holds a {motion.side!r} hand motion")
            if motion.fps != self.fps:
                raise ValueError(f"{where}: the {side} hand is at {motion.fps} fps, the clip at {self.fps}")
        lengths = {motion.num_frames for motion in self.hands.values()}
        if len(lengths) != 1:
            raise ValueError(f"{where}: hands have different lengths {sorted(lengths)}")

    @property
    def num_frames(self) -> int:
        return next(iter(self.hands.values())).num_frames

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.fps


# --------------------------------------------------------------------------------------------------------------------
# Segmentation


@dataclass(frozen=True)
class RecordingSegment:
    """One clip cut by :func:`segment_recording`.

    ``hands`` are at the target fps (only the sides present in every frame of the clip); ``source_frames[i]`` is the
    recording frame nearest in time to clip frame ``i`` (for images and per-frame camera poses).
    """

    hands: dict[str, HandMotion]
    source_frames: tuple[int, ...]

    @property
    def num_frames(self) -> int:
        return len(self.source_frames)


def _present_runs(present: dict[str, np.ndarray], num_frames: int) -> list[tuple[int, int, tuple[str, ...]]]:
    """Maximal runs [start, stop) over which the (non-empty) set of present sides does not change."""
    sides = sorted(present)
    keys = [tuple(s for s in sides if present[s][t]) for t in range(num_frames)]
    runs, start = [], 0
    for t in range(1, num_frames + 1):
        if t == num_frames or keys[t] != keys[start]:
            if keys[start]:
                runs.append((start, t, keys[start]))
            start = t
    return runs


def segment_recording(
    hands: Mapping[str, HandMotion],
    *,
    present: Mapping[str, np.ndarray] | None = None,
    target_fps: float = 15.0,
    chunk_length: int = CHUNK_LENGTH,
    min_seconds: float = 1.0,
    max_seconds: float = 10.0,
) -> list[RecordingSegment]:
    """Cut a recording into clips of ``min_seconds``-``max_seconds`` that are whole multiples of ``chunk_length``.

    Args:
        hands: ``{side: HandMotion}`` of the whole recording, all with T frames at the same (source) fps.
        present: optional ``{side: (T,) bool}``: frames where that hand is annotated (default: all). The recording is
            split into maximal runs with the same non-empty set of present hands; frames of absent hands are ignored.
        target_fps: output frame rate; each run is resampled with :meth:`HandMotion.resample` (slerp / linear). When
            the source/target ratio r is an integer the output frames are exactly every r-th source frame; otherwise
            the run is trimmed to ``round((n - 1) * r) + 1`` frames and stretched by less than half a frame.
        min_seconds / max_seconds: clip length bounds; clips have k chunks with
            ``min_seconds <= k * chunk_length / target_fps <= max_seconds``.

    Each run is cut greedily from its start into clips of the largest allowed length; the remainder shorter than the
    minimum length (and any partial chunk) is dropped. Deterministic.
    """
    if not hands:
        raise ValueError("segment_recording: no hands given")
    motions = dict(hands)
    num_frames = {m.num_frames for m in motions.values()}
    fps = {m.fps for m in motions.values()}
    if len(num_frames) != 1 or len(fps) != 1:
        raise ValueError(f"segment_recording: hands differ in length {sorted(num_frames)} or fps {sorted(fps)}")
    (total,), (source_fps,) = num_frames, fps
    if not (target_fps > 0 and chunk_length >= 1 and 0 < min_seconds <= max_seconds):
        raise ValueError(
            f"segment_recording: need target_fps > 0, chunk_length >= 1 and 0 < min_seconds <= max_seconds; got "
            f"{target_fps}, {chunk_length}, {min_seconds}, {max_seconds}"
        )
    min_chunks = max(1, math.ceil(min_seconds * target_fps / chunk_length - 1e-9))
    max_chunks = math.floor(max_seconds * target_fps / chunk_length + 1e-9)
    if max_chunks < min_chunks:
        raise ValueError(
            f"segment_recording: no whole number of {chunk_length}-frame chunks at {target_fps} fps lasts between "
            f"{min_seconds} and {max_seconds} s"
        )
    masks = {side: np.ones(total, dtype=bool) for side in motions}
    for side, mask in (present or {}).items():
        mask = np.asarray(mask, dtype=bool)
        if side not in motions or mask.shape != (total,):
            raise ValueError(f"segment_recording: present[{side!r}] must be a ({total},) mask of a given hand")
        masks[side] = mask

    ratio = source_fps / target_fps
    segments = []
    for start, stop, sides in _present_runs(masks, total):
        num_out = math.floor((stop - start - 1) / ratio + 1e-9) + 1
        if num_out < min_chunks * chunk_length:
            continue
        num_used = min(stop - start, round((num_out - 1) * ratio) + 1)
        run = {}
        for side in sides:
            motion = motions[side].slice(start, start + num_used)
            if num_used != num_out:
                motion = motion.resample((num_out - 1) / (num_used - 1))
            run[side] = replace(motion, fps=float(target_fps))
        step = (num_used - 1) / (num_out - 1) if num_out > 1 else 0.0
        source = [start + round(i * step) for i in range(num_out)]
        chunk_start, num_chunks = 0, num_out // chunk_length
        while num_chunks - chunk_start >= min_chunks:
            k = min(max_chunks, num_chunks - chunk_start)
            a, b = chunk_start * chunk_length, (chunk_start + k) * chunk_length
            segments.append(RecordingSegment({s: m.slice(a, b) for s, m in run.items()}, tuple(source[a:b])))
            chunk_start += k
    return segments


# --------------------------------------------------------------------------------------------------------------------
# Field validation and frames


def require_field(data: Any, key: str, where: str, name: str | None = None) -> Any:
    """``data[key]``, or a :class:`SourceDataError` naming the file (``where``) and the field (``name`` or ``key``)."""
    if not isinstance(data, Mapping):
        raise SourceDataError(f"{where}: expected a mapping holding field '{name or key}', got {type(data).__name__}")
    if data.get(key) is None:
        raise SourceDataError(f"{where}: missing field '{name or key}'")
    return data[key]


def read_array(
    data: Mapping[str, Any],
    key: str,
    shape: tuple[int | None, ...],
    where: str,
    num_frames: int | None = None,
    name: str | None = None,
    per_frame: bool = True,
) -> np.ndarray:
    """``data[key]`` as a float64 array, checked for presence, shape and finiteness.

    ``shape`` may contain None for free sizes; they must equal ``num_frames`` when that is given (so a truncated
    per-frame array is reported as such). With ``per_frame`` axis 0 is time and a non-finite value is reported with
    its frame. ``name`` is the field name used in messages (default ``key``); ``where`` names the file.
    """
    name = name or key
    value = require_field(data, key, where, name)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SourceDataError(f"{where}: field '{name}' is not a numeric array ({err})") from err
    expected = tuple(num_frames if s is None else s for s in shape)
    if array.ndim != len(shape) or any(e is not None and a != e for a, e in zip(array.shape, expected, strict=True)):
        pretty = ", ".join("T" if e is None else str(e) for e in expected)
        raise SourceDataError(f"{where}: field '{name}' has shape {array.shape}, expected ({pretty})")
    bad = ~np.isfinite(array)
    if bad.any():
        kind = "NaN" if np.isnan(array).any() else "inf"
        at = f" at frame {int(np.argwhere(bad)[0][0])}" if per_frame and array.ndim else ""
        raise SourceDataError(f"{where}: field '{name}' contains {kind}{at}")
    return array


class ImageFiles:
    """Lazy :data:`FrameLoader` over one image file per clip frame (``paths[i]`` is clip frame ``i``)."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = tuple(os.fspath(p) for p in paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, indices: Sequence[int]) -> list[Image.Image]:
        images = []
        for index in indices:
            if not 0 <= index < len(self.paths):
                raise IndexError(f"frame index {index} out of range for a clip of {len(self.paths)} frames")
            path = self.paths[index]
            try:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            except OSError as err:
                raise SourceDataError(
                    f"{path}: cannot read image of clip frame {index} (field 'frames'): {err}"
                ) from err
        return images


# --------------------------------------------------------------------------------------------------------------------
# MANO conventions


def _to_numpy(value: Any) -> np.ndarray:
    """MANO pickle entries may be chumpy arrays (``.r``) or scipy sparse matrices (``.toarray()``)."""
    if hasattr(value, "toarray"):
        value = value.toarray()
    elif hasattr(value, "r"):
        value = value.r
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True)
class ManoModel:
    """The parts of one MANO model file the converters need (read like smplx does, nothing else is kept).

    Attributes:
        v_template (V, 3), shapedirs (V, 3, B), j_regressor (16, V), hands_components (45, 45) with one PCA component
        per ROW, hands_mean (45,): the mean pose that mean-relative (``flat_hand_mean=False``) poses are relative to.
    """

    side: str
    path: str
    v_template: np.ndarray
    shapedirs: np.ndarray
    j_regressor: np.ndarray
    hands_components: np.ndarray
    hands_mean: np.ndarray

    @classmethod
    def load(cls, path: str | os.PathLike, side: str) -> ManoModel:
        """Read ``MANO_RIGHT/LEFT.pkl`` (or a converted ``.npz``); shapes are checked."""
        path = os.fspath(path)
        try:
            if path.endswith(".npz"):
                data = dict(np.load(path, allow_pickle=True))
            else:
                with open(path, "rb") as f:
                    data = pickle.load(f, encoding="latin1")
        except ModuleNotFoundError as err:
            raise SourceDataError(
                f"{path}: cannot unpickle the MANO model ({err}); the original MANO pickles need the 'chumpy' "
                "package (or convert them to .npz)"
            ) from err
        except (OSError, pickle.UnpicklingError, EOFError) as err:
            raise SourceDataError(f"{path}: cannot read the MANO model ({err})") from err
        if not isinstance(data, Mapping):
            raise SourceDataError(f"{path}: a MANO model file holds a dict, got {type(data).__name__}")
        arrays = {
            k: _to_numpy(data[k])
            for k in ("v_template", "shapedirs", "J_regressor", "hands_components", "hands_mean")
            if k in data
        }
        v = read_array(arrays, "v_template", (None, 3), path, per_frame=False).shape[0]
        return cls(
            side=side,
            path=path,
            v_template=arrays["v_template"],
            shapedirs=read_array(arrays, "shapedirs", (v, 3, None), path, per_frame=False),
            j_regressor=read_array(arrays, "J_regressor", (16, v), path, per_frame=False),
            hands_components=read_array(arrays, "hands_components", (45, 45), path, per_frame=False),
            hands_mean=read_array(arrays, "hands_mean", (45,), path, per_frame=False),
        )

    def pca_to_axis_angle(self, coeffs: np.ndarray) -> np.ndarray:
        """(T, k) PCA coefficients (k <= 45) -> (T, 45) axis-angle, still relative to ``hands_mean``."""
        coeffs = np.asarray(coeffs, dtype=np.float64)
        if coeffs.ndim != 2 or not 1 <= coeffs.shape[1] <= 45:
            raise ValueError(f"PCA coefficients must be (T, k) with k <= 45, got {coeffs.shape}")
        return coeffs @ self.hands_components[: coeffs.shape[1]]

    def mean_relative_to_flat(self, pose: np.ndarray) -> np.ndarray:
        """(T, 45) pose relative to ``hands_mean`` (``flat_hand_mean=False``) -> flat convention (zeros = flat hand)."""
        return np.asarray(pose, dtype=np.float64) + self.hands_mean

    def rest_wrist(self, betas: np.ndarray) -> np.ndarray:
        """J_0(betas): (B',) shape (B' <= B) -> (3,) rest wrist joint, the pivot of the global rotation."""
        betas = np.asarray(betas, dtype=np.float64).reshape(-1)
        if betas.shape[0] > self.shapedirs.shape[2]:
            raise ValueError(f"{self.path}: {betas.shape[0]} betas for a model with {self.shapedirs.shape[2]}")
        shaped = self.v_template + self.shapedirs[:, :, : betas.shape[0]] @ betas
        return self.j_regressor[0] @ shaped

    def smplx_transl_to_wrist(self, transl: np.ndarray, betas: np.ndarray) -> np.ndarray:
        """(T, 3) smplx/manopth mesh translation -> (T, 3) wrist-joint position (same frame, metres)."""
        return np.asarray(transl, dtype=np.float64) + self.rest_wrist(betas)


def load_mano_models(mano_dir: str | os.PathLike, *, shape_convention: str, ext: str = "pkl") -> dict[str, ManoModel]:
    """``{"left": ManoModel, "right": ManoModel}`` from ``MANO_LEFT/RIGHT.<ext>`` in ``mano_dir``.

    ``shape_convention`` is the SOURCE's tool chain's (:data:`modeling_pela.hand_motion.SHAPE_CONVENTIONS`):
    ``"left_fixed"`` reproduces the fix some tool chains apply to the public left-hand file (the x components of its
    shape directions have the wrong sign; detected, as smplx users do, by their near-equality with the right hand's),
    ``"released"`` keeps the file as it is, so that J_0(betas), and hence the wrist, matches the source. The converter
    stores the same convention with every hand (:func:`hand_motion`), for forward kinematics downstream.
    """
    check_shape_convention(shape_convention, f"MANO models in {os.fspath(mano_dir)!r}")
    models = {}
    for side in HAND_SIDES:
        path = Path(mano_dir) / f"MANO_{side.upper()}.{ext}"
        if not path.exists():
            raise FileNotFoundError(
                f"missing MANO model {path} (download MANO_LEFT/RIGHT from https://mano.is.tue.mpg.de; "
                "they cannot be redistributed)"
            )
        models[side] = ManoModel.load(path, side)
    left, right = models["left"], models["right"]
    if shape_convention == "left_fixed" and np.abs(left.shapedirs[:, 0, :] - right.shapedirs[:, 0, :]).sum() < 1:
        shapedirs = left.shapedirs.copy()
        shapedirs[:, 0, :] *= -1
        models["left"] = replace(left, shapedirs=shapedirs)
    return models


def world_to_camera(motion: HandMotion, extrinsics: np.ndarray | torch.Tensor) -> HandMotion:
    """Express a world-frame motion (``transl`` = wrist joint in the world) in a camera frame.

    Args:
        extrinsics: world->camera rigid transform(s), (4, 4) for a static camera or (T, 4, 4) per frame:
            x_cam = R @ x_world + t.
    Returns:
        The motion with ``global_orient`` = R @ orient and ``transl`` = R @ wrist + t (finger pose unchanged).
    """
    ext = torch.from_numpy(np.array(extrinsics, dtype=np.float64))
    n = motion.num_frames
    if ext.shape == (4, 4):
        ext = ext.expand(n, 4, 4)
    if ext.shape != (n, 4, 4):
        raise ValueError(f"extrinsics must be (4, 4) or ({n}, 4, 4), got {tuple(ext.shape)}")
    rot, trans = ext[:, :3, :3], ext[:, :3, 3]
    orthonormal = rot @ rot.transpose(1, 2) - torch.eye(3, dtype=rot.dtype)
    if orthonormal.abs().max() > 1e-4 or (torch.linalg.det(rot) < 0).any():
        raise ValueError("extrinsics are not rigid transforms (rotation part is not a proper rotation)")
    orient = matrix_to_axis_angle(rot @ axis_angle_to_matrix(motion.global_orient.double()))
    wrist = (rot @ motion.transl.double().unsqueeze(-1)).squeeze(-1) + trans
    dtype = motion.global_orient.dtype
    return replace(motion, global_orient=orient.to(dtype), transl=wrist.to(motion.transl.dtype))


CAMERA_FRAMES = ("clip_start", "per_frame")


def segment_to_camera(
    segment: RecordingSegment, extrinsics: np.ndarray, camera_frame: str, sample_id: str
) -> dict[str, HandMotion]:
    """The hands of a world-frame :class:`RecordingSegment` in a camera frame.

    Args:
        extrinsics: world->camera, (4, 4) for a static camera or (T_source, 4, 4) per RECORDING frame.
        camera_frame: ``"clip_start"``: the whole clip in the camera frame of its first frame (a fixed canonical frame,
            so a moving camera's ego-motion does not enter the hand motion); ``"per_frame"``: every frame in its own.
        sample_id: stored in the motions (used by error messages).
    """
    if camera_frame not in CAMERA_FRAMES:
        raise ValueError(f"camera_frame must be one of {CAMERA_FRAMES}, got {camera_frame!r}")
    extrinsics = np.asarray(extrinsics, dtype=np.float64)
    if extrinsics.ndim == 3:
        first = segment.source_frames[0]
        extrinsics = extrinsics[first] if camera_frame == "clip_start" else extrinsics[list(segment.source_frames)]
    return {side: replace(world_to_camera(m, extrinsics), sample_id=sample_id) for side, m in segment.hands.items()}


def lab_clips(
    segments: Sequence[RecordingSegment],
    *,
    source: str,
    license: str,
    citation: str,
    source_fps: float,
    recording_id: str,
    extrinsics: np.ndarray,
    camera_frame: str,
    frames: Callable[[list[int]], FrameLoader | None],
    metadata: Mapping[str, Any],
) -> Iterator[SourceClip]:
    """The :class:`SourceClip` of each segment of one lab recording, ids ``<recording_id>/<index:03d>``.

    Args:
        segments: from :func:`segment_recording` (world-frame hands at the target fps).
        extrinsics / camera_frame: see :func:`segment_to_camera`.
        frames: recording frame indices of a clip -> its frame loader (None if there are no images).
        metadata: provenance shared by the recording's clips; ``source_fps`` and ``source_frames`` are added per clip.
    """
    for index, segment in enumerate(segments):
        clip_id = f"{recording_id}/{index:03d}"
        source_frames = list(segment.source_frames)
        yield SourceClip(
            clip_id=clip_id,
            source=source,
            license=license,
            citation=citation,
            subset="lab",
            fps=next(iter(segment.hands.values())).fps,
            hands=segment_to_camera(segment, extrinsics, camera_frame, f"{source}/{clip_id}"),
            frames=frames(source_frames),
            metadata={**metadata, "source_fps": source_fps, "source_frames": source_frames},
        )


def rigid_inverse(transform: np.ndarray) -> np.ndarray:
    """Inverse of (..., 4, 4) rigid transforms (e.g. camera->world to world->camera)."""
    transform = np.asarray(transform, dtype=np.float64)
    inverse = np.zeros_like(transform)
    rot_t = np.swapaxes(transform[..., :3, :3], -1, -2)
    inverse[..., :3, :3] = rot_t
    inverse[..., :3, 3] = -(rot_t @ transform[..., :3, 3:])[..., 0]
    inverse[..., 3, 3] = 1.0
    return inverse


def hand_motion(
    side: str,
    flat_pose: np.ndarray,
    global_orient: np.ndarray,
    wrist: np.ndarray,
    fps: float,
    betas: np.ndarray,
    where: str,
    shape_convention: str,
) -> HandMotion:
    """A :class:`HandMotion` from (T, 45) flat pose, (T, 3) orientation, (T, 3) wrist (any frame) and (B,) betas
    fitted in ``shape_convention`` (the one passed to :func:`load_mano_models`)."""
    return HandMotion(
        side=side,
        hand_pose=torch.from_numpy(flat_pose.reshape(-1, 15, 3)).float(),
        global_orient=torch.from_numpy(global_orient).float(),
        transl=torch.from_numpy(wrist).float(),
        fps=fps,
        betas=torch.from_numpy(np.asarray(betas, dtype=np.float64)).float(),
        sample_id=where,
        shape_convention=shape_convention,
    )
