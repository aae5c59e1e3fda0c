"""The UniHand-Mix rows pretraining and evaluation read: the streamed train split (this rank's share, a stable
share of the wild clips, cropped), the labelled test rows, and the row transforms behind them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from datasets_unihand_mix.streaming import SkipStats, stream_unihand_mix
from datasets_unihand_mix.tasks import stable_uniform

from .arguments import PretrainArguments


def wild_fraction_filter(fraction: float) -> Callable[[Mapping[str, Any]], bool]:
    """Keep every lab row and a stable (per clip id) ``fraction`` of the wild rows (paper Fig. 3)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"wild_fraction must be in [0, 1], got {fraction}")

    def keep(row: Mapping[str, Any]) -> bool:
        return row["subset"] == "lab" or stable_uniform("wild-fraction", row["id"]) < fraction

    return keep


def is_labelled_row(row: Mapping[str, Any]) -> bool:
    """Whether a UniHand-Mix row carries motion labels (video-only rows train only the alignment)."""
    return bool(row["has_motion_labels"]) and row["task_type"] != "video_only"


def pretraining_stream(
    args: PretrainArguments, seed: int, rank: int = 0, world_size: int = 1, stats: SkipStats | None = None
) -> Any:
    """The streamed, wild-fraction-filtered (and cropped) ``train`` split ``pela pretrain`` reads: this ``rank``'s
    share (the same count and lab:wild mixture on every rank) of a run on ``world_size`` processes; skipped rows are
    counted in ``stats``."""
    distributed = {"rank": rank, "world_size": world_size} if world_size > 1 else {}
    return stream_unihand_mix(
        args.data, args.dataset_config, "train", shuffle_buffer_size=args.shuffle_buffer_size or None, seed=seed,
        max_skip_fraction=args.max_skip_fraction, stats=stats, max_chunks=args.max_train_chunks or None,
        **distributed,
    ).filter(wild_fraction_filter(args.wild_fraction))  # fmt: skip


def evaluation_rows(
    data: str,
    split: str,
    max_rows: int | None = None,
    num_chunks: int = 1,
    *,
    max_skip_fraction: float = 0.0,
    stats: SkipStats | None = None,
) -> list[dict[str, Any]]:
    """The labelled rows of ``split``/test of an exported UniHand-Mix, cut to their first ``num_chunks`` chunks (what
    evaluation decodes and scores). Unusable data raise, or within ``max_skip_fraction`` are skipped and counted in
    ``stats`` (:func:`~datasets_unihand_mix.streaming.stream_unihand_mix`)."""
    rows = []
    stream = stream_unihand_mix(
        data, split, "test", max_skip_fraction=max_skip_fraction, stats=stats, max_chunks=num_chunks
    )
    for row in stream:
        if row["has_motion_labels"] and int(row["num_chunks"]) >= num_chunks:
            rows.append(row)
        if max_rows is not None and len(rows) >= max_rows:
            break
    return rows


def rows_of(dataset: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Materialise a (small) streamed split."""
    return [dict(row) for row in dataset]
