"""Sequence packing: a packed batch is its samples unpacked (losses, outputs, gradients), samples never see each
other, flex_attention equals sdpa on packed rows, and the packer keeps every sample whole (tiny model, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from pela_testing import (  # noqa: F401  (fixtures)
    make_sample,
    single_thread,
    tiny_model,
    tiny_processor,
    uncompiled_flex_attention,
)

from modeling_pela.packed_sequences import SampleLayout
from trainers.collator import PELADataCollator
from trainers.packing import PackedCollator, PackedSamples, best_fit_decreasing
from trainers.pela_trainer import PELATrainer, pela_training_arguments

SEQ_LENGTH = 1200


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def collator(model) -> PELADataCollator:
    return PELADataCollator(tiny_processor(model.config))


@pytest.fixture(scope="module")
def samples(collator) -> list[dict]:
    """Encoded and masked: labelled generation (2 chunks), video-only (both hands), description, continuation (both
    hands, 3 steps) and a one-chunk generation sample."""
    rows = [
        make_sample("motion_generation", seed=0),
        make_sample("video_only", hands=("left", "right"), seed=1),
        make_sample("motion_description", seed=2),
        make_sample("motion_continuation", hands=("left", "right"), num_chunks=3, context_chunks=1, seed=3),
        make_sample("motion_generation", num_chunks=1, seed=4),
    ]
    return [collator.encode_row(row) for row in rows]


PACKS = ([0, 1], [3], [2, 4])  # 396 + 784, 1044, 404 + 266 tokens of 1200


def packed_batch(collator, samples, packs=PACKS, seq_length=SEQ_LENGTH) -> dict:
    return dict(PackedCollator(collator.processor, seq_length)([[samples[i] for i in pack] for pack in packs]))


def unpacked_batch(collator, samples, order) -> dict:
    batch = dict(collator.processor.collate([samples[i] for i in order]))
    del batch["first_target_chunk"]
    return batch


def test_packed_rows_hold_every_sample_once(collator, samples):
    batch = packed_batch(collator, samples)
    layout = SampleLayout.from_position_ids(batch["position_ids"], batch["attention_mask"])
    order = [i for pack in PACKS for i in pack]
    assert layout.num_samples == len(order) and batch["input_ids"].shape == (3, SEQ_LENGTH)
    for s, i in enumerate(order):
        torch.testing.assert_close(
            batch["input_ids"].flatten()[layout.token_index[s][layout.valid[s]]], samples[i]["input_ids"]
        )
    assert batch["is_labeled"].tolist() == [samples[i]["is_labeled"] for i in order]
    padding = batch["attention_mask"] == 0
    assert bool((batch["labels"][padding] == -100).all()) and bool((batch["chunk_ids"][padding] == -1).all())


def test_packed_batch_gives_the_losses_outputs_and_gradients_of_its_samples_unpacked(model, collator, samples):
    order = [i for pack in PACKS for i in pack]
    results = []
    for batch in (packed_batch(collator, samples), unpacked_batch(collator, samples, order)):
        model.zero_grad(set_to_none=True)
        out = model(**batch)
        out.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (packed, packed_grads), (unpacked, unpacked_grads) = results
    model.zero_grad(set_to_none=True)
    for key in ("loss", "mcp_loss", "align_loss", "text_loss"):
        torch.testing.assert_close(getattr(packed, key), getattr(unpacked, key), atol=1e-5, rtol=1e-5)
    assert torch.equal(packed.chunk_mask, unpacked.chunk_mask)
    real = packed.chunk_mask
    for key in ("logits", "predictive_embeddings", "latent_actions"):  # the per-sample MCP and Align terms
        torch.testing.assert_close(getattr(packed, key)[real], getattr(unpacked, key)[real], atol=2e-5, rtol=1e-4)
    assert packed_grads.keys() == unpacked_grads.keys() and len(packed_grads) > 10
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, unpacked_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_changing_one_sample_never_changes_another(model, collator, samples):
    """Sample 0 of row 0 is changed (motion tokens and instruction): the samples after it in its row and in the other
    row keep every hidden state."""
    batch = packed_batch(collator, samples)
    changed = {key: value.clone() for key, value in batch.items()}
    first = samples[0]["input_ids"].numel()
    motion = (changed["chunk_ids"][0, :first] >= 0).nonzero().flatten()
    changed["input_ids"][0, motion[::2]] = model.config.mask_token_id
    changed["input_ids"][0, 0] = 7
    with torch.no_grad():
        before, after = model(**batch), model(**changed)
    assert not torch.allclose(before.predictive_embeddings[0], after.predictive_embeddings[0], atol=1e-4)
    for name in ("predictive_embeddings", "logits"):
        torch.testing.assert_close(getattr(after, name)[1:], getattr(before, name)[1:], atol=0, rtol=0)


@pytest.mark.usefixtures("uncompiled_flex_attention")
def test_flex_attention_equals_sdpa_on_a_packed_batch(collator, samples):
    """One row of two samples (flex_attention in eager mode materialises the scores: keep it short)."""
    batch = packed_batch(collator, samples, packs=([4, 0],), seq_length=700)
    outputs = []
    for backend in ("sdpa", "flex_attention"):
        model = tiny_model(attn_implementation=backend)
        assert model.get_decoder().config._attn_implementation == backend
        with torch.no_grad():  # flex_attention has no CPU backward
            outputs.append(model(**batch))
    sdpa, flex = outputs
    for name in ("predictive_embeddings", "logits"):
        torch.testing.assert_close(getattr(flex, name), getattr(sdpa, name), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(flex.loss, sdpa.loss, atol=1e-5, rtol=1e-5)


def test_position_ids_that_do_not_restart_at_a_sample_are_refused(model, collator, samples):
    batch = packed_batch(collator, samples)
    batch["position_ids"][1, 5] = 9
    with pytest.raises(ValueError, match="position_ids row 1, column 5: 9 after 4"):
        model(**batch)


def test_best_fit_decreasing_fills_rows_with_whole_samples():
    lengths = [700, 300, 500, 200, 900, 100, 400, 600]
    bins = best_fit_decreasing(lengths, 1000)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 1000 for b in bins)
    assert len(bins) == 4  # 3700 tokens: every row full but one


def test_packed_stream_is_deterministic_and_names_a_sample_too_long(collator):
    rows = [make_sample("motion_generation", num_chunks=1 + i % 3, seed=i) for i in range(7)]
    stream = PackedSamples(rows, collator, seq_length=SEQ_LENGTH, buffer_size=4)
    first, second = list(stream), list(stream)
    assert sum(len(pack) for pack in first) == len(rows)
    assert all(sum(item["input_ids"].numel() for item in pack) <= SEQ_LENGTH for pack in first)
    for a, b in zip(first, second, strict=True):
        assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match=r"sample 'test/2/motion_generation' has \d+ tokens.*--packing_length"):
        list(PackedSamples(rows, collator, seq_length=500, buffer_size=4))


def test_packed_training_weighs_every_sample_once_across_accumulated_batches(tmp_path):
    """Two accumulated packed rows of 2 and 3 samples: one SGD step moves the weights by the gradient of the mean
    loss of the 5 samples unpacked (a mean of the two rows' means would weigh them 1/4 and 1/6). Without the latent
    standardisation, whose gradient (BatchNorm's) depends on how a batch is split by design."""
    rows = [
        make_sample("video_only", hands=("left", "right"), seed=1),
        make_sample("motion_generation", num_chunks=1, seed=4),
        make_sample("motion_generation", num_chunks=2, seed=5),
        make_sample("motion_generation", num_chunks=1, seed=6),
        make_sample("motion_generation", num_chunks=1, seed=7),
    ]
    model = tiny_model(standardize_latents=False).train()
    collator = PELADataCollator(tiny_processor(model.config))
    assert [len(b) for b in PackedSamples(rows, collator, SEQ_LENGTH)] == [2, 3]
    trained = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    args = pela_training_arguments(
        str(tmp_path), max_steps=1, per_device_train_batch_size=1, gradient_accumulation_steps=2, packing=True,
        packing_length=SEQ_LENGTH, optim="sgd", learning_rate=1.0, weight_decay=0.0, max_grad_norm=0.0,
        lr_scheduler_type="constant", warmup_steps=0, save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    stream = datasets.IterableDataset.from_generator(lambda: iter(rows))
    PELATrainer(model=model, args=args, train_dataset=stream, data_collator=collator).train()
    reference = tiny_model(standardize_latents=False).train()
    reference(**collator(rows)).loss.backward()
    for name, parameter in reference.named_parameters():
        if parameter.grad is not None:
            step = trained[name] - dict(model.named_parameters())[name].detach()
            torch.testing.assert_close(step, parameter.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_packing_refuses_a_training_set_that_is_not_streamed(tmp_path):
    model = tiny_model()
    args = pela_training_arguments(str(tmp_path), max_steps=1, packing=True, use_cpu=True, save_strategy="no")
    rows = [make_sample("motion_generation", seed=0)]
    trainer = PELATrainer(
        model=model, args=args, train_dataset=rows, data_collator=PELADataCollator(tiny_processor(model.config))
    )
    with pytest.raises(ValueError, match="packing=True packs a streamed training set, got a list"):
        trainer.get_train_dataloader()


DDP_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import datasets, torch
from pela_testing import tiny_model, tiny_processor
from test_packing import SEQ_LENGTH, ddp_rows
from trainers.collator import PELADataCollator
from trainers.pela_trainer import PELATrainer, pela_training_arguments

torch.set_num_threads(1)
model = tiny_model().train()
before = {{n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}}
args = pela_training_arguments(sys.argv[1], max_steps=1, per_device_train_batch_size=1, packing=True,
                               packing_length=SEQ_LENGTH, optim="sgd", learning_rate=1.0, weight_decay=0.0,
                               max_grad_norm=0.0, lr_scheduler_type="constant", warmup_steps=0, save_strategy="no",
                               use_cpu=True, disable_tqdm=True)
stream = datasets.IterableDataset.from_generator(lambda: iter(ddp_rows()))
trainer = PELATrainer(model=model, args=args, train_dataset=stream,
                      data_collator=PELADataCollator(tiny_processor(model.config)))
trainer.train()
step = {{n: (before[n] - p.detach()).tolist() for n, p in model.named_parameters() if p.requires_grad}}
json.dump(step, open(f"{{sys.argv[1]}}/step-{{trainer.args.process_index}}.json", "w"))
trainer.accelerator.end_training()
"""


def ddp_rows() -> list[dict]:
    """Five one-chunk samples: rank 0 packs rows 0, 2, 4 into one row, rank 1 rows 1, 3 into another."""
    return [make_sample("motion_generation", num_chunks=1, seed=10 + i) for i in range(5)]


@pytest.mark.slow
def test_two_processes_weigh_every_sample_once(tmp_path):
    """Two ranks with packed rows of 3 and 2 samples: one SGD step is the gradient of the 5 samples' mean (a mean of
    the ranks' means would weigh them 1/6 and 1/4)."""
    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(root / "tests")))
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    subprocess.run([*launcher, str(script), str(tmp_path)], check=True, env=env, cwd=root, timeout=600)
    steps = [json.loads((tmp_path / f"step-{rank}.json").read_text()) for rank in (0, 1)]
    assert steps[0] == steps[1]
    reference = tiny_model().train()
    reference(**PELADataCollator(tiny_processor(reference.config))(ddp_rows())).loss.backward()
    for name, parameter in reference.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(torch.tensor(steps[0][name]), parameter.grad, atol=1e-6, rtol=1e-4, msg=name)
