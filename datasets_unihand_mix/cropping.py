"""The first chunks of a UniHand-Mix row: :func:`crop_row` cuts the motion, its tokens, the boundary frames and the
counts consistently, on decoded rows or on the undecoded rows of a parquet shard (what
``stream_unihand_mix(max_chunks=...)`` crops, so that the frames it drops are never decoded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PER_FRAME_MANO = ("hand_pose", "global_orient", "transl")  # cut with the frames; betas and the convention are per clip


def crop_row(row: Mapping[str, Any], max_chunks: int) -> dict[str, Any]:
    """The first ``max_chunks`` chunks of ``row`` (a copy; rows with as many chunks or fewer are copied whole).

    Cut: ``num_chunks``, ``num_frames``, the per-frame MANO fields (``hand_pose``, ``global_orient``, ``transl``; T =
    15 * chunks), ``motion_tokens_left/right`` and ``frame_features`` (one entry per chunk / boundary frame),
    ``boundary_frames`` (``max_chunks + 1``) and ``context_chunks`` (at most ``max_chunks - 1``). ``max_chunks`` must be
    >= 1 (``ValueError`` otherwise)."""
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
    num_chunks = int(row["num_chunks"])
    if num_chunks <= max_chunks:
        return dict(row)
    frames = max_chunks * int(row["chunk_length"])
    out = {**row, "num_chunks": max_chunks, "num_frames": frames}
    out["boundary_frames"] = list(row["boundary_frames"])[: max_chunks + 1]
    out["context_chunks"] = min(int(row.get("context_chunks") or 0), max_chunks - 1)
    for side in ("left", "right"):
        mano = row.get(f"mano_{side}")
        if mano is not None:
            out[f"mano_{side}"] = {k: (v[:frames] if k in PER_FRAME_MANO else v) for k, v in mano.items()}
        tokens = row.get(f"motion_tokens_{side}")
        if tokens is not None:
            out[f"motion_tokens_{side}"] = list(tokens)[:max_chunks]
    if row.get("frame_features") is not None:
        out["frame_features"] = list(row["frame_features"])[: max_chunks + 1]
    return out
