"""Your own lab captures (a generic per-clip format) -> :class:`SourceClip`.

On-disk layout (``root`` = ``data_dir/custom`` for the builder; one folder per recorded clip, sorted by name)::

    <root>/<clip>/clip.json      what the arrays mean (below)
    <root>/<clip>/motion.npz     per hand <side> in clip.json "hands" ("left" / "right"), T frames:
                                   <side>_hand_pose      (T, 45) or (T, 15, 3) axis-angle   (hand_pose "full")
                                                         (T, k) PCA coefficients, 1 <= k <= 45  ("pca")
                                   <side>_global_orient  (T, 3) axis-angle rotation of the wrist (MANO root joint)
                                   <side>_transl         (T, 3) wrist position or MANO translation ("transl", below)
                                   <side>_betas          (10,) MANO shape (write zeros if your fit has none)
                                   <side>_valid          optional (T,) bool: frames where that hand is annotated
                                                         (other frames are ignored, NaN is allowed there)
                                 world_to_camera         optional (T, 4, 4) per-frame extrinsics ("frame": "world")
    <root>/<clip>/frames/        one RGB image (.jpg / .jpeg / .png) per motion frame, frame t = t-th name in sort order

``clip.json`` (fields not marked optional are required: no silent defaults for units, frames and conventions)::

    {"instruction": "pick up the red cup",     text prompt of the clip (optional)
     "fps": 30,                                frame rate of motion.npz and frames/
     "hands": ["right"],                       hands present in motion.npz
     "units": "m",                             "m" or "mm": unit of every translation (transl, extrinsics)
     "frame": "camera",                        "camera": the arrays are in the camera frame of frames/;
                                               "world": they are in a world frame, moved to the camera by
                                               camera.world_to_camera (4 x 4) or motion.npz world_to_camera
     "camera": {"intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],        optional, kept in metadata
                "world_to_camera": 4 x 4,      x_cam = R @ x_world + t ("frame": "world", static camera)
                "axes": "opencv"},             optional camera axes: "opencv" (x right, y down, z forward; default) or
                                               "opengl" (x right, y up, z backward)
     "hand_pose": {"representation": "full",  "full" (15 x 3 axis-angle) or "pca" (MANO hands_components[:k])
                   "mean": "flat"},            "flat": zeros = flat hand (smplx flat_hand_mean=True);
                                               "mean_relative": relative to MANO's hands_mean (smplx's default
                                               flat_hand_mean=False, manopth, ARCTIC, DexYCB, HOT3D)
     "transl": "wrist",                        "wrist" or "mano" (meaning below)
     "shape_convention": "released",           optional; "released" (plain smplx / manopth, the default) or
                                               "left_fixed" (left-hand shape fix, e.g. HOT3D's toolkit)
     "recording": "session-3",                 optional; clips of one recording share a train/test split
     "license": "...", "attribution": "..."}   optional; default: "user data"

The meaning of ``transl``:

* ``"wrist"``: the position of the WRIST JOINT (MANO joint 0, the root of the kinematic tree) in the clip's frame.
  This is what PELA stores (:mod:`modeling_pela.hand_motion`), so nothing is converted.
* ``"mano"``: the ``transl`` argument of ``smplx.MANO`` (manopth's ``th_trans``, ARCTIC's ``trans``, HOT3D's
  ``t_xyz``): a rigid offset added to every vertex and joint AFTER posing. Axes: those of the clip's frame (the same
  frame ``global_orient`` rotates into); units: those of ``units``; origin: the origin of the MANO template's own
  coordinates, which is NOT the wrist. smplx rotates the hand about the rest wrist joint
  ``J_0(betas) = J_regressor[0] @ (v_template + shapedirs @ betas)`` (a few cm from the template origin, and
  shape-dependent), which posing leaves in place, so the posed wrist is ``transl + J_0(betas)`` whatever the pose and
  orientation; the converter adds J_0(betas) (:meth:`~datasets_unihand_mix.sources.ManoModel.smplx_transl_to_wrist`,
  needs ``mano_dir``). Check: ``smplx.MANO(...)(..., transl=transl).joints[:, 0] == transl + J_0(betas)``.

Everything is converted to PELA's convention (:mod:`modeling_pela.hand_motion`): flat full axis-angle finger pose,
global orientation and wrist-joint position in the OpenCV camera frame of ``frames/``, metres; then cut into 1-10 s
clips of whole 15-frame chunks at 15 fps (:func:`~datasets_unihand_mix.sources.segment_recording`; with a per-frame
``world_to_camera``, see ``camera_frame``). Every malformed input raises one :class:`SourceDataError` naming the
file, the clip, the field and the fix.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from modeling_pela.hand_motion import HAND_SIDES, SHAPE_CONVENTIONS

from ..sources import (
    CAMERA_FRAMES,
    ImageFiles,
    ManoModel,
    SourceClip,
    SourceDataError,
    hand_motion,
    lab_clips,
    load_mano_models,
    read_array,
    segment_recording,
)

SOURCE = "custom"
DEFAULT_LICENSE = "user data"
CLIP_FILE = "clip.json"
MOTION_FILE = "motion.npz"
FRAMES_DIR = "frames"
FORMAT_DOCS = "the README's 'Your own data' section or datasets_unihand_mix/converters/custom.py"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
UNITS = {"m": 1.0, "mm": 1e-3}
FRAMES = ("camera", "world")
AXES = ("opencv", "opengl")
REPRESENTATIONS = ("full", "pca")
MEANS = ("flat", "mean_relative")
TRANSLS = ("wrist", "mano")
# camera_from_opengl: OpenGL camera coordinates (y up, z backward) -> OpenCV (y down, z forward)
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


class _Clip:
    """Error messages of one clip folder: ``fail(file, field, problem, fix)``."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.name = folder, folder.name

    def where(self, file: str) -> str:
        return f"{self.folder / file} (clip '{self.name}')"

    def fail(self, file: str, field: str, problem: str, fix: str) -> SourceDataError:
        return SourceDataError(f"{self.where(file)}: field '{field}' {problem}; fix: {fix}")

    def option(self, spec: Mapping[str, Any], key: str, choices: tuple[str, ...], field: str, default: Any = None):
        value = spec.get(key, default)
        if value not in choices:
            problem = "is missing" if value is None else f"is {value!r}, an unknown option"
            raise self.fail(CLIP_FILE, field, problem, f"set it to one of {list(choices)} (see {FORMAT_DOCS})")
        return value

    def array(self, data: Mapping[str, Any], key: str, shape: tuple, num_frames: int | None, fix: str) -> np.ndarray:
        try:
            return read_array(data, key, shape, self.where(MOTION_FILE), num_frames)
        except SourceDataError as err:
            raise SourceDataError(f"{err}; fix: {fix}") from err


def _read_json(clip: _Clip) -> dict[str, Any]:
    path = clip.folder / CLIP_FILE
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SourceDataError(f"{clip.where(CLIP_FILE)}: cannot read ({err}); fix: write a JSON object") from err
    if not isinstance(spec, dict):
        raise SourceDataError(f"{clip.where(CLIP_FILE)}: expected a JSON object; fix: see {FORMAT_DOCS}")
    return spec


def _read_npz(clip: _Clip) -> dict[str, np.ndarray]:
    try:
        with np.load(clip.folder / MOTION_FILE) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise SourceDataError(f"{clip.where(MOTION_FILE)}: cannot read ({err}); fix: write it with np.savez") from err


def _hand(
    clip: _Clip, arrays: dict, side: str, spec: dict, num_frames: int | None, model: ManoModel, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(flat pose (T, 45), orient (T, 3), wrist (T, 3) metres, betas (10,), valid (T,)) of one hand, clip frame."""
    pose_spec = spec.get("hand_pose") if isinstance(spec.get("hand_pose"), dict) else {}
    representation = clip.option(pose_spec, "representation", REPRESENTATIONS, "hand_pose.representation")
    mean = clip.option(pose_spec, "mean", MEANS, "hand_pose.mean")
    transl_kind = clip.option(spec, "transl", TRANSLS, "transl")
    key = f"{side}_hand_pose"
    raw = arrays.get(key)
    if raw is None or not np.ndim(raw):
        raise clip.fail(MOTION_FILE, key, "is missing", f"write the {side} hand's arrays, or drop it from 'hands'")
    num_frames = np.shape(raw)[0] if num_frames is None else num_frames
    valid = np.ones(num_frames, dtype=bool)
    if f"{side}_valid" in arrays:
        valid = np.asarray(arrays[f"{side}_valid"])
        if valid.shape != (num_frames,) or valid.dtype.kind not in "bi":
            raise clip.fail(MOTION_FILE, f"{side}_valid", f"has shape {valid.shape} and dtype {valid.dtype}",
                            f"write a ({num_frames},) bool array, True where the {side} hand is annotated")  # fmt: skip
        valid = valid.astype(bool)
    # frames marked invalid may hold anything (NaN): zero them before validation
    fields = {name: arrays.get(f"{side}_{name}") for name in ("hand_pose", "global_orient", "transl")}
    for name, value in fields.items():
        if value is not None and np.ndim(value) >= 1 and np.shape(value)[0] == len(valid):
            fields[name] = np.where(valid.reshape((-1,) + (1,) * (np.ndim(value) - 1)), value, 0.0)
    masked = {f"{side}_{name}": value for name, value in fields.items() if value is not None}
    masked[f"{side}_betas"] = arrays.get(f"{side}_betas")
    nan_fix = f"replace the bad frames or mark them False in '{side}_valid'"
    if representation == "full":
        shape = (None, 15, 3) if np.ndim(raw) == 3 else (None, 45)
        fix = f"write (T, 45) or (T, 15, 3) axis-angle for hand_pose.representation 'full'; {nan_fix}"
        pose = clip.array(masked, key, shape, num_frames, fix).reshape(-1, 45)
    else:
        k = np.shape(raw)[1] if np.ndim(raw) == 2 else 0
        fix = f"write (T, k) PCA coefficients, 1 <= k <= 45, for hand_pose.representation 'pca'; {nan_fix}"
        pose = clip.array(masked, key, (None, k if 1 <= k <= 45 else 45), num_frames, fix)
        pose = model.pca_to_axis_angle(pose)
    if mean == "mean_relative":
        pose = model.mean_relative_to_flat(pose)
    orient_fix = f"write ({num_frames}, 3) axis-angle (radians), one row per frame; {nan_fix}"
    orient = clip.array(masked, f"{side}_global_orient", (None, 3), num_frames, orient_fix)
    transl_fix = f"write ({num_frames}, 3) positions in clip.json 'units'; {nan_fix}"
    transl = clip.array(masked, f"{side}_transl", (None, 3), num_frames, transl_fix) * scale
    betas = clip.array(masked, f"{side}_betas", (10,), None, "write (10,) MANO betas (zeros for the mean shape)")
    wrist = model.smplx_transl_to_wrist(transl, betas) if transl_kind == "mano" else transl
    return pose, orient, wrist, betas, valid


def _extrinsics(clip: _Clip, spec: dict, arrays: dict, num_frames: int, scale: float) -> np.ndarray:
    """World (or camera, in the file's axes) -> OpenCV camera: (4, 4) or (T, 4, 4), metres."""
    camera = spec.get("camera") or {}
    if not isinstance(camera, dict):
        raise clip.fail(CLIP_FILE, "camera", "is not an object", 'write {"world_to_camera": 4 x 4, ...}')
    axes = clip.option(camera, "axes", AXES, "camera.axes", default="opencv")
    if "intrinsics" in camera:
        fix = "write the 3 x 3 pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels"
        try:
            read_array(camera, "intrinsics", (3, 3), clip.where(CLIP_FILE), name="camera.intrinsics", per_frame=False)
        except SourceDataError as err:
            raise SourceDataError(f"{err}; fix: {fix}") from err
    if clip.option(spec, "frame", FRAMES, "frame") == "camera":
        extrinsics = np.eye(4)
    elif "world_to_camera" in arrays:
        fix = f"write ({num_frames}, 4, 4) rigid world -> camera transforms, one per frame"
        extrinsics = clip.array(arrays, "world_to_camera", (None, 4, 4), num_frames, fix).copy()
    elif "world_to_camera" in camera:
        where = clip.where(CLIP_FILE)
        try:
            extrinsics = read_array(camera, "world_to_camera", (4, 4), where, name="camera.world_to_camera",
                                    per_frame=False).copy()  # fmt: skip
        except SourceDataError as err:
            raise SourceDataError(f"{err}; fix: write a 4 x 4 rigid world -> camera transform") from err
    else:
        raise clip.fail(CLIP_FILE, "camera.world_to_camera", "is missing (\"frame\": \"world\")",
                        "give the 4 x 4 world -> camera transform there, or (T, 4, 4) 'world_to_camera' in motion.npz, "
                        "or write the arrays in the camera frame with \"frame\": \"camera\"")  # fmt: skip
    extrinsics[..., :3, 3] *= scale
    rot = extrinsics[..., :3, :3]
    if np.abs(rot @ np.swapaxes(rot, -1, -2) - np.eye(3)).max() > 1e-4 or (np.linalg.det(rot) < 0).any():
        file = CLIP_FILE if extrinsics.ndim == 2 else MOTION_FILE
        fix = "give a rotation (orthonormal, det +1) and a translation"
        raise clip.fail(file, "world_to_camera", "is not a rigid transform", fix)
    return OPENGL_TO_OPENCV @ extrinsics if axes == "opengl" else extrinsics


def _frame_paths(clip: _Clip, num_frames: int) -> list[Path]:
    folder = clip.folder / FRAMES_DIR
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if len(paths) != num_frames:
        raise SourceDataError(
            f"{folder} (clip '{clip.name}'): field 'frames' has {len(paths)} images for {num_frames} motion frames; "
            f"fix: write one {'/'.join(IMAGE_SUFFIXES)} image per motion frame (e.g. 000000.jpg ...), sorted by name"
        )
    return paths


def _images(paths: list[Path], frames: list[int]) -> ImageFiles:
    return ImageFiles([paths[f] for f in frames])


def read_clip(folder: Path, models: dict[str, ManoModel]) -> tuple[dict, dict, dict, np.ndarray, list[Path]]:
    """One clip folder -> (clip.json, {side: HandMotion} at its fps in its stated frame, {side: (T,) valid},
    extrinsics to the OpenCV camera (see :func:`_extrinsics`), image paths)."""
    clip = _Clip(folder)
    spec = _read_json(clip)
    arrays = _read_npz(clip)
    fps = spec.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0:
        raise clip.fail(CLIP_FILE, "fps", f"is {fps!r}", "give the frame rate of motion.npz and frames/ (> 0)")
    sides = spec.get("hands")
    if not isinstance(sides, list) or not sides or len(set(sides)) != len(sides) or not set(sides) <= set(HAND_SIDES):
        raise clip.fail(
            CLIP_FILE, "hands", f"is {sides!r}", 'list the hands in motion.npz: ["left"], ["right"] or both'
        )
    scale = UNITS[clip.option(spec, "units", tuple(UNITS), "units")]
    convention = clip.option(spec, "shape_convention", SHAPE_CONVENTIONS, "shape_convention", default="released")
    instruction = spec.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise clip.fail(CLIP_FILE, "instruction", f"is a {type(instruction).__name__}", "write a string (or null)")
    hands, present, num_frames = {}, {}, None
    for side in sorted(sides):
        pose, orient, wrist, betas, valid = _hand(clip, arrays, side, spec, num_frames, models[convention][side], scale)
        num_frames = pose.shape[0]
        hands[side] = hand_motion(side, pose, orient, wrist, float(fps), betas, str(folder), convention)
        present[side] = valid
    extrinsics = _extrinsics(clip, spec, arrays, num_frames, scale)
    return spec, hands, present, extrinsics, _frame_paths(clip, num_frames)


def iter_clips(
    root: str | os.PathLike,
    mano_dir: str | os.PathLike,
    *,
    camera_frame: str = "clip_start",
    min_seconds: float = 1.0,
    max_seconds: float = 10.0,
    target_fps: float = 15.0,
) -> Iterator[SourceClip]:
    """Stream the clips of every ``<root>/<clip>/clip.json`` (sorted by folder name).

    Args:
        root: folder of clip folders (see the module docstring for the format).
        mano_dir: folder with ``MANO_LEFT.pkl`` / ``MANO_RIGHT.pkl`` (PCA poses, mean-relative poses and
            ``"transl": "mano"`` need the model).
        camera_frame: with per-frame ``world_to_camera``, ``"clip_start"`` or ``"per_frame"`` (see
            :func:`~datasets_unihand_mix.sources.segment_to_camera`).
        min_seconds / max_seconds / target_fps: see :func:`~datasets_unihand_mix.sources.segment_recording`.
    """
    if camera_frame not in CAMERA_FRAMES:
        raise ValueError(f"camera_frame must be one of {CAMERA_FRAMES}, got {camera_frame!r}")
    root = Path(root)
    models = {c: load_mano_models(mano_dir, shape_convention=c) for c in SHAPE_CONVENTIONS}
    for clip_json in sorted(root.glob(f"*/{CLIP_FILE}")):
        folder = clip_json.parent
        spec, hands, present, extrinsics, paths = read_clip(folder, models)
        recording = str(spec.get("recording") or folder.name)
        segments = segment_recording(
            hands, present=present, target_fps=target_fps, min_seconds=min_seconds, max_seconds=max_seconds
        )
        for clip in lab_clips(
            segments,
            source=SOURCE,
            license=str(spec.get("license") or DEFAULT_LICENSE),
            citation=str(spec.get("attribution") or DEFAULT_LICENSE),
            source_fps=float(spec["fps"]),
            recording_id=folder.name,
            extrinsics=extrinsics,
            camera_frame=camera_frame,
            frames=partial(_images, paths),
            metadata={"recording": recording, "camera_frame": camera_frame, "camera": spec.get("camera") or {}},
        ):
            clip.instruction = spec.get("instruction")
            clip.description = spec.get("description")
            yield clip
