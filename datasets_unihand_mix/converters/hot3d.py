"""HOT3D-Clips (egocentric hand-object interaction, Aria / Quest 3 headsets, MoCap ground truth) -> :class:`SourceClip`.

On-disk layout, documented in github.com/facebookresearch/hot3d ``hot3d/clips/README.md`` ("Data format") and read
there by ``hot3d/clips/clip_util.py`` and by github.com/facebookresearch/hand_tracking_toolkit
``hand_tracking_toolkit/dataset.py`` (``decode_hand_pose``), ``camera.py`` (``from_json``) and
``hand_models/mano_hand_model.py``::

    <root>/**/clip-<CLIP-ID>.tar          one tar per clip (the train_aria / train_quest3 / ... folders), holding:
        <FRAME-ID:06d>.cameras.json       {<stream-id>: {"calibration": {...}, "T_world_from_camera":
                                          {"translation_xyz": [3], "quaternion_wxyz": [4]}}}   (camera -> world)
        <FRAME-ID:06d>.hands.json         {"left" | "right": {"mano_pose": {"thetas": [15], "wrist_xform": [6]},
                                          "umetrack_pose": ..., ...}}   (a hand, or its mano_pose, may be missing)
        <FRAME-ID:06d>.image_<stream-id>.jpg   Aria: 214-1 (RGB), 1201-1 / 1201-2 (grey); Quest 3: 1201-1 / 1201-2
        __hand_shapes.json__              {"mano": [10] betas shared by both hands, "umetrack": ...}

Conventions converted from (the toolkit's ``MANOHandModel`` is ``smplx`` MANO with ``use_pca=True``,
``num_pca_comps=15`` and smplx's default ``flat_hand_mean=False``): ``thetas`` are 15 PCA coefficients, full pose =
``hands_mean + thetas @ hands_components[:15]``; ``wrist_xform[:3]`` is the global orientation (axis-angle) and
``wrist_xform[3:]`` smplx's mesh translation, both in the world frame, metres; the left hand's shape directions get the
sign fix the toolkit applies. Quaternions are (w, x, y, z). Clips are 150 frames at 30 fps.

Camera: the head-mounted camera of ``stream`` (default: Aria's RGB ``214-1`` when present, else the first stream)
moves; world -> camera is the inverse of its per-frame ``T_world_from_camera`` and a clip is expressed in the camera
frame of its first frame (``camera_frame="clip_start"``) or of every frame (``"per_frame"``). Clips whose tar has no
``hands.json`` (test splits) are skipped. There are no language annotations: ``instruction`` is None.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from modeling_pela.hand_motion import HAND_SIDES
from modeling_pela.rotations import quaternion_to_matrix

from ..sources import (
    CAMERA_FRAMES,
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

SOURCE = "hot3d"
LICENSE = "HOT3D license agreement (https://www.projectaria.com/datasets/hot3d/license/)"
CITATION = (
    "Prithviraj Banerjee, Sindi Shkodrani, Pierre Moulon, Shreyas Hampali, Shangchen Han, Fan Zhang, Linguang Zhang, "
    "Jade Fountain, Edward Miller, Selen Basol, et al. HOT3D: Hand and Object Tracking in 3D from Egocentric "
    "Multi-View Videos. CVPR 2025."
)
FPS = 30.0
# hand_tracking_toolkit fixes the released MANO_LEFT's x shape directions
SHAPE_CONVENTION = "left_fixed"
RGB_STREAM = "214-1"
SHAPES_MEMBER = "__hand_shapes.json__"


class TarImages:
    """Lazy frame loader over JPEG members of a clip tar (``members[i]`` is clip frame ``i``)."""

    def __init__(self, tar_path: str | os.PathLike, members: Sequence[str]) -> None:
        self.tar_path = os.fspath(tar_path)
        self.members = tuple(members)

    def __len__(self) -> int:
        return len(self.members)

    def __call__(self, indices: Sequence[int]) -> list[Image.Image]:
        images = []
        with tarfile.open(self.tar_path) as tar:
            for index in indices:
                if not 0 <= index < len(self.members):
                    raise IndexError(f"frame index {index} out of range for a clip of {len(self.members)} frames")
                member = self.members[index]
                try:
                    data = tar.extractfile(member)
                    if data is None:
                        raise KeyError(member)
                    with Image.open(io.BytesIO(data.read())) as image:
                        images.append(image.convert("RGB"))
                except (KeyError, OSError) as err:
                    raise SourceDataError(
                        f"{self.tar_path}:{member}: cannot read image of clip frame {index} (field 'frames'): {err!r}"
                    ) from err
        return images


def _json_member(tar: tarfile.TarFile, member: str, tar_path: Path) -> Any:
    try:
        data = tar.extractfile(member)
        if data is None:
            raise KeyError(member)
        return json.load(data)
    except KeyError as err:
        raise SourceDataError(f"{tar_path}: missing member '{member}'") from err
    except ValueError as err:
        raise SourceDataError(f"{tar_path}:{member}: invalid JSON ({err})") from err


def pose_matrix(
    pose: Any, where: str, name: str, quaternion: str = "quaternion_wxyz", translation: str = "translation_xyz"
) -> np.ndarray:
    """(4, 4) rigid transform from a HOT3D pose object {quaternion: (w, x, y, z), translation: [3]} (the clips'
    ``T_world_from_camera``, Quest calibrations' ``T_Device_Camera``; ``q_wxyz`` / ``t_xyz`` in hand-pose files)."""
    quat = read_array(pose, quaternion, (4,), where, name=f"{name}.{quaternion}", per_frame=False)
    trans = read_array(pose, translation, (3,), where, name=f"{name}.{translation}", per_frame=False)
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_to_matrix(torch.from_numpy(quat)).numpy()
    matrix[:3, 3] = trans
    return matrix


def _read_clip(
    tar_path: Path, stream: str | None, models: dict
) -> tuple[dict, dict, np.ndarray, str, list[str]] | None:
    """World-frame hands, presence masks, (T, 4, 4) world -> camera, the stream and its image members; None if the
    clip has no hand annotations."""
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
        if not any(name.endswith(".hands.json") for name in names):
            return None
        frame_ids = sorted(int(name.split(".")[0]) for name in names if name.endswith(".cameras.json"))
        if frame_ids != list(range(len(frame_ids))) or not frame_ids:
            raise SourceDataError(f"{tar_path}: field 'cameras.json' frames are not 0..T-1: {frame_ids[:5]}...")
        shapes = _json_member(tar, SHAPES_MEMBER, tar_path)
        betas = read_array(shapes, "mano", (10,), f"{tar_path}:{SHAPES_MEMBER}", per_frame=False)
        num_frames = len(frame_ids)
        extrinsics = np.zeros((num_frames, 4, 4))
        params = {side: np.zeros((num_frames, 21)) for side in HAND_SIDES}  # 15 thetas | 6 wrist_xform
        present = {side: np.zeros(num_frames, dtype=bool) for side in HAND_SIDES}
        for frame in frame_ids:
            member = f"{frame:06d}.cameras.json"
            cameras = _json_member(tar, member, tar_path)
            if not isinstance(cameras, dict) or not cameras:
                raise SourceDataError(f"{tar_path}:{member} (frame {frame}): expected a non-empty mapping of streams")
            if stream is None:
                stream = RGB_STREAM if RGB_STREAM in cameras else min(cameras)
            where = f"{tar_path}:{member} (frame {frame})"
            camera = require_field(cameras, stream, where)
            extrinsics[frame] = rigid_inverse(
                pose_matrix(require_field(camera, "T_world_from_camera", where), where, f"{stream}.T_world_from_camera")
            )
            member = f"{frame:06d}.hands.json"
            hands = _json_member(tar, member, tar_path) if member in names else {}
            where = f"{tar_path}:{member} (frame {frame})"
            if not isinstance(hands, dict):
                raise SourceDataError(f"{where}: expected a mapping of hands, got {type(hands).__name__}")
            for side in HAND_SIDES:
                entry = hands.get(side)
                if not isinstance(entry, dict) or entry.get("mano_pose") is None:
                    continue
                mano = entry["mano_pose"]
                thetas = read_array(mano, "thetas", (15,), where, name=f"{side}.mano_pose.thetas", per_frame=False)
                xform = read_array(
                    mano, "wrist_xform", (6,), where, name=f"{side}.mano_pose.wrist_xform", per_frame=False
                )
                params[side][frame] = np.concatenate([thetas, xform])
                present[side][frame] = True
    motions = {}
    for side, p in params.items():
        model = models[side]
        flat = model.mean_relative_to_flat(model.pca_to_axis_angle(p[:, :15]))
        wrist = model.smplx_transl_to_wrist(p[:, 18:21], betas)
        motions[side] = hand_motion(side, flat, p[:, 15:18], wrist, FPS, betas, str(tar_path), SHAPE_CONVENTION)
    images = [f"{frame:06d}.image_{stream}.jpg" for frame in frame_ids]
    return motions, present, extrinsics, stream, images if images[0] in names else []


def _images(tar_path: Path, images: list[str], frames: list[int]) -> TarImages | None:
    """Loader of the clip's image members for the given frames; None if the stream has no images."""
    return TarImages(tar_path, [images[f] for f in frames]) if images else None


def iter_clips(
    root: str | os.PathLike,
    mano_dir: str | os.PathLike,
    *,
    stream: str | None = None,
    camera_frame: str = "clip_start",
    min_seconds: float = 1.0,
    max_seconds: float = 10.0,
    target_fps: float = 15.0,
) -> Iterator[SourceClip]:
    """Stream the clips of every ``clip-*.tar`` under ``root`` (recursively, sorted by path).

    Args:
        root: a HOT3D-Clips folder (or a parent of several, e.g. ``train_aria`` and ``train_quest3``).
        mano_dir: folder with ``MANO_LEFT.pkl`` / ``MANO_RIGHT.pkl``.
        stream: image stream whose camera frame the motion is expressed in and whose images are attached.
        camera_frame: ``"clip_start"`` or ``"per_frame"`` (see :func:`~datasets_unihand_mix.sources.segment_to_camera`).
        min_seconds / max_seconds / target_fps: see :func:`~datasets_unihand_mix.sources.segment_recording`.
    """
    if camera_frame not in CAMERA_FRAMES:
        raise ValueError(f"camera_frame must be one of {CAMERA_FRAMES}, got {camera_frame!r}")
    root = Path(root)
    models = load_mano_models(mano_dir, shape_convention=SHAPE_CONVENTION)
    for tar_path in sorted(root.rglob("clip-*.tar")):
        clip = _read_clip(tar_path, stream, models)
        if clip is None:
            continue
        hands, present, extrinsics, clip_stream, images = clip
        recording = tar_path.relative_to(root).with_suffix("").as_posix()
        segments = segment_recording(
            hands, present=present, target_fps=target_fps, min_seconds=min_seconds, max_seconds=max_seconds
        )
        yield from lab_clips(
            segments,
            source=SOURCE,
            license=LICENSE,
            citation=CITATION,
            source_fps=FPS,
            recording_id=f"{recording}/{clip_stream}",
            extrinsics=extrinsics,
            camera_frame=camera_frame,
            frames=partial(_images, tar_path, images),
            metadata={"recording": recording, "stream": clip_stream, "camera_frame": camera_frame},
        )
