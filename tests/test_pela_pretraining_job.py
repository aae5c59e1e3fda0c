"""The demo's model stage (pela.pretraining) end to end on a tiny exported toy UniHand-Mix: train, generate, score."""

from __future__ import annotations

import json
import math

import pytest
import torch
from huggingface_hub import ModelCard
from pela_testing import single_thread  # noqa: F401  (module fixture: one intra-op thread)

from datasets_unihand_mix import generate_clips
from datasets_unihand_mix.builder import UniHandMix
from datasets_unihand_mix.cropping import crop_row
from datasets_unihand_mix.export import export_hub_folder
from datasets_unihand_mix.streaming import stream_unihand_mix
from modeling_pela import BuiltinHandKinematics, MotionTokenizerConfig, MotionTokenizerModel
from pela.checkpoints import load_pretraining_checkpoint
from pela.model_card import pretraining_model_card
from pela.pretraining import build_model, pretrain
from pela.processors import build_text_tokenizer, tiny_processor_for
from pela.training_data import rows_of, wild_fraction_filter
from trainers.collator import PELADataCollator
from trainers.generation_eval import evaluate_generation, evaluate_mean_motion
from trainers.pela_trainer import PELATrainer, pela_training_arguments


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("unihand") / "data"
    export_hub_folder(UniHandMix(config_name="toy", num_clips=24, image_size=48, seed=5), out)
    return str(out)


@pytest.fixture(scope="module")
def parts(data_dir):
    """(k-means-initialised tiny motion tokenizer, mix/train rows, tiny processor with a word-level tokenizer)."""
    torch.manual_seed(0)
    tokenizer_model = MotionTokenizerModel(MotionTokenizerConfig(codebook_size=128)).eval()
    motions = [m for clip in generate_clips(8) for m in clip.hands.values()]
    tokenizer_model.fit_normalization(motions)
    tokenizer_model.init_codebooks(motions)
    rows = rows_of(stream_unihand_mix(data_dir, "mix", "train"))
    return tokenizer_model, rows, tiny_processor_for(rows, tokenizer_model.config)


def test_text_tokenizer_keeps_frequent_words_below_the_limit():
    tokenizer = build_text_tokenizer(["Pick up the red cube.", "pick up the blue ball", "wave"], max_words=8)
    ids = tokenizer("Pick up the RED cube .")["input_ids"]
    assert max(ids) < 8 and tokenizer.unk_token_id in tokenizer("wave hello")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[:2]) == ["pick", "up"]


def test_pretrain_then_generate_and_score(data_dir, parts, tmp_path):
    tokenizer_model, rows, processor = parts
    train = stream_unihand_mix(data_dir, "mix", "train")
    args = pela_training_arguments(
        str(tmp_path / "pela"), max_steps=2, per_device_train_batch_size=2, logging_steps=1, use_cpu=True
    )
    model, history = pretrain("pela", train.take(8), processor, tokenizer_model, args)
    assert [h["step"] for h in history][-1] == 2 and all(math.isfinite(h["loss"]) for h in history)
    # a self-contained checkpoint: weights, processor and motion tokenizer reload together
    reloaded, reloaded_processor, reloaded_tokenizer = load_pretraining_checkpoint(tmp_path / "pela")
    assert reloaded.config.codebook_size == 128 and reloaded_processor.codebook_size == 128
    assert reloaded_processor.tokenizer("pick up")["input_ids"] == processor.tokenizer("pick up")["input_ids"]
    for key, value in tokenizer_model.state_dict().items():
        assert torch.equal(reloaded_tokenizer.state_dict()[key], value), key
    card = ModelCard.load(tmp_path / "pela" / "README.md")
    assert card.data.library_name == "transformers" and "vla" in card.data.tags
    assert "`pela` (objective `masked_chunk`, alignment on)" in card.text and "2 steps x 2 sequences" in card.text
    scored = pretraining_model_card(model, "me/pela-tiny", metrics={"lab": {"mpjpe": 1.234, "pa_mpjpe": 0.5,
                                                                           "mwte": 2.0, "mde": 3.0}})  # fmt: skip
    assert "| lab | 1.23 | 0.50 | 2.00 | 3.00 |" in scored.text and 'from_pretrained("me/pela-tiny"' in scored.text
    test = [r for r in rows_of(stream_unihand_mix(data_dir, "lab", "test")) if r["has_motion_labels"]][:1]
    metrics = evaluate_generation(model, processor, tokenizer_model, test, BuiltinHandKinematics())
    assert set(metrics) >= {"mpjpe", "pa_mpjpe", "mwte", "mde"} and metrics["num_hand_chunks"] == len(test[0]["hands"])
    assert all(math.isfinite(metrics[k]) and metrics[k] > 0 for k in ("mpjpe", "mwte"))
    assert metrics["distinct_fraction"] == 1.0  # one generated hand chunk is one distinct motion


def test_mean_motion_reference_and_distinct_generations(data_dir):
    kinematics = BuiltinHandKinematics()
    train = rows_of(stream_unihand_mix(data_dir, "lab", "train"))
    test = [r for r in rows_of(stream_unihand_mix(data_dir, "lab", "test")) if r["has_motion_labels"]]
    reference = evaluate_mean_motion(train, test, kinematics)
    assert reference["num_hand_chunks"] == sum(len(r["hands"]) for r in test) and reference["mpjpe"] > 0
    # predicting a test clip's own motion from "training" on it alone scores zero
    exact = evaluate_mean_motion(test[:1], test[:1], kinematics)
    assert exact["mpjpe"] == pytest.approx(0.0, abs=1e-6) and exact["mwte"] == pytest.approx(0.0, abs=1e-6)


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        build_model("bert")


def test_wild_fraction_filter_keeps_lab_and_a_stable_share_of_wild():
    rows = [{"subset": "lab", "id": f"lab-{i}"} for i in range(50)] + [
        {"subset": "wild", "id": f"wild-{i}"} for i in range(400)
    ]
    for fraction in (0.0, 0.25, 0.5, 1.0):
        kept = [row for row in rows if wild_fraction_filter(fraction)(row)]
        wild = [row["id"] for row in kept if row["subset"] == "wild"]
        assert sum(row["subset"] == "lab" for row in kept) == 50
        assert abs(len(wild) - fraction * 400) <= 40
    quarter = {r["id"] for r in rows if r["subset"] == "wild" and wild_fraction_filter(0.25)(r)}
    half = {r["id"] for r in rows if r["subset"] == "wild" and wild_fraction_filter(0.5)(r)}
    assert quarter <= half  # nested subsets, as in the paper's 0 / 25 / 50 / 100% sweep
    with pytest.raises(ValueError, match="wild_fraction"):
        wild_fraction_filter(1.5)


def test_trainer_evaluation_decodes_chunks_per_split(data_dir, parts, tmp_path):
    tokenizer_model, rows, processor = parts
    splits = {
        split: [crop_row(r, 1) for r in rows_of(stream_unihand_mix(data_dir, split, "test")) if r["has_motion_labels"]][
            :2
        ]
        for split in ("lab", "wild")
    }
    model = build_model("pela", tokenizer_config=tokenizer_model.config).train()
    args = pela_training_arguments(
        str(tmp_path), max_steps=2, per_device_train_batch_size=2, logging_steps=1, eval_strategy="steps",
        eval_steps=2, per_device_eval_batch_size=2, save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = PELATrainer(
        model=model, args=args, train_dataset=[crop_row(r, 2) for r in rows[:4]], eval_dataset=splits,
        data_collator=PELADataCollator(processor, tokenizer_model), processing_class=processor,
        motion_tokenizer=tokenizer_model,
    )  # fmt: skip
    trainer.train()
    logged = {k: v for h in trainer.state.log_history for k, v in h.items() if k.startswith("eval_")}
    for split in ("lab", "wild"):
        for key in ("mpjpe", "pa_mpjpe", "mwte", "mde"):
            assert math.isfinite(logged[f"eval_{split}_{key}"]) and logged[f"eval_{split}_{key}"] > 0
        assert math.isfinite(logged[f"eval_{split}_loss"])  # the loss-based evaluation still runs
        hands = sum(len(r["hands"]) for r in splits[split])
        assert logged[f"eval_{split}_num_hand_chunks"] == hands
    metrics = trainer.evaluate(splits["lab"], metric_key_prefix="test")
    assert metrics["test_mwte"] == pytest.approx(logged["eval_lab_mwte"])  # deterministic decoding


def test_every_checkpoint_is_self_contained_and_evaluation_runs_during_training(data_dir, parts, tmp_path):
    tokenizer_model, _, processor = parts
    train = stream_unihand_mix(data_dir, "mix", "train", max_chunks=1)
    args = pela_training_arguments(
        str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=2, logging_steps=1, use_cpu=True,
        save_strategy="steps", save_steps=1, eval_strategy="steps", eval_steps=2, eval_max_rows=1,
    )  # fmt: skip
    pretrain("pela_wo_align", train, processor, tokenizer_model, args, dataset=data_dir)
    checkpoint = tmp_path / "run" / "checkpoint-1"
    for name in ("processor_config.json", "motion_tokenizer/config.json", "pipeline_pela.py", "mano.py"):
        assert (checkpoint / name).exists(), name
    model, reloaded_processor, reloaded_tokenizer = load_pretraining_checkpoint(checkpoint)
    assert (
        model.config.custom_pipelines["hand-motion-generation"]["impl"] == "pipeline_pela.HandMotionGenerationPipeline"
    )
    assert reloaded_processor.tokenizer("pick up")["input_ids"] == processor.tokenizer("pick up")["input_ids"]
    assert reloaded_tokenizer.fingerprint() == tokenizer_model.fingerprint()
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    scores = {
        key: value
        for entry in state["log_history"]
        for key, value in entry.items()
        if key in ("eval_lab_mpjpe", "eval_wild_mpjpe")
    }
    assert len(scores) == 2 and all(map(math.isfinite, scores.values()))
