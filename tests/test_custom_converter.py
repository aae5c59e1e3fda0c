"""The ``custom`` converter (your own captures in the generic per-clip format, converters/custom.py).

Each test writes one known motion (camera frame, flat full axis-angle pose, wrist position, metres) in some of the
format's representations (PCA / full, flat / mean-relative, m / mm, wrist / MANO translation, camera / world frame,
OpenCV / OpenGL axes), converts it and checks the VALUES against the known motion, and against the keypoints of the
user's own smplx call, using MANO files whose PCA basis is a random rotation.
"""

import pickle
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from fixtures_converters.truth import (
    make_truth,
    moving_camera,
    rest_wrist,
    smplx_keypoints,
    static_camera,
    write_mano_with_pca,
)
from fixtures_converters.writers import write_custom

from datasets_unihand_mix.converters import custom
from datasets_unihand_mix.sources import SourceDataError
from modeling_pela.mano import SmplxHandKinematics
from modeling_pela.rotations import axis_angle_to_matrix, matrix_to_axis_angle

NUM_FRAMES = 60  # at 30 fps: one 2 s clip of 30 frames at 15 fps, source frames 0, 2, ..., 58
FRAMES = list(range(0, 60, 2))


@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory):
    """Left file with the right file's x shape directions (public release), so the shape convention matters."""
    return write_mano_with_pca(tmp_path_factory.mktemp("mano"), left_shapedirs_like_right=True)


@pytest.fixture(scope="module")
def truths(mano_dir):
    return {side: make_truth(mano_dir, side, NUM_FRAMES, 15, seed) for seed, side in ((3, "left"), (4, "right"))}


def mano_file(mano_dir, side):
    with open(mano_dir / f"MANO_{side.upper()}.pkl", "rb") as f:
        return pickle.load(f)


def spec(**overrides):
    base = {
        "instruction": "pick up the red cup",
        "fps": 30,
        "hands": ["left", "right"],
        "units": "m",
        "frame": "camera",
        "hand_pose": {"representation": "full", "mean": "flat"},
        "transl": "wrist",
    }
    return {**base, **overrides}


def arrays(truths, *, pose=None, transl=None, orient=None, scale=1.0):
    """motion.npz arrays of the known (camera-frame) motion, with per-hand overrides (callables of the truth)."""
    out = {}
    for side, truth in truths.items():
        out[f"{side}_hand_pose"] = pose(truth) if pose else truth.flat_pose
        out[f"{side}_global_orient"] = orient(truth) if orient else truth.global_orient
        out[f"{side}_transl"] = (transl(truth) if transl else truth.wrist) * scale
        out[f"{side}_betas"] = truth.betas
    return out


def convert(root, mano_dir, **kwargs):
    return list(custom.iter_clips(root, mano_dir, **kwargs))


def check_known_motion(clip, truths, frames=FRAMES):
    assert clip.source == "custom" and clip.fps == 15.0 and clip.num_frames == len(frames)
    assert clip.metadata["source_frames"] == frames
    for side, truth in truths.items():
        motion = clip.hands[side]
        np.testing.assert_allclose(motion.hand_pose.reshape(-1, 45).numpy(), truth.flat_pose[frames], atol=1e-5)
        np.testing.assert_allclose(motion.global_orient.numpy(), truth.global_orient[frames], atol=1e-5)
        np.testing.assert_allclose(motion.transl.numpy(), truth.wrist[frames], atol=1e-5)
        np.testing.assert_allclose(motion.betas.numpy(), truth.betas, atol=1e-6)


def test_pca_and_full_flat_and_mean_relative_give_the_same_canonical_pose(tmp_path, mano_dir, truths):
    """One known pose written five ways converts to the same flat full axis-angle pose."""
    mean = {side: mano_file(mano_dir, side)["hands_mean"] for side in truths}
    basis = {side: mano_file(mano_dir, side)["hands_components"] for side in truths}
    forms = {
        "full_flat": ({"representation": "full", "mean": "flat"}, lambda t: t.flat_pose),
        "full_flat_15x3": ({"representation": "full", "mean": "flat"}, lambda t: t.flat_pose.reshape(-1, 15, 3)),
        "full_mean_relative": (
            {"representation": "full", "mean": "mean_relative"},
            lambda t: t.flat_pose - mean[t.side],
        ),
        # smplx MANO(use_pca=True, num_pca_comps=15, flat_hand_mean=False): hands_mean + coeffs @ components[:15]
        "pca15_mean_relative": ({"representation": "pca", "mean": "mean_relative"}, lambda t: t.coeffs),
        # flat_hand_mean=True with all 45 components: the coefficients of the flat pose in the (orthonormal) basis
        "pca45_flat": ({"representation": "pca", "mean": "flat"}, lambda t: t.flat_pose @ basis[t.side].T),
    }
    for name, (pose_spec, pose) in forms.items():
        write_custom(tmp_path, name, spec(hand_pose=pose_spec), arrays(truths, pose=pose), NUM_FRAMES)
    clips = convert(tmp_path, mano_dir)
    assert [c.clip_id for c in clips] == [f"{name}/000" for name in sorted(forms)]
    for clip in clips:
        check_known_motion(clip, truths)
        assert clip.instruction == "pick up the red cup" and clip.metadata["recording"] == clip.clip_id[:-4]
        image = clip.frames([1])[0]  # clip frame 1 is source frame 2 (the red channel encodes the frame)
        assert abs(int(image.getpixel((4, 3))[0]) - 2) <= 4


def test_millimetres_and_metres_agree(tmp_path, mano_dir, truths):
    cam_to_world = static_camera(5)
    world = world_arrays(truths, cam_to_world)
    write_custom(tmp_path, "m", spec(frame="world", camera={"world_to_camera": np.linalg.inv(cam_to_world).tolist()}),
                 world, NUM_FRAMES)  # fmt: skip
    world_mm = {k: v * 1000 if k.endswith("_transl") else v for k, v in world.items()}
    world_to_cam_mm = np.linalg.inv(cam_to_world)
    world_to_cam_mm[:3, 3] *= 1000
    write_custom(tmp_path, "mm", spec(frame="world", units="mm", camera={"world_to_camera": world_to_cam_mm.tolist()}),
                 world_mm, NUM_FRAMES)  # fmt: skip
    metres, millimetres = convert(tmp_path, mano_dir)
    for clip in (metres, millimetres):
        check_known_motion(clip, truths)


@pytest.mark.parametrize("convention", ["released", "left_fixed"])
def test_wrist_and_mano_translation_give_the_same_wrist(tmp_path, mano_dir, truths, convention):
    """``transl: "mano"`` is smplx's ``transl`` argument: the converted wrist (and every keypoint, through PELA's MANO
    kinematics) equals what the user's own smplx call on the written parameters gives."""
    fix_left = convention == "left_fixed"
    smplx_transl = {
        side: t.wrist - rest_wrist(mano_dir, side, t.betas, fix_left=fix_left) for side, t in truths.items()
    }
    common = {"shape_convention": convention}
    write_custom(tmp_path, "a_wrist", spec(**common), arrays(truths), NUM_FRAMES)
    write_custom(tmp_path, "b_mano", spec(transl="mano", **common),
                 arrays(truths, transl=lambda t: smplx_transl[t.side]), NUM_FRAMES)  # fmt: skip
    wrist_clip, mano_clip = convert(tmp_path, mano_dir)
    kin = SmplxHandKinematics(mano_dir)
    for clip in (wrist_clip, mano_clip):
        check_known_motion(clip, truths)
        for side, truth in truths.items():
            assert clip.hands[side].shape_convention == convention
            reference = smplx_keypoints(
                mano_dir, side, truth.betas, truth.global_orient[FRAMES], truth.flat_pose[FRAMES],
                smplx_transl[side][FRAMES], fix_left=fix_left, use_pca=False, flat_hand_mean=True,
            )  # fmt: skip
            np.testing.assert_allclose(reference[:, 0], truth.wrist[FRAMES], atol=1e-5)
            np.testing.assert_allclose(kin(clip.hands[side]).double().numpy(), reference, atol=1e-4)
    # J_0 depends on the shape: the "mano" translation is NOT the wrist
    assert np.abs(smplx_transl["right"] - truths["right"].wrist).min(axis=0).max() > 1e-3


def to_world(truth, cam_to_world, transl):
    """Camera-frame orientation and translation -> world frame, per frame (cam_to_world (4, 4) or (T, 4, 4))."""
    pose = np.broadcast_to(cam_to_world, (NUM_FRAMES, 4, 4))
    rot = torch.from_numpy(pose[:, :3, :3].copy())
    orient = matrix_to_axis_angle(rot @ axis_angle_to_matrix(torch.from_numpy(truth.global_orient))).numpy()
    return orient, np.einsum("tij,tj->ti", pose[:, :3, :3], transl) + pose[:, :3, 3]


def world_arrays(truths, cam_to_world, transl=lambda t: t.wrist):
    world = {}
    for side, truth in truths.items():
        orient, position = to_world(truth, cam_to_world, transl(truth))
        world.update({f"{side}_hand_pose": truth.flat_pose, f"{side}_global_orient": orient,
                      f"{side}_transl": position, f"{side}_betas": truth.betas})  # fmt: skip
    return world


def test_world_frame_agrees_with_camera_frame_after_the_extrinsic(tmp_path, mano_dir, truths):
    static = static_camera(6)
    moving = moving_camera(NUM_FRAMES, seed=7)
    write_custom(tmp_path, "a_camera", spec(), arrays(truths), NUM_FRAMES)
    static_spec = spec(frame="world", transl="mano", camera={"world_to_camera": np.linalg.inv(static).tolist()})
    # the MANO translation moves like any point only together with J_0: write the world-frame smplx transl
    static_world = world_arrays(truths, static)
    for side, truth in truths.items():
        static_world[f"{side}_transl"] -= rest_wrist(mano_dir, side, truth.betas)
    write_custom(tmp_path, "b_world_static", static_spec, static_world, NUM_FRAMES)
    moving_world = world_arrays(truths, moving)
    moving_world["world_to_camera"] = np.linalg.inv(moving)
    write_custom(tmp_path, "c_world_moving", spec(frame="world"), moving_world, NUM_FRAMES)
    opengl = arrays(truths, orient=lambda t: flip(t.global_orient), transl=lambda t: t.wrist * [1, -1, -1])
    write_custom(tmp_path, "d_opengl", spec(camera={"axes": "opengl"}), opengl, NUM_FRAMES)
    clips = {c.metadata["recording"]: c for c in convert(tmp_path, mano_dir, camera_frame="per_frame")}
    for name in ("a_camera", "b_world_static", "c_world_moving", "d_opengl"):
        check_known_motion(clips[name], truths)
    # clip_start: the whole clip in the camera of its first frame
    (clip,) = [c for c in convert(tmp_path, mano_dir) if c.metadata["recording"] == "c_world_moving"]
    first = np.linalg.inv(moving[0]) @ moving[FRAMES]
    np.testing.assert_allclose(
        clip.hands["right"].transl.numpy(),
        np.einsum("tij,tj->ti", first[:, :3, :3], truths["right"].wrist[FRAMES]) + first[:, :3, 3],
        atol=1e-5,
    )


def flip(orient):
    """Camera-frame orientation in OpenGL camera axes (y up, z backward)."""
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    return matrix_to_axis_angle(flip @ axis_angle_to_matrix(torch.from_numpy(orient))).numpy()


def test_invalid_frames_are_skipped_even_when_nan(tmp_path, mano_dir, truths):
    data = arrays(truths)
    data["right_hand_pose"] = data["right_hand_pose"].copy()
    data["right_hand_pose"][7] = np.nan
    data["right_valid"] = np.arange(NUM_FRAMES) != 7
    write_custom(tmp_path, "c0", spec(), data, NUM_FRAMES)
    (clip,) = convert(tmp_path, mano_dir)
    # frames 0-6 too short; frames 8-59 (26 frames at 15 fps) hold one 15-frame chunk
    check_known_motion(clip, truths, frames=list(range(8, 38, 2)))


def remove_frame(folder):
    (folder / "frames" / "000031.jpg").unlink()


def set_key(key, value):
    return lambda data: data.__setitem__(key, value)


def nan_at(key, frame):
    def mutate(data):
        data[key] = data[key].astype(np.float64).copy()
        data[key][frame] = np.nan

    return mutate


BAD_SPECS = {
    "unknown-representation": (
        {"hand_pose": {"representation": "axis_angle", "mean": "flat"}},
        r"clip\.json \(clip 'c0'\): field 'hand_pose\.representation' is 'axis_angle', an unknown option; "
        r"fix: set it to one of \['full', 'pca'\]",
    ),
    "missing-mean": (
        {"hand_pose": {"representation": "pca"}},
        r"clip\.json \(clip 'c0'\): field 'hand_pose\.mean' is missing; "
        r"fix: set it to one of \['flat', 'mean_relative'\]",
    ),
    "unknown-units": ({"units": "cm"}, r"clip\.json \(clip 'c0'\): field 'units' is 'cm'.*fix: .*\['m', 'mm'\]"),
    "unknown-transl": ({"transl": "root"}, r"clip\.json \(clip 'c0'\): field 'transl' is 'root'.*\['wrist', 'mano'\]"),
    "unknown-axes": ({"camera": {"axes": "unity"}}, r"field 'camera\.axes' is 'unity'.*fix: .*'opengl'"),
    "no-fps": ({"fps": 0}, r"clip\.json \(clip 'c0'\): field 'fps' is 0; fix: give the frame rate"),
    "bad-hands": ({"hands": ["right", "thumb"]}, r"field 'hands' is \['right', 'thumb'\]; fix: list the hands"),
    "world-without-extrinsics": (
        {"frame": "world"},
        r"clip\.json \(clip 'c0'\): field 'camera\.world_to_camera' is missing.*fix: give the 4 x 4 world -> camera",
    ),
    "non-rigid-extrinsics": (
        {"frame": "world", "camera": {"world_to_camera": np.diag([2.0, 1, 1, 1]).tolist()}},
        r"field 'world_to_camera' is not a rigid transform; fix:",
    ),
    "bad-intrinsics": (
        {"camera": {"intrinsics": [1.0, 2.0]}},
        r"clip\.json \(clip 'c0'\): field 'camera\.intrinsics' has shape \(2,\), expected \(3, 3\); fix:",
    ),
}
BAD_ARRAYS = {
    "nan-pose": (
        nan_at("right_hand_pose", 7),
        r"motion\.npz \(clip 'c0'\): field 'right_hand_pose' contains NaN at frame 7; fix: .*'right_valid'",
    ),
    "nan-transl": (nan_at("left_transl", 12), r"field 'left_transl' contains NaN at frame 12; fix:"),
    "wrong-pose-shape": (
        set_key("right_hand_pose", np.zeros((NUM_FRAMES, 48))),
        r"motion\.npz \(clip 'c0'\): field 'right_hand_pose' has shape \(60, 48\), expected \(60, 45\); "
        r"fix: write \(T, 45\) or \(T, 15, 3\) axis-angle",
    ),
    "truncated-orient": (
        set_key("left_global_orient", np.zeros((NUM_FRAMES - 1, 3))),
        r"field 'left_global_orient' has shape \(59, 3\), expected \(60, 3\); fix: write \(60, 3\) axis-angle",
    ),
    "betas-shape": (set_key("right_betas", np.zeros(16)), r"field 'right_betas' has shape \(16,\), expected \(10\)"),
    "missing-hand": (
        lambda data: data.pop("left_hand_pose"),
        r"field 'left_hand_pose' is missing; fix: write the left",
    ),
    "bad-valid": (
        set_key("right_valid", np.ones(5, bool)),
        r"field 'right_valid' has shape \(5,\).*fix: write a \(60,\)",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_SPECS) + sorted(BAD_ARRAYS) + ["missing-frame"])
def test_bad_input_names_file_clip_field_and_fix(tmp_path, mano_dir, truths, name):
    clip_spec, data = spec(), arrays(truths)
    if name in BAD_SPECS:
        clip_spec.update(BAD_SPECS[name][0])
        message = BAD_SPECS[name][1]
    elif name in BAD_ARRAYS:
        BAD_ARRAYS[name][0](data)
        message = BAD_ARRAYS[name][1]
    else:
        message = r"frames \(clip 'c0'\): field 'frames' has 59 images for 60 motion frames; fix: write one"
    folder = write_custom(tmp_path, "c0", clip_spec, data, NUM_FRAMES)
    if name == "missing-frame":
        remove_frame(folder)
    with pytest.raises(SourceDataError, match=message) as info:
        convert(tmp_path, mano_dir)
    assert str(folder) in str(info.value) and "fix: " in str(info.value)


def test_export_and_load_with_plain_datasets(tmp_path, mano_dir, truths):
    """The README walk-through: RAW/custom/<clip>/ -> `pela data export --config lab` -> load_dataset."""
    for index in range(4):
        write_custom(tmp_path / "raw/custom", f"take_{index}", spec(recording=f"session_{index}"), arrays(truths),
                     NUM_FRAMES)  # fmt: skip
    out = tmp_path / "export"
    command = [sys.executable, "-m", "pela.cli", "data", "export", "--config", "lab", "--test-fraction", "0.5",
               "--data-dir", str(tmp_path / "raw"), "--mano-dir", str(mano_dir), "--output", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [
        row
        for split in ("train", "test")
        if any((out / "data/lab").glob(f"{split}-*.parquet"))
        for row in datasets.load_dataset(str(out), "lab", split=split, streaming=True)
    ]
    assert sorted(row["clip_id"] for row in rows) == [f"take_{i}/000" for i in range(4)]
    for row in rows:
        assert row["source"] == "custom" and row["license"] == "user data" and row["num_frames"] == 30
        assert "pick up the red cup" in row["instruction"].lower() or row["task_type"] == "motion_description"
        for side, truth in truths.items():
            if row[f"mano_{side}"] is not None:
                np.testing.assert_allclose(row[f"mano_{side}"]["transl"], truth.wrist[FRAMES], atol=1e-6)
                assert row[f"mano_{side}"]["shape_convention"] == "released"
