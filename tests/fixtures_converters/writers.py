"""Write small recordings in the exact on-disk layouts of ARCTIC, DexYCB, HOT3D-Clips, HOT3D sequences and the generic
per-clip format from ground truth."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from modeling_pela.rotations import axis_angle_to_matrix

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


HOT3D_T0_NS = 43_000_123_456
HOT3D_STEP_NS = 33_333_333  # 30 fps


def write_hot3d_sequence(
    folder: Path,
    mano_dir: Path,
    truths: dict[str, HandTruth],
    device_to_world: np.ndarray,
    cameras: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    *,
    untracked: range = range(0),
    images: bool = True,
) -> Path:
    """A HOT3D full-release sequence folder: ``mano_hand_pose_trajectory.jsonl`` (hand ids "0" left / "1" right),
    ``headset_trajectory.csv`` (each frame's pose 2 ms after its hand timestamp, a wrong pose 12 ms after it, no rows
    for ``untracked`` frames), Quest ``camera_models.json`` (``cameras``: label -> camera -> device) and
    ``frames/<timestamp_ns>.jpg``; returns the jsonl path."""
    folder.mkdir(parents=True, exist_ok=True)
    betas = next(iter(truths.values())).betas
    hand_ids = {"left": "0", "right": "1"}
    transl = {side: t.wrist - rest_wrist(mano_dir, side, betas, fix_left=True) for side, t in truths.items()}
    lines, rows = [], []
    for frame in range(len(device_to_world)):
        timestamp = HOT3D_T0_NS + frame * HOT3D_STEP_NS
        hand_poses = {}
        for side, truth in truths.items():
            if present[side][frame]:
                rot = axis_angle_to_matrix(torch.from_numpy(truth.global_orient[frame])).numpy()
                hand_poses[hand_ids[side]] = {
                    "pose": truth.coeffs[frame].tolist(),
                    "wrist_xform": {"t_xyz": transl[side][frame].tolist(), "q_wxyz": quat_wxyz(rot)},
                    "betas": betas.tolist(),
                }
        lines.append(json.dumps({"timestamp_ns": timestamp, "hand_poses": hand_poses}))
        if frame not in untracked:
            for offset, pose in ((2_000_000, device_to_world[frame]), (12_000_000, np.eye(4))):
                q = quat_wxyz(pose[:3, :3])
                rows.append(["1", timestamp + offset, *pose[:3, 3], *q])
        if images:
            (folder / "frames").mkdir(exist_ok=True)
            (folder / "frames" / f"{timestamp}.jpg").write_bytes(jpeg_bytes(frame))
    (folder / "mano_hand_pose_trajectory.jsonl").write_text("\n".join(lines) + "\n")
    header = "object_uid,timestamp[ns],t_wo_x[m],t_wo_y[m],t_wo_z[m],q_wo_w,q_wo_x,q_wo_y,q_wo_z\n"
    csv_rows = [",".join(str(v) for v in row) for row in sorted(rows, key=lambda r: r[1])]
    (folder / "headset_trajectory.csv").write_text(header + "\n".join(csv_rows) + "\n")
    calibration = [
        {
            "label": label,
            "serialNumber": f"WMTD{index}",
            "imageWidth": 1280,
            "imageHeight": 1024,
            "projectionModelType": "FISHEYE624",
            "projectionParams": [240.0, 240.0, 640.0, 512.0] + [0.0] * 12,
            "maxSolidAngle": 1.7,
            "T_Device_Camera": {"quaternion_wxyz": quat_wxyz(pose[:3, :3]), "translation_xyz": pose[:3, 3].tolist()},
        }
        for index, (label, pose) in enumerate(cameras.items())
    ]
    (folder / "camera_models.json").write_text(json.dumps(calibration))
    return folder / "mano_hand_pose_trajectory.jsonl"
