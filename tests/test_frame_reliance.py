"""The frame-reliance diagnostic separates a model that reads the first frame from one that does not."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from pela_testing import make_sample, tiny_model, tiny_processor
from PIL import Image

from trainers.collator import PELADataCollator
from trainers.frame_reliance import derangement, evaluate_frame_reliance
from trainers.pela_trainer import PELATrainer, pela_training_arguments


def _two_scenes() -> list[dict]:
    """One instruction, two first frames (red left half / blue right half), two different one-chunk motions: only
    the frame tells the motions apart."""
    rows = []
    for index, (colour, half) in enumerate((((220, 40, 40), slice(0, 32)), ((40, 40, 220), slice(32, 64)))):
        row = make_sample(num_chunks=1, seed=index + 1)
        pixels = np.full((64, 64, 3), 128, dtype=np.uint8)
        pixels[:, half] = colour
        frame = Image.fromarray(pixels)
        row.update(first_frame=frame, boundary_frames=[frame, frame], instruction="pick up a cup", id=f"scene/{index}")
        rows.append(row)
    return rows


def test_derangement_moves_every_row():
    for count in (2, 3, 10):
        order = derangement(count, seed=count)
        assert sorted(order) == list(range(count)) and all(order[i] != i for i in range(count))
    with pytest.raises(ValueError, match="at least 2 rows"):
        derangement(1, seed=0)


def test_frame_gain_is_large_only_after_learning_from_the_frame(tmp_path):
    rows = _two_scenes()
    model = tiny_model(seed=0, align=False)
    processor = tiny_processor(model.config)
    untrained = evaluate_frame_reliance(model, processor, None, rows)
    assert abs(untrained["frame_gain"]) < 0.1 and untrained["num_rows"] == 2
    assert untrained["instruction_gain"] == pytest.approx(0.0, abs=1e-6)  # both rows have the same instruction

    args = pela_training_arguments(
        str(tmp_path), max_steps=100, per_device_train_batch_size=2, learning_rate=3e-3, warmup_steps=0,
        lr_scheduler_type="constant", weight_decay=0.0, logging_steps=100, save_strategy="no", use_cpu=True,
        disable_tqdm=True, seed=0,
    )  # fmt: skip
    stream = datasets.IterableDataset.from_generator(lambda: iter(rows))
    PELATrainer(model=model.train(), args=args, train_dataset=stream, data_collator=PELADataCollator(processor)).train()
    trained = evaluate_frame_reliance(model, processor, None, rows)
    assert trained["frame_gain"] > 1.0, trained
    assert trained["mcp_loss_shuffled_frames"] > trained["mcp_loss"]
    assert model.training  # the model's mode is restored


def test_frame_reliance_refuses_what_it_cannot_score():
    rows = _two_scenes()
    model = tiny_model(align=False)
    processor = tiny_processor(model.config)
    unlabelled = [rows[0], {**rows[1], "has_motion_labels": False}]
    with pytest.raises(ValueError, match="scene/1"):
        evaluate_frame_reliance(model, processor, None, unlabelled)
    with pytest.raises(ValueError, match="next_token"):
        evaluate_frame_reliance(tiny_model(objective="next_token", align=False), processor, None, rows)
