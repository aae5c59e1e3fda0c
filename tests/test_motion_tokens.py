"""Precomputed motion tokens (`pela data tokenize`): filled in place, equal to on-the-fly tokenization, recorded with
the tokenizer's fingerprint, and refused by the processor when another tokenizer is given."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from pela_testing import single_thread  # noqa: F401  (module fixture: one intra-op thread)

from datasets_unihand_mix import generate_clips, motion_tokens
from datasets_unihand_mix.builder import UniHandMix
from datasets_unihand_mix.export import export_hub_folder
from datasets_unihand_mix.motion_tokens import tokenize_hub_folder
from datasets_unihand_mix.streaming import resolve_data_files, stream_unihand_mix
from modeling_pela import HandMotion, MotionTokenizerConfig, MotionTokenizerModel
from pela.cli import main
from pela.processors import tiny_processor_for
from pela.training_data import rows_of
from trainers.collator import PELADataCollator


def _tokenizer(seed: int) -> MotionTokenizerModel:
    torch.manual_seed(seed)
    model = MotionTokenizerModel(MotionTokenizerConfig(codebook_size=128)).eval()
    motions = [m for clip in generate_clips(6, start_index=seed) for m in clip.hands.values()]
    model.fit_normalization(motions)
    model.init_codebooks(motions)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens") / "data"
    export_hub_folder(UniHandMix(config_name="toy", num_clips=16, image_size=48, seed=2), out)
    return out


def test_tokenize_fills_the_columns_in_place_like_on_the_fly_tokenization(exported, tmp_path):
    tokenizer = _tokenizer(0)
    shards = sorted((exported / "data").glob("**/*.parquet"))
    before = {s: pq.read_table(s) for s in shards}
    summary = tokenize_hub_folder(exported, tokenizer, batch_size=5)
    assert summary.shards == len(shards) and summary.fingerprint == tokenizer.fingerprint()
    for shard, table in before.items():
        after = pq.read_table(shard)
        assert after.schema.metadata == table.schema.metadata or b"huggingface" in after.schema.metadata
        for name in ("id", "first_frame", "boundary_frames", "mano_left", "mano_right", "instruction"):
            assert after.column(name).equals(table.column(name)), (shard, name)  # untouched, byte for byte
    rows = rows_of(stream_unihand_mix(str(exported), "mix", "train")) + rows_of(
        stream_unihand_mix(str(exported), "mix", "test")
    )
    counted = 0
    for row in rows:
        for side in ("left", "right"):
            mano = row[f"mano_{side}"]
            if mano is None:
                assert row[f"motion_tokens_{side}"] is None
                continue
            motion = HandMotion(side, torch.tensor(mano["hand_pose"]), torch.tensor(mano["global_orient"]),
                                torch.tensor(mano["transl"]))  # fmt: skip
            expected = tokenizer.encode_motion(motion)
            tokens = torch.tensor(row[f"motion_tokens_{side}"])
            # batched and per-row encoding may break float ties of near-empty deep residual levels differently
            assert (tokens == expected).float().mean() > 0.98, (row["id"], side)
            decoded, reference = tokenizer.decode(tokens, side), tokenizer.decode(expected, side)
            assert torch.allclose(decoded["transl"], reference["transl"], atol=1e-3), (row["id"], side)
            assert row["motion_tokens_model"] == tokenizer.fingerprint()
            counted += expected.shape[0]
    assert counted == summary.hand_chunks > 0
    # the processor reads them instead of running the tokenizer, and refuses them with another tokenizer
    labelled = next(r for r in rows if r["has_motion_labels"] and r["task_type"] == "motion_generation")
    processor = tiny_processor_for(rows, tokenizer.config)
    with_tokens = processor.encode(labelled, motion_tokenizer=tokenizer)
    accepted = processor.encode(labelled)["input_ids"]  # made by this tokenizer
    assert torch.equal(with_tokens["input_ids"], accepted)
    with pytest.raises(ValueError, match=rf"sample '{labelled['id']}'.*motion_tokens_(left|right).*pela data tokenize"):
        processor.encode(labelled, motion_tokenizer=_tokenizer(1))


def test_cli_tokenize_and_bad_input(exported, tmp_path, capsys):
    path = tmp_path / "tokenizer"
    tokenizer = _tokenizer(3)
    tokenizer.save_pretrained(path)
    assert main(["data", "tokenize", str(exported), "--motion-tokenizer", str(path)]) == 0
    assert tokenizer.fingerprint() in capsys.readouterr().out
    row = rows_of(stream_unihand_mix(str(exported), "lab", "train").take(1))[0]
    assert row["motion_tokens_model"] == MotionTokenizerModel.from_pretrained(path).fingerprint()
    with pytest.raises(FileNotFoundError, match="pela data export"):
        tokenize_hub_folder(tmp_path, tokenizer)


def test_a_batch_hashes_the_tokenizer_once_and_checks_every_row_against_it(exported, monkeypatch):
    tokenizer = _tokenizer(5)
    tokenize_hub_folder(exported, tokenizer)
    rows = [
        row
        for row in rows_of(stream_unihand_mix(str(exported), "mix", "train"))
        if row["has_motion_labels"] and row["task_type"] == "motion_generation"
    ][:4]
    processor = tiny_processor_for(rows, tokenizer.config)
    calls = []
    fingerprint = tokenizer.fingerprint
    monkeypatch.setattr(tokenizer, "fingerprint", lambda: calls.append(1) or fingerprint())
    collated = PELADataCollator(processor, tokenizer, objective="next_token")(rows)
    assert len(rows) == 4 and sum(len(row["hands"]) for row in rows) > 4 and len(calls) == 1
    assert torch.equal(collated["input_ids"], processor.encode(rows, motion_tokenizer=tokenizer)["input_ids"])
    assert len(calls) == 2
    with pytest.raises(ValueError, match=rf"sample '{rows[0]['id']}'.*made by motion tokenizer.*pela data tokenize"):
        PELADataCollator(processor, _tokenizer(6), objective="next_token")(rows)


def test_a_reader_of_the_export_sees_only_whole_shards_while_they_are_rewritten(exported, monkeypatch):
    """A job reading the export (`load_dataset`, `stream_unihand_mix`) while `pela data tokenize` rewrites its shards
    lists the shards only, never the file being written (a `<shard>.partial` matched the card's `train-*` pattern)."""
    shards = sorted(str(shard) for shard in (exported / "data").glob("**/*.parquet"))
    listed = []
    tokenize_batch = motion_tokens.tokenize_batch

    def tokenize_and_list(*args, **kwargs):
        listed.append(sorted(f for split in ("train", "test") for f in resolve_data_files(str(exported), "mix", split)))
        return tokenize_batch(*args, **kwargs)

    monkeypatch.setattr(motion_tokens, "tokenize_batch", tokenize_and_list)
    tokenize_hub_folder(exported, _tokenizer(0))
    assert len(listed) == len(shards) and all(files == shards for files in listed)
