"""The frozen frame encoder's feature cache (``PELAForPretraining.use_frame_feature_cache``,
``modeling_pela/frame_feature_cache.py``): the same losses and gradients as without it, every distinct frame encoded
once, never features of other weights, bounded memory; and ``PELATrainingArguments.frame_feature_cache``."""

from __future__ import annotations

import datasets
import pytest
import torch
from pela_testing import (
    make_sample,
    mask_batch,
    model_inputs,
    single_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_processor,
)
from torch import nn
from transformers import Trainer, TrainerCallback

from modeling_pela.frame_feature_cache import FrameFeatureCache
from trainers.collator import PELADataCollator
from trainers.pela_trainer import PELATrainer, pela_training_arguments

VJEPA2 = {
    "model_type": "vjepa2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 14,
    "crop_size": 56, "frames_per_clip": 2, "tubelet_size": 2, "pred_hidden_size": 16, "pred_num_hidden_layers": 1,
    "pred_num_attention_heads": 2, "num_pooler_layers": 1,
}  # fmt: skip


def _batch(model) -> dict:
    samples = [
        make_sample("motion_generation", seed=0),
        make_sample("video_only", hands=("left", "right"), seed=1),
        make_sample("motion_continuation", hands=("left", "right"), num_chunks=3, context_chunks=1, seed=3),
    ]
    return model_inputs(mask_batch(tiny_processor(model.config).encode(samples), model.config))


def _count_encoded_units(model) -> list[int]:
    """Units (frames or clips) the frame encoder receives, per call."""
    calls: list[int] = []

    def hook(_module, args, kwargs):
        pixels = kwargs.get("pixel_values", kwargs.get("pixel_values_videos"))
        calls.append(pixels.shape[0])

    model.frame_encoder.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def _loss_and_grads(model, batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), out.align_loss.detach(), grads


@pytest.mark.parametrize("encoder", ["dinov3", "vjepa2"])
def test_cached_features_give_the_same_losses_and_gradients_and_each_frame_is_encoded_once(encoder):
    model = (tiny_model() if encoder == "dinov3" else tiny_model(frame_encoder_config=VJEPA2)).train()
    batch = _batch(model)
    encoded = _count_encoded_units(model)
    loss, align, grads = _loss_and_grads(model, batch)
    uncached = sum(encoded)
    cache = model.use_frame_feature_cache(1000)
    encoded.clear()
    first = _loss_and_grads(model, batch)
    assert sum(encoded) == len(cache) > 0  # no unit encoded twice in a step
    if encoder == "dinov3":  # the first frame: read by the LSP and again by the LAP as a chunk's start frame
        assert sum(encoded) < uncached
    encoded.clear()
    second = _loss_and_grads(model, batch)
    assert encoded == [] and cache.hits >= len(cache)  # the next step encodes nothing
    for cached in (first, second):
        torch.testing.assert_close(cached[0], loss)
        torch.testing.assert_close(cached[1], align)
        assert cached[2].keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(cached[2][name], grad, msg=name)
    model.eval()  # evaluation and generation never read or fill the cache
    encoded.clear()
    lookups = (cache.hits, cache.misses)
    with torch.no_grad():
        model(**batch)
    assert sum(encoded) == uncached and (cache.hits, cache.misses) == lookups
    assert model.use_frame_feature_cache(None) is None
    model.train()
    encoded.clear()
    model(**batch)
    assert sum(encoded) == uncached


def test_the_cache_never_returns_features_of_other_encoder_weights():
    model = tiny_model().train()
    batch = _batch(model)
    cache = model.use_frame_feature_cache(1000)
    before = model(**batch).align_loss
    model.to(torch.float64).to(torch.float32)  # a round trip may give back the same addresses
    assert len(cache) == 0
    torch.testing.assert_close(model(**batch).align_loss, before)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(**batch)
    assert cache.misses == 3 * len(cache)  # encoded again under autocast, and again without it
    model(**batch)
    assert cache.misses == 4 * len(cache)
    other = tiny_model(seed=1).frame_encoder
    model.load_backbone_weights(frame_encoder=other)
    after = model(**batch).align_loss
    model.use_frame_feature_cache(None)
    torch.testing.assert_close(after, model(**batch).align_loss)
    assert not torch.allclose(after, before)


def test_the_cache_keeps_the_most_recently_used_units_and_encodes_duplicates_once():
    encoder = nn.Linear(4, 4)
    batches: list[int] = []

    def encode(units: torch.Tensor) -> torch.Tensor:
        batches.append(units.shape[0])
        return encoder(units)[:, None]

    units = torch.arange(20.0).reshape(5, 4)
    cache = FrameFeatureCache(3)
    with torch.no_grad():
        features = cache.encode(encoder, units[[0, 1, 0, 2]], encode)
        torch.testing.assert_close(features, encoder(units[[0, 1, 0, 2]])[:, None])
        assert batches == [3] and len(cache) == 3  # unit 0 encoded once
        cache.encode(encoder, units[[0]], encode)  # 0 becomes the most recently used
        cache.encode(encoder, units[[3, 4]], encode)  # drops 1 and 2, the least recently used
        assert batches == [3, 2] and len(cache) == 3
        cache.encode(encoder, units[[0, 3, 4]], encode)
        assert batches == [3, 2]
        cache.encode(encoder, units[[1]], encode)
        assert batches == [3, 2, 1]
        every = cache.encode(encoder, units, encode)  # more units than it keeps: all still returned
        torch.testing.assert_close(every, encoder(units)[:, None])
        assert len(cache) == 3
    with pytest.raises(ValueError, match="max_entries"):
        FrameFeatureCache(0)
    precomputed = tiny_model(frame_encoder_config=None, frame_feature_dim=8)
    with pytest.raises(ValueError, match="no frame encoder"):
        precomputed.use_frame_feature_cache(10)
    assert precomputed.use_frame_feature_cache(None) is None


class _CacheProbe(TrainerCallback):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.sizes.append(len(model._frame_feature_cache))


def _train(rows: list[dict], output_dir, frame_feature_cache: int):
    """4 steps of 2 rows of a model built by ``model_init`` (after the Trainer is set up); returns the trainer, the
    cache sizes after each step and the parameter counts made."""
    calls: list[int] = []

    def model_init():
        model = tiny_model().train()
        num_parameters = model.num_parameters
        model.num_parameters = lambda *args, **kwargs: calls.append(1) or num_parameters(*args, **kwargs)
        return model

    args = pela_training_arguments(
        str(output_dir), max_steps=4, per_device_train_batch_size=2, learning_rate=1e-3, warmup_steps=0,
        save_strategy="no", use_cpu=True, disable_tqdm=True, frame_feature_cache=frame_feature_cache,
    )  # fmt: skip
    probe = _CacheProbe()
    trainer = PELATrainer(
        model_init=model_init, args=args, train_dataset=datasets.IterableDataset.from_generator(lambda: iter(rows)),
        data_collator=PELADataCollator(tiny_processor(tiny_model().config)),
        callbacks=[probe] if frame_feature_cache else None,
    )  # fmt: skip
    calls.clear()  # the Trainer builds a model at set-up and another one in train()
    trainer.train()
    return trainer, probe.sizes, len(calls)


def test_training_with_the_cache_gives_the_same_weights_and_counts_parameters_once(tmp_path):
    rows = [make_sample("motion_generation", num_chunks=1, seed=i) for i in range(4)]
    plain, _, plain_counts = _train(rows, tmp_path / "plain", 0)
    cached, sizes, cached_counts = _train(rows, tmp_path / "cached", 64)
    assert sizes == [4, 8, 8, 8]  # two frames per row, encoded in the first epoch only
    assert cached.model._frame_feature_cache is None  # off after training
    expected = plain.model.state_dict()
    for name, value in cached.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], msg=name)
    assert plain_counts == cached_counts == 1  # once per run for the FLOP count, not once per step
    batch = plain.data_collator(rows[:2])
    assert plain.floating_point_ops(batch) == Trainer.floating_point_ops(plain, batch) > 0


def test_the_cache_size_is_checked_before_training(tmp_path):
    with pytest.raises(ValueError, match="frame_feature_cache=8 .* no frame encoder"):
        PELATrainer(
            model=tiny_model(frame_encoder_config=None, frame_feature_dim=8),
            args=pela_training_arguments(str(tmp_path), use_cpu=True, frame_feature_cache=8),
        )
    with pytest.raises(ValueError, match="frame_feature_cache must be a number of frames >= 0"):
        pela_training_arguments(str(tmp_path), use_cpu=True, frame_feature_cache=-1)
