"""ARCTIC (bimanual hand-object manipulation, MoCap-fitted MANO) -> :class:`SourceClip`.

On-disk layout (``root`` = ARCTIC's ``arctic_data/data``), documented in github.com/zc-alexfan/arctic
``docs/data/data_doc.md`` and read there by ``src/arctic/preprocess_dataset.py`` (``construct_loader``),
``scripts_data/process_seqs.py`` and ``src/mesh_loaders/arctic.py``::

    raw_seqs/<subject>/<seq>.mano.npy         np.save'd dict {"right" | "left": {"rot": (T, 3), "pose": (T, 45),
                                              "trans": (T, 3), "shape": (10,), "fitting_err": (T,)}}
    raw_seqs/<subject>/<seq>.egocam.dist.npy  np.save'd dict with "R_k_cam_np" (T, 3, 3) and "T_k_cam_np" (T, 3, 1):
                                              world -> egocentric camera of every frame (+ intrinsics, distortion)
    meta/misc.json                            {<subject>: {"world2cam": 8 x (4, 4) world -> allocentric camera,
                                              "intris_mat", "image_size", "ioi_offset": int, "gender"}}
    images/<subject>/<seq>/<view>/<frame + ioi_offset:05d>.jpg    view 0 egocentric, views 1-8 allocentric

Conventions converted from (ARCTIC builds ``smplx.MANO(use_pca=False, flat_hand_mean=False)`` in
``common/body_models.py``): ``pose`` is full axis-angle (no PCA) RELATIVE TO ``hands_mean``; ``rot`` is the global
orientation and ``trans`` smplx's mesh translation, both in the MoCap world frame, metres; ``shape`` holds one betas
vector per hand (the docs say frames x 10, the loader repeats a (10,) vector: both are accepted, the first row is
used). The left-hand shape directions are used as stored (ARCTIC applies no sign fix). MANO frames and images are
synchronous at 30 fps (MANO frame f is image ``f + ioi_offset``).

Camera: views 1-8 are static; view 0 (egocentric) moves, and a clip is expressed in the camera frame of its first
frame (``camera_frame="clip_start"``) or of every frame (``"per_frame"``), see
:func:`~datasets_unihand_mix.sources.segment_to_camera`. ARCTIC has no language annotations: ``instruction`` is None,
the object and the action ("grab" / "use") named by the sequence go to ``metadata``, with the mean MANO fitting error.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

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
    segment_recording,
)

SOURCE = "arctic"
LICENSE = (
    "ARCTIC Data & Software Copyright License for non-commercial scientific research purposes "
    "(https://arctic.is.tue.mpg.de/license.html)"
)
CITATION = (
    "Zicong Fan, Omid Taheri, Dimitrios Tzionas, Muhammed Kocabas, Manuel Kaufmann, Michael J. Black, Otmar Hilliges. "
    "ARCTIC: A Dataset for Dexterous Bimanual Hand-Object Manipulation. CVPR 2023."
)
FPS = 30.0
# ARCTIC fits with smplx.MANO on the released MANO_LEFT (no shape-direction fix)
SHAPE_CONVENTION = "released"
NUM_VIEWS = 9


def _load_pickled_dict(path: Path) -> dict[str, Any]:
    """An ``np.save``'d python dict."""
    try:
        data = np.load(path, allow_pickle=True)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise SourceDataError(f"{path}: cannot read ({err})") from err
    if not isinstance(data, np.ndarray) or data.shape != () or not isinstance(data.item(), dict):
        raise SourceDataError(f"{path}: expected a dict saved with np.save")
    return data.item()


def _read_hands(path: Path, models: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """World-frame ``{side: HandMotion}`` of a ``.mano.npy`` file and ``{side: (T,) fitting error}``."""
    data = _load_pickled_dict(path)
    hands, errors, num_frames = {}, {}, None
    for side in ("left", "right"):
        params = require_field(data, side, str(path))
        rot = read_array(params, "rot", (None, 3), str(path), num_frames, f"{side}.rot")
        num_frames = rot.shape[0]
        pose = read_array(params, "pose", (None, 45), str(path), num_frames, f"{side}.pose")
        trans = read_array(params, "trans", (None, 3), str(path), num_frames, f"{side}.trans")
        shape = (None, 10) if np.ndim(params.get("shape")) == 2 else (10,)
        betas = read_array(params, "shape", shape, str(path), num_frames, f"{side}.shape").reshape(-1, 10)[0]
        if params.get("fitting_err") is not None:
            errors[side] = read_array(params, "fitting_err", (None,), str(path), num_frames, f"{side}.fitting_err")
        model = models[side]
        flat = model.mean_relative_to_flat(pose)
        wrist = model.smplx_transl_to_wrist(trans, betas)
        hands[side] = hand_motion(side, flat, rot, wrist, FPS, betas, str(path), SHAPE_CONVENTION)
    return hands, errors


def _world_to_camera(root: Path, subject: str, seq: str, view: int, misc: dict, num_frames: int) -> np.ndarray:
    """(T, 4, 4) world -> camera of ``view`` for every frame."""
    if view == 0:
        path = root / "raw_seqs" / subject / f"{seq}.egocam.dist.npy"
        ego = _load_pickled_dict(path)
        rot = read_array(ego, "R_k_cam_np", (None, 3, 3), str(path), num_frames)
        trans = read_array(ego, "T_k_cam_np", (None, 3, 1), str(path), num_frames)
        extrinsics = np.tile(np.eye(4), (num_frames, 1, 1))
        extrinsics[:, :3, :3], extrinsics[:, :3, 3] = rot, trans[:, :, 0]
        return extrinsics
    where = str(root / "meta" / "misc.json")
    world2cam = read_array(
        misc, "world2cam", (NUM_VIEWS - 1, 4, 4), where, name=f"{subject}.world2cam", per_frame=False
    )
    return np.broadcast_to(world2cam[view - 1], (num_frames, 4, 4))


def _images(image_dir: Path, offset: int, frames: list[int]) -> ImageFiles | None:
    """Loader of one view's frames (image files are numbered from ``ioi_offset``); None without images."""
    return ImageFiles([image_dir / f"{f + offset:05d}.jpg" for f in frames]) if image_dir.is_dir() else None


def iter_clips(
    root: str | os.PathLike,
    mano_dir: str | os.PathLike,
    *,
    view: int = 0,
    camera_frame: str = "clip_start",
    min_seconds: float = 1.0,
    max_seconds: float = 10.0,
    target_fps: float = 15.0,
) -> Iterator[SourceClip]:
    """Stream the clips of every ``raw_seqs/<subject>/<seq>.mano.npy`` under ``root`` (sorted), both hands.

    Args:
        root: ARCTIC's ``arctic_data/data`` folder (see the module docstring for the layout).
        mano_dir: folder with ``MANO_LEFT.pkl`` / ``MANO_RIGHT.pkl``.
        view: camera whose frame the motion is expressed in and whose images are attached (0 egocentric, 1-8).
        camera_frame: ``"clip_start"`` or ``"per_frame"`` (matters for the moving egocentric view only).
        min_seconds / max_seconds / target_fps: see :func:`~datasets_unihand_mix.sources.segment_recording`.
    """
    if camera_frame not in CAMERA_FRAMES:
        raise ValueError(f"camera_frame must be one of {CAMERA_FRAMES}, got {camera_frame!r}")
    if not 0 <= view < NUM_VIEWS:
        raise ValueError(f"ARCTIC view must be in 0..{NUM_VIEWS - 1}, got {view}")
    root = Path(root)
    models = load_mano_models(mano_dir, shape_convention=SHAPE_CONVENTION)
    misc_path = root / "meta" / "misc.json"
    try:
        misc_all = json.loads(misc_path.read_text())
    except (OSError, ValueError) as err:
        raise SourceDataError(f"{misc_path}: cannot read ARCTIC's camera/offset metadata ({err})") from err
    for mano_path in sorted(root.glob("raw_seqs/*/*.mano.npy")):
        subject, seq = mano_path.parent.name, mano_path.name[: -len(".mano.npy")]
        misc = require_field(misc_all, subject, str(misc_path))
        offset = int(require_field(misc, "ioi_offset", str(misc_path), f"{subject}.ioi_offset"))
        hands, errors = _read_hands(mano_path, models)
        num_frames = hands["right"].num_frames
        extrinsics = _world_to_camera(root, subject, seq, view, misc, num_frames)
        image_dir = root / "images" / subject / seq / str(view)
        obj, _, rest = seq.partition("_")
        segments = segment_recording(hands, target_fps=target_fps, min_seconds=min_seconds, max_seconds=max_seconds)
        metadata = {"recording": f"{subject}/{seq}", "view": view, "camera_frame": camera_frame, "object": obj}
        for clip in lab_clips(
            segments,
            source=SOURCE,
            license=LICENSE,
            citation=CITATION,
            source_fps=FPS,
            recording_id=f"{subject}/{seq}/view{view}",
            extrinsics=extrinsics,
            camera_frame=camera_frame,
            frames=partial(_images, image_dir, offset),
            metadata={**metadata, "action": rest.split("_")[0]},
        ):
            frames = clip.metadata["source_frames"]
            clip.metadata["fitting_err"] = {side: float(err[frames].mean()) for side, err in errors.items()}
            yield clip
