"""The HOT3D full-release converter (converters/hot3d_sequences.py) on sequence folders written in the release's exact
formats (``mano_hand_pose_trajectory.jsonl``, ``headset_trajectory.csv``, Quest ``camera_models.json``) from a known
world-frame motion: values against the ground truth, the toolkit's own smplx call and the HOT3D-Clips converter."""

import json

import numpy as np
import pytest
from fixtures_converters.truth import (
    make_truth,
    moving_camera,
    rest_wrist,
    smplx_keypoints,
    static_camera,
    transform_points,
    write_mano_with_pca,
)
from fixtures_converters.writers import write_hot3d, write_hot3d_sequence

from datasets_unihand_mix.converters import hot3d, hot3d_sequences
from datasets_unihand_mix.sources import SourceDataError
from modeling_pela.mano import SmplxHandKinematics

NUM_FRAMES = 150
CAMERAS = {"camera-left": static_camera(31), "camera-right": static_camera(32)}


@pytest.fixture(scope="module", params=["synthetic", "public_like"])
def mano_dir(request, tmp_path_factory):
    """Also with the public release's left file (equal x shape directions), so that HOT3D's left-hand fix matters."""
    public_like = request.param == "public_like"
    return write_mano_with_pca(tmp_path_factory.mktemp("mano"), left_shapedirs_like_right=public_like)


def sequence_fixture(folder, mano_dir, **kwargs):
    truths = {side: make_truth(mano_dir, side, NUM_FRAMES, 15, seed) for seed, side in ((7, "left"), (8, "right"))}
    truths["left"].betas = truths["right"].betas  # HOT3D shares one MANO shape between the hands
    device_to_world = moving_camera(NUM_FRAMES, seed=9)
    present = {"right": np.ones(NUM_FRAMES, dtype=bool), "left": np.arange(NUM_FRAMES) < 100}
    path = write_hot3d_sequence(folder, mano_dir, truths, device_to_world, CAMERAS, present, **kwargs)
    return truths, device_to_world, path


@pytest.mark.parametrize("camera_frame", ["clip_start", "per_frame"])
def test_recovers_ground_truth_and_the_toolkits_keypoints(tmp_path, mano_dir, camera_frame):
    truths, device_to_world, _ = sequence_fixture(tmp_path / "hot3d_full/P0003_c701bd11", mano_dir)
    clips = list(hot3d_sequences.iter_clips(tmp_path / "hot3d_full", mano_dir, camera_frame=camera_frame))
    # both hands in frames 0-99 (50 frames at 15 fps -> a 3 s clip), then the right hand alone (25 -> a 1 s clip)
    assert [(c.clip_id, sorted(c.hands), c.num_frames) for c in clips] == [
        ("P0003_c701bd11/camera-left/000", ["left", "right"], 45),
        ("P0003_c701bd11/camera-left/001", ["right"], 15),
    ]
    assert clips[1].metadata["source_frames"] == list(range(100, 130, 2))
    kin = SmplxHandKinematics(mano_dir)
    cam_to_world = device_to_world @ CAMERAS["camera-left"]
    for clip in clips:
        assert clip.source == "hot3d" and clip.fps == 15.0 and clip.metadata["source_fps"] == 30.0
        frames = clip.metadata["source_frames"]
        world_to_cam = np.linalg.inv(cam_to_world)
        world_to_cam = world_to_cam[frames[0]] if camera_frame == "clip_start" else world_to_cam[frames]
        for side, motion in clip.hands.items():
            truth = truths[side]
            assert motion.shape_convention == "left_fixed"
            np.testing.assert_allclose(motion.hand_pose.reshape(-1, 45).numpy(), truth.flat_pose[frames], atol=1e-5)
            wrist = transform_points(world_to_cam, truth.wrist[frames][:, None])[:, 0]
            np.testing.assert_allclose(motion.transl.numpy(), wrist, atol=1e-5)
            transl = truth.wrist - rest_wrist(mano_dir, side, truth.betas, fix_left=True)
            reference = smplx_keypoints(
                mano_dir, side, truth.betas, truth.global_orient[frames], truth.coeffs[frames], transl[frames],
                fix_left=True, use_pca=True, num_pca_comps=15, flat_hand_mean=False,
            )  # fmt: skip  # hot3d's MANOHandModel on pose / wrist_xform, in the world frame
            expected = transform_points(world_to_cam, reference)
            np.testing.assert_allclose(kin(motion).double().numpy(), expected, atol=1e-4)
        image = clip.frames([0])[0]  # frames/<timestamp_ns>.jpg of the clip's first source frame
        assert abs(int(image.getpixel((4, 3))[0]) - frames[0]) <= 4


def test_agrees_with_the_hot3d_clips_converter(tmp_path, mano_dir):
    """The same recording in the full release's files and in a HOT3D-Clips tar converts to the same motion."""
    truths, device_to_world, _ = sequence_fixture(tmp_path / "full/seq", mano_dir)
    present = {"right": np.ones(NUM_FRAMES, dtype=bool), "left": np.arange(NUM_FRAMES) < 100}
    cam_to_world = device_to_world @ CAMERAS["camera-left"]
    write_hot3d(tmp_path / "clips/clip-000001.tar", mano_dir, truths, cam_to_world, present)
    full = list(hot3d_sequences.iter_clips(tmp_path / "full", mano_dir))
    clips = list(hot3d.iter_clips(tmp_path / "clips", mano_dir))
    assert len(full) == len(clips) == 2
    for a, b in zip(full, clips, strict=True):
        assert a.metadata["source_frames"] == b.metadata["source_frames"] and sorted(a.hands) == sorted(b.hands)
        for side in a.hands:
            for name in ("hand_pose", "global_orient", "transl", "betas"):
                np.testing.assert_allclose(getattr(a.hands[side], name), getattr(b.hands[side], name), atol=1e-5)


def test_other_camera_device_frame_and_headset_gaps(tmp_path, mano_dir):
    truths, device_to_world, _ = sequence_fixture(tmp_path / "seq", mano_dir, untracked=range(40, 52), images=False)
    frames_of = lambda clips: [c.metadata["source_frames"] for c in clips]  # noqa: E731
    for camera, device_from_camera in (("camera-right", CAMERAS["camera-right"]), ("device", np.eye(4))):
        clips = list(hot3d_sequences.iter_clips(tmp_path, mano_dir, camera=camera))
        # frames 40-51 have no headset pose within half a frame: runs 0-39 (20 -> 15) and 52-99 (24 -> 15)
        assert frames_of(clips)[:2] == [list(range(0, 30, 2)), list(range(52, 82, 2))]
        assert all(c.frames is None and c.metadata["camera"] == camera for c in clips)  # no frames/ folder
        frames = clips[1].metadata["source_frames"]
        world_to_cam = np.linalg.inv(device_to_world[frames[0]] @ device_from_camera)
        wrist = transform_points(world_to_cam, truths["right"].wrist[frames][:, None])[:, 0]
        np.testing.assert_allclose(clips[1].hands["right"].transl.numpy(), wrist, atol=1e-5)


def edit_line(path, frame, edit):
    lines = path.read_text().splitlines()
    record = json.loads(lines[frame])
    edit(record)
    lines[frame] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


BAD_LINES = {
    "missing-pose": (
        lambda r: r["hand_poses"]["1"].pop("pose"),
        r"mano_hand_pose_trajectory\.jsonl:13: missing field 'hand_poses\.1\.pose'",
    ),
    "short-quaternion": (
        lambda r: r["hand_poses"]["1"]["wrist_xform"].__setitem__("q_wxyz", [1.0, 0.0, 0.0]),
        r"jsonl:13: field 'hand_poses\.1\.wrist_xform\.q_wxyz' has shape \(3,\), expected \(4\)",
    ),
    "nan-translation": (
        lambda r: r["hand_poses"]["0"]["wrist_xform"].__setitem__("t_xyz", [0.1, float("nan"), 0.2]),
        r"jsonl:13: field 'hand_poses\.0\.wrist_xform\.t_xyz' contains NaN",
    ),
    "unknown-hand-id": (
        lambda r: r["hand_poses"].__setitem__("2", r["hand_poses"]["1"]),
        r"jsonl:13: field 'hand_poses' must map hand ids '0' \(left\) / '1' \(right\)",
    ),
    "missing-timestamp": (lambda r: r.pop("timestamp_ns"), r"jsonl:13: missing field 'timestamp_ns'"),
}


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_malformed_hand_poses_are_named(tmp_path, mano_dir, name):
    _, _, path = sequence_fixture(tmp_path / "seq", mano_dir, images=False)
    edit_line(path, 12, BAD_LINES[name][0])
    with pytest.raises(SourceDataError, match=BAD_LINES[name][1]):
        list(hot3d_sequences.iter_clips(tmp_path, mano_dir))


def test_malformed_headset_and_calibration_are_named(tmp_path, mano_dir):
    _, _, path = sequence_fixture(tmp_path / "seq", mano_dir, images=False)
    folder = path.parent
    with pytest.raises(SourceDataError, match=r"camera_models\.json: no camera with field 'label' 'rgb'"):
        list(hot3d_sequences.iter_clips(tmp_path, mano_dir, camera="rgb"))
    (folder / "camera_models.json").unlink()
    with pytest.raises(SourceDataError, match=r"camera_models\.json: cannot read the Quest camera.*camera='device'"):
        list(hot3d_sequences.iter_clips(tmp_path, mano_dir))
    csv_path = folder / "headset_trajectory.csv"
    csv_path.write_text(csv_path.read_text().replace("q_wo_w", "qw", 1))
    with pytest.raises(SourceDataError, match=r"headset_trajectory\.csv: missing field\(s\) \['q_wo_w'\]"):
        list(hot3d_sequences.iter_clips(tmp_path, mano_dir, camera="device"))
    path.write_text(path.read_text().replace('"betas"', '"shape"'))
    with pytest.raises(SourceDataError, match=r"jsonl: missing field 'betas'"):
        list(hot3d_sequences.iter_clips(tmp_path, mano_dir, camera="device"))
