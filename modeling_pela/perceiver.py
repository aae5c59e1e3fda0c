"""Latent Action Perceiver (LAP) and Latent State Perceiver (LSP) with decoupled updates (paper 4.2, appendix A.2).

Both perceivers share one structure, the *trunk* (everything but the queries):

    frame features (M, S, P, F) -> Linear(F, H) + slot embedding (start / end frame)
                                   + Linear(Fourier features of each patch's (row, column))  -> (M, S*P, H)
    num_layers x [cross-attention block: K latents attend to the frame tokens,
                  self-attention block over the K latents]                          -> (M, K, H)
    LayerNorm, 2-layer MLP H -> head_hidden -> 2 x D, split into a left-hand and a right-hand head -> (M, K, 2, D)
    + spatial readout of the frames, the same for every latent (:class:`SpatialReadout`)  -> (M, K, 2, D)

and ``K`` learnable *queries* (K, H). ``D`` is the LLM width. Attention over the frame tokens is permutation invariant, so
where a patch lies in the frame enters as Fourier features of its normalised grid coordinates (as in Perceiver IO),
for encoders whose tokens form a known patch grid (:class:`FrameTokenGrid`); precomputed features have none. With a
grid, every cross-attention block also adds each latent's keypoints (where its heads attended, as coordinates) to
its content, and the spatial readout adds a linear map of the whole pooled patch grid, so that the latent state says
*where* things are in a form an attention-pooling reader (the VLM) can use. LAP reads the boundary frames of a chunk
(v_t, v_t+15) and gives latent actions; LSP reads the first frame twice (v_0, v_0) and gives the latent state injected
into the VLM. With ``config.standardize_latents`` both outputs are then standardised per feature with running
statistics over training samples, each perceiver with its own (:class:`LatentStandardization`, not in the paper).

Decoupled updates: the LSP trunk and the LAP queries are optimised; the LAP trunk and the LSP queries are EMA copies
(eqs. 6-7, :meth:`LatentPerceivers.ema_update`). The copies have ``requires_grad=False`` *and* are used detached, so no
gradient can reach them whatever an optimiser or an adapter library does with the flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from transformers.utils import logging

from .configuration_pela import PELAConfig

logger = logging.get_logger(__name__)

HANDS = ("left", "right")  # head index 0 = left, 1 = right
NUM_POSITION_FREQUENCIES = 8


@dataclass(frozen=True)
class FrameTokenGrid:
    """Layout of one frame's P tokens: ``prefix`` tokens without a position (CLS), then ``repeats`` x ``height`` x
    ``width`` patch tokens in row-major order (``repeats`` > 1 for video encoders' temporal tubelets)."""

    prefix: int
    height: int
    width: int
    repeats: int = 1

    @property
    def num_tokens(self) -> int:
        return self.prefix + self.repeats * self.height * self.width


def _patch_coordinates(grid: FrameTokenGrid, device: torch.device) -> torch.Tensor:
    """(h * w, 2) normalised (row, column) in [-1, 1] of one frame's patches, row-major."""
    rows = torch.linspace(-1.0, 1.0, grid.height, device=device)
    cols = torch.linspace(-1.0, 1.0, grid.width, device=device)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def fourier_position_features(grid: FrameTokenGrid, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(P, 4 * NUM_POSITION_FREQUENCIES) sin/cos features of each token's (row, column) in [-1, 1] at frequencies from
    pi up to the grid's Nyquist frequency; zeros for the prefix tokens."""
    coords = _patch_coordinates(grid, device)
    frequencies = math.pi * torch.linspace(
        1.0, max(2.0, max(grid.height, grid.width) / 2), NUM_POSITION_FREQUENCIES, device=device
    )
    angles = (coords[..., None] * frequencies).flatten(1)  # (h * w, 2 * n)
    features = torch.cat([angles.sin(), angles.cos()], dim=-1).repeat(grid.repeats, 1)
    prefix = features.new_zeros(grid.prefix, features.shape[-1])
    return torch.cat([prefix, features]).to(dtype)


def grid_coordinates(grid: FrameTokenGrid, slots: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(slots * P, 2) normalised (row, column) in [-1, 1] of every token of ``slots`` frames laid out as ``grid``;
    zeros for the prefix tokens (CLS)."""
    coords = _patch_coordinates(grid, device).repeat(grid.repeats, 1)
    return torch.cat([coords.new_zeros(grid.prefix, 2), coords]).repeat(slots, 1).to(dtype)


class PerceiverAttentionBlock(nn.Module):
    """Pre-norm residual block on (M, Q, H) latents: ``x + Attn(LN(x), LN(context))`` (cross-attention) or
    ``x + Attn(LN(x), LN(x))`` (self-attention), then ``x + MLP(LN(x))``.

    A cross-attention block given the frame tokens' grid ``coords`` (T, 2) also adds each latent's *keypoints*, the
    attention-weighted mean coordinates of what each head attended to (a spatial soft-argmax, Levine et al., 2016),
    through ``Linear(2 * heads, H)``: where something is in the frame becomes part of the latent's content. Without
    it the position is held only by *which* latent or patch carries a feature, which a reader that pools tokens by
    attention (the VLM reading the latent state) cannot recover."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_hidden_size: int, cross: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm_query = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size) if cross else None
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)
        self.keypoint_proj = nn.Linear(2 * num_heads, hidden_size) if cross else None
        self.norm_mlp = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_hidden_size), nn.GELU(), nn.Linear(mlp_hidden_size, hidden_size)
        )

    def forward(
        self, latents: torch.Tensor, context: torch.Tensor | None = None, coords: torch.Tensor | None = None
    ) -> torch.Tensor:
        """latents (M, Q, H); context (M, T, H) for cross-attention, ``None`` for self-attention; ``coords`` (T, 2)
        grid coordinates of the context tokens (cross-attention only; ``None``: no keypoints)."""
        query = self.norm_query(latents)
        context = query if self.norm_context is None else self.norm_context(context)
        batch, length, hidden = query.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (self.num_heads, hidden // self.num_heads)).transpose(1, 2)

        q, k, v = heads(self.q_proj(query)), heads(self.k_proj(context)), heads(self.v_proj(context))
        if coords is None or self.keypoint_proj is None:
            attended = F.scaled_dot_product_attention(q, k, v)
        else:
            weights = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)  # (M, heads, Q, T)
            attended = weights @ v
            keypoints = (weights @ coords.to(weights.dtype)).transpose(1, 2).flatten(2)  # (M, Q, heads * 2)
            latents = latents + self.keypoint_proj(keypoints)
        latents = latents + self.o_proj(attended.transpose(1, 2).reshape(batch, length, hidden))
        return latents + self.mlp(self.norm_mlp(latents))


class SpatialReadout(nn.Module):
    """Where things are in each frame, as one content vector: a linear map of the whole (pooled) patch grid.

    Each patch token x_p (F) is reduced to ``rank`` features u_p = Linear(x_p); the (h, w) grid of them is
    average-pooled to a fixed ``grid_size`` x ``grid_size`` (so any input resolution works; tubelet repeats are
    averaged), flattened per slot and LayerNorm-ed, and the (at most two) slots go through
    ``Linear(2 * rank * grid_size^2, 2 * D)`` (a missing second slot counts as zeros): one D-vector per hand head,
    added to every latent of that head after the perceiver's output head. Every pooled cell has its own weights, so
    *where* a feature lies sets the vector, as in a linear probe of the flattened encoder tokens.

    Why: the VLM reads the latent state by attention, which pools tokens by content. Without this readout the
    position of a hand is held only by which latents attended to it, which MCP training did not learn to read (frame
    gain ~0 in the demo, docs/demo_history.md).
    Shapes: features (M, S, P, F) with S in {1, 2}, grid with ``grid.num_tokens == P`` -> (M, 2, D)."""

    def __init__(self, frame_dim: int, output_size: int, rank: int, grid_size: int) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.down_proj = nn.Linear(frame_dim, rank)
        cells = rank * grid_size**2
        self.norm = nn.LayerNorm(cells)
        self.out_proj = nn.Linear(2 * cells, len(HANDS) * output_size)

    def forward(self, frame_features: torch.Tensor, grid: FrameTokenGrid) -> torch.Tensor:
        batch, slots = frame_features.shape[:2]
        features = self.down_proj(frame_features[:, :, grid.prefix :])  # (M, S, repeats * h * w, r)
        features = features.unflatten(2, (grid.repeats, grid.height, grid.width)).mean(2)  # (M, S, h, w, r)
        pooled = F.adaptive_avg_pool2d(features.flatten(0, 1).permute(0, 3, 1, 2), self.grid_size)
        cells = self.norm(pooled.flatten(1)).unflatten(0, (batch, slots))  # (M, S, r * g * g)
        if slots == 1:
            cells = torch.cat([cells, torch.zeros_like(cells)], dim=1)
        return self.out_proj(cells.flatten(1)).unflatten(-1, (len(HANDS), -1))


class PerceiverLayer(nn.Module):
    """One perceiver layer: cross-attention of the latents over the frame tokens, then self-attention."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_hidden_size: int) -> None:
        super().__init__()
        self.cross_attention = PerceiverAttentionBlock(hidden_size, num_heads, mlp_hidden_size, cross=True)
        self.self_attention = PerceiverAttentionBlock(hidden_size, num_heads, mlp_hidden_size, cross=False)

    def forward(
        self, latents: torch.Tensor, frame_tokens: torch.Tensor, coords: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.self_attention(self.cross_attention(latents, frame_tokens, coords))


class LatentPerceiverTrunk(nn.Module):
    """Everything of a latent perceiver except its queries (see the module docstring)."""

    def __init__(self, config: PELAConfig) -> None:
        super().__init__()
        hidden = config.perceiver_hidden_size
        mlp_hidden = int(hidden * config.perceiver_mlp_ratio)
        head_hidden = config.perceiver_head_hidden_size or config.hidden_size
        self.input_proj = nn.Linear(config.frame_dim, hidden)
        self.slot_embedding = nn.Embedding(2, hidden)
        self.position_proj = nn.Linear(4 * NUM_POSITION_FREQUENCIES, hidden)
        self.layers = nn.ModuleList(
            [PerceiverLayer(hidden, config.perceiver_num_heads, mlp_hidden) for _ in range(config.perceiver_num_layers)]
        )
        rank = config.perceiver_readout_rank
        self.readout = None
        if rank:
            self.readout = SpatialReadout(config.frame_dim, config.hidden_size, rank, config.perceiver_readout_grid)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Sequential(
            nn.Linear(hidden, head_hidden), nn.GELU(), nn.Linear(head_hidden, len(HANDS) * config.hidden_size)
        )

    def forward(
        self, frame_features: torch.Tensor, queries: torch.Tensor, grid: FrameTokenGrid | None = None
    ) -> torch.Tensor:
        """frame_features (M, S, P, F) with S in {1, 2} slots (start / end frame); queries (K, H); ``grid`` the
        layout of the P tokens (None: no position) -> (M, K, 2, D): both hand heads."""
        slots, num_tokens = frame_features.shape[1], frame_features.shape[2]
        tokens = self.input_proj(frame_features) + self.slot_embedding.weight[:slots, None]
        coords = None
        if grid is not None:
            if grid.num_tokens != num_tokens:
                raise ValueError(f"the frame token grid {grid} has {grid.num_tokens} tokens, the features {num_tokens}")
            tokens = tokens + self.position_proj(fourier_position_features(grid, tokens.device, tokens.dtype))
            coords = grid_coordinates(grid, slots, tokens.device, tokens.dtype)
        tokens = tokens.flatten(1, 2)
        latents = queries.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer(latents, tokens, coords)
        out = self.head(self.norm(latents)).unflatten(-1, (len(HANDS), -1))
        if grid is not None and self.readout is not None:
            out = out + self.readout(frame_features, grid)[:, None]
        return out


def statistics_dtype(device: torch.device) -> torch.dtype:
    """dtype of :class:`LatentStandardization`'s accumulated sums on ``device``: float64, or float32 on Apple's MPS,
    which has no float64 (the sums are of samples shifted by the running mean, so float32 loses little)."""
    return torch.float32 if device.type == "mps" else torch.float64


class LatentStandardization(nn.Module):
    """Standardise every feature of (M, K, 2, D) perceiver outputs with running statistics over training samples:
    ``(x - mu) / sqrt(var + eps)`` per flattened feature, computed in float32, returned in the input's shape and dtype.

    ``mu`` and ``var`` (float buffers, saved with the model) change only in :meth:`update_statistics`, once per
    optimiser step (``PELAForPretraining.ema_update``, called by the trainer's EMA callback): training forward passes
    accumulate the per-feature sums of their samples, and the update pools them, over gradient-accumulation
    micro-batches and, under ``torch.distributed``, over processes, then moves ``mu`` and ``var`` towards the pooled
    mean and (unbiased) variance by ``momentum``. A sample's output *value* is therefore one fixed function of that
    sample, alone or in any batch, packed or not, in training and at inference, and a run on N processes keeps the
    statistics a single process would. The *gradient* is BatchNorm's (batch renormalisation without clipping, Ioffe,
    2017): the output is written as ``(x - mu_B) / sigma_B * r + d`` with the batch's ``mu_B`` and ``sigma_B`` and
    ``r = sigma_B / sigma``, ``d = (mu_B - mu) / sigma`` held constant, so no gradient can move every sample of a
    (micro-)batch the same way; like BatchNorm's, it depends on how a batch is split. No affine parameters.

    Why: the latents are a sum of a sample-constant part (the queries, biases and whatever training makes of them)
    and a frame-dependent part. MCP training grew the constant part until the frame-dependent one was a rounding
    error to the LLM (the state tokens' spread across samples fell to 0.00% of their norm in the demo) and the model
    stopped reading the frame. Removing the constant part per feature, and giving every feature unit variance, hands
    the LLM what differs between frames. Not in the paper: ``PELAConfig.standardize_latents``."""

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self._pending: torch.Tensor | None = None  # [count, sum(x - mu) (F), sum((x - mu)^2) (F)], statistics_dtype

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        flat = latents.flatten(1).float()
        mean, scale = self.running_mean.float(), torch.rsqrt(self.running_var.float() + self.eps)
        if self.training:
            with torch.no_grad():
                shifted = (flat - mean).to(statistics_dtype(flat.device))
                batch = torch.cat([shifted.new_tensor([shifted.shape[0]]), shifted.sum(0), shifted.square().sum(0)])
                self._pending = batch if self._pending is None else self._pending + batch
        if self.training and flat.shape[0] > 1:
            batch_mean, batch_std = flat.mean(0), (flat.var(0, unbiased=False) + self.eps).sqrt()
            ratio, offset = (batch_std * scale).detach(), ((batch_mean - mean) * scale).detach()
            normed = (flat - batch_mean) / batch_std * ratio + offset  # = (flat - mean) * scale, BatchNorm's gradient
        else:
            normed = (flat - mean) * scale
        return normed.view_as(latents).to(latents.dtype)

    @torch.no_grad()
    def update_statistics(self) -> None:
        """Move the running statistics towards those of the samples accumulated since the last update (every
        process's, when ``torch.distributed`` is initialised: a collective call, so every process must make it).
        Needs at least two samples in all; the accumulated sums are cleared."""
        features = self.running_mean.numel()
        pending = self._pending
        if pending is None:
            device = self.running_mean.device
            pending = torch.zeros(1 + 2 * features, dtype=statistics_dtype(device), device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(pending)
        self._pending = None
        if not bool(torch.isfinite(pending).all()):
            logger.warning("latent standardisation: non-finite latents in this step; its statistics are not updated")
            return
        count = float(pending[0])
        if count < 2:
            return
        shift = pending[1 : 1 + features] / count  # batch mean - running mean
        variance = (pending[1 + features :] / count - shift.square()) * count / (count - 1)
        mean = self.running_mean.to(pending.dtype) + shift
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
        self.running_var.lerp_(variance.clamp_min(0).to(self.running_var.dtype), self.momentum)
        self.num_batches_tracked += 1

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._pending = None  # sums shifted by the statistics being replaced
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.running_mean.numel()}, momentum={self.momentum}, eps={self.eps}"


class LatentQueries(nn.Module):
    """The K learnable queries (K, H) of a latent perceiver (initialised by ``PELAPreTrainedModel._init_weights``)."""

    def __init__(self, num_queries: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_queries, hidden_size))


def select_hand(latents: torch.Tensor, hands: torch.Tensor) -> torch.Tensor:
    """(M, K, 2, D) both heads, (M,) hand index (0 left, 1 right) -> (M, K, D)."""
    index = hands.to(latents.device, torch.long)[:, None, None, None].expand(-1, latents.shape[1], 1, latents.shape[3])
    return latents.gather(2, index).squeeze(2)


class LatentPerceivers(nn.Module):
    """LSP (trunk optimised, queries EMA'd from LAP) and, with ``config.align``, LAP (queries optimised, trunk EMA'd
    from LSP). Without alignment there is no LAP and the LSP queries are optimised directly."""

    def __init__(self, config: PELAConfig) -> None:
        super().__init__()
        self.decoupled = config.align
        self.lsp_trunk = LatentPerceiverTrunk(config)
        self.lsp_queries = LatentQueries(config.num_latent_queries, config.perceiver_hidden_size)
        if self.decoupled:
            self.lap_trunk = LatentPerceiverTrunk(config)
            self.lap_queries = LatentQueries(config.num_latent_queries, config.perceiver_hidden_size)
        features = config.num_latent_queries * len(HANDS) * config.hidden_size
        self.state_norm = self.action_norm = None
        if config.standardize_latents:
            self.state_norm = LatentStandardization(features)
            self.action_norm = LatentStandardization(features) if self.decoupled else None
        self.freeze_ema_copies()

    def freeze_ema_copies(self) -> None:
        """``requires_grad=False`` on the EMA copies (LAP trunk, LSP queries); a no-op without alignment."""
        if self.decoupled:
            self.lap_trunk.requires_grad_(False)
            self.lsp_queries.requires_grad_(False)

    def latent_state(self, frame_features: torch.Tensor, grid: FrameTokenGrid | None = None) -> torch.Tensor:
        """LSP: (M, S, P, F) features of (v_0, v_0) with token layout ``grid`` -> (M, K, 2, D), both hand heads.
        Gradients reach the LSP trunk (and the queries only without alignment)."""
        queries = self.lsp_queries.weight.detach() if self.decoupled else self.lsp_queries.weight
        latents = self.lsp_trunk(frame_features, queries, grid)
        return latents if self.state_norm is None else self.state_norm(latents)

    def latent_actions(
        self, frame_features: torch.Tensor, hands: torch.Tensor, grid: FrameTokenGrid | None = None
    ) -> torch.Tensor:
        """LAP: (M, S, P, F) features of (v_t, v_t+15) with token layout ``grid``, (M,) hands -> (M, K, D).
        Gradients reach the LAP queries only: the trunk runs on detached parameters."""
        frozen = {name: value.detach() for name, value in self.lap_trunk.named_parameters()}
        latents = functional_call(self.lap_trunk, frozen, (frame_features, self.lap_queries.weight, grid))
        return select_hand(latents if self.action_norm is None else self.action_norm(latents), hands)

    @torch.no_grad()
    def synchronize(self) -> None:
        """Make the EMA copies equal to their sources (LAP trunk := LSP trunk, LSP queries := LAP queries)."""
        if self.decoupled:
            for target, source in zip(self.lap_trunk.parameters(), self.lsp_trunk.parameters(), strict=True):
                target.copy_(source)
            self.lsp_queries.weight.copy_(self.lap_queries.weight)

    @torch.no_grad()
    def ema_update(self, alpha: float) -> None:
        """Eq. 6: LAP trunk <- alpha * LAP trunk + (1 - alpha) * LSP trunk; eq. 7: LSP queries <- alpha * LSP
        queries + (1 - alpha) * LAP queries. A no-op without alignment (there is no LAP)."""
        if not self.decoupled:
            return
        for target, source in zip(self.lap_trunk.parameters(), self.lsp_trunk.parameters(), strict=True):
            target.mul_(alpha).add_(source, alpha=1.0 - alpha)
        self.lsp_queries.weight.mul_(alpha).add_(self.lap_queries.weight, alpha=1.0 - alpha)


__all__ = [
    "HANDS",
    "FrameTokenGrid",
    "LatentPerceiverTrunk",
    "LatentPerceivers",
    "LatentQueries",
    "LatentStandardization",
    "PerceiverAttentionBlock",
    "PerceiverLayer",
    "fourier_position_features",
    "grid_coordinates",
    "select_hand",
    "statistics_dtype",
]
