"""HOT3D full release (per-sequence ground truth of the VRS-based download) -> :class:`SourceClip`.

On-disk layout, documented in github.com/facebookresearch/hot3d (``README.md``, ``HOT3D_Tutorial.ipynb``) and read
there by ``hot3d/data_loaders/loader_hand_poses.py`` (``parse_hand_poses_from_fileobject``,
``load_mano_shape_params``), ``loader_device_poses.py`` (``load_device_poses``), ``QuestDataProvider.py`` (camera
calibration) and ``ManoHandDataProvider.py`` / ``mano_layer.py`` (``MANOHandModel``)::

    <root>/**/<sequence>/mano_hand_pose_trajectory.jsonl   one JSON object per line:
        {"timestamp_ns": int, "hand_poses": {"0" (left) | "1" (right): {"pose": [15] PCA coefficients,
         "wrist_xform": {"t_xyz": [3], "q_wxyz": [4]}, "betas": [10]}}}       (a hand is absent from lines where it
                                                                               is not annotated)
    <root>/**/<sequence>/headset_trajectory.csv    columns object_uid, timestamp[ns], t_wo_x[m], t_wo_y[m], t_wo_z[m],
                                                   q_wo_w, q_wo_x, q_wo_y, q_wo_z: headset (device) -> world
    <root>/**/<sequence>/camera_models.json        Quest 3 calibration: camera objects (a list, or a mapping by label)
                                                   with "label" and "T_Device_Camera" {"quaternion_wxyz": [4],
                                                   "translation_xyz": [3]}: camera -> headset
    <root>/**/<sequence>/frames/<timestamp_ns>.jpg optional: images of the chosen camera you extracted from
                                                   ``recording.vrs`` (with pyvrs / the HOT3D toolkit), named by the
                                                   hand-pose timestamp; this converter does not decode VRS

Conventions converted from (the toolkit's ``MANOHandModel`` is ``smplx`` MANO with ``use_pca=True``,
``num_pca_comps=15``, smplx's default ``flat_hand_mean=False`` and the left-hand shape fix): full pose =
``hands_mean + pose @ hands_components[:15]``; ``wrist_xform`` is the wrist's rigid pose in the world frame, metres:
its rotation is the MANO global orientation and ``t_xyz`` the smplx translation (the toolkit poses the hand with
zero translation and adds ``t_xyz`` to every landmark), so wrist = ``t_xyz + J_0(betas)``. Both hands share one
shape: the first ``betas`` in the file, as the toolkit reads them. Quaternions are (w, x, y, z). Sequences are 30 fps;
the frame rate is taken from the median hand-pose timestamp step.

Camera: world -> camera is the inverse of ``T_world_device(t) @ T_device_camera`` with the headset pose of the
nearest ``headset_trajectory.csv`` timestamp (a hand frame with no headset pose within half a frame counts as
unannotated); ``camera`` picks a calibration label (default: the first camera of ``camera_models.json``) or
``"device"`` (the headset frame itself: Aria sequences keep their calibration in ``recording.vrs``). As for
HOT3D-Clips, a clip is expressed in the camera frame of its first frame or of every frame (``camera_frame``).
There are no language annotations: ``instruction`` is None.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch

from modeling_pela.hand_motion import HAND_SIDES
from modeling_pela.rotations import matrix_to_axis_angle

from ..sources import (
    CAMERA_FRAMES,
    ImageFiles,
    SourceClip,
    SourceDataError,
    hand_motion,
    lab_clips,
    load_mano_models,
    read_array,
    require_field,
    rigid_inverse,
    segment_recording,
)
from .hot3d import CITATION, LICENSE, SHAPE_CONVENTION, pose_matrix

SOURCE = "hot3d"
HANDS_FILE = "mano_hand_pose_trajectory.jsonl"
HEADSET_FILE = "headset_trajectory.csv"
CALIBRATION_FILE = "camera_models.json"
FRAMES_DIR = "frames"
HAND_IDS = {"0": "left", "1": "right"}
HEADSET_COLUMNS = ("timestamp[ns]", "t_wo_x[m]", "t_wo_y[m]", "t_wo_z[m]", "q_wo_w", "q_wo_x", "q_wo_y", "q_wo_z")
DEVICE = "device"


def read_hand_poses(path: Path) -> tuple[np.ndarray, dict, dict, dict, np.ndarray]:
    """``mano_hand_pose_trajectory.jsonl`` -> (T,) timestamps (ns, sorted), ``{side: (T, 15) PCA pose}``,
    ``{side: (T, 4, 4) wrist -> world}``, ``{side: (T,) annotated}`` (absent frames: zeros / identity) and (10,)
    betas."""
    records: dict[int, dict] = {}
    betas = None
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise SourceDataError(f"{path}: cannot read ({err})") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except ValueError as err:
            raise SourceDataError(f"{where}: invalid JSON ({err})") from err
        timestamp = require_field(record, "timestamp_ns", where)
        if not isinstance(timestamp, int) or timestamp in records:
            raise SourceDataError(f"{where}: field 'timestamp_ns' {timestamp!r} is not a new integer timestamp")
        hands = require_field(record, "hand_poses", where)
        if not isinstance(hands, dict) or not set(hands) <= set(HAND_IDS):
            raise SourceDataError(f"{where}: field 'hand_poses' must map hand ids '0' (left) / '1' (right) to poses")
        entry = {}
        for hand_id, hand in hands.items():
            side = HAND_IDS[hand_id]
            pose = read_array(hand, "pose", (15,), where, name=f"hand_poses.{hand_id}.pose", per_frame=False)
            xform = require_field(hand, "wrist_xform", where, f"hand_poses.{hand_id}.wrist_xform")
            entry[side] = (pose, pose_matrix(xform, where, f"hand_poses.{hand_id}.wrist_xform", "q_wxyz", "t_xyz"))
            if betas is None and hand.get("betas") is not None:
                betas = read_array(hand, "betas", (10,), where, name=f"hand_poses.{hand_id}.betas", per_frame=False)
        records[timestamp] = entry
    if not records:
        raise SourceDataError(f"{path}: no hand poses")
    if betas is None:
        raise SourceDataError(f"{path}: missing field 'betas' (no hand of any line has a MANO shape)")
    timestamps = np.array(sorted(records), dtype=np.int64)
    poses = {side: np.zeros((len(timestamps), 15)) for side in HAND_SIDES}
    wrists = {side: np.tile(np.eye(4), (len(timestamps), 1, 1)) for side in HAND_SIDES}
    present = {side: np.zeros(len(timestamps), dtype=bool) for side in HAND_SIDES}
    for index, timestamp in enumerate(timestamps):
        for side, (pose, xform) in records[int(timestamp)].items():
            poses[side][index], wrists[side][index], present[side][index] = pose, xform, True
    return timestamps, poses, wrists, present, betas


def read_headset(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``headset_trajectory.csv`` -> (N,) timestamps (ns, sorted) and (N, 4, 4) device -> world."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise SourceDataError(f"{path}: cannot read ({err})") from err
    if not rows:
        raise SourceDataError(f"{path}: no headset poses")
    missing = [column for column in HEADSET_COLUMNS if column not in rows[0]]
    if missing:
        raise SourceDataError(f"{path}: missing field(s) {missing} (columns: {list(rows[0])})")
    poses = []
    for number, row in enumerate(rows, start=2):
        where = f"{path}:{number}"
        try:
            values = {column: float(row[column]) for column in HEADSET_COLUMNS}
        except (TypeError, ValueError) as err:
            raise SourceDataError(f"{where}: a field of {list(HEADSET_COLUMNS)} is not a number ({err})") from err
        pose = {"q": [values[f"q_wo_{c}"] for c in "wxyz"], "t": [values[f"t_wo_{c}[m]"] for c in "xyz"]}
        poses.append((int(values["timestamp[ns]"]), pose_matrix(pose, where, "T_world_device", "q", "t")))
    poses.sort(key=lambda item: item[0])
    return np.array([t for t, _ in poses], dtype=np.int64), np.stack([p for _, p in poses])


def read_camera(path: Path, camera: str | None) -> tuple[str, np.ndarray]:
    """The label and (4, 4) camera -> device transform of ``camera`` (default: the first) in ``camera_models.json``."""
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise SourceDataError(
            f"{path}: cannot read the Quest camera calibration ({err}); pass camera='device' for sequences without it "
            "(Aria sequences keep theirs in recording.vrs)"
        ) from err
    except ValueError as err:
        raise SourceDataError(f"{path}: invalid JSON ({err})") from err
    cameras = list(data.values()) if isinstance(data, dict) else data
    if not isinstance(cameras, list) or not cameras or not all(isinstance(c, dict) for c in cameras):
        raise SourceDataError(f"{path}: expected a list (or mapping) of camera objects")
    labels = [str(c.get("label")) for c in cameras]
    label = labels[0] if camera is None else camera
    if label not in labels:
        raise SourceDataError(f"{path}: no camera with field 'label' {label!r}; cameras: {labels}")
    where = f"{path} (camera {label!r})"
    calibration = cameras[labels.index(label)]
    return label, pose_matrix(require_field(calibration, "T_Device_Camera", where), where, "T_Device_Camera")


def headset_extrinsics(
    timestamps: np.ndarray, headset: tuple[np.ndarray, np.ndarray], device_from_camera: np.ndarray, fps: float
) -> tuple[np.ndarray, np.ndarray]:
    """(T, 4, 4) world -> camera at the hand timestamps (nearest headset pose) and (T,) whether that pose lies
    within half a frame."""
    times, device_to_world = headset
    after = np.searchsorted(times, timestamps)
    below, above = np.clip(after - 1, 0, len(times) - 1), np.clip(after, 0, len(times) - 1)
    nearest = np.where(np.abs(times[below] - timestamps) <= np.abs(times[above] - timestamps), below, above)
    close = np.abs(times[nearest] - timestamps) <= 0.5e9 / fps
    return rigid_inverse(device_to_world[nearest] @ device_from_camera), close


def _images(folder: Path, timestamps: np.ndarray, frames: list[int]) -> ImageFiles | None:
    """Loader of the extracted images of a clip's frames; None without a ``frames/`` folder."""
    return ImageFiles([folder / f"{timestamps[f]}.jpg" for f in frames]) if folder.is_dir() else None


def iter_clips(
    root: str | os.PathLike,
    mano_dir: str | os.PathLike,
    *,
    camera: str | None = None,
    camera_frame: str = "clip_start",
    min_seconds: float = 1.0,
    max_seconds: float = 10.0,
    target_fps: float = 15.0,
) -> Iterator[SourceClip]:
    """Stream the clips of every sequence folder under ``root`` holding ``mano_hand_pose_trajectory.jsonl`` (sorted).

    Args:
        root: a folder of HOT3D sequences (the full release's ``<sequence>/`` folders, at any depth).
        mano_dir: folder with ``MANO_LEFT.pkl`` / ``MANO_RIGHT.pkl``.
        camera: calibration label in ``camera_models.json`` (default: its first camera), or ``"device"``.
        camera_frame: ``"clip_start"`` or ``"per_frame"`` (see :func:`~datasets_unihand_mix.sources.segment_to_camera`).
        min_seconds / max_seconds / target_fps: see :func:`~datasets_unihand_mix.sources.segment_recording`.
    """
    if camera_frame not in CAMERA_FRAMES:
        raise ValueError(f"camera_frame must be one of {CAMERA_FRAMES}, got {camera_frame!r}")
    root = Path(root)
    models = load_mano_models(mano_dir, shape_convention=SHAPE_CONVENTION)
    for hands_path in sorted(root.rglob(HANDS_FILE)):
        folder = hands_path.parent
        timestamps, pca, wrist_to_world, present, betas = read_hand_poses(hands_path)
        steps = np.diff(timestamps)
        if not len(steps):
            continue
        fps = float(round(1e9 / np.median(steps), 3))
        if camera == DEVICE:
            label, device_from_camera = DEVICE, np.eye(4)
        else:
            label, device_from_camera = read_camera(folder / CALIBRATION_FILE, camera)
        extrinsics, tracked = headset_extrinsics(
            timestamps, read_headset(folder / HEADSET_FILE), device_from_camera, fps
        )
        hands = {}
        for side in HAND_SIDES:
            model = models[side]
            flat = model.mean_relative_to_flat(model.pca_to_axis_angle(pca[side]))
            orient = matrix_to_axis_angle(torch.from_numpy(wrist_to_world[side][:, :3, :3])).numpy()
            wrist = model.smplx_transl_to_wrist(wrist_to_world[side][:, :3, 3], betas)
            hands[side] = hand_motion(side, flat, orient, wrist, fps, betas, str(hands_path), SHAPE_CONVENTION)
            present[side] &= tracked
        recording = folder.relative_to(root).as_posix()
        segments = segment_recording(
            hands, present=present, target_fps=target_fps, min_seconds=min_seconds, max_seconds=max_seconds
        )
        yield from lab_clips(
            segments,
            source=SOURCE,
            license=LICENSE,
            citation=CITATION,
            source_fps=fps,
            recording_id=f"{recording}/{label}",
            extrinsics=extrinsics,
            camera_frame=camera_frame,
            frames=partial(_images, folder / FRAMES_DIR, timestamps),
            metadata={"recording": recording, "camera": label, "camera_frame": camera_frame, "release": "full"},
        )
