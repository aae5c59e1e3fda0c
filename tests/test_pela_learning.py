"""The tiny model learns what it is shown: two prompts, two different motion chunks, and generation must give each
prompt its own chunk back, slot by slot, for both objectives (masked chunk prediction and next-token prediction).

These catch the failures that made the demo's models predict the motion marginal: ``[MASK]`` tokens without slot
identity (every masked slot predicts the pooled marginal of all slots), and a next-token baseline trained on masked
inputs it never sees at generation time."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from pela_testing import make_sample, tiny_model, tiny_processor

from trainers.collator import PELADataCollator
from trainers.pela_trainer import PELATrainer, pela_training_arguments

GENERATION_KEYS = ("input_ids", "attention_mask", "pixel_values", "frame_pixel_values")


def _two_prompts() -> list[dict]:
    """Same scene, two instructions, two random one-chunk right-hand motions."""
    first, second = make_sample(num_chunks=1, seed=1), make_sample(num_chunks=1, seed=2)
    second["first_frame"], second["boundary_frames"] = first["first_frame"], first["boundary_frames"]
    first["instruction"], second["instruction"] = "pick up a cup", "open drawer"
    first["id"], second["id"] = "prompt/cup", "prompt/drawer"
    return [first, second]


@pytest.mark.parametrize(("objective", "align", "steps"), [("masked_chunk", True, 120), ("next_token", False, 60)])
def test_generation_reproduces_each_prompts_motion(objective, align, steps, tmp_path):
    rows = _two_prompts()
    model = tiny_model(seed=0, objective=objective, align=align).train()
    processor = tiny_processor(model.config)
    args = pela_training_arguments(
        str(tmp_path), max_steps=steps, per_device_train_batch_size=2, learning_rate=3e-3, warmup_steps=0,
        lr_scheduler_type="constant", weight_decay=0.0, logging_steps=steps, save_strategy="no", use_cpu=True,
        disable_tqdm=True, seed=0,
    )  # fmt: skip
    stream = datasets.IterableDataset.from_generator(lambda: iter(rows))
    collator = PELADataCollator(processor, objective=objective)
    PELATrainer(model=model, args=args, train_dataset=stream, data_collator=collator).train()
    model.eval()
    for row in rows:
        batch = processor(row, generation=True)
        output = model.generate_motion(**{k: batch[k] for k in GENERATION_KEYS}, hands="right", decode_ratio=0.25)
        generated = output.motion_tokens[0, 0, 0].numpy()
        target = np.asarray(row["motion_tokens_right"][0])
        assert (generated == target).mean() > 0.9, (row["instruction"], (generated == target).mean())


def test_slot_embedding_reaches_masked_positions_in_training_and_decoding():
    model = tiny_model()
    processor = tiny_processor(model.config)
    batch = processor.encode(make_sample(num_chunks=1))
    slots = model.motion_slots_from_input_ids(batch["input_ids"])
    motion = batch["chunk_ids"] >= 0
    assert torch.equal(slots[motion], torch.arange(model.config.tokens_per_chunk))
    assert bool((slots[~motion] == -1).all())
    masked = torch.full((1, 3), model.config.mask_token_id)
    embeds = model.embed_tokens(masked, torch.tensor([0, 5, -1]))
    assert not torch.equal(embeds[0, 0], embeds[0, 1])  # two [MASK] slots differ
    assert torch.equal(embeds[0, 2], model.get_input_embeddings()(masked)[0, 2])  # no slot: the token embedding only
