"""PELAForPretraining: MCP attention semantics on every backend, losses, decoupled gradients and EMA, variants,
gradient checkpointing, bf16 and input errors (tiny random models on CPU)."""

from __future__ import annotations

import pytest
import torch
from pela_testing import (
    K,
    make_sample,
    mask_batch,
    model_inputs,
    single_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_processor,
    uncompiled_flex_attention,  # noqa: F401
)
from transformers import TrainerControl, TrainerState, TrainingArguments

import modeling_pela.perceiver as perceiver_module
from modeling_pela import PELAConfig, PELAForPretraining
from modeling_pela.perceiver import FrameTokenGrid, LatentStandardization, grid_coordinates, statistics_dtype
from trainers.callbacks import PerceiverEMACallback

BACKENDS = ("eager", "sdpa", "flex_attention")


@pytest.fixture(scope="module")
def model() -> PELAForPretraining:
    return tiny_model()


@pytest.fixture(scope="module")
def processor(model):
    return tiny_processor(model.config)


@pytest.fixture(scope="module")
def mixed_batch(model, processor) -> dict:
    """Labelled generation, video-only (both hands), description and continuation samples, masked like the
    collator does."""
    samples = [
        make_sample("motion_generation", seed=0),
        make_sample("video_only", hands=("left", "right"), seed=1),
        make_sample("motion_description", seed=2),
        make_sample("motion_continuation", hands=("left", "right"), num_chunks=3, context_chunks=1, seed=3),
    ]
    return model_inputs(mask_batch(processor.encode(samples), model.config))


def perturbation_batch(processor, model) -> tuple[dict, torch.Tensor]:
    """Three copies of a 2-chunk sample with a partly masked first chunk: original, one with slot 100 of chunk 0
    changed, one with every token after chunk 0 changed. Returns the inputs and chunk 0's positions."""
    config = model.config
    batch = model_inputs(processor.encode(make_sample("motion_generation", num_chunks=2, seed=5)))
    ids = batch["input_ids"]
    chunk0 = (batch["chunk_ids"][0] == 0).nonzero().flatten()
    chunk1 = (batch["chunk_ids"][0] == 1).nonzero().flatten()
    ids[0, chunk0[::3]] = config.mask_token_id
    inside, after = ids.clone(), ids.clone()
    slot = chunk0[100]
    inside[0, slot] = config.mask_token_id if ids[0, slot] != config.mask_token_id else config.finger_token_range[0]
    after[0, chunk1] = torch.where(
        torch.arange(K) < K // 2, config.wrist_token_range[0] + 7, config.finger_token_range[0] + 9
    )
    after[0, chunk1[::2]] = config.mask_token_id
    batch = {key: value.repeat(3, *[1] * (value.dim() - 1)) for key, value in batch.items()}
    batch["input_ids"] = torch.cat([ids, inside, after])
    batch.pop("labels")
    return batch, chunk0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.usefixtures("uncompiled_flex_attention")
def test_masked_chunk_attention_by_perturbation(backend, processor):
    """Bidirectional inside a chunk, causal across chunks; identical numbers on eager, sdpa and flex_attention."""
    model = tiny_model(attn_implementation=backend)
    assert model.get_decoder().config._attn_implementation == backend
    batch, _ = perturbation_batch(processor, model)
    with torch.no_grad():  # flex_attention has no CPU backward
        out = model(**batch)
    embeddings, logits = out.predictive_embeddings, out.logits
    # A later token of chunk 0 (slot 100) changed: earlier slots of chunk 0 see it.
    assert not torch.allclose(embeddings[1, 0, :100], embeddings[0, 0, :100], atol=1e-5)
    assert not torch.allclose(logits[1, 0, :10], logits[0, 0, :10], atol=1e-5)
    # Everything after chunk 0 changed: chunk 0 is untouched (predictive embeddings and final-layer logits).
    torch.testing.assert_close(embeddings[2, 0], embeddings[0, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(logits[2, 0], logits[0, 0], atol=1e-5, rtol=0)
    assert not torch.allclose(embeddings[2, 1], embeddings[0, 1], atol=1e-5)
    reference = tiny_model(attn_implementation="sdpa")
    with torch.no_grad():
        expected = reference(**batch)
    torch.testing.assert_close(embeddings, expected.predictive_embeddings, atol=2e-5, rtol=1e-4)


def test_next_token_objective_is_causal_inside_a_chunk(processor):
    model = tiny_model(objective="next_token")
    batch, _ = perturbation_batch(processor, model)
    with torch.no_grad():
        out = model(**batch)
    torch.testing.assert_close(out.predictive_embeddings[1, 0, :100], out.predictive_embeddings[0, 0, :100])
    assert not torch.allclose(out.predictive_embeddings[1, 0, 100:], out.predictive_embeddings[0, 0, 100:])


def test_flash_attention_cannot_express_the_chunk_mask(model, mixed_batch):
    model.get_decoder().config._attn_implementation = "flash_attention_2"
    try:
        with pytest.raises(ValueError, match="cannot express the masked-chunk attention"):
            model(**mixed_batch)
    finally:
        model.get_decoder().config._attn_implementation = "sdpa"


def test_mixed_batch_loss_is_the_mean_of_per_sample_losses(model, mixed_batch):
    """Loss = mean_b(1[labeled] MCP_b + text_b + lambda Align_b); padding changes nothing."""
    with torch.no_grad():
        out = model(**mixed_batch)
        assert out.logits.shape == (4, 6, K, 256) and out.predictive_embeddings.shape == (4, 6, K, 64)
        assert out.chunk_mask.sum(-1).tolist() == [2, 4, 2, 6]
        expected = []
        for row in range(4):
            lengths = int(mixed_batch["attention_mask"][row].sum())
            chunks = int(out.chunk_mask[row].sum())
            single = {
                key: value[row : row + 1, :lengths] if value.dim() == 2 and value.shape[1] >= lengths else value
                for key, value in mixed_batch.items()
            }
            single["pixel_values"] = mixed_batch["pixel_values"][row : row + 1]
            single["frame_pixel_values"] = mixed_batch["frame_pixel_values"][row : row + 1]
            for key in ("chunk_hands", "chunk_frames"):
                single[key] = mixed_batch[key][row : row + 1, :chunks]
            single["is_labeled"] = mixed_batch["is_labeled"][row : row + 1]
            one = model(**single)
            total = model.config.lambda_align * one.align_loss
            if one.mcp_loss is not None:
                total = total + one.mcp_loss
            if one.text_loss is not None:
                total = total + one.text_loss
            torch.testing.assert_close(one.loss, total)
            torch.testing.assert_close(one.predictive_embeddings[0], out.predictive_embeddings[row, :chunks])
            expected.append(total)
    torch.testing.assert_close(out.loss, torch.stack(expected).mean(), atol=1e-5, rtol=1e-5)
    assert out.text_loss is not None and out.mcp_loss is not None and out.latent_action_std > 0


def test_video_only_samples_train_alignment_only(model, processor):
    batch = model_inputs(mask_batch(processor.encode(make_sample("motion_generation", seed=7)), model.config))
    with torch.no_grad():
        labeled = model(**batch)
        batch["is_labeled"] = torch.tensor([False])
        unlabeled = model(**batch)
    assert labeled.mcp_loss is not None and unlabeled.mcp_loss is None
    torch.testing.assert_close(unlabeled.loss, model.config.lambda_align * unlabeled.align_loss)
    torch.testing.assert_close(labeled.loss, labeled.mcp_loss + model.config.lambda_align * labeled.align_loss)


def test_decoupled_gradients_and_frozen_frame_encoder(mixed_batch):
    model = tiny_model().train()
    assert not model.frame_encoder.training
    model(**mixed_batch).loss.backward()
    perceiver = model.perceiver
    assert all(p.grad is None and not p.requires_grad for p in perceiver.lap_trunk.parameters())
    assert perceiver.lsp_queries.weight.grad is None and not perceiver.lsp_queries.weight.requires_grad
    assert all(p.grad is not None for p in perceiver.lsp_trunk.parameters())
    assert perceiver.lap_queries.weight.grad is not None and perceiver.lap_queries.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.frame_encoder.parameters())
    assert model.get_input_embeddings().weight.grad is not None


def test_ema_update_implements_equations_6_and_7(mixed_batch):
    alpha = 0.9
    model = tiny_model(ema_alpha=alpha).train()
    perceiver = model.perceiver

    def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.parameters()]

    lap_trunk, lsp_trunk = snapshot(perceiver.lap_trunk), snapshot(perceiver.lsp_trunk)
    lap_queries, lsp_queries = snapshot(perceiver.lap_queries), snapshot(perceiver.lsp_queries)
    assert all(torch.equal(a, b) for a, b in zip(lap_trunk, lsp_trunk, strict=True))  # initialised as copies
    assert torch.equal(lap_queries[0], lsp_queries[0])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**mixed_batch).loss.backward()
    optimizer.step()
    # The optimiser moves the LSP trunk and the LAP queries only.
    assert all(torch.equal(a, b) for a, b in zip(snapshot(perceiver.lap_trunk), lap_trunk, strict=True))
    assert torch.equal(perceiver.lsp_queries.weight, lsp_queries[0])
    new_lsp_trunk, new_lap_queries = snapshot(perceiver.lsp_trunk), snapshot(perceiver.lap_queries)
    assert not any(torch.equal(a, b) for a, b in zip(new_lsp_trunk, lsp_trunk, strict=True))
    assert not torch.equal(new_lap_queries[0], lap_queries[0])

    callback = PerceiverEMACallback()
    callback.on_optimizer_step(
        TrainingArguments(output_dir="unused", report_to=[]), TrainerState(), TrainerControl(), model=model
    )
    assert callback.num_updates == 1
    for updated, old_lap, new_lsp in zip(perceiver.lap_trunk.parameters(), lap_trunk, new_lsp_trunk, strict=True):
        expected = alpha * old_lap.double() + (1 - alpha) * new_lsp.double()
        torch.testing.assert_close(updated.double(), expected, atol=1e-7, rtol=0)
    expected = alpha * lsp_queries[0].double() + (1 - alpha) * new_lap_queries[0].double()
    torch.testing.assert_close(perceiver.lsp_queries.weight.double(), expected, atol=1e-7, rtol=0)
    # Sources are left alone by the EMA.
    assert all(torch.equal(a, b) for a, b in zip(snapshot(perceiver.lsp_trunk), new_lsp_trunk, strict=True))
    assert torch.equal(perceiver.lap_queries.weight, new_lap_queries[0])


def test_variants_without_alignment_and_without_latent_state(processor):
    sample = make_sample("motion_generation", seed=3)
    no_align = tiny_model(align=False).train()
    assert not hasattr(no_align.perceiver, "lap_trunk") and no_align.perceiver.lsp_queries.weight.requires_grad
    batch = model_inputs(mask_batch(processor.encode(sample), no_align.config))
    out = no_align(**batch)
    assert out.align_loss is None and out.latent_actions is None
    out.loss.backward()
    assert no_align.perceiver.lsp_queries.weight.grad is not None
    before = [p.clone() for p in no_align.perceiver.parameters()]
    no_align.ema_update()  # no LAP: nothing to do
    assert all(torch.equal(a, b) for a, b in zip(before, no_align.perceiver.parameters(), strict=True))

    baseline = tiny_model(align=False, use_latent_state=False, objective="next_token")
    assert baseline.perceiver is None
    plain = tiny_processor(baseline.config)
    batch = model_inputs(plain(sample))
    assert not bool((batch["input_ids"] >= baseline.config.state_left_token_id).any())
    batch.pop("frame_pixel_values")
    out = baseline(**batch)
    assert out.loss is not None and out.align_loss is None


def test_precomputed_frame_features(processor):
    model = tiny_model(frame_encoder_config=None, frame_feature_dim=24)
    assert model.frame_encoder is None
    features_processor = tiny_processor(model.config, frames=False)
    samples = [make_sample(seed=s, frame_features=24) for s in range(2)]
    batch = model_inputs(mask_batch(features_processor.encode(samples), model.config))
    assert batch["frame_features"].shape == (2, 3, 24)
    out = model(**batch)
    assert out.align_loss is not None and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="not frame_pixel_values"):
        model(**{**batch, "frame_pixel_values": torch.zeros(2, 3, 3, 56, 56)})


def test_vjepa2_frame_encoder(processor, mixed_batch):
    vjepa = {
        "model_type": "vjepa2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 14,
        "crop_size": 56, "frames_per_clip": 2, "tubelet_size": 2, "pred_hidden_size": 16,
        "pred_num_hidden_layers": 1, "pred_num_attention_heads": 2, "num_pooler_layers": 1,
    }  # fmt: skip
    model = tiny_model(frame_encoder_config=vjepa)
    features, grid = model._frame_pair_features(
        mixed_batch["frame_pixel_values"], None, torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1, 2])
    )
    assert features.shape == (2, 1, 16, 32)  # one slot: the pair is one 2-frame tubelet
    assert grid == FrameTokenGrid(prefix=0, height=4, width=4, repeats=1)
    out = model(**mixed_batch)
    assert torch.isfinite(out.loss) and out.align_loss is not None


def test_latent_perceivers_know_where_each_patch_lies():
    """Cross-attention is permutation invariant: only the Fourier position features tell the perceiver where a patch
    is. Moving a feature to another patch must change the latent state; with no grid (precomputed features) it
    cannot."""
    model = tiny_model()
    grid = FrameTokenGrid(prefix=1, height=4, width=4)
    features = torch.randn(1, 2, grid.num_tokens, model.config.frame_dim)
    moved = features.clone()
    moved[:, :, [1, 16]] = features[:, :, [16, 1]]  # swap the top-left and bottom-right patches
    perceivers = model.perceiver
    assert not torch.allclose(perceivers.latent_state(features, grid), perceivers.latent_state(moved, grid))
    torch.testing.assert_close(perceivers.latent_state(features), perceivers.latent_state(moved))
    with pytest.raises(ValueError, match="grid"):
        perceivers.latent_state(features, FrameTokenGrid(prefix=1, height=3, width=4))


def test_latent_state_says_where_things_are_to_an_attention_reader():
    """The VLM reads the latent state by attention, which pools tokens: position must be in the latents' content, not
    only in which latent carries a feature. A distinct feature at a random patch of a 4 x 4 grid, the LSP and a
    one-query attention reader trained together must regress the patch's (row, column). With the position held only
    by *which* latent or patch carries the feature (no keypoints), one coordinate stays at the mean (R^2 ~ 0)."""
    torch.manual_seed(0)
    model = tiny_model()
    perceivers, width = model.perceiver, model.config.hidden_size
    grid = FrameTokenGrid(prefix=1, height=4, width=4)
    coords = grid_coordinates(grid, slots=1, device=torch.device("cpu"), dtype=torch.float32)
    thing = torch.randn(model.config.frame_dim)
    query = torch.nn.Parameter(torch.randn(width) * 0.02)
    key, readout = torch.nn.Linear(width, width), torch.nn.Linear(width, 2)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        patches = torch.randint(grid.height * grid.width, (size,)) + grid.prefix
        features = torch.zeros(size, 1, grid.num_tokens, model.config.frame_dim)
        features[torch.arange(size), 0, patches] = thing
        return torch.cat([features, features], dim=1), coords[patches]

    def read(features: torch.Tensor) -> torch.Tensor:
        state = perceivers.latent_state(features, grid).flatten(1, 2)  # (M, 2K, D): the tokens the VLM sees
        weights = (key(state) @ query).softmax(-1)
        return readout((weights[..., None] * state).sum(1))

    params = [p for p in perceivers.parameters() if p.requires_grad] + [query, *key.parameters(), *readout.parameters()]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    for _ in range(300):
        features, target = batch(16)
        loss = (read(features) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    features, target = batch(256)
    with torch.no_grad():
        r2 = 1 - (read(features) - target).square().sum(0) / (target - target.mean(0)).square().sum(0)
    assert bool((r2 > 0.8).all()), r2


@pytest.mark.parametrize("rank", [0, 16])
def test_latent_state_gives_position_to_a_reader_that_has_not_learned_where_to_look(rank):
    """At the start of training the VLM has not learned which state tokens to attend to: it pools them about
    uniformly. The spatial readout puts where a feature lies into every latent's content, so a linear map of the
    *mean* state token of an untrained LSP recovers the (row, column) of a feature placed at a random patch of a
    4 x 4 grid (R^2 > 0.7); without it (``perceiver_readout_rank=0``) R^2 is ~0."""
    model = tiny_model(perceiver_readout_rank=rank)
    grid = FrameTokenGrid(prefix=1, height=4, width=4)
    coords = grid_coordinates(grid, slots=1, device=torch.device("cpu"), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    thing = torch.randn(model.config.frame_dim, generator=generator)

    def mean_state_and_position(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        patches = torch.randint(grid.height * grid.width, (size,), generator=generator) + grid.prefix
        features = 0.1 * torch.randn(size, 1, grid.num_tokens, model.config.frame_dim, generator=generator)
        features[torch.arange(size), 0, patches] = thing
        with torch.no_grad():
            state = model.perceiver.latent_state(torch.cat([features, features], dim=1), grid)
        return torch.cat([state.mean((1, 2)), torch.ones(size, 1)], dim=1), coords[patches]

    (x, y), (x_test, y_test) = mean_state_and_position(512), mean_state_and_position(256)
    weights = torch.linalg.solve(x.T @ x + 1e-3 * torch.eye(x.shape[1]), x.T @ y)
    r2 = 1 - (x_test @ weights - y_test).square().sum(0) / (y_test - y_test.mean(0)).square().sum(0)
    if rank:
        assert bool((r2 > 0.7).all()), r2
    else:
        assert bool((r2 < 0.2).all()), r2


def test_spatial_readout_works_at_any_grid_size_and_refuses_a_negative_rank():
    model = tiny_model(perceiver_readout_grid=3)
    for side in (4, 7):
        grid = FrameTokenGrid(prefix=1, height=side, width=side)
        features = torch.randn(3, 2, grid.num_tokens, model.config.frame_dim)
        state = model.perceiver.latent_state(features, grid)
        assert state.shape == (3, model.config.tokens_per_chunk, 2, model.config.hidden_size)
    with pytest.raises(ValueError, match="perceiver_readout_rank"):
        PELAConfig.tiny(perceiver_readout_rank=-1)


def _frame_pairs(size: int, grid: FrameTokenGrid, dim: int, generator: torch.Generator) -> torch.Tensor:
    """(size, 2, P, dim) random frame features, the same frame in both slots."""
    frames = torch.randn(size, 1, grid.num_tokens, dim, generator=generator)
    return torch.cat([frames, frames], dim=1)


@pytest.mark.parametrize("standardize", [True, False])
def test_standardized_latents_keep_what_differs_between_frames(standardize):
    """Training grew a sample-constant part of the LSP's output until the state tokens' spread across samples was
    0.00% of their norm and the demo's models stopped reading the first frame (README "Latest result").
    ``standardize_latents`` removes that part per feature: with a constant offset of 100 added by both perceivers'
    output heads (what training grew), the latent state and the latent actions still differ between frames by about
    their own size (spread / RMS > 0.9), in training and at inference, once the running statistics (updated by
    ``ema_update``) have caught up; without it by under 1%."""
    model = tiny_model(standardize_latents=standardize).train()
    perceiver, grid = model.perceiver, FrameTokenGrid(prefix=1, height=4, width=4)
    with torch.no_grad():
        for trunk in (perceiver.lsp_trunk, perceiver.lap_trunk):
            trunk.head[-1].bias.add_(100.0)
    generator = torch.Generator().manual_seed(0)
    dim, hands = model.config.frame_dim, torch.ones(16, dtype=torch.long)

    def spreads() -> tuple[float, float]:
        state = perceiver.latent_state(_frame_pairs(16, grid, dim, generator), grid)
        actions = perceiver.latent_actions(_frame_pairs(16, grid, dim, generator), hands, grid)
        return tuple(float(x.std(0).mean() / x.square().mean().sqrt()) for x in (state, actions))

    with torch.no_grad():
        for _ in range(200):  # the running statistics forget their initial (0, 1) at momentum 0.1
            training = spreads()
            model.ema_update()
        model.eval()
        inference = spreads()
    for spread in (*training, *inference):
        assert (spread > 0.9) if standardize else (spread < 0.01), (training, inference)


def test_latent_standardization_has_batchnorms_gradient():
    """The value is the running-statistics standardisation, the gradient BatchNorm's (scaled by ``sigma_B /
    sigma``): no gradient moves every sample of the batch the same way, which is what keeps the models reading the
    frame (docs/demo_history.md, 7c7aaa5: running statistics without it, 0.842x of the mean motion against 0.772x)."""
    generator = torch.Generator().manual_seed(0)
    norm = LatentStandardization(5).train()
    norm.running_mean.copy_(torch.randn(5, generator=generator))
    norm.running_var.copy_(torch.rand(5, generator=generator) + 0.5)
    x = (torch.randn(6, 5, generator=generator) * 3 + 2).requires_grad_()
    weights = torch.randn(6, 5, generator=generator)
    y = norm(x)
    (y * weights).sum().backward()
    sigma = (norm.running_var + norm.eps).sqrt()
    torch.testing.assert_close(y, (x - norm.running_mean) / sigma)
    reference = x.detach().clone().requires_grad_()
    (torch.nn.functional.batch_norm(reference, None, None, training=True, eps=norm.eps) * weights).sum().backward()
    batch_sigma = (x.detach().var(0, unbiased=False) + norm.eps).sqrt()
    torch.testing.assert_close(x.grad, reference.grad * batch_sigma / sigma)
    torch.testing.assert_close(x.grad.sum(0), torch.zeros(5), atol=1e-5, rtol=0)  # no common shift


def test_latent_standardization_is_one_function_of_each_sample_and_is_saved(tmp_path):
    """A frame's standardised latent state is the same alone, inside a batch of other frames, in training and at
    inference: the running statistics change only at ``ema_update`` (once per optimiser step), from every sample
    seen since the last one (so split or accumulated batches give the statistics of the whole batch). Packing,
    accumulation and batches of identical frames thus train on what generation sees. The statistics are part of the
    checkpoint."""
    model = tiny_model().train()
    assert model.config.standardize_latents  # the tiny preset (the demo's) standardises
    grid, generator = FrameTokenGrid(prefix=1, height=4, width=4), torch.Generator().manual_seed(1)
    norm, dim = model.perceiver.state_norm, model.config.frame_dim
    frames = _frame_pairs(8, grid, dim, generator)
    with torch.no_grad():
        model.perceiver.latent_state(frames[:3], grid)
        model.perceiver.latent_state(frames[3:], grid)
        model.ema_update()
        flat = model.perceiver.lsp_trunk(frames, model.perceiver.lsp_queries.weight, grid).flatten(1)
        torch.testing.assert_close(norm.running_mean, 0.1 * flat.mean(0))  # the whole batch, at momentum 0.1
        torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * flat.var(0))
        frame, others = _frame_pairs(1, grid, dim, generator), _frame_pairs(7, grid, dim, generator)
        inference = model.eval().perceiver.latent_state(frame, grid)
        alone = model.train().perceiver.latent_state(frame, grid)
        in_batch = model.perceiver.latent_state(torch.cat([frame, others]), grid)[:1]
    torch.testing.assert_close(alone, inference)
    torch.testing.assert_close(in_batch, inference)
    assert int(norm.num_batches_tracked) == 1
    model.ema_update()
    model.save_pretrained(tmp_path)
    loaded = PELAForPretraining.from_pretrained(tmp_path).eval()
    for name, buffer in norm.named_buffers():
        torch.testing.assert_close(getattr(loaded.perceiver.state_norm, name), buffer)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.perceiver.latent_state(frame, grid), model.eval().perceiver.latent_state(frame, grid)
        )


def test_latent_statistics_skip_a_non_finite_step_and_stay_float32_in_bf16(tmp_path):
    norm = LatentStandardization(4).train()
    norm(torch.tensor([[1.0, 2.0, float("nan"), 0.0], [0.0, 1.0, 2.0, 3.0]]))
    norm.update_statistics()
    assert int(norm.num_batches_tracked) == 0 and bool(torch.isfinite(norm.running_mean).all())
    tiny_model().save_pretrained(tmp_path)
    model = PELAForPretraining.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.perceiver.lsp_trunk.head[-1].weight.dtype == torch.bfloat16
    for norm in (model.perceiver.state_norm, model.perceiver.action_norm):
        assert norm.running_mean.dtype == norm.running_var.dtype == torch.float32


def test_latent_statistics_accumulate_in_float32_where_the_device_has_no_float64(monkeypatch):
    """Apple's MPS has no float64: there the statistics' sums are float32, and pooling two micro-batches of latents
    far from the running mean gives the float64 statistics to within 1e-4 (relative)."""
    assert statistics_dtype(torch.device("mps")) == torch.float32
    assert statistics_dtype(torch.device("cpu")) == torch.float64
    latents = torch.randn(16, 6, generator=torch.Generator().manual_seed(0)) * 3 + 100

    def pooled_statistics() -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        norm = LatentStandardization(6).train()
        norm(latents[:7])
        norm(latents[7:])
        dtype = norm._pending.dtype
        norm.update_statistics()
        return norm.running_mean, norm.running_var, dtype

    mean, var, dtype = pooled_statistics()
    monkeypatch.setattr(perceiver_module, "statistics_dtype", lambda device: torch.float32)
    mean32, var32, dtype32 = pooled_statistics()
    assert (dtype, dtype32) == (torch.float64, torch.float32)
    torch.testing.assert_close(mean, 0.1 * latents.mean(0))
    torch.testing.assert_close(var, 0.9 + 0.1 * latents.var(0))
    torch.testing.assert_close(mean32, mean)
    torch.testing.assert_close(var32, var, rtol=1e-4, atol=0)  # float32's E[(x-mu)^2] - E[x-mu]^2 at an offset of 100


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(mixed_batch):
    def loss_and_grads(checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = tiny_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.get_decoder().layers[0].gradient_checkpointing
        loss = model(**mixed_batch).loss
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    loss, grads = loss_and_grads(False)
    checkpointed_loss, checkpointed_grads = loss_and_grads(True)
    torch.testing.assert_close(checkpointed_loss, loss)
    assert grads.keys() == checkpointed_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_bf16_train_step(mixed_batch):
    model = tiny_model().to(torch.bfloat16).train()
    batch = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in mixed_batch.items()}
    out = model(**batch)
    assert out.predictive_embeddings.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is None for p in model.frame_encoder.parameters())
    assert model.perceiver.lap_queries.weight.grad.dtype == torch.bfloat16


def test_predictive_embeddings_api_matches_forward(model, mixed_batch):
    inputs = {k: mixed_batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "frame_pixel_values")}
    with torch.no_grad():
        embeddings = model.get_predictive_embeddings(**inputs)
        out = model(**mixed_batch)
    torch.testing.assert_close(embeddings.predictive_embeddings, out.predictive_embeddings)
    assert torch.equal(embeddings.chunk_mask, out.chunk_mask)


def test_clear_errors_for_wrong_inputs(model, mixed_batch):
    config: PELAConfig = model.config
    batch = dict(mixed_batch)

    def fails(message: str, **changes) -> None:
        with pytest.raises(ValueError, match=message):
            model(**{**batch, **changes})

    fails(r"input_ids must be an integer tensor of shape \(B, L\)", input_ids=batch["input_ids"][0])
    fails(r"input_ids must lie in \[0, 517\)", input_ids=batch["input_ids"].clamp(max=516) + 1)
    fails("attention_mask must have shape", attention_mask=batch["attention_mask"][:, :-1])
    fails("labels must have shape", labels=batch["labels"][:2])
    fails("is_labeled must have shape", is_labeled=torch.ones(3, dtype=torch.bool))
    fails(r"chunk_hands must have shape \(B=4, N\)", chunk_hands=batch["chunk_hands"][0])
    fails(r"pixel_values must be \(num_images, 3, H, W\)", pixel_values=batch["pixel_values"][0])
    fails("chunk_frames has 2 columns but input_ids hold up to 6 chunks", chunk_frames=batch["chunk_frames"][:, :2])
    fails("image features but input_ids hold", pixel_values=batch["pixel_values"][:3])
    fails(r"frame_pixel_values must be \(B=4, F, 3, H, W\)", frame_pixel_values=batch["frame_pixel_values"][:2])
    fails("need frame_pixel_values", frame_pixel_values=None)
    fails("boundary frames lie outside", chunk_frames=batch["chunk_frames"] + 5)
    fails("chunk_ids disagree", chunk_ids=torch.zeros_like(batch["input_ids"]))
    broken = batch["input_ids"].clone()
    broken[broken == config.mot_end_token_id] = 5  # unclosed chunks
    fails("malformed motion chunks", input_ids=broken)
    wrong_part = batch["labels"].clone()
    finger_slot = (batch["chunk_ids"][0] == 0).nonzero().flatten()[K - 1]
    wrong_part[0, finger_slot] = config.wrist_token_range[0]
    fails(r"sample 0, chunk 0, slot 127 = 256 is not a finger motion id", labels=wrong_part)
