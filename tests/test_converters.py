"""UniHand-Mix source converters (ARCTIC, DexYCB, HOT3D-Clips) and the shared sources helpers.

Each format test writes a few seconds of a recording in the source's exact on-disk layout from a known ground-truth
motion (world frame, source pose representation, smplx mesh translation, camera extrinsics, JPEG frames), converts it
and checks the clips against the ground truth AND against the keypoints of the source's own smplx call on the written
parameters, moved into the camera frame, using MANO files whose PCA basis is a random rotation.
"""

import pickle

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
    transform_points,
    write_mano_with_pca,
)
from fixtures_converters.writers import IMAGE_SIZE, jpeg_bytes, write_arctic, write_dexycb, write_hot3d, write_tar
from synthetic_mano import synthetic_mano_data

import datasets_unihand_mix.sources as sources
from datasets_unihand_mix.converters import CONVERTERS, arctic, custom, dexycb, get_converter, hot3d, hot3d_sequences
from datasets_unihand_mix.samples import sample_row
from datasets_unihand_mix.schema import unihand_features
from datasets_unihand_mix.sources import (
    ImageFiles,
    ManoModel,
    SourceClip,
    SourceDataError,
    load_mano_models,
    segment_recording,
    world_to_camera,
)
from datasets_unihand_mix.streaming import UniHandMixDataError, validate_sample
from modeling_pela.hand_motion import HandMotion
from modeling_pela.mano import BuiltinHandKinematics, SmplxHandKinematics
from trainers.generation_eval import mano_keypoints


@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory):
    return write_mano_with_pca(tmp_path_factory.mktemp("mano"))


@pytest.fixture(scope="module")
def public_like_mano_dir(tmp_path_factory):
    """Left file with the right file's x shape directions, as in the public MANO release (triggers the fix)."""
    return write_mano_with_pca(tmp_path_factory.mktemp("mano_public"), left_shapedirs_like_right=True)


def check_clip(clip: SourceClip, source: str, max_seconds: float = 10.0) -> None:
    assert clip.source == source and clip.subset == "lab" and clip.license and clip.citation
    assert clip.fps == 15.0 and clip.num_frames % 15 == 0 and 1.0 <= clip.duration <= max_seconds
    assert len(clip.metadata["source_frames"]) == clip.num_frames
    for side, motion in clip.hands.items():
        assert motion.side == side and motion.betas is not None and motion.num_frames == clip.num_frames


def check_motion(kin, motion, truth, frames, world_to_cam, reference_world):
    """Converted motion vs ground truth (pose, wrist in the camera frame) and vs the source's own keypoints."""
    world_to_cam = world_to_cam if world_to_cam.ndim == 2 else world_to_cam[frames]
    np.testing.assert_allclose(motion.hand_pose.reshape(-1, 45).numpy(), truth.flat_pose[frames], atol=1e-4)
    wrist = transform_points(world_to_cam, truth.wrist[frames][:, None])[:, 0]
    np.testing.assert_allclose(motion.transl.numpy(), wrist, atol=1e-5)
    keypoints = kin(motion).double().numpy()
    np.testing.assert_allclose(keypoints, transform_points(world_to_cam, reference_world), atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# ARCTIC


def arctic_fixture(root, mano_dir, num_frames=105):
    truths = {side: make_truth(mano_dir, side, num_frames, 0, seed) for seed, side in ((0, "left"), (10, "right"))}
    ego = moving_camera(num_frames, seed=5)
    allo = np.stack([static_camera(20 + i) for i in range(8)])
    return truths, ego, allo, write_arctic(root, mano_dir, truths, ego, allo)


@pytest.mark.parametrize("view, camera_frame", [(0, "clip_start"), (0, "per_frame"), (3, "clip_start")])
def test_arctic_recovers_ground_truth(tmp_path, mano_dir, view, camera_frame):
    truths, ego, allo, mano_path = arctic_fixture(tmp_path / "arctic", mano_dir)
    clips = list(arctic.iter_clips(tmp_path / "arctic", mano_dir, view=view, camera_frame=camera_frame, max_seconds=2))
    # 105 frames at 30 fps -> 53 frames at 15 fps -> 3 whole chunks -> a 2 s clip and a 1 s clip
    assert [c.num_frames for c in clips] == [30, 15]
    assert clips[0].metadata["source_frames"] == list(range(0, 60, 2))
    assert clips[1].metadata["source_frames"] == list(range(60, 90, 2))
    source = np.load(mano_path, allow_pickle=True).item()
    kin = SmplxHandKinematics(mano_dir)
    for clip in clips:
        check_clip(clip, "arctic", max_seconds=2)
        assert set(clip.hands) == {"left", "right"} and clip.instruction is None
        assert clip.metadata["object"] == "box" and clip.metadata["action"] == "grab"
        frames = clip.metadata["source_frames"]
        if view == 0:
            world_to_cam = np.linalg.inv(ego)
            world_to_cam = world_to_cam[frames[0]] if camera_frame == "clip_start" else world_to_cam
        else:
            world_to_cam = np.linalg.inv(allo[view - 1])
        for side, truth in truths.items():
            params = source[side]
            reference = smplx_keypoints(
                mano_dir,
                side,
                params["shape"],
                params["rot"][frames],
                params["pose"][frames],
                params["trans"][frames],
                use_pca=False,
                flat_hand_mean=False,
            )  # ARCTIC's own layer: smplx.MANO(use_pca=False, flat_hand_mean=False) in the world frame
            check_motion(kin, clip.hands[side], truth, frames, world_to_cam, reference)
            torch.testing.assert_close(clip.hands[side].betas, torch.tensor(truth.betas, dtype=torch.float32))


def test_arctic_frames_are_lazy_and_synchronised(tmp_path, mano_dir, monkeypatch):
    _, _, _, _ = arctic_fixture(tmp_path / "arctic", mano_dir)
    opened = []
    real_open = sources.Image.open
    monkeypatch.setattr(sources.Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    clips = list(arctic.iter_clips(tmp_path / "arctic", mano_dir, view=3, max_seconds=2))
    assert opened == []  # nothing read while converting
    images = clips[1].frames([0, 14])
    assert len(opened) == 2 and all(image.size == IMAGE_SIZE and image.mode == "RGB" for image in images)
    # clip 1 frame 0 is source frame 60, stored as image 62 (ioi_offset 2) of view 3; its red channel encodes 60
    assert opened[0].endswith("images/s01/box_grab_01/3/00062.jpg")
    assert abs(int(images[0].getpixel((4, 3))[0]) - 60) <= 4
    (tmp_path / "arctic/images/s01/box_grab_01/3/00064.jpg").unlink()
    with pytest.raises(SourceDataError, match=r"00064\.jpg: cannot read image of clip frame 1 \(field 'frames'\)"):
        clips[1].frames([1])
    with pytest.raises(IndexError):
        clips[1].frames([15])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda d: d["right"]["pose"].__setitem__((7, 4), np.nan),
            r"box_grab_01\.mano\.npy: field 'right\.pose' contains NaN at frame 7",
        ),
        (lambda d: d["left"].pop("trans"), r"box_grab_01\.mano\.npy: missing field 'left\.trans'"),
        (
            lambda d: d["right"].__setitem__("rot", d["right"]["rot"][:-1]),
            r"field 'right\.rot' has shape \(104, 3\), expected \(105, 3\)",
        ),
        (lambda d: d.pop("left"), r"missing field 'left'"),
    ],
    ids=["nan", "missing-key", "truncated", "missing-hand"],
)
def test_arctic_malformed_inputs_are_named(tmp_path, mano_dir, mutate, message):
    *_, mano_path = arctic_fixture(tmp_path / "arctic", mano_dir)
    data = np.load(mano_path, allow_pickle=True).item()
    mutate(data)
    np.save(mano_path, data)
    with pytest.raises(SourceDataError, match=message):
        list(arctic.iter_clips(tmp_path / "arctic", mano_dir))


def test_arctic_missing_egocam_field(tmp_path, mano_dir):
    arctic_fixture(tmp_path / "arctic", mano_dir)
    path = tmp_path / "arctic/raw_seqs/s01/box_grab_01.egocam.dist.npy"
    data = np.load(path, allow_pickle=True).item()
    data["T_k_cam_np"] = data["T_k_cam_np"][:50]
    np.save(path, data)
    with pytest.raises(
        SourceDataError, match=r"egocam\.dist\.npy: field 'T_k_cam_np' has shape \(50, 3, 1\), expected \(105, 3, 1\)"
    ):
        list(arctic.iter_clips(tmp_path / "arctic", mano_dir, view=0))
    assert len(list(arctic.iter_clips(tmp_path / "arctic", mano_dir, view=1))) == 1  # allocentric views do not need it


# ----------------------------------------------------------------------------------------------------------------------
# DexYCB

SERIALS = {"836212060125": static_camera(1), "932122060861": static_camera(2)}
MASTER = "932122060861"


def dexycb_fixture(root, mano_dir):
    right = make_truth(mano_dir, "right", 72, 45, seed=3)
    left = make_truth(mano_dir, "left", 72, 45, seed=4)
    write_dexycb(root, mano_dir, right, SERIALS, MASTER, missing=range(6))
    write_dexycb(root, mano_dir, left, SERIALS, MASTER, subject="20200813-subject-02", seq="20200813_145612")
    return {"right": right, "left": left}


def test_dexycb_recovers_ground_truth(tmp_path, mano_dir):
    truths = dexycb_fixture(tmp_path / "dexycb", mano_dir)
    clips = list(dexycb.iter_clips(tmp_path / "dexycb", mano_dir))
    assert [(c.clip_id, c.num_frames) for c in clips] == [
        (f"20200709-subject-01/20200709_141841/{MASTER}/000", 30),
        (f"20200813-subject-02/20200813_145612/{MASTER}/000", 30),
    ]
    # the right-hand sequence has no annotation in frames 0-5: its clip starts at frame 6
    assert clips[0].metadata["source_frames"] == list(range(6, 66, 2))
    assert clips[1].metadata["source_frames"] == list(range(0, 60, 2))
    kin = SmplxHandKinematics(mano_dir)
    for clip, (side, truth) in zip(clips, (("right", truths["right"]), ("left", truths["left"])), strict=True):
        check_clip(clip, "dexycb")
        assert list(clip.hands) == [side]
        assert clip.metadata["grasped_object"] == "019_pitcher_base"
        assert clip.metadata["objects"] == ["007_tuna_fish_can", "019_pitcher_base"]
        frames = clip.metadata["source_frames"]
        data = pickle.load(open(mano_dir / f"MANO_{side.upper()}.pkl", "rb"))
        # manopth (ncomps=45, flat_hand_mean=False): full pose = hands_mean + coeffs @ hands_components
        pose_m = np.load(tmp_path / "dexycb" / clip.metadata["recording"] / "pose.npz")["pose_m"][frames, 0]
        full = data["hands_mean"] + pose_m[:, 3:48] @ data["hands_components"]
        reference = smplx_keypoints(
            mano_dir, side, truth.betas, pose_m[:, :3], full, pose_m[:, 48:], use_pca=False, flat_hand_mean=True
        )
        check_motion(kin, clip.hands[side], truth, frames, np.linalg.inv(SERIALS[MASTER]), reference)
        assert clip.frames([29])[0].size == IMAGE_SIZE


def test_dexycb_left_hand_keeps_its_mano_convention_through_the_row(tmp_path, public_like_mano_dir):
    """DexYCB fits left hands with the released MANO_LEFT, whose x shape directions equal the right hand's. With such
    files, a converted left hand (betas ~ N(0, 1)) written to a UniHand-Mix row and read back must give the keypoints
    of the source's own call (plain smplx, no fix) on every forward-kinematics path; the fixed file is up to ~2 cm off."""
    truths = dexycb_fixture(tmp_path / "dexycb", public_like_mano_dir)
    clip = list(dexycb.iter_clips(tmp_path / "dexycb", public_like_mano_dir))[1]
    row = sample_row(clip, split="test")
    validate_sample(row)
    path = tmp_path / "row.parquet"
    datasets.Dataset.from_list([row], features=unihand_features()).to_parquet(str(path))
    mano = datasets.load_dataset("parquet", data_files=str(path), split="train")[0]["mano_left"]  # written, read back
    assert mano["shape_convention"] == "released"
    frames = clip.metadata["source_frames"]
    data = pickle.load(open(public_like_mano_dir / "MANO_LEFT.pkl", "rb"))
    pose_m = np.load(tmp_path / "dexycb" / clip.metadata["recording"] / "pose.npz")["pose_m"][frames, 0]
    full = data["hands_mean"] + pose_m[:, 3:48] @ data["hands_components"]
    betas = truths["left"].betas
    world = smplx_keypoints(
        public_like_mano_dir, "left", betas, pose_m[:, :3], full, pose_m[:, 48:], use_pca=False, flat_hand_mean=True
    )
    expected = transform_points(np.linalg.inv(SERIALS[MASTER]), world)
    kin = SmplxHandKinematics(public_like_mano_dir)
    from_row = mano_keypoints(mano, "left", clip.num_frames, kin).double().numpy()
    motion = HandMotion.from_dict({**mano, "side": "left"})
    np.testing.assert_allclose(from_row, expected, atol=1e-4)
    np.testing.assert_allclose(kin(motion).double().numpy(), expected, atol=1e-4)
    fixed = mano_keypoints({**mano, "shape_convention": "left_fixed"}, "left", clip.num_frames, kin).double().numpy()
    assert np.abs(fixed - expected).max() > 1e-3  # the two conventions really differ on these betas
    np.testing.assert_allclose(fixed[:, 0], expected[:, 0], atol=1e-5)  # the wrist is exact in both
    with pytest.raises(UniHandMixDataError, match=r"mano_left\.shape_convention"):
        validate_sample({**row, "mano_left": {**mano, "shape_convention": None}})


def test_dexycb_other_camera_has_no_frames(tmp_path, mano_dir):
    truths = dexycb_fixture(tmp_path / "dexycb", mano_dir)
    clip = next(dexycb.iter_clips(tmp_path / "dexycb", mano_dir, serial="836212060125"))
    assert clip.frames is None and clip.metadata["camera"] == "836212060125"
    wrist = transform_points(np.linalg.inv(SERIALS["836212060125"]), truths["right"].wrist[range(6, 66, 2)][:, None])
    np.testing.assert_allclose(clip.hands["right"].transl.numpy(), wrist[:, 0], atol=1e-5)


def _edit_meta(seq_dir, edit):
    import yaml

    meta = yaml.safe_load((seq_dir / "meta.yml").read_text())
    edit(meta)
    (seq_dir / "meta.yml").write_text(yaml.safe_dump(meta))


def test_dexycb_malformed_inputs_are_named(tmp_path, mano_dir):
    root = tmp_path / "dexycb"
    truth = make_truth(mano_dir, "right", 72, 45, seed=3)
    seq_dir = write_dexycb(root, mano_dir, truth, SERIALS, MASTER)
    _edit_meta(seq_dir, lambda meta: meta.pop("mano_sides"))
    with pytest.raises(SourceDataError, match=r"meta\.yml: missing field 'mano_sides'"):
        list(dexycb.iter_clips(root, mano_dir))
    _edit_meta(seq_dir, lambda meta: meta.update(mano_sides=["right"]))
    pose_m = np.load(seq_dir / "pose.npz")["pose_m"]
    np.savez(seq_dir / "pose.npz", pose_m=pose_m[:71])
    with pytest.raises(
        SourceDataError, match=r"pose\.npz: field 'pose_m' has shape \(71, 1, 51\), expected \(72, 1, 51\)"
    ):
        list(dexycb.iter_clips(root, mano_dir))
    pose_m[30, 0, 10] = np.nan
    np.savez(seq_dir / "pose.npz", pose_m=pose_m)
    with pytest.raises(SourceDataError, match=r"pose\.npz: field 'pose_m' contains NaN at frame 30"):
        list(dexycb.iter_clips(root, mano_dir))
    with pytest.raises(SourceDataError, match=r"extrinsics\.yml: missing field 'extrinsics\.123'"):
        list(dexycb.iter_clips(root, mano_dir, serial="123"))


# ----------------------------------------------------------------------------------------------------------------------
# HOT3D-Clips


def hot3d_fixture(tar_path, mano_dir, broken=None):
    truths = {side: make_truth(mano_dir, side, 150, 15, seed) for seed, side in ((7, "left"), (8, "right"))}
    truths["left"].betas = truths["right"].betas  # HOT3D shares one MANO shape between the hands
    cam_to_world = moving_camera(150, seed=9)
    present = {"right": np.ones(150, dtype=bool), "left": np.arange(150) < 100}
    write_hot3d(tar_path, mano_dir, truths, cam_to_world, present, broken=broken)
    return truths, cam_to_world


@pytest.mark.parametrize("camera_frame", ["clip_start", "per_frame"])
@pytest.mark.parametrize("mano", ["mano_dir", "public_like_mano_dir"])
def test_hot3d_recovers_ground_truth(tmp_path, request, mano, camera_frame):
    mano_dir = request.getfixturevalue(mano)
    truths, cam_to_world = hot3d_fixture(tmp_path / "hot3d/train_aria/clip-001849.tar", mano_dir)
    clips = list(hot3d.iter_clips(tmp_path / "hot3d", mano_dir, camera_frame=camera_frame))
    # both hands in frames 0-99 (50 frames at 15 fps -> a 3 s clip), then the right hand alone (25 -> a 1 s clip)
    assert [(c.clip_id, sorted(c.hands), c.num_frames) for c in clips] == [
        ("train_aria/clip-001849/214-1/000", ["left", "right"], 45),
        ("train_aria/clip-001849/214-1/001", ["right"], 15),
    ]
    assert clips[1].metadata["source_frames"] == list(range(100, 130, 2))
    kin = SmplxHandKinematics(mano_dir)
    for clip in clips:
        check_clip(clip, "hot3d")
        frames = clip.metadata["source_frames"]
        world_to_cam = np.linalg.inv(cam_to_world)
        world_to_cam = world_to_cam[frames[0]] if camera_frame == "clip_start" else world_to_cam
        for side, motion in clip.hands.items():
            truth = truths[side]
            transl = truth.wrist - rest_wrist(mano_dir, side, truth.betas, fix_left=True)
            reference = smplx_keypoints(
                mano_dir,
                side,
                truth.betas,
                truth.global_orient[frames],
                truth.coeffs[frames],
                transl[frames],
                fix_left=True,
                use_pca=True,
                num_pca_comps=15,
                flat_hand_mean=False,
            )  # hand_tracking_toolkit's MANOHandModel
            check_motion(kin, motion, truth, frames, world_to_cam, reference)
        images = clip.frames([0])
        assert images[0].size == IMAGE_SIZE
        assert abs(int(images[0].getpixel((4, 3))[0]) - frames[0]) <= 4


def test_hot3d_other_stream_and_unlabelled_clips(tmp_path, mano_dir):
    truths, cam_to_world = hot3d_fixture(tmp_path / "hot3d/clip-000001.tar", mano_dir)
    # a test-split clip: frames and cameras, no hands.json
    write_tar(
        tmp_path / "hot3d/test_aria/clip-000002.tar",
        {"000000.cameras.json": b"{}", "000000.image_214-1.jpg": jpeg_bytes(0)},
    )
    clips = list(hot3d.iter_clips(tmp_path / "hot3d", mano_dir, stream="1201-1"))
    assert [c.metadata["recording"] for c in clips] == ["clip-000001", "clip-000001"]  # the unlabelled tar is skipped
    assert all(c.frames is None for c in clips)  # no 1201-1 images in the tar
    camera_pose = cam_to_world[clips[0].metadata["source_frames"][0]].copy()
    camera_pose[:3, 3] += 0.05  # the writer offsets stream 1201-1 from 214-1
    world_to_cam = np.linalg.inv(camera_pose)
    wrist = transform_points(world_to_cam, truths["right"].wrist[clips[0].metadata["source_frames"]][:, None])
    np.testing.assert_allclose(clips[0].hands["right"].transl.numpy(), wrist[:, 0], atol=1e-5)


def test_hot3d_malformed_inputs_are_named(tmp_path, mano_dir):
    hot3d_fixture(tmp_path / "hot3d/clip-000001.tar", mano_dir, broken={12: "wrist_xform"})
    with pytest.raises(
        SourceDataError,
        match=r"clip-000001\.tar:000012\.hands\.json \(frame 12\): missing field 'right\.mano_pose\.wrist_xform'",
    ):
        list(hot3d.iter_clips(tmp_path / "hot3d", mano_dir))
    hot3d_fixture(tmp_path / "hot3d/clip-000001.tar", mano_dir, broken={40: "thetas"})
    with pytest.raises(
        SourceDataError, match=r"000040\.hands\.json \(frame 40\): missing field 'right\.mano_pose\.thetas'"
    ):
        list(hot3d.iter_clips(tmp_path / "hot3d", mano_dir))


# ----------------------------------------------------------------------------------------------------------------------
# segment_recording


def ramp_motion(num_frames: int, fps: float = 15.0, side: str = "right") -> HandMotion:
    """transl.x = frame index, rotations slowly turning: resampled values reveal the source time."""
    t = torch.arange(num_frames, dtype=torch.float32)
    return HandMotion(
        side=side,
        hand_pose=(0.01 * t)[:, None, None].expand(num_frames, 15, 3),
        global_orient=torch.stack([0.01 * t, torch.zeros_like(t), torch.zeros_like(t)], -1),
        transl=torch.stack([t, torch.zeros_like(t), torch.ones_like(t)], -1),
        fps=fps,
    )


@pytest.mark.parametrize(
    "num_frames, fps, min_seconds, max_seconds, lengths",
    [
        (15, 15.0, 1, 10, [15]),
        (14, 15.0, 1, 10, []),  # shorter than one chunk
        (157, 15.0, 1, 10, [150]),  # partial chunk dropped
        (165, 15.0, 1, 10, [150, 15]),
        (165, 15.0, 2, 10, [150]),  # 1 s tail shorter than the 2 s minimum dropped
        (300, 15.0, 1, 4, [60] * 5),
        (61, 30.0, 1, 10, [30]),  # 31 frames at 15 fps
        (58, 30.0, 1, 10, [15]),  # 29 frames at 15 fps -> one chunk
        (1500, 15.0, 0.5, 10, [150] * 10),
    ],
)
def test_segment_lengths(num_frames, fps, min_seconds, max_seconds, lengths):
    segments = segment_recording(
        {"right": ramp_motion(num_frames, fps)}, min_seconds=min_seconds, max_seconds=max_seconds
    )
    assert [s.num_frames for s in segments] == lengths
    assert all(m.fps == 15.0 and m.num_frames == s.num_frames for s in segments for m in s.hands.values())


def test_segment_resamples_30_to_15_fps_exactly():
    segments = segment_recording({"right": ramp_motion(100, 30.0)}, max_seconds=2)
    assert [s.source_frames for s in segments] == [tuple(range(0, 60, 2)), tuple(range(60, 90, 2))]
    for segment in segments:
        motion = segment.hands["right"]
        np.testing.assert_allclose(motion.transl[:, 0].numpy(), segment.source_frames, atol=1e-5)
        np.testing.assert_allclose(
            motion.global_orient[:, 0].numpy(), 0.01 * np.array(segment.source_frames), atol=1e-5
        )


def test_segment_non_integer_ratio_stays_within_half_a_frame():
    (segment,) = segment_recording({"right": ramp_motion(100, 25.0)})
    assert segment.num_frames == 60  # floor(99 * 15 / 25) + 1 = 60 -> 4 chunks
    source_time = segment.hands["right"].transl[:, 0].numpy()
    assert np.abs(source_time - np.arange(60) * 25 / 15).max() < 0.5
    assert np.abs(np.array(segment.source_frames) - source_time).max() <= 0.5


def test_segment_splits_on_presence():
    present = {"right": np.ones(60, dtype=bool), "left": np.arange(60) < 30}
    present["right"][20] = False  # one unannotated right-hand frame
    hands = {"right": ramp_motion(60), "left": ramp_motion(60, side="left")}
    segments = segment_recording(hands, present=present)
    # runs: [0, 20) both, frame 20 left only (too short), [21, 30) both (too short), [30, 60) right only
    assert [(sorted(s.hands), s.source_frames[0], s.num_frames) for s in segments] == [
        (["left", "right"], 0, 15),
        (["right"], 30, 30),
    ]
    again = segment_recording(hands, present=present)  # deterministic
    assert [s.source_frames for s in again] == [s.source_frames for s in segments]
    for first, second in zip(segments, again, strict=True):
        for side, motion in first.hands.items():
            torch.testing.assert_close(motion.transl, second.hands[side].transl, rtol=0, atol=0)


def test_segment_rejects_bad_arguments():
    with pytest.raises(ValueError, match="no whole number"):
        segment_recording({"right": ramp_motion(30)}, min_seconds=1.2, max_seconds=1.8)
    with pytest.raises(ValueError, match="differ in length"):
        segment_recording({"right": ramp_motion(30), "left": ramp_motion(31, side="left")})
    with pytest.raises(ValueError, match="present"):
        segment_recording({"right": ramp_motion(30)}, present={"right": np.ones(29, dtype=bool)})
    with pytest.raises(ValueError, match="no hands"):
        segment_recording({})


# ----------------------------------------------------------------------------------------------------------------------
# MANO / camera helpers, SourceClip, registry


def test_left_shapedirs_fix_follows_the_source_tool_chain(public_like_mano_dir, mano_dir):
    betas = np.random.default_rng(0).normal(size=10)
    for directory, triggers in ((public_like_mano_dir, True), (mano_dir, False)):
        fixed = load_mano_models(directory, shape_convention="left_fixed")["left"]
        raw = load_mano_models(directory, shape_convention="released")["left"]
        assert np.array_equal(fixed.shapedirs[:, 0], -raw.shapedirs[:, 0]) == triggers
        np.testing.assert_allclose(
            fixed.rest_wrist(betas), rest_wrist(directory, "left", betas, fix_left=True), atol=1e-6
        )
        np.testing.assert_allclose(raw.rest_wrist(betas), rest_wrist(directory, "left", betas), atol=1e-6)


def test_mano_file_errors_name_the_file_and_field(tmp_path):
    data = synthetic_mano_data("right")
    del data["hands_components"]
    with open(tmp_path / "MANO_RIGHT.pkl", "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(SourceDataError, match=r"MANO_RIGHT\.pkl: missing field 'hands_components'"):
        ManoModel.load(tmp_path / "MANO_RIGHT.pkl", "right")
    with pytest.raises(FileNotFoundError, match="MANO_LEFT.pkl"):
        load_mano_models(tmp_path, shape_convention="released")


def test_world_to_camera_moves_keypoints_rigidly():
    kin = BuiltinHandKinematics()
    motion = ramp_motion(20)
    static = np.linalg.inv(static_camera(3))
    moving = np.linalg.inv(moving_camera(20, seed=4))
    for extrinsics in (static, moving):
        expected = transform_points(extrinsics, kin(motion).double().numpy())
        np.testing.assert_allclose(kin(world_to_camera(motion, extrinsics)).double().numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="rigid"):
        world_to_camera(motion, np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(20, 4, 4\)"):
        world_to_camera(motion, moving[:5])


def test_source_clip_validation():
    kwargs = dict(clip_id="a/000", source="x", license="l", citation="c", subset="lab", fps=15.0)
    clip = SourceClip(hands={"right": ramp_motion(30)}, **kwargs)
    assert clip.num_frames == 30 and clip.duration == 2.0 and clip.frames is None
    with pytest.raises(ValueError, match="different lengths"):
        SourceClip(hands={"right": ramp_motion(30), "left": ramp_motion(15, side="left")}, **kwargs)
    with pytest.raises(ValueError, match="subset"):
        SourceClip(hands={"right": ramp_motion(30)}, **{**kwargs, "subset": "sim"})
    with pytest.raises(ValueError, match="holds a 'left'"):
        SourceClip(hands={"right": ramp_motion(30, side="left")}, **kwargs)
    with pytest.raises(IndexError):
        ImageFiles([])([0])


def test_registry():
    assert CONVERTERS == {
        "arctic": arctic.iter_clips,
        "dexycb": dexycb.iter_clips,
        "hot3d": hot3d.iter_clips,
        "hot3d_sequences": hot3d_sequences.iter_clips,
        "custom": custom.iter_clips,
    }
    assert get_converter("dexycb") is dexycb.iter_clips
    with pytest.raises(
        ValueError,
        match=r"unknown UniHand-Mix source 'oakink2'.*\['arctic', 'custom', 'dexycb', 'hot3d', 'hot3d_sequences'\]",
    ):
        get_converter("oakink2")
