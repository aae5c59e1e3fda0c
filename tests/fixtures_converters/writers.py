"""Write small recordings in the exact on-disk layouts of ARCTIC, DexYCB, HOT3D-Clips, HOT3D sequences and the generic
per-clip format from ground truth."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from .truth import HandTruth, quat_wxyz, rest_wrist

IMAGE_SIZE = (8, 6)


def jpeg_bytes(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", IMAGE_SIZE, (index % 256, 40, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_arctic(
    root: Path,
    mano_dir: Path,
    truths: dict[str, HandTruth],
    ego_cam_to_world: np.ndarray,
    allo_cam_to_world: np.ndarray,
    *,
    subject: str = "s01",
    seq: str = "box_grab_01",
    ioi_offset: int = 2,
) -> Path:
    """``raw_seqs/<subject>/<seq>.mano.npy`` (+ egocam, meta/misc.json, egocentric images); returns the .mano.npy."""
    raw = root / "raw_seqs" / subject
    raw.mkdir(parents=True, exist_ok=True)
    mano = {}
    for side, truth in truths.items():
        mano[side] = {
            "rot": truth.global_orient,
            "pose": truth.coeffs,  # flat - hands_mean
            "trans": truth.wrist - rest_wrist(mano_dir, side, truth.betas),
            "shape": truth.betas,
            "fitting_err": np.full(len(truth.wrist), 0.004),
        }
    mano_path = raw / f"{seq}.mano.npy"
    np.save(mano_path, mano)
    world2ego = np.linalg.inv(ego_cam_to_world)
    np.save(
        raw / f"{seq}.egocam.dist.npy",
        {
            "R_k_cam_np": world2ego[:, :3, :3],
            "T_k_cam_np": world2ego[:, :3, 3:],
            "intrinsics": np.eye(3),
            "dist8": np.zeros(8),
        },
    )
    (root / "meta").mkdir(exist_ok=True)
    misc = {
        subject: {
            "world2cam": np.linalg.inv(allo_cam_to_world).tolist(),
            "intris_mat": [np.eye(3).tolist()] * 8,
            "image_size": [list(IMAGE_SIZE)] * 9,
            "ioi_offset": ioi_offset,
            "gender": "female",
        }
    }
    (root / "meta" / "misc.json").write_text(json.dumps(misc))
    for view in (0, 3):
        images = root / "images" / subject / seq / str(view)
        images.mkdir(parents=True)
        for frame in range(len(ego_cam_to_world)):
            (images / f"{frame + ioi_offset:05d}.jpg").write_bytes(jpeg_bytes(frame))
    return mano_path


def write_dexycb(
    root: Path,
    mano_dir: Path,
    truth: HandTruth,
    cam_to_world: dict[str, np.ndarray],
    master: str,
    *,
    missing: range = range(0),
    subject: str = "20200709-subject-01",
    seq: str = "20200709_141841",
    calib: str = "20200709_140042_subject-01",
    extrinsics: str = "20200702_151821",
) -> Path:
    """A DexYCB sequence (meta.yml, pose.npz, master-camera colour frames) and its calibration; returns the sequence."""
    seq_dir = root / subject / seq
    seq_dir.mkdir(parents=True)
    num_frames = len(truth.wrist)
    trans = truth.wrist - rest_wrist(mano_dir, truth.side, truth.betas)
    pose_m = np.concatenate([truth.global_orient, truth.coeffs, trans], axis=1)[:, None].astype(np.float32)
    pose_m[list(missing)] = 0.0
    np.savez(seq_dir / "pose.npz", pose_y=np.zeros((num_frames, 2, 7), np.float32), pose_m=pose_m)
    meta = {
        "serials": sorted(cam_to_world),
        "num_frames": num_frames,
        "ycb_ids": [6, 11],
        "ycb_grasp_ind": 1,
        "mano_sides": [truth.side],
        "mano_calib": [f"{calib}_{truth.side}"],
        "extrinsics": extrinsics,
    }
    (seq_dir / "meta.yml").write_text(yaml.safe_dump(meta))
    extr_dir = root / "calibration" / f"extrinsics_{extrinsics}"
    extr_dir.mkdir(parents=True, exist_ok=True)
    table = {serial: pose[:3].reshape(-1).tolist() for serial, pose in cam_to_world.items()}
    (extr_dir / "extrinsics.yml").write_text(yaml.safe_dump({"extrinsics": table, "master": master}))
    mano_calib = root / "calibration" / f"mano_{calib}_{truth.side}"
    mano_calib.mkdir(parents=True, exist_ok=True)
    (mano_calib / "mano.yml").write_text(yaml.safe_dump({"betas": truth.betas.tolist()}))
    (seq_dir / master).mkdir()
    for frame in range(num_frames):
        (seq_dir / master / f"color_{frame:06d}.jpg").write_bytes(jpeg_bytes(frame))
    return seq_dir


def write_hot3d(
    tar_path: Path,
    mano_dir: Path,
    truths: dict[str, HandTruth],
    cam_to_world: np.ndarray,
    present: dict[str, np.ndarray],
    *,
    broken: dict[int, str] | None = None,
) -> Path:
    """A HOT3D-Clips tar: per-frame cameras.json (streams 214-1 and 1201-1), hands.json, 214-1 images, shapes.

    ``broken`` maps a frame to the key to drop from its right hand's ``mano_pose``.
    """
    betas = next(iter(truths.values())).betas
    trans = {side: t.wrist - rest_wrist(mano_dir, side, betas, fix_left=True) for side, t in truths.items()}
    members: dict[str, bytes] = {"__hand_shapes.json__": json.dumps({"mano": betas.tolist(), "umetrack": {}}).encode()}
    for frame, pose in enumerate(cam_to_world):
        cameras = {
            stream: {
                "calibration": {
                    "label": label,
                    "stream_id": stream,
                    "image_width": IMAGE_SIZE[0],
                    "image_height": IMAGE_SIZE[1],
                },
                "T_world_from_camera": {
                    "translation_xyz": (pose[:3, 3] + offset).tolist(),
                    "quaternion_wxyz": quat_wxyz(pose[:3, :3]),
                },
            }
            for stream, label, offset in (("214-1", "camera-rgb", 0.0), ("1201-1", "camera-slam-left", 0.05))
        }
        hands = {}
        for side, truth in truths.items():
            if present[side][frame]:
                mano_pose = {
                    "thetas": truth.coeffs[frame].tolist(),
                    "wrist_xform": np.concatenate([truth.global_orient[frame], trans[side][frame]]).tolist(),
                }
                if broken and side == "right" and frame in broken:
                    del mano_pose[broken[frame]]
                hands[side] = {"mano_pose": mano_pose, "umetrack_pose": {"joint_angles": [0.0] * 20}}
        members[f"{frame:06d}.cameras.json"] = json.dumps(cameras).encode()
        members[f"{frame:06d}.hands.json"] = json.dumps(hands).encode()
        members[f"{frame:06d}.info.json"] = b"{}"
        members[f"{frame:06d}.image_214-1.jpg"] = jpeg_bytes(frame)
    return write_tar(tar_path, members)


def write_tar(tar_path: Path, members: dict[str, bytes]) -> Path:
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return tar_path


def write_custom(root: Path, name: str, spec: dict, arrays: dict[str, np.ndarray], num_frames: int) -> Path:
    """A clip folder of the generic per-clip format: ``clip.json``, ``motion.npz`` and ``frames/<t:06d>.jpg``."""
    folder = root / name
    (folder / "frames").mkdir(parents=True)
    (folder / "clip.json").write_text(json.dumps(spec))
    np.savez(folder / "motion.npz", **arrays)
    for frame in range(num_frames):
        (folder / "frames" / f"{frame:06d}.jpg").write_bytes(jpeg_bytes(frame))
    return folder
