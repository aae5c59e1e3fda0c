"""Atomic checkpoints and the EMA callback, on a tiny regression model with the real transformers.Trainer."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from trainers.callbacks import PerceiverEMACallback
from trainers.checkpointing import STAGING_DIR, AtomicCheckpointMixin, last_complete_checkpoint


class _Regression(nn.Module):
    """y = w x, plus an EMA copy of w that ``ema_update`` moves towards it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(4, 1)
        self.register_buffer("ema_w", torch.zeros(1, 4))
        self.ema_calls = 0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": ((self.w(x) - y) ** 2).mean()}

    def ema_update(self) -> None:
        self.ema_w.mul_(0.5).add_(0.5 * self.w.weight.detach())
        self.ema_calls += 1


class _Data(Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.linspace(-1, 1, 4) * (i % 7 - 3)
        return {"x": x, "y": x.sum(0, keepdim=True)}


class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


class _AtomicTrainer(AtomicCheckpointMixin, Trainer):
    pass


def _trainer(tmp_path, model: _Regression, max_steps: int = 6, **kwargs) -> _AtomicTrainer:
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        save_strategy="steps",
        save_steps=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        learning_rate=0.05,
        restore_callback_states_from_checkpoint=True,
        **kwargs,
    )
    return _AtomicTrainer(model=model, args=args, train_dataset=_Data(), callbacks=[PerceiverEMACallback()])


def test_checkpoints_are_complete_and_staging_is_cleared(tmp_path):
    _trainer(tmp_path, _Regression(), save_total_limit=2).train()
    names = sorted(os.listdir(tmp_path))
    assert names == ["checkpoint-4", "checkpoint-6"], names  # rotated, nothing staged left behind
    for name in names:
        files = set(os.listdir(tmp_path / name))
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth"} <= files
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-6")


def test_a_save_killed_midway_leaves_no_checkpoint_folder(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, _Regression())
    calls = {"n": 0}
    original = Trainer._save_rng_state

    def dies_on_second_save(self, output_dir):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed while saving")  # weights and optimizer already written
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", dies_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert not (tmp_path / "checkpoint-4").exists()
    assert (tmp_path / STAGING_DIR / "checkpoint-4" / "model.safetensors").exists()  # the partial save
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")

    monkeypatch.setattr(Trainer, "_save_rng_state", original)
    resumed = _trainer(tmp_path, _Regression())
    resumed.train(resume_from_checkpoint=last_complete_checkpoint(tmp_path))
    assert resumed.state.global_step == 6
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_ema_callback_runs_once_per_optimizer_step_and_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    straight = _Regression()
    _trainer(tmp_path / "straight", straight, max_steps=6).train()
    assert straight.ema_calls == 6  # 6 optimiser steps of 2 accumulated micro-batches each

    torch.manual_seed(0)
    first = _Regression()
    interrupted = _trainer(tmp_path / "killed", first, max_steps=6)
    interrupted.add_callback(_StopAt(4))  # same schedule as the straight run, stopped after step 4
    interrupted.train()
    state = json.loads((tmp_path / "killed" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["PerceiverEMACallback"]["args"]["num_updates"] == 4

    resumed_model = _Regression()
    resumed = _trainer(tmp_path / "killed", resumed_model, max_steps=6)
    resumed.train(resume_from_checkpoint=str(tmp_path / "killed" / "checkpoint-4"))
    callback = next(c for c in resumed.callback_handler.callbacks if isinstance(c, PerceiverEMACallback))
    assert callback.num_updates == 6 and resumed_model.ema_calls == 2
    torch.testing.assert_close(resumed_model.ema_w, straight.ema_w)  # EMA state came back with the weights
    torch.testing.assert_close(resumed_model.w.weight, straight.w.weight)


def test_ema_callback_rejects_models_without_ema_update(tmp_path):
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Linear(4, 1)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": ((self.w(x) - y) ** 2).mean()}

    with pytest.raises(TypeError, match="ema_update"):
        _trainer(tmp_path, Plain(), max_steps=1).train()
