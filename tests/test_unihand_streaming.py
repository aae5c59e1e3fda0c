"""Streaming an exported UniHand-Mix: shuffling, ranks, resume, and skipping corrupt shards / malformed samples."""

import logging
import shutil

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets.arrow_writer import ParquetWriter
from PIL import Image

from datasets_unihand_mix.builder import UniHandMix
from datasets_unihand_mix.cropping import crop_row
from datasets_unihand_mix.export import export_hub_folder
from datasets_unihand_mix.schema import unihand_features
from datasets_unihand_mix.streaming import (
    SkipStats,
    UniHandMixDataError,
    resolve_data_files,
    stream_unihand_mix,
    validate_sample,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "unihand"
    export_hub_folder(UniHandMix(config_name="toy", num_clips=24, image_size=64), out, max_shard_size="40KB")
    return out


@pytest.fixture(scope="module")
def all_ids(folder):
    return [row["id"] for row in datasets.load_dataset(str(folder), "mix", split="train", streaming=True)]


def ids(dataset):
    return [row["id"] for row in dataset]


def test_full_pass_matches_plain_datasets_and_decodes_images(folder, all_ids):
    stats = SkipStats()
    dataset = stream_unihand_mix(str(folder), "mix", "train", stats=stats)
    rows = list(dataset)
    assert sorted(r["id"] for r in rows) == sorted(all_ids) and len(rows) == 21
    assert stats.samples_ok == 21 and stats.skipped == 0
    assert isinstance(rows[0]["first_frame"], Image.Image) and rows[0]["first_frame"].size == (64, 64)
    assert len(resolve_data_files(str(folder), "mix", "train")) > 2  # several shards per subset
    # each subset keeps its file order, and the subsets are interleaved: every prefix holds them in proportion
    # (a stream of all lab rows, then all wild rows, trains on one subset at a time)
    for subset in ("lab", "wild"):
        assert [r["id"] for r in rows if r["subset"] == subset] == [i for i in all_ids if f"-{subset}/" in i]
    share = sum(r["subset"] == "lab" for r in rows) / len(rows)
    for prefix in range(1, len(rows) + 1):
        assert abs(sum(r["subset"] == "lab" for r in rows[:prefix]) - share * prefix) <= 1
    with pytest.raises(ValueError, match="has no split 'validation'"):
        stream_unihand_mix(str(folder), "mix", "validation")


def test_shuffle_is_seeded_and_keeps_every_sample(folder, all_ids):
    a = ids(stream_unihand_mix(str(folder), shuffle_buffer_size=8, seed=1))
    b = ids(stream_unihand_mix(str(folder), shuffle_buffer_size=8, seed=1))
    c = ids(stream_unihand_mix(str(folder), shuffle_buffer_size=8, seed=2))
    assert a == b and a != c and a != all_ids
    assert sorted(a) == sorted(c) == sorted(all_ids)


def test_max_chunks_crops_every_row_before_its_frames_are_decoded(folder, monkeypatch):
    decoded = set()  # the images datasets decodes (by their bytes)
    decode = datasets.Image.decode_example

    def spy(self, value, *args, **kwargs):
        decoded.add(value["bytes"])
        return decode(self, value, *args, **kwargs)

    monkeypatch.setattr(datasets.Image, "decode_example", spy)
    whole = list(stream_unihand_mix(str(folder), shuffle_buffer_size=8, seed=1))
    decoded_whole = set(decoded)
    decoded.clear()
    cropped = list(stream_unihand_mix(str(folder), shuffle_buffer_size=8, seed=1, max_chunks=1))
    assert [r["id"] for r in cropped] == [r["id"] for r in whole]
    assert any(r["num_chunks"] > 1 for r in whole)
    # at most the first frame and the two boundary frames of the kept chunk: the dropped frames are never decoded
    assert decoded < decoded_whole and len(decoded) <= 3 * len(cropped) < len(decoded_whole)
    for row, expected in zip(cropped, (crop_row(r, 1) for r in whole), strict=True):
        assert row.keys() == expected.keys()
        for key in row:
            if key in ("first_frame", "boundary_frames"):
                frames = [row[key]] if key == "first_frame" else row[key]
                truth = [expected[key]] if key == "first_frame" else expected[key]
                assert [np.asarray(f).tolist() for f in frames] == [np.asarray(f).tolist() for f in truth]
            else:
                assert row[key] == expected[key], key
        assert row["num_chunks"] == 1 and len(row["boundary_frames"]) == 2
        for side in row["hands"]:
            if row[f"mano_{side}"] is not None:
                assert len(row[f"mano_{side}"]["transl"]) == 15
    with pytest.raises(ValueError, match="max_chunks must be >= 1"):
        stream_unihand_mix(str(folder), max_chunks=0)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("shuffle", [None, 8])
def test_ranks_see_disjoint_equal_parts_with_the_single_process_mixture(folder, all_ids, world_size, shuffle):
    parts = [
        stream_unihand_mix(str(folder), shuffle_buffer_size=shuffle, seed=3, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    rows = [[(row["id"], row["subset"]) for row in part] for part in parts]
    seen = [i for part in rows for i, _ in part]
    assert len(set(seen)) == len(seen) and set(seen) <= set(all_ids)  # disjoint
    assert len({len(part) for part in rows}) == 1  # the same number of rows on every rank
    for subset in ("lab", "wild"):  # every rank: the single-process share of each subset (cut to rows // world_size)
        total = sum(f"-{subset}/" in i for i in all_ids)
        assert all(abs(sum(s == subset for _, s in part) - total // world_size) <= 1 for part in rows)
    with pytest.raises(ValueError, match="both rank and world_size"):
        stream_unihand_mix(str(folder), rank=0)
    with pytest.raises(ValueError, match="rank must lie"):
        stream_unihand_mix(str(folder), rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than the 1000 processes"):
        list(stream_unihand_mix(str(folder), rank=0, world_size=1000))


def test_two_ranks_of_a_40_clip_export_get_lab_and_wild_rows(tmp_path):
    """Whole shards per rank gave rank 0 every lab row and rank 1 every wild row of this export."""
    export_hub_folder(UniHandMix(config_name="toy", num_clips=40, image_size=48), tmp_path / "toy")
    single = [row["subset"] for row in stream_unihand_mix(str(tmp_path / "toy"), "mix", "train")]
    share = single.count("lab") / len(single)
    for rank in range(2):
        part = [row["subset"] for row in stream_unihand_mix(str(tmp_path / "toy"), "mix", "train", rank=rank,
                                                            world_size=2)]  # fmt: skip
        assert "wild" in part and abs(part.count("lab") / len(part) - share) <= 0.15 * share


@pytest.mark.parametrize("rank", [None, 1])
def test_state_dict_resume_continues_exactly(folder, rank):
    kwargs = {"rank": rank, "world_size": 2} if rank is not None else {}
    reference = ids(stream_unihand_mix(str(folder), **kwargs))
    dataset = stream_unihand_mix(str(folder), **kwargs)
    iterator = iter(dataset)
    head = [next(iterator)["id"] for _ in range(5)]
    state = dataset.state_dict()
    resumed = stream_unihand_mix(str(folder), **kwargs)
    resumed.load_state_dict(state)
    assert head + ids(resumed) == reference


def test_truncated_shard_fails_by_default_and_is_skipped_within_a_budget(folder, all_ids, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shards = sorted((copy / "data/lab").glob("train-*.parquet"))
    shard = shards[1]
    lost = pq.ParquetFile(shard).metadata.num_rows
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(UniHandMixDataError, match=rf"shard .*{shard.name}: ArrowInvalid"):
        list(stream_unihand_mix(str(copy), "mix", "train"))  # the default: refuse, naming the file
    stats = SkipStats()
    with caplog.at_level(logging.WARNING, logger="datasets_unihand_mix.streaming"):
        rows = ids(stream_unihand_mix(str(copy), "mix", "train", stats=stats, max_skip_fraction=0.5))
    assert len(rows) == len(all_ids) - lost and set(rows) < set(all_ids)
    assert stats.counts == {"unreadable_shard": 1} and shard.name in stats.last["unreadable_shard"]
    assert any(shard.name in record.getMessage() for record in caplog.records)
    lab_rows = sum("-lab/" in i for i in all_ids)
    with pytest.raises(UniHandMixDataError, match="subset 'lab': .* more than max_skip_fraction=0.01") as err:
        list(stream_unihand_mix(str(copy), "mix", "train", max_skip_fraction=0.01))  # one shard of lab_rows > 1%
    assert err.value.reason == "too_many_skips" and lost / lab_rows > 0.01
    for other in shards:  # a subset that disappears is an error whatever the budget
        other.write_bytes(b"not parquet")
    with pytest.raises(UniHandMixDataError, match="subset 'lab': none of its") as err:
        list(stream_unihand_mix(str(copy), "mix", "train", max_skip_fraction=1.0))
    assert err.value.reason == "empty_subset"
    with pytest.raises(ValueError, match="max_skip_fraction"):
        stream_unihand_mix(str(copy), max_skip_fraction=2)


def _corrupt(rows):
    """Break rows 0-4 in one way each; returns {sample id: (reason, field)}."""
    labelled = [r for r in rows if r["mano_left"] is not None or r["mano_right"] is not None]
    assert len(labelled) >= 5
    broken = {}

    def side(row):
        return "left" if row["mano_left"] is not None else "right"

    row = labelled[0]
    row[f"mano_{side(row)}"]["hand_pose"][3][5] = float("nan")
    broken[row["id"]] = ("nan_pose", f"mano_{side(row)}.hand_pose")
    row = labelled[1]
    row["boundary_frames"] = row["boundary_frames"][:-1]
    broken[row["id"]] = ("missing_frame", "boundary_frames")
    row = labelled[2]
    row[f"mano_{side(row)}"]["transl"] = row[f"mano_{side(row)}"]["transl"][:-1]
    broken[row["id"]] = ("wrong_length", f"mano_{side(row)}.transl")
    row = labelled[3]
    row["boundary_frames"][1] = {"bytes": b"not an image", "path": None}
    broken[row["id"]] = ("bad_frame", "boundary_frames[1]")
    row = labelled[4]
    row["num_frames"] += 1
    broken[row["id"]] = ("wrong_length", "num_frames")
    return broken


def test_malformed_samples_are_skipped_with_counted_reasons_or_raise(folder, all_ids, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shards = sorted((copy / "data/lab").glob("train-*.parquet"))
    rows = [row for shard in shards for row in pq.read_table(shard).to_pylist()]
    broken = _corrupt(rows)
    for shard in shards:
        shard.unlink()
    writer = ParquetWriter(path=str(copy / "data/lab/train-00000-of-00001.parquet"), features=unihand_features())
    for row in rows:
        writer.write(row)
    writer.finalize()
    writer.close()

    stats = SkipStats()
    kept = ids(stream_unihand_mix(str(copy), "mix", "train", stats=stats, max_skip_fraction=0.5))
    assert sorted(kept) == sorted(i for i in all_ids if i not in broken)
    assert stats.counts == {"nan_pose": 1, "missing_frame": 1, "wrong_length": 2, "bad_frame": 1}
    assert stats.samples_ok == len(kept) and stats.as_dict()["skipped"] == dict(stats.counts)
    first = next(iter(broken))
    with pytest.raises(
        UniHandMixDataError, match=rf"sample '{first}' field 'mano_\w+\.hand_pose': contains NaN"
    ) as err:
        list(stream_unihand_mix(str(copy), "mix", "train"))
    assert err.value.reason == "nan_pose"
    for row in rows:
        if row["id"] in broken:
            with pytest.raises(UniHandMixDataError) as err:
                validate_sample(row)
            assert (err.value.reason, err.value.where) == (
                broken[row["id"]][0],
                f"sample '{row['id']}' field '{broken[row['id']][1]}'",
            )


def test_validate_sample_checks_labels_and_tokens(folder):
    row = next(r for r in pq.read_table(next((folder / "data/lab").glob("train-*"))).to_pylist())
    validate_sample(row)
    side = row["hands"][0]
    for edit, reason, field in [
        (lambda r: r.update({f"mano_{side}": None}), "bad_value", f"mano_{side}"),
        (lambda r: r.update({"task_type": "dance"}), "bad_value", "task_type"),
        (lambda r: r.update({"fps": float("nan")}), "bad_value", "fps"),
        (lambda r: r.update({"hands": []}), "bad_value", "hands"),
        (lambda r: r.update({f"motion_tokens_{side}": [[0] * 128]}), "wrong_length", f"motion_tokens_{side}"),
        (lambda r: r[f"mano_{side}"].update({"betas": [0.0] * 9}), "wrong_length", f"mano_{side}.betas"),
        (lambda r: r.update({"first_frame": None}), "missing_frame", "first_frame"),
    ]:
        broken = {**row, f"mano_{side}": dict(row[f"mano_{side}"])}
        edit(broken)
        with pytest.raises(UniHandMixDataError, match=rf"field '{field}'") as err:
            validate_sample(broken)
        assert err.value.reason == reason
    tokens = {**row, f"motion_tokens_{side}": np.zeros((row["num_chunks"], 128), int).tolist()}
    validate_sample(tokens)
