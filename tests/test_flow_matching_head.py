"""Flow-matching DiT action head: presets, shapes, padding masks, the paper's loss, and the sign convention end to end
(a head trained on one fixed chunk regenerates it from noise with 4 Euler steps; the opposite sign would not)."""

from __future__ import annotations

import pytest
import torch

from modeling_pela.flow_matching_head import FlowMatchingActionHead, FlowMatchingActionHeadConfig

ACTION_DIM, STATE_DIM, CHUNK, COND_DIM, COND_LEN = 4, 3, 8, 16, 5


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_head(seed: int = 0, **overrides) -> FlowMatchingActionHead:
    torch.manual_seed(seed)
    config = FlowMatchingActionHeadConfig.tiny(
        action_dim=ACTION_DIM, state_dim=STATE_DIM, chunk_size=CHUNK, cond_dim=COND_DIM, **overrides
    )
    return FlowMatchingActionHead(config)


def random_inputs(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    cond = torch.randn(batch, COND_LEN, COND_DIM, generator=generator)
    state = torch.randn(batch, STATE_DIM, generator=generator)
    actions = torch.randn(batch, CHUNK, ACTION_DIM, generator=generator)
    return cond, state, actions


def test_full_preset_is_the_paper_size_and_blocks_alternate():
    config = FlowMatchingActionHeadConfig.full(action_dim=7, state_dim=8, cond_dim=1536)
    assert (config.num_layers, config.num_heads, config.hidden_size, config.num_inference_steps) == (16, 32, 2048, 4)
    with torch.device("meta"):
        head = FlowMatchingActionHead(config)
    assert [block.cross_attention for block in head.blocks] == [True, False] * 8
    assert head.blocks[0].attn.k_proj.in_features == 1536  # cross-attention reads the backbone's width
    assert head.blocks[1].attn.k_proj.in_features == 2048
    assert head.blocks[0].attn.head_dim == 64
    assert FlowMatchingActionHeadConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 30, "num_heads": 4}, "divisible"),
        ({"tau_distribution": "lognormal"}, "tau_distribution"),
        ({"tau_max": 1.5}, "tau_max"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
    ],
)
def test_inconsistent_config_raises(overrides, message):
    with pytest.raises(ValueError, match=message):
        FlowMatchingActionHeadConfig.tiny(**overrides)


def test_loss_is_the_papers_objective():
    head = tiny_head()
    cond, state, actions = random_inputs(3)
    noise = torch.randn_like(actions)
    tau = torch.tensor([0.1, 0.5, 0.9])
    output = head(cond, state, actions, noise=noise, tau=tau)
    noised = tau[:, None, None] * actions + (1 - tau[:, None, None]) * noise
    velocity = head.velocity(noised, tau, state, head.encode_condition(cond))
    torch.testing.assert_close(output.target, noise - actions)
    torch.testing.assert_close(output.velocity, velocity)
    torch.testing.assert_close(output.loss, (velocity - (noise - actions)).pow(2).mean())
    per_sample = head(cond, state, actions, noise=noise, tau=tau, reduction="none").loss
    assert per_sample.shape == (3,)
    torch.testing.assert_close(per_sample.mean(), output.loss)


def test_padded_steps_do_not_enter_the_loss():
    head = tiny_head()
    cond, state, actions = random_inputs(2)
    noise, tau = torch.randn_like(actions), torch.tensor([0.3, 0.7])
    is_pad = torch.zeros(2, CHUNK, dtype=torch.bool)
    is_pad[0, 5:] = True
    is_pad[1, :] = True  # an all-padded sample contributes nothing
    loss = head(cond, state, actions, noise=noise, tau=tau, action_is_pad=is_pad)
    # Padded steps are still DiT inputs, so only the loss terms of valid steps are compared.
    expected = (loss.velocity - loss.target).pow(2).mean(-1)[0, :5].mean()
    torch.testing.assert_close(loss.loss, expected)
    per_sample = head(cond, state, actions, noise=noise, tau=tau, action_is_pad=is_pad, reduction="none").loss
    torch.testing.assert_close(per_sample, torch.stack([expected, torch.tensor(0.0)]))
    with pytest.raises(ValueError, match="action_is_pad"):
        head(cond, state, actions, action_is_pad=is_pad[:, :4])


def test_shapes_condition_mask_and_errors():
    head = tiny_head().eval()
    cond, state, _ = random_inputs(2)
    noise = torch.randn(2, CHUNK, ACTION_DIM)
    mask = torch.tensor([[True, True, True, False, False], [True] * COND_LEN])
    chunk = head.sample(cond, state, cond_mask=mask, noise=noise)
    assert chunk.shape == (2, CHUNK, ACTION_DIM)
    altered = cond.clone()
    altered[0, 3:] = 100.0  # masked-out condition tokens are never attended to
    torch.testing.assert_close(head.sample(altered, state, cond_mask=mask, noise=noise), chunk)
    assert not torch.allclose(head.sample(altered, state, noise=noise), head.sample(cond, state, noise=noise))
    with pytest.raises(ValueError, match="cond must be"):
        head.sample(cond[..., :8], state)
    with pytest.raises(ValueError, match="state must be"):
        head.sample(cond, state[:, :2])
    with pytest.raises(ValueError, match="at least one unmasked"):
        head.sample(cond, state, cond_mask=torch.zeros(2, COND_LEN, dtype=torch.bool))


def test_euler_integration_reuses_the_encoded_condition():
    head = tiny_head().eval()
    cond, state, _ = random_inputs(2)
    noise = torch.randn(2, CHUNK, ACTION_DIM)
    condition = head.encode_condition(cond)
    assert len(condition.keys_values) == head.config.num_layers // 2  # one (K, V) pair per cross-attention block
    torch.testing.assert_close(
        head.sample(cond, state, noise=noise), head.sample_from_condition(condition, state, noise=noise)
    )
    one_step = head.sample(cond, state, noise=noise, num_steps=1)
    torch.testing.assert_close(one_step, noise - head.velocity(noise, torch.zeros(2), state, condition))
    assert head.config.num_inference_steps == 4


def test_trained_head_regenerates_a_fixed_chunk_from_noise():
    """Sign convention end to end: A^tau = tau A + (1 - tau) eps, target eps - A, Euler A <- A - V / N from tau = 0."""
    head = tiny_head(seed=0)
    cond, state, actions = random_inputs(1, seed=3)
    batch = 16
    optimizer = torch.optim.AdamW(head.parameters(), lr=2e-3)
    torch.manual_seed(0)
    for _ in range(150):
        loss = head(cond.expand(batch, -1, -1), state.expand(batch, -1), actions.expand(batch, -1, -1)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    noise = torch.randn(8, CHUNK, ACTION_DIM, generator=torch.Generator().manual_seed(7))
    cond8, state8 = cond.expand(8, -1, -1), state.expand(8, -1)
    generated = head.sample(cond8, state8, noise=noise)
    error = (generated - actions).pow(2).mean().item()
    scale = actions.pow(2).mean().item()
    assert error < 0.05 * scale, f"generated chunks are off by MSE {error:.4f} (signal {scale:.4f})"
    # The same field integrated with the opposite sign drifts away from the data.
    wrong = noise.clone()
    condition = head.encode_condition(cond8)
    with torch.no_grad():
        for step in range(4):
            wrong = wrong + 0.25 * head.velocity(wrong, torch.full((8,), step * 0.25), state8, condition)
    assert (wrong - actions).pow(2).mean().item() > 1.0 * scale
