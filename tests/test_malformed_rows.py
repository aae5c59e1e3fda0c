"""Property tests of the data-error policy: any malformed UniHand-Mix row is refused with an error that names its
sample and field, or, within a skip budget, skipped and counted by reason; nothing malformed reaches the processor.

Each strategy corrupts one field of a real exported row in a way that must be caught (hypothesis draws which hand,
frame, value and length); `parquet_safe` corruptions keep the column types, so they can be written to a shard and
streamed.
"""

from __future__ import annotations

import copy
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets_unihand_mix.builder import UniHandMix
from datasets_unihand_mix.export import export_hub_folder
from datasets_unihand_mix.streaming import SKIP_REASONS, SkipBudget, SkipStats, UniHandMixDataError, iter_valid_rows
from datasets_unihand_mix.streaming import validate_sample as validate

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
MANO_WIDTHS = {"hand_pose": 45, "global_orient": 3, "transl": 3}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("malformed") / "unihand"
    export_hub_folder(UniHandMix(config_name="toy", num_clips=8, image_size=32), out)
    shard = sorted((out / "data/lab").glob("train-*.parquet"))[0]
    table = pq.read_table(shard)
    rows = [row for row in table.to_pylist() if row["has_motion_labels"]]
    for row in rows:  # give every labelled hand a shape and precomputed features, so those fields are checked too
        for side in row["hands"]:
            row[f"mano_{side}"]["betas"] = np.linspace(-1, 1, 10).tolist()
            row[f"mano_{side}"]["shape_convention"] = "released"
        row["frame_features"] = np.zeros((row["num_chunks"] + 1, 4)).tolist()
    for row in rows:
        validate(row)
    return table.schema, rows


@st.composite
def corruption(draw, row: dict, parquet_safe: bool = False) -> tuple[dict, str]:
    """(a corrupted deep copy of ``row``, the field its error must name)."""
    row = copy.deepcopy(row)
    side = draw(st.sampled_from(row["hands"]))
    mano = row[f"mano_{side}"]
    frames = row["num_frames"]
    kinds = ["mano_value", "mano_length", "betas", "frame_bytes", "missing_frame", "features", "tokens"]
    if not parquet_safe:
        kinds += ["fps", "split", "hands", "chunks", "convention", "mano_type"]
    kind = draw(st.sampled_from(kinds))
    if kind == "mano_value":
        name = draw(st.sampled_from(sorted(MANO_WIDTHS)))
        frame, dim = draw(st.integers(0, frames - 1)), draw(st.integers(0, MANO_WIDTHS[name] - 1))
        mano[name][frame][dim] = draw(NON_FINITE)
        return row, f"mano_{side}.{name}"
    if kind == "mano_length":
        name = draw(st.sampled_from(sorted(MANO_WIDTHS)))
        length = draw(st.integers(0, 2 * frames).filter(lambda n: n != frames))
        mano[name] = (mano[name] * 3)[:length]
        return row, f"mano_{side}.{name}"
    if kind == "betas":
        length = draw(st.integers(1, 16))
        betas = [0.5] * length
        if length == 10:
            betas[draw(st.integers(0, 9))] = draw(NON_FINITE)
        mano["betas"] = betas
        return row, f"mano_{side}.betas"
    if kind == "frame_bytes":
        index = draw(st.integers(0, len(row["boundary_frames"])))
        garbage = draw(st.binary(min_size=1, max_size=64))
        if index == len(row["boundary_frames"]):
            row["first_frame"] = {"bytes": garbage, "path": None}
            return row, "first_frame"
        row["boundary_frames"][index] = {"bytes": garbage, "path": None}
        return row, f"boundary_frames[{index}]"
    if kind == "missing_frame":
        del row["boundary_frames"][draw(st.integers(0, len(row["boundary_frames"]) - 1))]
        return row, "boundary_frames"
    if kind == "features":
        if draw(st.booleans()):
            row["frame_features"][draw(st.integers(0, row["num_chunks"]))][0] = draw(NON_FINITE)
        else:
            row["frame_features"] = row["frame_features"][: draw(st.integers(0, row["num_chunks"]))]
        return row, "frame_features"
    if kind == "tokens":
        row[f"motion_tokens_{side}"] = [[0] * draw(st.sampled_from([1, 3, 5]))] * row["num_chunks"]
        return row, f"motion_tokens_{side}"
    if kind == "fps":
        row["fps"] = draw(st.one_of(NON_FINITE, st.floats(max_value=0.0), st.none(), st.text(max_size=3)))
        return row, "fps"
    if kind == "split":
        name = draw(st.sampled_from(["split", "task_type"]))
        row[name] = draw(st.one_of(st.none(), st.text(max_size=8)))
        return row, name
    if kind == "hands":
        row["hands"] = draw(st.one_of(st.just([]), st.lists(st.text(max_size=5), min_size=1, max_size=3)))
        return row, "hands"
    if kind == "chunks":
        row["num_frames"] = draw(st.integers(-5, 200).filter(lambda n: n != frames))
        return row, "num_frames"
    if kind == "convention":
        mano["shape_convention"] = draw(st.one_of(st.none(), st.text(max_size=10)))
        return row, f"mano_{side}.shape_convention"
    name = draw(st.sampled_from(sorted(MANO_WIDTHS)))  # mano_type
    mano[name] = draw(st.one_of(st.text(max_size=4), st.just([["x"] * MANO_WIDTHS[name]] * frames)))
    return row, f"mano_{side}.{name}"


def _refused_field(row: dict) -> str:
    with pytest.raises(UniHandMixDataError) as caught:
        validate(row)
    error = caught.value
    assert error.reason in SKIP_REASONS and f"sample '{row['id']}'" in str(error)
    return error.where.split(" field ")[-1].strip("'")


@SETTINGS
@given(data=st.data())
def test_every_corruption_is_refused_naming_the_sample_and_field(export, data):
    _, rows = export
    row, field = data.draw(corruption(data.draw(st.sampled_from(rows))))
    assert _refused_field(row) == field


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_rows_in_a_shard_fail_by_default_or_are_skipped_and_counted(export, data, tmp_path_factory):
    schema, rows = export
    broken = data.draw(st.sets(st.integers(0, len(rows) - 1), min_size=1, max_size=len(rows) - 1))
    shard_rows, reasons = [], Counter()
    for index, row in enumerate(rows):
        if index in broken:
            row, _ = data.draw(corruption(row, parquet_safe=True))
            with pytest.raises(UniHandMixDataError) as caught:
                validate(row)
            reasons[caught.value.reason] += 1
        shard_rows.append(row)
    path = tmp_path_factory.mktemp("shard") / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(shard_rows, schema=schema), path)

    with pytest.raises(UniHandMixDataError):
        list(iter_valid_rows([str(path)], SkipBudget("lab", len(rows), len(rows), 0.0, SkipStats())))
    stats = SkipStats()
    kept = list(iter_valid_rows([str(path)], SkipBudget("lab", len(rows), len(rows), 1.0, stats)))
    assert [row["id"] for row in kept] == [row["id"] for i, row in enumerate(rows) if i not in broken]
    assert stats.counts == reasons and stats.samples_ok == len(kept)
    for row in kept:  # what is kept is finite: nothing malformed reaches a loss or a metric
        for side in row["hands"]:
            for name in MANO_WIDTHS:
                assert np.isfinite(np.asarray(row[f"mano_{side}"][name], dtype=np.float64)).all()
