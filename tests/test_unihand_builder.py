"""UniHand-Mix builder: the procedural toy config, lab converters and the wild folder through curation."""

import io
import json

import numpy as np
import pytest
from fixtures_converters.truth import make_truth, moving_camera, static_camera, write_mano_with_pca
from fixtures_converters.writers import write_arctic, write_dexycb, write_hot3d
from PIL import Image

from datasets_unihand_mix.builder import TEST_INDEX_OFFSET, UniHandMix, toy_split_sizes
from datasets_unihand_mix.converters import get_converter
from datasets_unihand_mix.schema import TASK_TYPES, unihand_features


def pixel(image_value, xy=(2, 2)):
    return Image.open(io.BytesIO(image_value["bytes"])).convert("RGB").getpixel(xy)


@pytest.fixture(scope="module")
def toy():
    builder = UniHandMix(config_name="toy", num_clips=24, image_size=64)
    return builder, {split: list(builder.iter_rows(split)) for split in ("train", "test")}


def test_toy_split_sizes_follow_the_task_mix_and_test_fraction(toy):
    builder, rows = toy
    sizes = toy_split_sizes(builder.config)
    assert sizes == {("wild", "train"): 6, ("wild", "test"): 1, ("lab", "train"): 15, ("lab", "test"): 2}
    for split in ("train", "test"):
        for subset in ("lab", "wild"):
            assert sum(r["subset"] == subset for r in rows[split]) == sizes[(subset, split)]
    small = UniHandMix(config_name="toy", num_clips=3).config
    assert toy_split_sizes(small) == {
        ("wild", "train"): 1,
        ("wild", "test"): 0,
        ("lab", "train"): 1,
        ("lab", "test"): 1,
    }
    only_lab = UniHandMix(config_name="toy", num_clips=10, subsets=("lab",)).config
    assert toy_split_sizes(only_lab)[("lab", "train")] == 9 and toy_split_sizes(only_lab)[("wild", "train")] == 0
    mix = UniHandMix(config_name="toy", num_clips=100, task_mix={"motion_generation": 1.0, "video_only": 1.0}).config
    assert toy_split_sizes(mix)[("wild", "train")] + toy_split_sizes(mix)[("wild", "test")] == 50


def test_toy_rows_match_the_schema_and_the_subset_rules(toy):
    builder, rows = toy
    features = unihand_features()
    ids = [r["id"] for split in rows for r in rows[split]]
    assert len(ids) == len(set(ids)) == 24
    for split, split_rows in rows.items():
        for row in split_rows:
            features.encode_example(row)  # the row fits the schema
            assert row["split"] == split and row["task_type"] in TASK_TYPES
            assert row["num_frames"] == 15 * row["num_chunks"] and len(row["boundary_frames"]) == row["num_chunks"] + 1
            assert row["first_frame"] == row["boundary_frames"][0] and pixel(row["first_frame"]) is not None
            mano = {side: row[f"mano_{side}"] for side in ("left", "right")}
            if row["subset"] == "lab":
                assert row["has_motion_labels"] and not row["labels_are_estimates"] and row["pose_confidence"] == 1.0
                assert row["task_type"] != "video_only" and row["source"] == "procedural-lab"
            elif split == "train":
                assert row["task_type"] == "video_only" and not row["has_motion_labels"]
                assert mano == {"left": None, "right": None}
            else:
                assert row["has_motion_labels"] and row["labels_are_estimates"] and row["task_type"] != "video_only"
            if row["has_motion_labels"]:
                for side in row["hands"]:
                    assert np.asarray(mano[side]["hand_pose"]).shape == (row["num_frames"], 45)
            if row["subset"] == "wild":
                curation = json.loads(row["curation"])
                assert set(curation) == {"visual_filter", "instruction_validation", "temporal_slowdown"}
                assert row["pose_confidence"] >= 0.65 and row["detection_confidence"] >= 0.65
    assert all(r["clip_id"].endswith(f"-{TEST_INDEX_OFFSET + i:07d}") for i, r in enumerate(rows["test"][:2]))
    report = builder.curation_reports["train"]
    assert report.kept == 6 and report.candidates >= 6


def test_toy_build_is_deterministic_and_works_through_datasets(toy, tmp_path):
    _, rows = toy
    again = UniHandMix(config_name="toy", num_clips=24, image_size=64, cache_dir=str(tmp_path))
    first = next(again.iter_rows("test"))
    assert first["id"] == rows["test"][0]["id"] and first["first_frame"] == rows["test"][0]["first_frame"]
    stream = again.as_streaming_dataset(split="train")
    sample = next(iter(stream))
    assert sample["id"] == rows["train"][0]["id"] and isinstance(sample["first_frame"], Image.Image)
    again.download_and_prepare()
    test = again.as_dataset(split="test")
    assert test["id"] == [r["id"] for r in rows["test"]]


def test_real_configs_explain_missing_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass data_dir= an existing folder"):
        next(UniHandMix(config_name="lab", mano_dir=str(tmp_path)).iter_rows("train"))
    with pytest.raises(ValueError, match="pass mano_dir="):
        next(UniHandMix(config_name="mix", data_dir=str(tmp_path)).iter_rows("train"))
    with pytest.raises(FileNotFoundError, match="no wild clip folder"):
        next(UniHandMix(config_name="wild", data_dir=str(tmp_path)).iter_rows("train"))
    with pytest.raises(ValueError, match="unknown lab sources"):
        UniHandMix(config_name="lab", lab_sources=("egodex",))
    with pytest.raises(ValueError, match="split must be one of"):
        next(UniHandMix(config_name="toy").iter_rows("validation"))


# ----------------------------------------------------------------------------------------------------------------------
# lab: the converters on raw source layouts


@pytest.fixture(scope="module")
def lab_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    mano_dir = write_mano_with_pca(root / "mano")
    truths = {side: make_truth(mano_dir, side, 105, 0, seed) for seed, side in ((0, "left"), (10, "right"))}
    allo = np.stack([static_camera(20 + i) for i in range(8)])
    write_arctic(root / "data/arctic", mano_dir, truths, moving_camera(105, seed=5), allo)
    serials = {"836212060125": static_camera(1), "932122060861": static_camera(2)}
    for seed, (subject, seq) in enumerate([("20200709-subject-01", "20200709_141841"), ("s2", "seq2"), ("s3", "seq3")]):
        truth = make_truth(mano_dir, "right", 72, 45, seed=3 + seed)
        write_dexycb(root / "data/dexycb", mano_dir, truth, serials, "932122060861", subject=subject, seq=seq)
    hot = {side: make_truth(mano_dir, side, 60, 15, seed) for seed, side in ((7, "left"), (8, "right"))}
    hot["left"].betas = hot["right"].betas
    present = {side: np.ones(60, dtype=bool) for side in hot}
    write_hot3d(root / "data/hot3d/clip-000001.tar", mano_dir, hot, moving_camera(60, seed=9), present)
    return root / "data", mano_dir


def test_lab_config_converts_every_source_and_splits_by_recording(lab_raw):
    data_dir, mano_dir = lab_raw
    builder = UniHandMix(
        config_name="lab", data_dir=str(data_dir), mano_dir=str(mano_dir), test_fraction=0.5, image_format="png"
    )
    rows = [row for split in ("train", "test") for row in builder.iter_rows(split)]
    expected = {name: list(get_converter(name)(data_dir / name, mano_dir)) for name in ("arctic", "dexycb", "hot3d")}
    assert sorted(r["clip_id"] for r in rows) == sorted(c.clip_id for clips in expected.values() for c in clips)
    assert {r["split"] for r in rows} == {"train", "test"}
    by_recording = {}
    for row in rows:
        clip = next(c for c in expected[row["source"]] if c.clip_id == row["clip_id"])
        by_recording.setdefault(clip.metadata["recording"], set()).add(row["split"])
        assert row["subset"] == "lab" and row["has_motion_labels"] and row["license"] == clip.license
        assert row["hands"] == sorted(clip.hands)
        for side, motion in clip.hands.items():
            np.testing.assert_allclose(row[f"mano_{side}"]["transl"], motion.transl.numpy(), atol=1e-6)
            np.testing.assert_allclose(row[f"mano_{side}"]["betas"], motion.betas.numpy(), atol=1e-6)
        # frame 0 is the source's first frame of the clip (its red channel encodes the source frame index)
        assert abs(pixel(row["first_frame"], (4, 3))[0] - clip.metadata["source_frames"][0]) <= 4
        instruction = {"arctic": "grab the box", "dexycb": "grasp the pitcher base", "hot3d": "both hands"}
        assert instruction[row["source"]] in row["instruction"].lower() or row["task_type"] == "motion_description"
    assert all(len(splits) == 1 for splits in by_recording.values())


# ----------------------------------------------------------------------------------------------------------------------
# wild: raw clip folders through the curation pipeline (precomputed detector / estimator outputs)


def write_wild_clip(root, name, *, fps, num_frames, narration, split="train", detect=0.9, hands="moving"):
    folder = root / name
    (folder / "frames").mkdir(parents=True)
    for t in range(num_frames):
        Image.new("RGB", (32, 32), (5 * t, 100, 50)).save(folder / "frames" / f"{t:05d}.png")
    meta = {"fps": fps, "narration": narration, "source": "ego4d-like", "license": "test license", "split": split}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "detections.json").write_text(json.dumps({"right": [detect] * num_frames, "left": None}))
    if hands is None:
        return
    t = np.arange(num_frames)[:, None] / fps
    moving = hands == "moving"
    np.savez(
        folder / "hands.npz",
        right_hand_pose=np.tile(0.3 * np.sin(2 * t) * moving, (1, 45)),
        right_global_orient=np.tile([0.1, 0.2, 0.3], (num_frames, 1)),
        right_transl=np.c_[0.5 * t * moving, np.zeros_like(t), 0.5 + 0 * t],  # 0.5 m/s
        right_confidence=np.full(num_frames, 0.8),
    )


@pytest.fixture(scope="module")
def wild_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw_wild") / "wild"
    write_wild_clip(root, "a_good", fps=30, num_frames=45, narration="#C C picks up the cup")
    write_wild_clip(root, "b_test", fps=15, num_frames=20, narration="Open the jar", split="test")
    write_wild_clip(root, "c_no_poses", fps=30, num_frames=45, narration="#C C cuts bread", hands=None)
    write_wild_clip(root, "d_dark", fps=30, num_frames=45, narration="#C C cuts bread", detect=0.3)
    write_wild_clip(root, "e_idle", fps=30, num_frames=45, narration="#C C holds a cup", hands="idle")
    write_wild_clip(root, "f_other", fps=30, num_frames=45, narration="#O woman X cuts bread")
    write_wild_clip(root, "g_short", fps=30, num_frames=10, narration="#C C opens the door")
    return root.parent


def test_wild_config_curates_raw_clips(wild_raw):
    builder = UniHandMix(config_name="wild", data_dir=str(wild_raw), image_format="png")
    train, test = list(builder.iter_rows("train")), list(builder.iter_rows("test"))
    assert [r["clip_id"] for r in train] == ["a_good"] and [r["clip_id"] for r in test] == ["b_test"]
    stages = builder.curation_reports["train"].as_dict()["stages"]
    assert stages["visual_filter"]["dropped"] == {"low_detection_confidence": 1, "no_pose_estimates": 1}
    assert stages["instruction_validation"]["dropped"] == {"distractor": 1, "idle": 1}
    assert stages["temporal_slowdown"]["dropped"] == {"too_short": 1}
    assert builder.curation_reports["train"].kept == 1

    row = train[0]
    assert row["task_type"] == "video_only" and row["mano_right"] is None and not row["has_motion_labels"]
    assert "pick up the cup" in row["instruction"].lower() and row["source"] == "ego4d-like"
    assert row["license"] == "test license" and json.loads(row["curation"])["instruction_validation"]["reason"] == "ok"
    # 30 fps slowed by 0.5 and played at 15 fps: output frame j is raw frame j (45 frames -> 3 chunks)
    assert row["num_frames"] == 45 and [pixel(f)[0] for f in row["boundary_frames"]] == [0, 75, 150, 220]
    assert row["pose_confidence"] == pytest.approx(0.8) and row["detection_confidence"] == pytest.approx(0.9)

    row = test[0]
    assert row["labels_are_estimates"] and row["has_motion_labels"] and row["hands"] == ["right"]
    # 15 fps slowed by 0.5: output frame j is raw time j / 2 (20 raw frames -> 39 -> 2 chunks)
    assert row["num_frames"] == 30 and [pixel(f)[0] for f in row["boundary_frames"]] == [0, 40, 75]
    transl = np.asarray(row["mano_right"]["transl"])
    np.testing.assert_allclose(transl[::2, 0], 0.5 * np.arange(15) / 15, atol=1e-5)
    np.testing.assert_allclose(transl[1::2, 0], 0.5 * (np.arange(15) + 0.5) / 15, atol=1e-5)


def test_wild_config_reports_malformed_model_outputs(wild_raw, tmp_path):
    import shutil

    shutil.copytree(wild_raw / "wild" / "a_good", tmp_path / "wild" / "a_good")
    data = dict(np.load(tmp_path / "wild/a_good/hands.npz"))
    data["right_transl"][7, 1] = np.nan
    np.savez(tmp_path / "wild/a_good/hands.npz", **data)
    builder = UniHandMix(config_name="wild", data_dir=str(tmp_path))
    assert list(builder.iter_rows("train")) == []
    assert builder.curation_reports["train"].stages["visual_filter"].dropped == {"invalid_input": 1}
