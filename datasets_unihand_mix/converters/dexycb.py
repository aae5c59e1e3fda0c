"""DexYCB (single-hand grasping of YCB objects, 8 calibrated RGB-D cameras) -> :class:`SourceClip`.

On-disk layout (``root`` = ``$DEX_YCB_DIR``), documented in github.com/NVlabs/dex-ycb-toolkit ``README.md``
("Loading Dataset") and read there by ``dex_ycb_toolkit/sequence_loader.py``, ``dex_ycb_toolkit/dex_ycb.py`` and
``dex_ycb_toolkit/layers/mano_layer.py`` / ``mano_group_layer.py``::

    <subject>/<sequence>/meta.yml      serials, num_frames, ycb_ids, ycb_grasp_ind, mano_sides (list), mano_calib
                                       (list, one per hand), extrinsics (calibration name)
    <subject>/<sequence>/pose.npz      pose_m (T, H, 51) float32 per hand: [global rotation (3) | 45 PCA coefficients
                                       | translation (3)] in the calibration's world frame; an all-zero row = no
                                       annotation in that frame; pose_y (object poses, unused)
    <subject>/<sequence>/<serial>/color_<frame:06d>.jpg            640 x 480 colour frames of each camera
    calibration/extrinsics_<extrinsics>/extrinsics.yml            extrinsics: {<serial>: 12 floats, a row-major
                                       3 x 4 camera -> world transform, ...}, master: <serial>
    calibration/mano_<mano_calib>/mano.yml                        betas: 10 floats

Conventions converted from (the toolkit runs manopth's ``ManoLayer(use_pca=True, ncomps=45, flat_hand_mean=False)``):
the 45 coefficients are PCA coefficients, full pose = ``hands_mean + coeffs @ hands_components``; the translation is
manopth's ``th_trans``, a mesh offset added after skinning, in metres (manopth outputs millimetres, the toolkit divides
by 1000), so wrist = J_0(betas) + trans (the toolkit's ``root_trans``); shape directions are used as stored (manopth
applies no left-hand fix). Cameras record at 30 fps. The motion is expressed in the camera ``serial`` (default: the
calibration's master camera), world -> camera being the inverse of its extrinsics; its colour frames are attached.

DexYCB has no language annotations: ``instruction`` is None; the objects on the table and the grasped one
(``ycb_ids[ycb_grasp_ind]``) go to ``metadata``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modeling_pela.hand_motion import HAND_SIDES

from ..sources import (
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

SOURCE = "dexycb"
LICENSE = "CC BY-NC 4.0 (DexYCB dataset, https://dex-ycb.github.io)"
CITATION = (
    "Yu-Wei Chao, Wei Yang, Yu Xiang, Pavlo Molchanov, Ankur Handa, Jonathan Tremblay, Yashraj S. Narang, "
    "Karl Van Wyk, Umar Iqbal, Stan Birchfield, Jan Kautz, Dieter Fox. DexYCB: A Benchmark for Capturing Hand "
    "Grasping of Objects. CVPR 2021."
)
FPS = 30.0
# DexYCB fits with manopth on the released MANO_LEFT (no shape-direction fix)
SHAPE_CONVENTION = "released"
# YCB object names by DexYCB object id (1-based), as listed in the toolkit's dex_ycb.py.
YCB_CLASSES = (
    "002_master_chef_can", "003_cracker_box", "004_sugar_box", "005_tomato_soup_can", "006_mustard_bottle",
    "007_tuna_fish_can", "008_pudding_box", "009_gelatin_box", "010_potted_meat_can", "011_banana",
    "019_pitcher_base", "021_bleach_cleanser", "024_bowl", "025_mug", "035_power_drill", "036_wood_block",
    "037_scissors", "040_large_marker", "051_large_clamp", "052_extra_large_clamp", "061_foam_brick",
)  # fmt: skip


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SourceDataError(f"{path}: cannot read ({err})") from err
    if not isinstance(data, dict):
        raise SourceDataError(f"{path}: expected a YAML mapping")
    return data


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise SourceDataError(f"{path}: cannot read ({err})") from err


def _object_name(ycb_id: Any, where: str) -> str:
    if not isinstance(ycb_id, int) or not 1 <= ycb_id <= len(YCB_CLASSES):
        raise SourceDataError(f"{where}: field 'ycb_ids' holds an unknown object id {ycb_id!r}")
    return YCB_CLASSES[ycb_id - 1]


def _images(image_dir: Path, frames: list[int]) -> ImageFiles | None:
    """Loader of one camera's colour frames; None without images."""
    return ImageFiles([image_dir / f"color_{f:06d}.jpg" for f in frames]) if image_dir.is_dir() else None


def iter_clips(
    root: str | os.PathLike,
    mano_dir: str | os.PathLike,
    *,
    serial: str | None = None,
    min_seconds: float = 1.0,
    max_seconds: float = 10.0,
    target_fps: float = 15.0,
) -> Iterator[SourceClip]:
    """Stream the clips of every ``<subject>/<sequence>/meta.yml`` under ``root`` (sorted).

    Args:
        root: the DexYCB folder (``$DEX_YCB_DIR``, see the module docstring for the layout).
        mano_dir: folder with ``MANO_LEFT.pkl`` / ``MANO_RIGHT.pkl``.
        serial: camera whose frame the motion is expressed in and whose colour frames are attached (default: the
            master camera of each sequence's extrinsics calibration).
        min_seconds / max_seconds / target_fps: see :func:`~datasets_unihand_mix.sources.segment_recording`.
    """
    root = Path(root)
    models = load_mano_models(mano_dir, shape_convention=SHAPE_CONVENTION)
    for meta_path in sorted(root.glob("*/*/meta.yml")):
        seq_dir = meta_path.parent
        where = str(meta_path)
        meta = _read_yaml(meta_path)
        sides = list(require_field(meta, "mano_sides", where))
        calibs = list(require_field(meta, "mano_calib", where))
        if len(calibs) != len(sides) or len(set(sides)) != len(sides) or not set(sides) <= set(HAND_SIDES):
            raise SourceDataError(
                f"{where}: field 'mano_sides' {sides} must list distinct 'left'/'right' hands, one per 'mano_calib' "
                f"entry {calibs}"
            )
        num_frames = int(require_field(meta, "num_frames", where))
        ycb_ids = list(require_field(meta, "ycb_ids", where))
        grasp = require_field(meta, "ycb_grasp_ind", where)
        if not isinstance(grasp, int) or not 0 <= grasp < len(ycb_ids):
            raise SourceDataError(f"{where}: field 'ycb_grasp_ind' {grasp!r} is not an index into 'ycb_ids'")
        objects = [_object_name(i, where) for i in ycb_ids]

        extr_path = root / "calibration" / f"extrinsics_{require_field(meta, 'extrinsics', where)}" / "extrinsics.yml"
        extr = _read_yaml(extr_path)
        camera = str(serial or require_field(extr, "master", str(extr_path)))
        table = require_field(extr, "extrinsics", str(extr_path))
        if not isinstance(table, dict):
            raise SourceDataError(f"{extr_path}: field 'extrinsics' must map camera serials to 3 x 4 transforms")
        table = {str(key): value for key, value in table.items()}
        cam_to_world = np.eye(4)
        cam_to_world[:3] = read_array(
            table, camera, (12,), str(extr_path), name=f"extrinsics.{camera}", per_frame=False
        ).reshape(3, 4)

        pose_path = seq_dir / "pose.npz"
        pose_m = read_array(_read_npz(pose_path), "pose_m", (None, len(sides), 51), str(pose_path), num_frames)
        hands, present = {}, {}
        for index, (side, calib) in enumerate(zip(sides, calibs, strict=True)):
            mano_yml = root / "calibration" / f"mano_{calib}" / "mano.yml"
            betas = read_array(_read_yaml(mano_yml), "betas", (10,), str(mano_yml), per_frame=False)
            params = pose_m[:, index]
            model = models[side]
            flat = model.mean_relative_to_flat(model.pca_to_axis_angle(params[:, 3:48]))
            wrist = model.smplx_transl_to_wrist(params[:, 48:51], betas)
            hands[side] = hand_motion(side, flat, params[:, :3], wrist, FPS, betas, str(pose_path), SHAPE_CONVENTION)
            present[side] = np.any(params != 0.0, axis=1)

        image_dir = seq_dir / camera
        recording = f"{seq_dir.parent.name}/{seq_dir.name}"
        segments = segment_recording(
            hands, present=present, target_fps=target_fps, min_seconds=min_seconds, max_seconds=max_seconds
        )
        yield from lab_clips(
            segments,
            source=SOURCE,
            license=LICENSE,
            citation=CITATION,
            source_fps=FPS,
            recording_id=f"{recording}/{camera}",
            extrinsics=rigid_inverse(cam_to_world),
            camera_frame="clip_start",
            frames=partial(_images, image_dir),
            metadata={"recording": recording, "camera": camera, "objects": objects, "grasped_object": objects[grasp]},
        )
