"""Robust streaming of an exported UniHand-Mix (local folder or Hub repo) for training.

``datasets.load_dataset(path, name, split=..., streaming=True)`` reads the export as is; a trainer should rather use
:func:`stream_unihand_mix`, which returns the same kind of ``datasets.IterableDataset`` (shuffle buffer,
``state_dict``/``load_state_dict``, ``with_format("torch")``) but reads the parquet shards itself so that it can

* interleave the subsets of ``mix`` (lab, wild) in proportion to their sizes, row by row, rather than one subset's
  shards after the other's (:func:`iter_mixed_rows`), and give every rank of a distributed run the same number of
  rows with that same mixture (``rank``/``world_size``; splitting whole shards gave one rank only lab rows; each
  rank reads every row and keeps its share);
* skip a corrupt or truncated shard (``unreadable_shard``), and
* validate every sample (:func:`validate_sample`: NaN/inf pose, missing frame, wrong lengths, bad values),

raising a :class:`UniHandMixDataError` that names the shard or the sample id and field (the default), or, with an
explicit budget (``max_skip_fraction``, per subset), skipping, counting each skip by reason in a :class:`SkipStats`
and logging it; past the budget, or when a subset has no usable row at all, it raises. Nothing is dropped silently.

The stream is one ``datasets`` shard (the interleaving needs every subset in one generator): read it with one
DataLoader worker. ``split_dataset_by_node`` on it (what ``stream_unihand_mix(rank=, world_size=)`` does, and
``PELATrainer`` with a stream that is not split yet) splits row by row, so ranks keep the mixture. Counts are kept
per process; on resume the rows that are replayed are counted again.
"""

from __future__ import annotations

import io
import logging
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import datasets
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.distributed import split_dataset_by_node
from PIL import Image

from modeling_pela.hand_motion import HAND_SIDES, SHAPE_CONVENTIONS

from .cropping import crop_row
from .schema import CHUNK_LENGTH, SPLITS, TASK_TYPES, unihand_features

logger = logging.getLogger(__name__)

SKIP_REASONS = ("unreadable_shard", "nan_pose", "missing_frame", "bad_frame", "wrong_length", "bad_value")
LOGGED_PER_REASON = 10


class UniHandMixDataError(ValueError):
    """A shard or a sample of UniHand-Mix is unusable (``reason`` one of :data:`SKIP_REASONS`; ``where`` names the
    shard file or ``sample '<id>' field '<name>'``), or a subset lost more rows than allowed (``"too_many_skips"``) or
    all of them (``"empty_subset"``; ``where`` names the subset)."""

    def __init__(self, reason: str, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.reason, self.where, self.detail = reason, where, detail


@dataclass
class SkipStats:
    """Counts of skipped shards and samples by reason, with the last message of each (for a trainer to log).

    The first :data:`LOGGED_PER_REASON` skips of each reason are logged at WARNING, later ones at DEBUG.
    """

    counts: Counter = field(default_factory=Counter)
    last: dict[str, str] = field(default_factory=dict)
    samples_ok: int = 0

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def record(self, error: UniHandMixDataError) -> None:
        self.counts[error.reason] += 1
        self.last[error.reason] = str(error)
        level = logging.WARNING if self.counts[error.reason] <= LOGGED_PER_REASON else logging.DEBUG
        logger.log(level, "UniHand-Mix: skipping %s [%s skip #%d]", error, error.reason, self.counts[error.reason])

    def as_dict(self) -> dict[str, Any]:
        return {"samples_ok": self.samples_ok, "skipped": dict(self.counts), "last": dict(self.last)}


class SkipBudget:
    """The data-error policy of one subset's stream: with ``max_skip_fraction`` 0 the first unusable shard or sample
    raises its :class:`UniHandMixDataError`; above 0 unusable rows are skipped and counted in ``stats`` until they
    exceed that fraction of the subset's ``expected`` rows (an unreadable shard counts as ``rows_per_shard`` rows),
    which raises ``"too_many_skips"``."""

    def __init__(
        self, subset: str, expected: int, rows_per_shard: float, max_skip_fraction: float, stats: SkipStats
    ) -> None:
        self.subset, self.expected, self.rows_per_shard = subset, expected, rows_per_shard
        self.max_skip_fraction, self.stats = max_skip_fraction, stats
        self.skipped, self.reasons = 0.0, Counter()

    def skip(self, error: UniHandMixDataError, shard: bool = False) -> None:
        if not self.max_skip_fraction:
            raise error
        self.stats.record(error)
        self.reasons[error.reason] += 1
        self.skipped += self.rows_per_shard if shard else 1
        if self.skipped > self.max_skip_fraction * self.expected:
            raise UniHandMixDataError(
                "too_many_skips",
                f"subset '{self.subset}'",
                f"{self.skipped:.0f} of its {self.expected} rows are unusable, more than max_skip_fraction="
                f"{self.max_skip_fraction:g} allows ({dict(self.reasons)}); the last: {error}",
            )


def _sample_error(reason: str, sample_id: str, name: str, detail: str) -> UniHandMixDataError:
    return UniHandMixDataError(reason, f"sample '{sample_id}' field '{name}'", detail)


def _check_array(value: Any, shape: tuple[int, ...], sample_id: str, name: str, nan_reason: str = "nan_pose") -> None:
    """``value`` must be a finite float array of ``shape`` (a non-finite value is a ``nan_reason`` error)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _sample_error("wrong_length", sample_id, name, f"ragged or non-numeric, expected shape {shape}") from None
    if array.shape != shape:
        raise _sample_error("wrong_length", sample_id, name, f"shape {array.shape}, expected {shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        frame = int(np.argwhere(bad)[0][0])
        kind = "NaN" if np.isnan(array).any() else "inf"
        raise _sample_error(nan_reason, sample_id, name, f"contains {kind} (first at frame {frame})")


def validate_sample(row: Mapping[str, Any]) -> None:
    """Check one (undecoded) row; raise :class:`UniHandMixDataError` naming the sample and the field.

    Checks: the id, split and task type; ``num_frames == chunk_length * num_chunks`` with 15-frame chunks;
    ``num_chunks + 1`` boundary frames and a first frame with readable image headers; a positive finite fps; for each hand in ``hands``
    with MANO: (T, 45) / (T, 3) / (T, 3) finite arrays (and 10 finite betas with their shape convention when present); motion-labelled samples have
    MANO for every listed hand; precomputed motion tokens, if any, are (num_chunks, an even tokens-per-chunk), and
    precomputed frame features (num_chunks + 1, D) finite floats.
    """
    sample_id = str(row.get("id") or "<no id>")
    if not row.get("id"):
        raise _sample_error("bad_value", sample_id, "id", "missing")
    for name, allowed in (("split", SPLITS), ("task_type", TASK_TYPES)):
        if row.get(name) not in allowed:
            raise _sample_error("bad_value", sample_id, name, f"{row.get(name)!r} is not one of {allowed}")
    fps = row.get("fps")
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise _sample_error("bad_value", sample_id, "fps", f"must be a positive number, got {fps!r}")
    num_frames, num_chunks, chunk = row.get("num_frames"), row.get("num_chunks"), row.get("chunk_length")
    if chunk != CHUNK_LENGTH or not isinstance(num_chunks, int) or num_chunks < 1 or num_frames != chunk * num_chunks:
        raise _sample_error(
            "wrong_length",
            sample_id,
            "num_frames",
            f"{num_frames} frames, {num_chunks} chunks of {chunk}; expected chunks of {CHUNK_LENGTH}",
        )
    frames = row.get("boundary_frames") or []
    if len(frames) != num_chunks + 1:
        raise _sample_error(
            "missing_frame", sample_id, "boundary_frames", f"{len(frames)} frames, expected {num_chunks + 1}"
        )
    for index, image in enumerate([row.get("first_frame"), *frames]):
        name = "first_frame" if index == 0 else f"boundary_frames[{index - 1}]"
        if not image or not image.get("bytes"):
            raise _sample_error("missing_frame", sample_id, name, "no image bytes")
        try:  # reads the header only; the pixels are decoded by `datasets` when the sample is used
            with Image.open(io.BytesIO(image["bytes"])) as header:
                header.size  # noqa: B018
        except (OSError, ValueError) as err:
            raise _sample_error("bad_frame", sample_id, name, f"not a readable image ({err})") from None
    features = row.get("frame_features")
    if features is not None:
        try:
            shape = np.asarray(features, dtype=np.float64).shape
        except (TypeError, ValueError):
            shape = "ragged or non-numeric"
        if not isinstance(shape, tuple) or len(shape) != 2 or shape[0] != num_chunks + 1 or not shape[1]:
            raise _sample_error(
                "wrong_length", sample_id, "frame_features",
                f"{shape}, expected ({num_chunks + 1}, feature width): one row per boundary frame",
            )  # fmt: skip
        _check_array(features, shape, sample_id, "frame_features", nan_reason="bad_value")
    hands = row.get("hands") or []
    if not hands or not set(hands) <= set(HAND_SIDES):
        raise _sample_error("bad_value", sample_id, "hands", f"{hands!r} must be a non-empty subset of {HAND_SIDES}")
    for side in HAND_SIDES:
        mano = row.get(f"mano_{side}")
        if mano is None:
            if row.get("has_motion_labels") and side in hands:
                raise _sample_error("bad_value", sample_id, f"mano_{side}", "null for a motion-labelled hand")
            continue
        for key, dims in (("hand_pose", 45), ("global_orient", 3), ("transl", 3)):
            _check_array(mano.get(key), (num_frames, dims), sample_id, f"mano_{side}.{key}")
        if mano.get("betas") is not None:
            _check_array(mano["betas"], (10,), sample_id, f"mano_{side}.betas")
        convention = mano.get("shape_convention")
        if convention not in SHAPE_CONVENTIONS and (convention is not None or mano.get("betas") is not None):
            raise _sample_error(
                "bad_value", sample_id, f"mano_{side}.shape_convention",
                f"{convention!r} is not one of {SHAPE_CONVENTIONS} (required with betas: the left-hand MANO shape "
                "space they were fitted in; re-convert the source)",
            )  # fmt: skip
        tokens = row.get(f"motion_tokens_{side}")
        shape = np.shape(tokens) if tokens is not None else None
        if shape is not None and (len(shape) != 2 or shape[0] != num_chunks or shape[1] < 2 or shape[1] % 2):
            raise _sample_error(
                "wrong_length",
                sample_id,
                f"motion_tokens_{side}",
                f"shape {shape}, expected ({num_chunks}, an even number of tokens per chunk)",
            )


def iter_valid_rows(
    files: list[str] | tuple[str, ...],
    budget: SkipBudget,
    batch_size: int = 16,
    *,
    max_rows: int | None = None,
) -> Iterator[dict]:
    """Rows of parquet ``files`` in order (images undecoded); unreadable shards and invalid samples go to ``budget``
    (skipped and counted, or raised). Only the first ``max_rows`` rows (counted valid or not) when given."""
    index = 0
    for file in files:
        try:
            with fsspec.open(file, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                for batch in parquet.iter_batches(batch_size=batch_size):
                    for row in batch.to_pylist():
                        index += 1
                        if max_rows is not None and index > max_rows:
                            return
                        try:
                            validate_sample(row)
                        except UniHandMixDataError as error:
                            budget.skip(error)
                            continue
                        budget.stats.samples_ok += 1
                        yield row
        except (pa.ArrowException, OSError) as err:
            error = UniHandMixDataError("unreadable_shard", f"shard {file}", f"{type(err).__name__}: {err}")
            try:
                budget.skip(error, shard=True)
            except UniHandMixDataError as raised:
                raise raised from err


def count_rows(file: str) -> int:
    """Rows of a parquet shard from its footer. Raises ``UniHandMixDataError("unreadable_shard")`` naming the file."""
    try:
        with fsspec.open(file, "rb") as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    except (pa.ArrowException, OSError) as err:
        raise UniHandMixDataError("unreadable_shard", f"shard {file}", f"{type(err).__name__}: {err}") from err


def iter_mixed_rows(
    subsets: tuple[tuple[str, tuple[str, ...]], ...],
    max_skip_fraction: float,
    stats: SkipStats,
    multiple_of: int = 1,
    seed: int | None = None,
    max_chunks: int | None = None,
) -> Iterator[dict]:
    """Rows of several subsets (``(name, parquet files)``), interleaved so that every prefix of the stream holds the
    subsets in proportion to their sizes: at each step the subset furthest behind its share gives the next row.

    ``seed`` shuffles each subset's shard order (once; the same on every rank). ``multiple_of`` (the world size of a
    distributed run) cuts each subset to a multiple of that many rows, so that a row-by-row split gives every rank
    the same number of rows, each subset's share within one row (exactly when no row is skipped). Unusable data
    follow :class:`SkipBudget` (one per subset); a subset without a readable row, or that loses every row, raises
    ``"empty_subset"``. ``max_chunks`` crops every valid row to its first chunks (:func:`crop_row`), undecoded."""
    streams, quotas, names = [], [], []
    for name, files in subsets:
        files = list(files)
        if seed is not None:
            np.random.default_rng([seed, len(names)]).shuffle(files)
        counts = []
        for file in files:
            try:
                counts.append(count_rows(file))
            except UniHandMixDataError:
                if not max_skip_fraction:
                    raise
        if not counts or not sum(counts):
            raise UniHandMixDataError("empty_subset", f"subset '{name}'", f"none of its {len(files)} shards has a row")
        total = sum(counts) * len(files) // len(counts)  # unreadable shards estimated at the mean shard size
        if total < multiple_of:
            raise ValueError(f"subset '{name}' has {total} rows, fewer than the {multiple_of} processes to share them")
        budget = SkipBudget(name, total, total / len(files), max_skip_fraction, stats)
        limit = total // multiple_of * multiple_of if multiple_of > 1 else None
        streams.append(iter_valid_rows(files, budget, max_rows=limit))
        quotas.append(limit or total)
        names.append(name)
    emitted = [0] * len(streams)
    active = set(range(len(streams)))
    while active:
        chosen = min(active, key=lambda i: ((emitted[i] + 0.5) / quotas[i], i))
        row = next(streams[chosen], None)
        if row is None:
            active.discard(chosen)
            if not emitted[chosen]:
                raise UniHandMixDataError("empty_subset", f"subset '{names[chosen]}'", "every row was unusable")
            continue
        emitted[chosen] += 1
        yield row if max_chunks is None else crop_row(row, max_chunks)


def resolve_data_files(path: str, name: str = "mix", split: str = "train", **builder_kwargs: Any) -> list[str]:
    """The parquet files of ``name``/``split`` as declared by the dataset card's ``configs:`` (local or Hub)."""
    builder = datasets.load_dataset_builder(path, name, **builder_kwargs)
    data_files = builder.config.data_files or {}
    if split not in data_files:
        raise ValueError(f"{path} config '{name}' has no split '{split}'; it declares {sorted(data_files)}")
    return list(data_files[split])


def stream_unihand_mix(
    path: str,
    name: str = "mix",
    split: str = "train",
    *,
    max_skip_fraction: float = 0.0,
    stats: SkipStats | None = None,
    shuffle_buffer_size: int | None = None,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    max_chunks: int | None = None,
    **builder_kwargs: Any,
) -> datasets.IterableDataset:
    """Stream ``name``/``split`` of an exported UniHand-Mix with validation (module docstring).

    Args:
        path: a local export folder or a Hub repo id.
        max_skip_fraction: the data-error policy (:class:`SkipBudget`): 0 (default) raises a
            :class:`UniHandMixDataError` naming the first unusable shard or sample; above 0 such rows are skipped,
            counted in ``stats`` and logged, until they exceed that fraction of a subset's rows.
        stats: where skips are counted (pass one to read the counts; per process).
        shuffle_buffer_size: shuffle each subset's shard order once (``seed``) and the rows through a buffer of this
            size, reshuffled per epoch (``set_epoch``); None: file order.
        seed: shuffle seed, identical on every rank.
        rank / world_size: keep only this rank's part: the interleaved stream, each subset cut to a multiple of
            ``world_size`` rows, split row by row (``datasets.distributed.split_dataset_by_node``): every rank gets
            the same number of rows with the single-process mixture (each rank reads every row and keeps its own).
        max_chunks: keep only the first ``max_chunks`` chunks of every row (:func:`crop_row`), cut after
            validation and before decoding, so that the boundary frames it drops are never decoded (a row of N
            chunks carries N + 1 of them; training on one chunk needs 2). None: whole rows.
        builder_kwargs: passed to ``datasets.load_dataset_builder`` (e.g. ``revision``, ``token``).

    Returns:
        A ``datasets.IterableDataset`` with the :func:`~datasets_unihand_mix.schema.unihand_features` schema (images
        decode to PIL). Resume with ``state_dict()`` / ``load_state_dict()`` (exact without a shuffle buffer; a
        buffer's content is not saved, as documented by ``datasets``).
    """
    if not 0.0 <= max_skip_fraction <= 1.0:
        raise ValueError(f"max_skip_fraction must lie in [0, 1], got {max_skip_fraction}")
    if (rank is None) != (world_size is None):
        raise ValueError("pass both rank and world_size, or neither")
    if rank is not None and not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    if max_chunks is not None and max_chunks < 1:
        raise ValueError(f"max_chunks must be >= 1 or None, got {max_chunks}")
    files = resolve_data_files(path, name, split, **builder_kwargs)
    by_subset: dict[str, list[str]] = {}
    for file in files:  # shards live in data/<subset>/
        by_subset.setdefault(file.replace("\\", "/").rsplit("/", 2)[-2], []).append(file)
    dataset = datasets.IterableDataset.from_generator(
        iter_mixed_rows,
        features=unihand_features(),
        gen_kwargs={
            "subsets": tuple((name, tuple(files)) for name, files in by_subset.items()),  # tuples: one shard
            "max_skip_fraction": max_skip_fraction,
            "stats": stats if stats is not None else SkipStats(),
            "multiple_of": world_size or 1,
            "seed": seed if shuffle_buffer_size else None,
            "max_chunks": max_chunks,
        },
        split=datasets.NamedSplit(split),
    )
    if shuffle_buffer_size:
        dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    if world_size is not None:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    return dataset
