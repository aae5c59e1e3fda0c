"""Procedural hand-motion clips: determinism, shapes, plausibility, lab vs wild, rendering, learnability, speed."""

import colorsys
import re
import time

import numpy as np
import pytest
import torch

from datasets_unihand_mix import ProceduralConfig, generate_clip, generate_clips
from datasets_unihand_mix.procedural import CHUNK_LENGTH, COLOURS, SHAPES, pinch_pose
from modeling_pela.mano import BuiltinHandKinematics


@pytest.fixture(scope="module")
def lab_clips():
    return generate_clips(60, ProceduralConfig(style="lab"))


@pytest.fixture(scope="module")
def wild_clips():
    return generate_clips(60, ProceduralConfig(style="wild"))


def assert_same_clip(a, b):
    da, db = a.to_dict(), b.to_dict()
    assert da.keys() == db.keys()
    np.testing.assert_equal(da, db)


def to_table(clip, points):
    """Canonical-camera points -> table frame (z up)."""
    m = clip.camera.table_to_camera
    return (points - m[:3, 3]) @ m[:3, :3]


def palm_normal(joints, side):
    normal = np.cross(joints[..., 5, :] - joints[..., 0, :], joints[..., 17, :] - joints[..., 0, :])
    normal = normal * (1.0 if side == "right" else -1.0)
    return normal / np.linalg.norm(normal, axis=-1, keepdims=True)


@pytest.mark.parametrize("style", ["lab", "wild"])
def test_same_seed_and_index_give_identical_params_and_pixels(style):
    config = ProceduralConfig(style=style, seed=3)
    a, b = generate_clip(7, config), generate_clip(7, config)
    assert_same_clip(a, b)
    for t in (0, a.num_frames - 1):
        np.testing.assert_array_equal(a.render_frame(t), b.render_frame(t))
    other = generate_clip(7, ProceduralConfig(style=style, seed=4))
    assert other.instruction != a.instruction or not np.array_equal(
        next(iter(other.hands.values())).transl, next(iter(a.hands.values())).transl
    )
    assert not np.array_equal(other.render_frame(0), a.render_frame(0))


def test_worker_count_does_not_change_clips_or_frames():
    config = ProceduralConfig(style="wild", image_size=64)
    serial = generate_clips(6, config, num_workers=1, start_index=10, render="boundary")
    parallel = generate_clips(6, config, num_workers=2, start_index=10, render="boundary")
    assert [c.clip_id for c in parallel] == [generate_clip(10 + i, config).clip_id for i in range(6)]
    for a, b in zip(serial, parallel, strict=True):
        assert_same_clip(a, b)
        assert sorted(b._cache["frames"]) == b.boundary_frame_indices()
        for t in b.boundary_frame_indices():
            np.testing.assert_array_equal(a.render_frame(t), b.render_frame(t))
        lazy = generate_clip(int(a.clip_id.rsplit("-", 1)[1]), config)
        np.testing.assert_array_equal(lazy.render_frame(a.num_frames - 1), b.render_frame(b.num_frames - 1))


@pytest.mark.parametrize("size", [64, 128])
def test_shapes_dtypes_and_lengths(lab_clips, wild_clips, size):
    for clip in lab_clips + wild_clips:
        assert clip.num_frames % CHUNK_LENGTH == 0 and 2 * CHUNK_LENGTH <= clip.num_frames <= 6 * CHUNK_LENGTH
        assert clip.fps == 15.0 and 1 <= len(clip.hands) <= 2
        for side, motion in clip.hands.items():
            assert motion.side == side and motion.num_frames == clip.num_frames
            assert motion.hand_pose.shape == (clip.num_frames, 15, 3) and motion.hand_pose.dtype == torch.float32
            assert motion.global_orient.shape == motion.transl.shape == (clip.num_frames, 3)
        for obj in clip.objects:
            assert obj.positions.shape == (clip.num_frames, 3) and obj.rotations.shape == (clip.num_frames, 3, 3)
        assert len(clip.boundary_frame_indices()) == clip.num_chunks + 1
        assert clip.camera.shake.shape == (clip.num_frames, 6)
    clip = generate_clip(0, ProceduralConfig(image_size=size))
    frames = clip.render_boundary_frames()
    assert frames.shape == (clip.num_chunks + 1, size, size, 3) and frames.dtype == np.uint8
    assert clip.camera.intrinsics[0, 2] == size / 2


def test_mano_parameters_are_finite_and_plausible(lab_clips, wild_clips):
    inside = {"lab": [], "wild": []}
    for clip in lab_clips + wild_clips:
        for side, motion in clip.hands.items():
            for field in (motion.hand_pose, motion.global_orient, motion.transl):
                assert torch.isfinite(field).all()
            assert motion.hand_pose.norm(dim=-1).max() < 2.0  # no joint bent beyond ~115 degrees
            flexion = motion.hand_pose[:, :12, 2] * (1 if side == "right" else -1)
            assert flexion.min() > -0.35  # fingers curl towards the palm, never far backwards
            depth = motion.transl[:, 2]
            assert depth.min() > 0.15 and depth.max() < 1.0  # in front of the camera, within arm's reach
            uv, _ = clip.camera.project(motion.transl.double().numpy())
            inside[clip.style].append(((uv >= 0) & (uv < clip.camera.width)).all(-1).mean())
            # at rest the palm faces the table
            normal = palm_normal(clip.joints()[side][0], side) @ clip.camera.table_to_camera[:3, :3]
            assert normal[2] < -0.5, (clip.clip_id, side, normal)
    # wrists project inside the image for most frames (wild cameras are jittered, so hands may leave the view)
    assert np.mean(inside["lab"]) > 0.97 and min(inside["lab"]) > 0.4
    assert np.mean(inside["wild"]) > 0.9


def test_pinch_pose_brings_thumb_tip_to_index_tip():
    kin = BuiltinHandKinematics()

    def gap(closure):
        kp = kin.joints(
            torch.tensor(pinch_pose(closure)),
            torch.zeros(3, dtype=torch.float64),
            torch.zeros(3, dtype=torch.float64),
            "right",
        )
        return float((kp[4] - kp[8]).norm())

    assert gap(1.0) < 0.01 and gap(0.0) > 0.06


def test_instructions_name_the_target_by_colour_and_shape(lab_clips, wild_clips):
    primitives = set()
    for clip in lab_clips + wild_clips:
        primitives.add(clip.primitive)
        text = clip.instruction.lower()
        colours = [o.colour for o in clip.objects]
        assert len(set(colours)) == len(colours) and 2 <= len(colours) <= 4
        if clip.target is None:
            assert clip.primitive == "wave" and clip.task["hands_active"][0] in text
            continue
        assert clip.target.name in text, clip.instruction  # e.g. 'the red cube'
        assert clip.target.shape in SHAPES
        assert sum(o.colour in text.split() for o in clip.objects) <= 2  # the target (and a place destination)
    assert len(primitives) >= 8


def test_hands_move_to_the_target_object(lab_clips):
    checked = 0
    for clip in lab_clips:
        if clip.primitive not in ("grasp", "lift", "pinch", "reach", "rotate", "place"):
            continue
        side = clip.task["hands_active"][0]
        hand = to_table(clip, clip.joints()[side][:, [0, 5, 9, 13, 17, 4, 8]].mean(1))  # hand centre
        target = to_table(clip, clip.target.positions.astype(np.float64))
        dist = np.linalg.norm(hand[:, :2] - target[:, :2], axis=-1)
        assert dist.min() < 0.06 and dist[0] > dist.min() + 0.08, (clip.clip_id, dist.min(), dist[0])
        checked += 1
    assert checked >= 15


def test_lab_and_wild_differ_as_specified(lab_clips, wild_clips):
    lab, wild = lab_clips[:12], wild_clips[:12]

    def high_frequency(img):
        grey = img.astype(np.float64).mean(-1)
        laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
        return np.median(np.abs(laplacian))  # the median pixel is background

    lab_hf = [high_frequency(c.render_frame(0)) for c in lab]
    wild_hf = [high_frequency(c.render_frame(0)) for c in wild]
    assert max(lab_hf) < 1.0 < 5.0 < min(wild_hf), (lab_hf, wild_hf)
    # lab: one fixed camera; wild: a jittered camera per clip and shake within a clip
    for clip in lab:
        np.testing.assert_array_equal(clip.camera.table_to_camera, lab[0].camera.table_to_camera)
        assert not clip.camera.shake.any()
    poses = np.stack([c.camera.table_to_camera for c in wild])
    assert np.abs(poses - poses[0]).max(axis=(1, 2))[1:].min() > 1e-3
    assert all(np.abs(c.camera.shake[:, :3]).max() > 1e-3 for c in wild)
    assert all(c.labelled_for_training for c in lab_clips) and not any(c.labelled_for_training for c in wild_clips)

    def active_speed(clips):
        speeds = []
        for clip in clips:
            for side, _, start, end in clip.task["phases"]:
                if end - start >= 2:
                    transl = clip.hands[side].transl[start:end].numpy()
                    speeds.append(np.linalg.norm(np.diff(transl, axis=0), axis=-1).mean() * clip.fps)
        return np.mean(speeds)

    ratio = active_speed(wild_clips) / active_speed(lab_clips)
    assert 1.6 < ratio < 2.5, ratio
    assert np.mean([c.num_frames for c in wild_clips]) < 0.75 * np.mean([c.num_frames for c in lab_clips])


def skin_mask(img, rgb):
    """Pixels whose colour is a shade of ``rgb`` (the renderer shades skin by 0.7-1.1)."""
    x = img.astype(np.float64)
    ref = np.asarray(rgb, dtype=np.float64)
    scale = (x @ ref) / (ref @ ref)
    return (np.linalg.norm(x - scale[..., None] * ref, axis=-1) < 12) & (scale > 0.65) & (scale < 1.15)


def test_hand_pixels_are_rendered_near_the_projected_hand(lab_clips):
    checked = 0
    for clip in lab_clips[:20]:
        for t in (0, clip.num_frames // 2):
            img = clip.render_frame(t)
            for side in clip.hands:
                centre = clip.joints()[side][t][[0, 5, 9, 13, 17]].mean(0)
                (u, v), depth = clip.camera.project(centre, t)
                if not (0 <= u < img.shape[1] and 0 <= v < img.shape[0]):
                    continue
                mask = skin_mask(img, clip.appearance.skin_rgb[side])
                radius = 0.05 * clip.camera.intrinsics[0, 0] / depth  # 5 cm around the palm centre
                yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
                near = (xx - u) ** 2 + (yy - v) ** 2 < radius**2
                assert mask[near].mean() > 0.25, (clip.clip_id, side, t, mask[near].mean())
                checked += 1
    assert checked >= 30
    assert not skin_mask(lab_clips[0].render_frame(0), (232, 184, 140))[:10].any()  # no skin at the far table


HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in COLOURS.items()}


def colour_centroid(img, colour):
    """Normalized pixel centroid of saturated pixels of ``colour``'s hue ((0.5, 0.5) if none)."""
    x = img.astype(np.float64) / 255
    hi, lo = x.max(-1), x.min(-1)
    span = np.maximum(hi - lo, 1e-6)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hue = np.where(hi == r, ((g - b) / span) % 6, np.where(hi == g, (b - r) / span + 2, (r - g) / span + 4)) / 6
    mask = (np.abs((hue - HUES[colour] + 0.5) % 1 - 0.5) < 0.04) & (span / np.maximum(hi, 1e-6) > 0.5) & (hi > 0.15)
    if not mask.any():
        return np.array([0.5, 0.5])
    v, u = np.nonzero(mask)
    return np.array([u.mean(), v.mean()]) / img.shape[0]


def test_motion_is_learnable_from_instruction_and_first_frame():
    """Kernel ridge regression of the first two chunks' wrist trajectory on (bag of words of the instruction,
    pixel position of the named colour in the first frame) must beat the mean motion, the instruction alone and
    the image alone (positions of every colour) by a wide margin."""
    num, horizon = 700, 2 * CHUNK_LENGTH
    clips = generate_clips(num, ProceduralConfig(style="lab", image_size=64), num_workers=2, render="first")
    words = sorted({w for c in clips for w in re.findall(r"[a-z]+", c.instruction.lower())})
    text, target, scene = [], [], []
    for clip in clips:
        tokens = re.findall(r"[a-z]+", clip.instruction.lower())
        colour = next((w for w in tokens if w in COLOURS), None)
        frame = clip.render_frame(0)
        text.append([w in tokens for w in words])
        target.append(colour_centroid(frame, colour) if colour else np.array([0.5, 0.5]))
        scene.append(np.concatenate([colour_centroid(frame, c) for c in COLOURS]))
    features = {
        "instruction": np.array(text, dtype=np.float64),
        "image": 6 * np.array(scene),
        "conditional": np.c_[np.array(text, dtype=np.float64), 6 * np.array(target)],
    }
    num_train = int(0.8 * num)
    errors = {name: [] for name in ("mean", *features)}
    for side in ("left", "right"):
        idx = np.array([i for i, c in enumerate(clips) if side in c.hands])
        train, test = idx[idx < num_train], idx[idx >= num_train]
        y = {i: clips[i].hands[side].transl[:horizon].double().numpy().ravel() for i in idx}
        y_train, y_test = np.array([y[i] for i in train]), np.array([y[i] for i in test])
        mean = y_train.mean(0)

        def wrist_error(pred, y_test=y_test):
            return np.linalg.norm((pred - y_test).reshape(len(y_test), horizon, 3), axis=-1).mean() * 100

        errors["mean"].append(wrist_error(mean[None]))
        for name, x in features.items():
            a, b = x[train], x[test]
            kernel = np.exp(-0.3 * ((a[:, None] - a[None]) ** 2).sum(-1))
            cross = np.exp(-0.3 * ((b[:, None] - a[None]) ** 2).sum(-1))
            alpha = np.linalg.solve(kernel + 0.1 * np.eye(len(a)), y_train - mean)
            errors[name].append(wrist_error(cross @ alpha + mean))
    err = {name: float(np.mean(v)) for name, v in errors.items()}
    assert err["conditional"] < 0.65 * err["mean"], err
    assert err["conditional"] < 0.8 * err["instruction"], err
    assert err["conditional"] < 0.8 * err["image"], err


def test_200_clips_with_boundary_frames_generate_quickly():
    start = time.perf_counter()
    clips = generate_clips(200, ProceduralConfig(style="wild"), num_workers=2, start_index=1000, render="boundary")
    elapsed = time.perf_counter() - start
    assert sum(len(c._cache["frames"]) for c in clips) == sum(c.num_chunks + 1 for c in clips)
    assert elapsed < 60, f"200 clips took {elapsed:.1f} s"
