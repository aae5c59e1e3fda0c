"""PELATrainer + PELADataCollator on the tiny PELA model: masking, logged losses, EMA, streaming, 2-process DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from pela_testing import make_sample, tiny_model, tiny_processor

from modeling_pela.perceiver import LatentStandardization
from trainers.collator import PELADataCollator
from trainers.pela_trainer import PELATrainer, pela_training_arguments

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("motion_generation", "video_only", "motion_continuation", "motion_description", "motion_generation")


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        rows.append(make_sample(task, hands=("left", "right") if i % 2 else ("right",), num_chunks=2, seed=i,
                                context_chunks=1 if task == "motion_continuation" else 0))  # fmt: skip
    return rows


def test_collator_masks_per_task_and_is_deterministic():
    model = tiny_model()
    collator = PELADataCollator(tiny_processor(model.config), seed=3)
    rows = _rows(5)
    batch, again = collator(rows), collator(rows)
    assert torch.equal(batch["input_ids"], again["input_ids"]) and torch.equal(batch["labels"], again["labels"])
    assert "first_target_chunk" not in batch
    mask_id = model.config.mask_token_id
    for b, row in enumerate(rows):
        motion = batch["chunk_ids"][b] >= 0
        masked = motion & (batch["input_ids"][b] == mask_id)
        motion_labels = batch["labels"][b][motion]
        if row["task_type"] == "video_only":
            assert bool(masked[motion].all()) and bool((motion_labels == -100).all()) and not batch["is_labeled"][b]
        elif row["task_type"] == "motion_description":
            assert not masked.any() and bool((motion_labels == -100).all())
            assert bool((batch["labels"][b][~motion] != -100).any())  # the response text
        else:
            assert masked.any()
            assert torch.equal(batch["labels"][b] != -100, masked | (~motion & (batch["labels"][b] != -100)))
        if row["task_type"] == "motion_continuation":  # the context time step (both hands' chunks) stays intact
            context = (batch["chunk_ids"][b] >= 0) & (batch["chunk_ids"][b] < len(row["hands"]))
            assert not masked[context].any()


def test_collator_full_mask_prob_masks_every_token_of_the_target_chunk():
    model = tiny_model()
    rows = [row for row in _rows(8) if row["task_type"] == "motion_generation"]
    assert rows
    batch = PELADataCollator(tiny_processor(model.config), seed=3, full_mask_prob=1.0)(rows)
    for b in range(len(rows)):
        chunk_ids = batch["chunk_ids"][b]
        target = chunk_ids[(batch["input_ids"][b] == model.config.mask_token_id) & (chunk_ids >= 0)].unique()
        assert target.numel() >= 1
        whole = torch.isin(chunk_ids, target[:1])  # the target chunk (later chunks: 5% each)
        assert bool((batch["input_ids"][b][whole] == model.config.mask_token_id).all())
        assert bool((batch["labels"][b][whole] != -100).all())
    with pytest.raises(ValueError, match="full_mask_prob"):
        PELADataCollator(tiny_processor(model.config), full_mask_prob=-0.1)


def test_next_token_collation_teacher_forces_every_target_token():
    model = tiny_model(objective="next_token", align=False)
    processor = tiny_processor(model.config)
    rows = _rows(5)
    batch = PELADataCollator(processor, objective="next_token")(rows)
    plain = processor.encode(rows)
    assert not bool((batch["input_ids"] == model.config.mask_token_id)[batch["is_labeled"]].any())  # no [MASK]
    assert torch.equal(batch["labels"], plain["labels"])  # every motion token of every target chunk is a label
    for b, row in enumerate(rows):
        motion_labels = batch["labels"][b][batch["chunk_ids"][b] >= 0]
        if row["task_type"] == "motion_generation":
            assert bool((motion_labels != -100).all())
    with pytest.raises(ValueError, match="objective"):
        PELADataCollator(processor, objective="diffusion")


def test_trainer_refuses_a_collator_built_for_another_objective(tmp_path):
    model = tiny_model(objective="next_token", align=False)
    args = pela_training_arguments(str(tmp_path), max_steps=1, use_cpu=True, save_strategy="no")
    with pytest.raises(ValueError, match="objective='next_token'"):
        PELATrainer(model=model, args=args, train_dataset=_rows(2), data_collator=PELADataCollator(
            tiny_processor(model.config)))  # fmt: skip


def test_masks_are_deterministic_per_epoch_and_new_every_epoch():
    collator = PELADataCollator(tiny_processor(tiny_model().config), seed=3)
    rows = [row for row in _rows(5) if row["task_type"] == "motion_generation"]
    epochs = []
    for epoch in (0, 1, 2, 1):
        collator.set_epoch(epoch)
        epochs.append(collator(rows)["input_ids"])
    assert torch.equal(epochs[1], epochs[3])  # the same epoch gives the same masks
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])


def test_cached_encodings_give_the_same_batches_every_epoch_and_refuse_a_reused_id(monkeypatch):
    processor = tiny_processor(tiny_model().config)
    rows = _rows(5)
    encodings = []
    encode_sample = processor.encode_sample
    monkeypatch.setattr(processor, "encode_sample", lambda *a, **k: encodings.append(1) or encode_sample(*a, **k))
    plain, cached = PELADataCollator(processor, seed=3), PELADataCollator(processor, seed=3, cache_size=4)
    for epoch in (0, 1, 2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        expected, batch = plain(rows), cached(rows)
        assert expected.keys() == batch.keys()
        assert all(torch.equal(expected[key], batch[key]) for key in expected), epoch  # masks new every epoch
    assert len(encodings) == 3 * 5 + 5 + 2 * 1  # plain: every row every epoch; cached: 4 rows once, the 5th each time
    renamed = {**rows[1], "instruction": "something else entirely"}
    with pytest.raises(ValueError, match=f"sample '{rows[1]['id']}'.*different row with this id"):
        cached([renamed])
    with pytest.raises(ValueError, match="cache_size"):
        PELADataCollator(processor, cache_size=-1)


class _RecordingCollator(PELADataCollator):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, torch.Tensor]] = []

    def __call__(self, rows):
        batch = super().__call__(rows)
        self.seen.append((self.epoch, batch["input_ids"]))
        return batch


@pytest.mark.parametrize("streamed", [True, False])
def test_every_epoch_of_a_training_run_draws_new_masks(streamed, tmp_path):
    model = tiny_model().train()
    rows = [make_sample("motion_generation", num_chunks=2, seed=i) for i in range(2)]
    collator = _RecordingCollator(tiny_processor(model.config))
    args = pela_training_arguments(
        str(tmp_path), max_steps=3, per_device_train_batch_size=2, logging_steps=1, warmup_steps=0,
        save_strategy="no", use_cpu=True, disable_tqdm=True, num_train_epochs=3,
    )  # fmt: skip
    train = datasets.IterableDataset.from_generator(lambda: iter(rows)) if streamed else rows
    PELATrainer(model=model, args=args, train_dataset=train, data_collator=collator).train()
    assert [epoch for epoch, _ in collator.seen] == [0, 1, 2]  # one batch per pass over the two rows
    masks = [ids for _, ids in collator.seen]
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])


def test_trainer_logs_hybrid_loss_terms_and_runs_the_ema(tmp_path):
    model = tiny_model().train()
    lap_before = {k: v.clone() for k, v in model.state_dict().items()}
    collator = PELADataCollator(tiny_processor(model.config))
    args = pela_training_arguments(
        str(tmp_path), max_steps=3, per_device_train_batch_size=5, logging_steps=1, learning_rate=1e-3,
        warmup_steps=0, save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    stream = datasets.IterableDataset.from_generator(lambda: iter(_rows(15)))
    trainer = PELATrainer(model=model, args=args, train_dataset=stream, data_collator=collator)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    for log in logs:
        for key in ("mcp_loss", "align_loss", "text_loss", "latent_action_std", "mcp_accuracy"):
            assert key in log and log[key] == log[key], (key, log)  # present and not NaN
        assert 0.0 <= log["mcp_accuracy"] <= 1.0 and log["latent_action_std"] > 0
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, lap_before[k])]
    assert changed, "training changed no parameter"
    assert args.learning_rate == 1e-3 and args.weight_decay == 0.05 and args.adam_beta2 == 0.95
    assert args.lr_scheduler_type == "cosine" and args.max_grad_norm == 1.0


DDP_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import datasets, torch
from pela_testing import make_sample, tiny_model, tiny_processor
from test_pela_trainer import _rows
from trainers.collator import PELADataCollator
from trainers.pela_trainer import PELATrainer, pela_training_arguments

out, batch = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
# the latent standardisation's gradient (BatchNorm's) depends on the split by design; its statistics are pooled
# (test_latent_statistics_are_pooled_over_processes)
model = tiny_model(standardize_latents=False).train()
args = pela_training_arguments(out, max_steps=2, per_device_train_batch_size=batch, logging_steps=1,
                               learning_rate=1e-3, warmup_steps=0, save_strategy="no", use_cpu=True,
                               disable_tqdm=True, seed=0)
stream = datasets.IterableDataset.from_generator(lambda: iter(_rows(20)))
trainer = PELATrainer(model=model, args=args, train_dataset=stream,
                      data_collator=PELADataCollator(tiny_processor(model.config)))
trainer.train()
lap = {{k: v.double().sum().item() for k, v in model.named_buffers() if "lap" in k.lower() or "ema" in k.lower()}}
lap.update({{k: v.double().sum().item() for k, v in model.named_parameters() if "lap" in k.lower()}})
state = {{k: v.double().sum().item() for k, v in model.state_dict().items()}}
json.dump({{"state": state, "lap": lap, "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}},
          open(f"{{out}}/result-{{trainer.args.process_index}}.json", "w"))
trainer.accelerator.end_training()  # destroy the process group: exiting with it alive can abort at teardown
"""


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    subprocess.run([sys.executable, str(script), str(one), "4"], check=True, env=env, cwd=ROOT, timeout=600)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    subprocess.run([*launcher, str(script), str(two), "2"], check=True, env=env, cwd=ROOT, timeout=600)
    single = json.loads((one / "result-0.json").read_text())
    rank0, rank1 = (json.loads((two / f"result-{r}.json").read_text()) for r in (0, 1))
    assert rank0["state"] == rank1["state"]  # identical weights, EMA'd perceiver included, on both ranks
    assert rank0["lap"] and rank0["lap"] == rank1["lap"]
    for key, value in single["state"].items():
        assert rank0["state"][key] == pytest.approx(value, rel=1e-4, abs=1e-4), key
    assert rank0["losses"] == pytest.approx(single["losses"], rel=1e-4)


def _pool_statistics(rank: int, store: str, samples: torch.Tensor, result: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    norm = LatentStandardization(samples.shape[-1]).train()
    norm.running_mean.fill_(3.0)  # the sums are shifted by the running mean
    norm(samples[rank::2])  # this process's share of the batch
    norm.update_statistics()
    torch.save({name: buffer for name, buffer in norm.named_buffers()}, f"{result}-{rank}.pt")
    torch.distributed.destroy_process_group()


def test_latent_statistics_are_pooled_over_processes(tmp_path):
    """Two processes holding 3 and 2 of 5 samples update the latent standardisation's running statistics exactly
    as one process holding all 5 (a collective in ``update_statistics``)."""
    samples = torch.randn(5, 6, generator=torch.Generator().manual_seed(0)) * 3 + 10
    torch.multiprocessing.spawn(
        _pool_statistics, args=(str(tmp_path / "store"), samples, str(tmp_path / "stats")), nprocs=2
    )
    single = LatentStandardization(6).train()
    single.running_mean.fill_(3.0)
    single(samples)
    single.update_statistics()
    torch.testing.assert_close(single.running_mean, 0.9 * 3.0 + 0.1 * samples.mean(0))
    torch.testing.assert_close(single.running_var, 0.9 + 0.1 * samples.var(0))
    for rank in (0, 1):
        pooled = torch.load(tmp_path / f"stats-{rank}.pt")
        for name, buffer in single.named_buffers():
            torch.testing.assert_close(pooled[name], buffer)


def test_streamed_batches_are_pinned_only_with_an_accelerator(tmp_path):
    model = tiny_model().train()
    rows = [make_sample("motion_generation", num_chunks=2, seed=i) for i in range(2)]
    args = pela_training_arguments(str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to="none")
    assert args.dataloader_pin_memory  # the Trainer's default, without use_cpu
    train = datasets.IterableDataset.from_generator(lambda: iter(rows))
    trainer = PELATrainer(model=model, args=args, train_dataset=train, data_collator=PELADataCollator(
        tiny_processor(model.config)))  # fmt: skip
    assert trainer.get_train_dataloader().pin_memory == torch.accelerator.is_available()  # no per-pass CPU warning


def test_logged_terms_are_averaged_over_every_process():
    """Under DDP, rank 0 may hold no labelled row in a logging window: mcp_loss must still be logged (from rank 1)."""
    from types import SimpleNamespace

    from trainers.pela_trainer import LOGGED_LOSSES, _Window

    def window(**losses):
        w = _Window()
        for values in zip(*losses.values(), strict=True):
            w.add(SimpleNamespace(logits=None, **dict(zip(losses, map(torch.tensor, values), strict=True))), {}, 0)
        return w

    ranks = [window(align_loss=[0.2, 0.4]), window(align_loss=[0.6, 0.8], mcp_loss=[3.0, 5.0])]
    flats = []
    for w in ranks:  # what each process contributes to the sum over processes
        w.summary(lambda t: flats.append(t.clone()) or t, torch.device("cpu"))
    total = flats[0] + flats[1]
    assert set(LOGGED_LOSSES) >= {"align_loss", "mcp_loss"}
    logs = window(align_loss=[0.2, 0.4]).summary(lambda t: total, torch.device("cpu"))
    assert logs == pytest.approx({"align_loss": 0.5, "mcp_loss": 4.0})
    assert window(align_loss=[0.2]).summary(lambda t: t, torch.device("cpu")) == pytest.approx({"align_loss": 0.2})
