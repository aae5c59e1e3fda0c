"""A PELA pretraining run killed with SIGKILL resumes from its last checkpoint and continues the same loss curve
(padded batches, and packed rows: ``trainers.packing``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys, time
sys.path.insert(0, {tests!r})
import datasets, torch
from transformers import TrainerCallback
from pela_testing import tiny_model, tiny_processor
from test_pela_trainer import _rows
from trainers.checkpointing import last_complete_checkpoint
from trainers.collator import PELADataCollator
from trainers.pela_trainer import PELATrainer, pela_training_arguments

out, slow, packing = sys.argv[1], sys.argv[2] == "slow", sys.argv[3] == "packed"
torch.set_num_threads(1)

class Slow(TrainerCallback):  # leaves time to kill the run between checkpoints
    def on_step_end(self, args, state, control, **kwargs):
        if slow:
            time.sleep(1.0)

model = tiny_model().train()
args = pela_training_arguments(out, max_steps=8, per_device_train_batch_size=1 if packing else 3, logging_steps=1,
                               learning_rate=1e-3, warmup_steps=2, save_strategy="steps", save_steps=2, use_cpu=True,
                               disable_tqdm=True, seed=0, packing=packing, packing_length=2048, packing_buffer_size=8)
stream = datasets.IterableDataset.from_generator(lambda: iter(_rows(40)))
trainer = PELATrainer(model=model, args=args, train_dataset=stream, callbacks=[Slow()],
                      data_collator=PELADataCollator(tiny_processor(model.config)))
trainer.train(resume_from_checkpoint=last_complete_checkpoint(out))
losses = {{h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}}
json.dump(losses, open(out + "/losses.json", "w"))
"""


@pytest.mark.parametrize("layout", ["padded", pytest.param("packed", marks=pytest.mark.slow)])
def test_sigkill_midway_then_resume_continues_the_same_loss_curve(layout, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), str(straight), "fast", layout], check=True, env=env, timeout=600)

    process = subprocess.Popen([sys.executable, str(script), str(killed), "slow", layout], env=env)
    deadline = time.time() + 300
    while not (killed / "checkpoint-4").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "losses.json").exists()
    assert not (killed / "checkpoint-8").exists()

    subprocess.run([sys.executable, str(script), str(killed), "fast", layout], check=True, env=env, timeout=600)
    expected = json.loads((straight / "losses.json").read_text())
    resumed = json.loads((killed / "losses.json").read_text())
    assert "8" in resumed and "8" in expected
    for step, loss in resumed.items():  # the resumed run logs the steps after its checkpoint, and they match
        assert loss == pytest.approx(expected[step], rel=1e-4), step
    assert set(os.listdir(killed)) >= {"checkpoint-4", "checkpoint-8"}
