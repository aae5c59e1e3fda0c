"""The hybrid masking scheme of Masked Chunk Prediction (paper appendix A.3), as a pure function of a chunk layout.

For one sequence with N motion chunks:

* one chunk is drawn as the prediction target (uniformly among the allowed ones);
* chunks before the target are kept intact;
* inside the target, a ratio r is drawn uniformly from ``TARGET_RATIOS`` = {0.05, 0.15, ..., 0.95, 1.0} and
  ``max(1, round(r * n))`` of its n tokens are masked (a uniformly random subset); with ``full_mask_prob`` > 0
  (not in the paper, default 0) the whole target is masked with that probability instead of the drawn ratio, which
  trains more often on what generation faces: a chunk with no visible token (the ratio 1.0 alone gives 1/11);
* tokens of chunks after the target are masked independently with probability ``LATER_CHUNK_PROB`` = 0.05;
* video-only samples (no motion labels) have every motion token masked and no MCP target.

Randomness comes from a ``torch.Generator`` seeded per sample and epoch (:func:`sample_generator`), so the masks do
not depend on batch composition, data-loader workers, the number of ranks or where a resumed run restarts, and a
sample gets a new target chunk, ratio and subset in every epoch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

TARGET_RATIOS: tuple[float, ...] = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 1.0)
LATER_CHUNK_PROB = 0.05


@dataclass(frozen=True)
class ChunkMask:
    """Result of :func:`hybrid_chunk_mask` for one sequence.

    Attributes:
        masked: (L,) bool, positions whose motion token is replaced by ``[MASK]``.
        target_chunk: index of the target chunk, or -1 (video-only or no chunk eligible).
        ratio: masking ratio drawn for the target chunk (1.0 for video-only, 0.0 without a target).
    """

    masked: torch.Tensor
    target_chunk: int
    ratio: float


def sample_generator(seed: int, sample_id: str, epoch: int = 0) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, sample_id, epoch)``."""
    digest = hashlib.blake2b(f"{seed}\x00{sample_id}\x00{epoch}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def check_full_mask_prob(full_mask_prob: float) -> None:
    """Raise ``ValueError`` unless ``full_mask_prob`` is a probability."""
    if not 0.0 <= full_mask_prob <= 1.0:
        raise ValueError(f"full_mask_prob must be in [0, 1], got {full_mask_prob}")


def hybrid_chunk_mask(
    chunk_ids: torch.Tensor,
    *,
    labeled: bool,
    generator: torch.Generator,
    first_target: int = 0,
    target_ratios: tuple[float, ...] = TARGET_RATIOS,
    later_chunk_prob: float = LATER_CHUNK_PROB,
    full_mask_prob: float = 0.0,
) -> ChunkMask:
    """Draw the hybrid MCP mask of one sequence.

    Args:
        chunk_ids: (L,) int, the motion chunk each position's token belongs to (0..N-1), -1 for every other token
            (text, image, ``<mot>``/``</mot>``). Chunk ids must increase along the sequence.
        labeled: False for video-only samples: every motion position is masked, no target is drawn.
        generator: the per-sample random source (:func:`sample_generator`).
        first_target: smallest chunk id allowed as target (``context_chunks`` of a motion-continuation sample).
        full_mask_prob: probability of masking the whole target chunk instead of drawing a ratio (0: the paper).
    """
    check_full_mask_prob(full_mask_prob)
    if chunk_ids.ndim != 1:
        raise ValueError(f"chunk_ids must be (L,), got shape {tuple(chunk_ids.shape)}")
    is_motion = chunk_ids >= 0
    if not labeled:
        return ChunkMask(masked=is_motion.clone(), target_chunk=-1, ratio=1.0)
    chunks = torch.unique(chunk_ids[is_motion])
    candidates = chunks[chunks >= first_target]
    if candidates.numel() == 0:
        return ChunkMask(masked=torch.zeros_like(is_motion), target_chunk=-1, ratio=0.0)
    target = int(candidates[torch.randint(candidates.numel(), (1,), generator=generator)])
    ratio = target_ratios[int(torch.randint(len(target_ratios), (1,), generator=generator))]
    if full_mask_prob and float(torch.rand((), generator=generator)) < full_mask_prob:
        ratio = 1.0
    positions = torch.nonzero(chunk_ids == target).flatten()
    count = max(1, round(ratio * positions.numel()))
    chosen = positions[torch.randperm(positions.numel(), generator=generator)[:count]]
    masked = torch.zeros_like(is_motion)
    masked[chosen] = True
    later = chunk_ids > target
    masked |= later & (torch.rand(chunk_ids.shape, generator=generator) < later_chunk_prob)
    return ChunkMask(masked=masked, target_chunk=target, ratio=ratio)
