"""Does a PELA model read the first frame and the instruction? A diagnostic for conditional motion generation.

A model that beats the mean motion must take *where* the hands and the target are from the first frame and *what* to
do from the instruction. :func:`evaluate_frame_reliance` measures how much each input lowers the masked-chunk loss
in the generation condition: every motion token of the target chunks is ``[MASK]`` (the first pass of masked
decoding), and the model is scored

* on the rows as they are;
* with every row's first frame replaced by another row's (``first_frame``, ``boundary_frames`` and precomputed
  ``frame_features`` together; a fixed derangement, so no row keeps its own frame);
* with every row's instruction replaced by another row's (the same derangement).

``frame_gain`` = loss(shuffled frames) - loss (nats per motion token) is ~0 for a model that ignores the frame, as
is ``instruction_gain`` for the instruction. Only the ``masked_chunk`` objective is supported (the next-token
baseline never sees a fully masked chunk).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

FRAME_FIELDS = ("first_frame", "boundary_frames", "frame_features")


def derangement(count: int, seed: int) -> list[int]:
    """A seeded permutation of ``range(count)`` with no fixed point (``count >= 2``)."""
    if count < 2:
        raise ValueError(f"shuffling inputs between rows needs at least 2 rows, got {count}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    target = {order[i]: order[(i + 1) % count] for i in range(count)}  # one cycle through all rows
    return [target[i] for i in range(count)]


@torch.no_grad()
def full_mask_loss(
    model: Any, processor: Any, motion_tokenizer: Any, rows: Sequence[Mapping[str, Any]], batch_size: int = 16
) -> float:
    """Mean over ``rows`` of the per-row MCP loss (nats per motion token) with every target motion token masked."""
    total = 0.0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = processor(list(chunk), motion_tokenizer=motion_tokenizer, objective="masked_chunk")  # targets [MASK]ed
        batch = {
            key: value.to(model.device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()
        }
        output = model(**batch)
        if output.mcp_loss is None:
            raise ValueError(f"rows {start}..{start + len(chunk) - 1} have no motion target to score")
        total += float(output.mcp_loss) * len(chunk)
    return total / len(rows)


def evaluate_frame_reliance(
    model: Any,
    processor: Any,
    motion_tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Full-mask MCP loss of ``model`` on labelled ``rows`` (UniHand-Mix rows with motion targets, e.g. the first chunk
    of motion-generation samples) as they are, with shuffled first frames and with shuffled instructions.

    Returns ``{"mcp_loss", "mcp_loss_shuffled_frames", "mcp_loss_shuffled_instructions", "frame_gain",
    "instruction_gain", "num_rows"}`` (losses in nats per motion token; gains = shuffled - true).

    Raises:
        ValueError: fewer than 2 rows, a row without motion labels, or a model whose objective is not
            ``masked_chunk``.
    """
    if model.config.objective != "masked_chunk":
        raise ValueError(f"frame reliance scores masked-chunk models, got objective {model.config.objective!r}")
    rows = list(rows)
    unlabelled = [str(row.get("id", index)) for index, row in enumerate(rows) if not row.get("has_motion_labels")]
    if unlabelled:
        raise ValueError(f"rows without motion labels cannot be scored: {unlabelled[:3]}")
    other = derangement(len(rows), seed)
    frames = [
        {**row, **{k: rows[j][k] for k in FRAME_FIELDS if k in rows[j]}} for row, j in zip(rows, other, strict=True)
    ]
    instructions = [{**row, "instruction": rows[j]["instruction"]} for row, j in zip(rows, other, strict=True)]
    was_training = model.training
    model.eval()
    try:
        true, shuffled_frames, shuffled_instructions = (
            full_mask_loss(model, processor, motion_tokenizer, variant, batch_size)
            for variant in (rows, frames, instructions)
        )
    finally:
        model.train(was_training)
    return {
        "mcp_loss": true,
        "mcp_loss_shuffled_frames": shuffled_frames,
        "mcp_loss_shuffled_instructions": shuffled_instructions,
        "frame_gain": shuffled_frames - true,
        "instruction_gain": shuffled_instructions - true,
        "num_rows": len(rows),
    }
