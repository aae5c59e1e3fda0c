"""Flow-matching action head of PELA's robot post-training (paper section 4.3 and appendix A.3, GR00T N1.5 design).

A Diffusion Transformer (DiT) predicts the flow-matching vector field ``V`` of a robot action chunk conditioned on the
predictive embeddings ``{h_{i,k}}`` of the pretrained backbone (``cond``, (B, N, D_cond)) and the proprioceptive
state ``q`` ((B, D_state)):

* the token sequence is ``[state token, a_1 .. a_T]``: the state encoded by an MLP, and the noised action chunk
  encoded together with the timestep embedding (GR00T's action encoder), plus learned position embeddings;
* blocks alternate between cross-attention to ``cond`` (even blocks) and self-attention over the sequence (odd
  blocks); the normalisation before every attention is an adaptive LayerNorm whose shift and scale come from the
  timestep embedding, as is the final normalisation;
* the action tokens are decoded by an MLP to ``V`` (B, T, D_action).

Flow matching, with the paper's convention (equation 5)::

    A^tau = tau * A + (1 - tau) * eps,    eps ~ N(0, I),  tau in [0, 1]  (tau = 0: pure noise, tau = 1: data)
    loss  = || V(cond, A^tau, q, tau) - (eps - A) ||^2   (mean over valid, i.e. non-padded, action steps)

Since ``d A^tau / d tau = A - eps = -V``, inference integrates ``dA/dtau = -V`` with forward Euler from Gaussian noise
at tau = 0 to tau = 1 in ``num_inference_steps`` (4 by default) equal steps: ``A <- A - V / N``.

``cond`` is normalised and projected to the keys and values of every cross-attention block once per observation
(:meth:`FlowMatchingActionHead.encode_condition`); the Euler steps reuse them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

TAU_DISTRIBUTIONS = ("beta", "uniform")


@dataclass
class FlowMatchingActionHeadConfig:
    """Hyper-parameters of :class:`FlowMatchingActionHead`. Inconsistent values raise ``ValueError``.

    Args:
        action_dim: ``D_action``, size of one robot action.
        state_dim: ``D_state``, size of the proprioceptive state.
        chunk_size: ``T``, actions per predicted chunk.
        cond_dim: ``D_cond``, size of the conditioning embeddings (the backbone's hidden size).
        hidden_size: width of the DiT (2048 in the paper).
        num_layers: DiT blocks (16 in the paper); even blocks cross-attend to ``cond``, odd blocks self-attend.
        num_heads: attention heads (32 in the paper); ``hidden_size`` must be divisible by it.
        ff_mult: width of the feed-forward layers as a multiple of ``hidden_size``.
        dropout: dropout of the attention outputs and feed-forward layers.
        timestep_embedding_dim: size of the sinusoidal embedding of ``tau * timestep_scale``.
        timestep_scale: factor applied to ``tau`` in [0, 1] before the sinusoidal embedding.
        num_inference_steps: forward Euler steps from noise to actions (4 in the paper).
        tau_distribution: ``"beta"``: ``tau = tau_max * (1 - u)``, ``u ~ Beta(tau_beta_alpha, tau_beta_beta)``,
            skewed towards the noisy end (GR00T N1.5); ``"uniform"``: ``tau ~ U(0, tau_max)``.
        tau_beta_alpha / tau_beta_beta: parameters of the Beta distribution.
        tau_max: upper bound of the training timesteps (< 1 keeps a little noise in every training input).
        norm_eps: epsilon of the layer norms.
    """

    action_dim: int = 7
    state_dim: int = 8
    chunk_size: int = 16
    cond_dim: int = 1536
    hidden_size: int = 2048
    num_layers: int = 16
    num_heads: int = 32
    ff_mult: int = 4
    dropout: float = 0.0
    timestep_embedding_dim: int = 256
    timestep_scale: float = 1000.0
    num_inference_steps: int = 4
    tau_distribution: Literal["beta", "uniform"] = "beta"
    tau_beta_alpha: float = 1.5
    tau_beta_beta: float = 1.0
    tau_max: float = 0.999
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        positive = ("action_dim", "state_dim", "chunk_size", "cond_dim", "hidden_size", "num_layers", "num_heads")
        for name in (*positive, "ff_mult", "timestep_embedding_dim", "num_inference_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if self.timestep_embedding_dim % 2:
            raise ValueError(f"timestep_embedding_dim must be even, got {self.timestep_embedding_dim}")
        if self.tau_distribution not in TAU_DISTRIBUTIONS:
            raise ValueError(f"tau_distribution must be one of {TAU_DISTRIBUTIONS}, got {self.tau_distribution!r}")
        if not 0.0 < self.tau_max <= 1.0:
            raise ValueError(f"tau_max must be in (0, 1], got {self.tau_max}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def full(cls, **kwargs: Any) -> FlowMatchingActionHeadConfig:
        """The paper's head (appendix A.3, GR00T N1.5 size): 16 layers, 32 heads, hidden size 2048."""
        return cls(**{"hidden_size": 2048, "num_layers": 16, "num_heads": 32, **kwargs})

    @classmethod
    def tiny(cls, **kwargs: Any) -> FlowMatchingActionHeadConfig:
        """A CPU-sized head for tests and demos: 4 layers, 4 heads, hidden size 64."""
        values = {"hidden_size": 64, "num_layers": 4, "num_heads": 4, "timestep_embedding_dim": 64}
        return cls(**{**values, **kwargs})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FlowMatchingActionHeadConfig:
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown FlowMatchingActionHeadConfig keys: {unknown}")
        return cls(**values)


@dataclass
class EncodedCondition:
    """The conditioning embeddings projected to the keys and values of every cross-attention block.

    Attributes:
        keys_values: one ``(keys, values)`` pair per cross-attention block, each (B, num_heads, N, head_dim).
        mask: (B, 1, 1, N) bool, True where a condition token may be attended to; None if all may.
    """

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor | None


@dataclass
class FlowMatchingOutput:
    """Result of :meth:`FlowMatchingActionHead.forward`.

    Attributes:
        loss: flow-matching loss, a scalar (``reduction="mean"``) or (B,) per-sample losses (``"none"``).
        velocity: (B, T, D_action) the predicted vector field ``V``.
        target: (B, T, D_action) the regression target ``eps - A``.
    """

    loss: torch.Tensor
    velocity: torch.Tensor
    target: torch.Tensor


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) float positions -> (B, dim) ``[sin(p * f_j), cos(p * f_j)]`` with geometric frequencies ``f_j``."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half
    angles = positions.float()[:, None] * torch.exp(exponent)[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class AdaptiveLayerNorm(nn.Module):
    """LayerNorm without affine parameters, then ``x * (1 + scale(t)) + shift(t)`` from the timestep embedding.

    The modulation is initialised to zero, so the block starts as a plain LayerNorm.
    """

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, eps=eps, elementwise_affine=False)
        self.modulation = nn.Linear(hidden_size, 2 * hidden_size)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """hidden (B, L, H), temb (B, H) -> (B, L, H)."""
        shift, scale = self.modulation(F.silu(temb)).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(hidden) * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head attention whose keys and values come from ``kv_dim``-sized inputs (self- or cross-attention)."""

    def __init__(self, hidden_size: int, num_heads: int, kv_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(kv_dim, hidden_size)
        self.v_proj = nn.Linear(kv_dim, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, heads, L, head_dim)."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def project_keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context (B, N, kv_dim) -> keys, values (B, heads, N, head_dim)."""
        return self._heads(self.k_proj(context)), self._heads(self.v_proj(context))

    def forward(
        self,
        hidden: torch.Tensor,
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden (B, L, H); ``keys_values`` from :meth:`project_keys_values` (None: self-attention over
        ``hidden``); mask (B, 1, 1, N) bool, True = may attend. Returns (B, L, H)."""
        keys, values = keys_values if keys_values is not None else self.project_keys_values(hidden)
        out = F.scaled_dot_product_attention(self._heads(self.q_proj(hidden)), keys, values, attn_mask=mask)
        return self.dropout(self.o_proj(out.transpose(1, 2).flatten(2)))


class DiTBlock(nn.Module):
    """Adaptive LayerNorm -> attention (self or cross) -> residual; LayerNorm -> GELU MLP -> residual."""

    def __init__(self, config: FlowMatchingActionHeadConfig, cross_attention: bool) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.cross_attention = cross_attention
        self.attn_norm = AdaptiveLayerNorm(hidden, config.norm_eps)
        kv_dim = config.cond_dim if cross_attention else hidden
        self.attn = Attention(hidden, config.num_heads, kv_dim, config.dropout)
        self.ff_norm = nn.LayerNorm(hidden, eps=config.norm_eps)
        self.ff = nn.Sequential(
            nn.Linear(hidden, config.ff_mult * hidden),
            nn.GELU(approximate="tanh"),
            nn.Dropout(config.dropout),
            nn.Linear(config.ff_mult * hidden, hidden),
            nn.Dropout(config.dropout),
        )

    def forward(
        self,
        hidden: torch.Tensor,
        temb: torch.Tensor,
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden (B, L, H), temb (B, H); cross-attention blocks need ``keys_values`` (and the condition mask)."""
        if self.cross_attention and keys_values is None:
            raise ValueError("a cross-attention block needs the encoded condition's keys and values")
        hidden = hidden + self.attn(self.attn_norm(hidden, temb), keys_values, mask if self.cross_attention else None)
        return hidden + self.ff(self.ff_norm(hidden))


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))


class FlowMatchingActionHead(nn.Module):
    """The flow-matching DiT policy head (see the module docstring for the architecture and the convention).

    Example::

        head = FlowMatchingActionHead(FlowMatchingActionHeadConfig.tiny(action_dim=4, state_dim=4, cond_dim=32))
        loss = head(cond, state, actions, action_is_pad=is_pad).loss     # training
        chunk = head.sample(cond, state)                                   # (B, T, 4), 4 Euler steps
    """

    def __init__(self, config: FlowMatchingActionHeadConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.timestep_encoder = _mlp(config.timestep_embedding_dim, hidden, hidden)
        self.state_encoder = _mlp(config.state_dim, hidden, hidden)
        # Action encoder (GR00T): W3(silu(W2([W1(a), temb])))
        self.action_in = nn.Linear(config.action_dim, hidden)
        self.action_time_mix = nn.Linear(2 * hidden, hidden)
        self.action_out = nn.Linear(hidden, hidden)
        self.position_embedding = nn.Parameter(torch.randn(config.chunk_size + 1, hidden) * 0.02)
        self.cond_norm = nn.LayerNorm(config.cond_dim, eps=config.norm_eps)
        self.blocks = nn.ModuleList(DiTBlock(config, cross_attention=i % 2 == 0) for i in range(config.num_layers))
        self.norm_out = AdaptiveLayerNorm(hidden, config.norm_eps)
        self.action_decoder = _mlp(hidden, hidden, config.action_dim)

    # -------------------------------------------------------------------------------------------------------------
    # Building blocks
    # -------------------------------------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.position_embedding.dtype

    def encode_condition(self, cond: torch.Tensor, cond_mask: torch.Tensor | None = None) -> EncodedCondition:
        """Normalise ``cond`` (B, N, D_cond) and project it to every cross-attention block's keys and values.

        Args:
            cond: (B, N, D_cond) conditioning embeddings (PELA's predictive embeddings).
            cond_mask: optional (B, N) bool, True for real tokens, False for padding.
        """
        if cond.ndim != 3 or cond.shape[-1] != self.config.cond_dim:
            raise ValueError(f"cond must be (B, N, {self.config.cond_dim}), got {tuple(cond.shape)}")
        mask = None
        if cond_mask is not None:
            if cond_mask.shape != cond.shape[:2]:
                raise ValueError(f"cond_mask must be (B, N) = {tuple(cond.shape[:2])}, got {tuple(cond_mask.shape)}")
            if not cond_mask.any(dim=1).all():
                raise ValueError("every sample needs at least one unmasked condition token")
            mask = cond_mask.bool()[:, None, None, :]
        cond = self.cond_norm(cond.to(self.dtype))
        keys_values = [block.attn.project_keys_values(cond) for block in self.blocks if block.cross_attention]
        return EncodedCondition(keys_values=keys_values, mask=mask)

    def velocity(
        self, noisy_actions: torch.Tensor, tau: torch.Tensor, state: torch.Tensor, condition: EncodedCondition
    ) -> torch.Tensor:
        """The vector field ``V`` (B, T, D_action) at noised actions (B, T, D_action), timesteps ``tau`` (B,) in
        [0, 1] and states (B, D_state), given the encoded condition."""
        batch, horizon, action_dim = noisy_actions.shape
        if horizon != self.config.chunk_size or action_dim != self.config.action_dim:
            raise ValueError(
                f"actions must be (B, {self.config.chunk_size}, {self.config.action_dim}), "
                f"got {tuple(noisy_actions.shape)}"
            )
        if state.shape != (batch, self.config.state_dim):
            raise ValueError(f"state must be ({batch}, {self.config.state_dim}), got {tuple(state.shape)}")
        if tau.shape != (batch,):
            raise ValueError(f"tau must be ({batch},), got {tuple(tau.shape)}")
        temb_in = sinusoidal_embedding(tau * self.config.timestep_scale, self.config.timestep_embedding_dim)
        temb = self.timestep_encoder(temb_in.to(self.dtype))
        action_tokens = self.action_in(noisy_actions.to(self.dtype))
        action_tokens = torch.cat([action_tokens, temb[:, None].expand(-1, horizon, -1)], dim=-1)
        action_tokens = self.action_out(F.silu(self.action_time_mix(action_tokens)))
        state_token = self.state_encoder(state.to(self.dtype))[:, None]
        hidden = torch.cat([state_token, action_tokens], dim=1) + self.position_embedding
        cross = iter(condition.keys_values)
        for block in self.blocks:
            hidden = block(hidden, temb, next(cross) if block.cross_attention else None, condition.mask)
        return self.action_decoder(self.norm_out(hidden, temb)[:, 1:])

    def sample_tau(self, batch_size: int, device: torch.device | str) -> torch.Tensor:
        """(B,) training timesteps in [0, tau_max] drawn from ``config.tau_distribution`` (global torch RNG)."""
        config = self.config
        if config.tau_distribution == "uniform":
            return config.tau_max * torch.rand(batch_size, device=device)
        concentration = torch.tensor([config.tau_beta_alpha, config.tau_beta_beta], device=device)
        u = torch.distributions.Beta(concentration[0], concentration[1]).sample((batch_size,))
        return config.tau_max * (1.0 - u)

    # -------------------------------------------------------------------------------------------------------------
    # Training and inference
    # -------------------------------------------------------------------------------------------------------------

    def forward(
        self,
        cond: torch.Tensor,
        state: torch.Tensor,
        actions: torch.Tensor,
        *,
        cond_mask: torch.Tensor | None = None,
        action_is_pad: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        tau: torch.Tensor | None = None,
        reduction: Literal["mean", "none"] = "mean",
    ) -> FlowMatchingOutput:
        """Flow-matching loss ``|| V(cond, A^tau, q, tau) - (eps - A) ||^2`` with ``A^tau = tau A + (1 - tau) eps``.

        Args:
            cond: (B, N, D_cond) conditioning embeddings; cond_mask: optional (B, N) bool (True = real token).
            state: (B, D_state) proprioceptive state ``q``.
            actions: (B, T, D_action) ground-truth action chunk ``A``.
            action_is_pad: optional (B, T) bool, True for padded steps (past the episode end): excluded from the loss.
            noise: optional (B, T, D_action) ``eps`` (default: standard Gaussian).
            tau: optional (B,) timesteps in [0, 1] (default: drawn by :meth:`sample_tau`).
            reduction: ``"mean"``: mean squared error over all valid elements of the batch; ``"none"``: (B,) the mean
                over each sample's valid elements (0 for a sample whose steps are all padded).
        """
        batch = actions.shape[0]
        actions = actions.to(self.dtype)
        noise = torch.randn_like(actions) if noise is None else noise.to(actions)
        tau = self.sample_tau(batch, actions.device) if tau is None else tau.to(actions)
        if noise.shape != actions.shape:
            raise ValueError(f"noise must have the actions' shape {tuple(actions.shape)}, got {tuple(noise.shape)}")
        t = tau[:, None, None]
        noisy_actions = t * actions + (1.0 - t) * noise
        target = noise - actions
        velocity = self.velocity(noisy_actions, tau, state, self.encode_condition(cond, cond_mask))
        squared_error = (velocity.float() - target.float()).pow(2)
        if action_is_pad is None:
            valid = torch.ones(squared_error.shape[:2], dtype=squared_error.dtype, device=squared_error.device)
        else:
            if action_is_pad.shape != actions.shape[:2]:
                raise ValueError(
                    f"action_is_pad must be (B, T) = {tuple(actions.shape[:2])}, got {tuple(action_is_pad.shape)}"
                )
            valid = (~action_is_pad.bool()).to(squared_error.dtype)
        per_step = squared_error.mean(dim=-1) * valid  # (B, T)
        if reduction == "mean":
            loss = per_step.sum() / valid.sum().clamp(min=1.0)
        elif reduction == "none":
            loss = per_step.sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)
        else:
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        return FlowMatchingOutput(loss=loss, velocity=velocity, target=target)

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        state: torch.Tensor,
        *,
        cond_mask: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate action chunks (B, T, D_action) by forward Euler from Gaussian noise (tau = 0) to tau = 1.

        Args:
            cond: (B, N, D_cond); cond_mask: optional (B, N) bool. Encoded once, reused by every step.
            state: (B, D_state).
            noise: optional (B, T, D_action) starting point (default: drawn with ``generator``).
            num_steps: Euler steps (default ``config.num_inference_steps``).
        """
        condition = self.encode_condition(cond, cond_mask)
        return self.sample_from_condition(condition, state, noise=noise, num_steps=num_steps, generator=generator)

    @torch.no_grad()
    def sample_from_condition(
        self,
        condition: EncodedCondition,
        state: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """:meth:`sample` with an already encoded condition (see :meth:`encode_condition`)."""
        num_steps = self.config.num_inference_steps if num_steps is None else num_steps
        if num_steps <= 0:
            raise ValueError(f"num_steps must be positive, got {num_steps}")
        batch = state.shape[0]
        shape = (batch, self.config.chunk_size, self.config.action_dim)
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=state.device, dtype=torch.float32)
        elif noise.shape != shape:
            raise ValueError(f"noise must be {shape}, got {tuple(noise.shape)}")
        actions = noise.float()
        dt = 1.0 / num_steps
        for step in range(num_steps):
            tau = torch.full((batch,), step * dt, device=state.device)
            actions = actions - dt * self.velocity(actions, tau, state, condition).float()
        return actions
