"""Sequence packing for PELA pretraining: streamed samples laid end to end in rows of a fixed length.

:class:`PackedSamples` encodes and masks every streamed row (:meth:`PELADataCollator.encode_row`), fills a buffer of
``buffer_size`` samples and places them into rows of at most ``seq_length`` tokens with trl's best-fit-decreasing
packing (:func:`best_fit_decreasing`, ``trl.pack_dataset(strategy="bfd")``); whole samples only, never cut.
:class:`PackedCollator` turns R such rows into one batch (L = ``seq_length``, S samples in row-major order, N chunks,
F boundary frames):

* ``input_ids`` (R, L) int64, the pad id after a row's last sample; ``attention_mask`` (R, L) int64, 0 there;
  ``labels`` (R, L) int64, -100 there; ``chunk_ids`` (R, L) int64, chunks numbered per sample, -1 there;
  ``position_ids`` (R, L) int64, restarting at 0 at every sample (0 in the padding);
* one entry per sample: ``pixel_values`` (num_images, 3, H, W) float, ``frame_pixel_values`` (S, F, 3, H', W') float
  or ``frame_features`` (S, F, D) float, ``chunk_hands`` / ``chunk_frames`` (S, N) int64, ``is_labeled`` (S,) bool.

``PELAForPretraining.forward`` reads it as its S samples unpacked (:mod:`modeling_pela.packed_sequences`): attention
stays inside each sample and every sample counts once in the loss, whatever its length. The rows depend only on the
order of the stream, so a resumed run that skips its first batches sees the same rows, and under DDP every rank packs
its own part of the stream (``PELATrainer`` splits it first). Each DataLoader worker packs the shards it reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from transformers import BatchFeature
from trl import pack_dataset

from .collator import IGNORE_INDEX, PELADataCollator


def best_fit_decreasing(lengths: Sequence[int], seq_length: int) -> list[list[int]]:
    """Group the samples of ``lengths`` (tokens each, all <= ``seq_length``) into bins of at most ``seq_length``
    tokens by trl's best-fit-decreasing packing. Returns each bin's sample indices (longest sample first)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    owners = pa.ListArray.from_arrays(offsets, pa.array(np.repeat(np.arange(len(lengths)), lengths)))
    quiet = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        packed = pack_dataset(
            datasets.Dataset(pa.table({"sample": owners})), seq_length, "bfd", {"keep_in_memory": True}
        ).data
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    sizes = packed.column("seq_lengths").combine_chunks()
    starts = np.concatenate([[0], np.cumsum(sizes.flatten().to_numpy())[:-1]])
    firsts = packed.column("sample").combine_chunks().flatten().to_numpy()[starts].tolist()
    counts = np.diff(sizes.offsets.to_numpy())
    bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
    return [firsts[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class PackedSamples(torch.utils.data.IterableDataset):
    """The rows of ``rows`` (UniHand-Mix rows, e.g. a streamed ``datasets.IterableDataset``) encoded by
    ``collator`` and packed, ``buffer_size`` at a time, into lists of samples of at most ``seq_length`` tokens.

    Raises ``ValueError`` naming a sample longer than ``seq_length``."""

    def __init__(
        self, rows: Iterable[dict[str, Any]], collator: PELADataCollator, seq_length: int, buffer_size: int = 256
    ) -> None:
        if seq_length < 1 or buffer_size < 1:
            raise ValueError(f"seq_length and buffer_size must be >= 1, got {seq_length} and {buffer_size}")
        self.rows = rows
        self.collator = collator
        self.seq_length = seq_length
        self.buffer_size = buffer_size

    def set_epoch(self, epoch: int) -> None:
        """New shuffle order (streamed rows) and new MCP masks (collator) for pass ``epoch``."""
        if hasattr(self.rows, "set_epoch"):
            self.rows.set_epoch(epoch)
        self.collator.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        buffer: list[dict[str, Any]] = []
        for index, row in enumerate(self.rows):
            item = self.collator.encode_row(row, index)
            length = item["input_ids"].numel()
            if length > self.seq_length:
                raise ValueError(
                    f"sample {str(row.get('id', index))!r} has {length} tokens, more than a packed row holds "
                    f"(packing_length={self.seq_length}): raise --packing_length or crop clips with --max_train_chunks"
                )
            buffer.append(item)
            if len(buffer) == self.buffer_size:
                yield from self._pack(buffer)
                buffer = []
        if buffer:
            yield from self._pack(buffer)

    def _pack(self, buffer: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        for bin_ in best_fit_decreasing([item["input_ids"].numel() for item in buffer], self.seq_length):
            yield [buffer[i] for i in bin_]


class PackedCollator:
    """Lays R lists of encoded samples (:class:`PackedSamples`) out as one packed batch of R rows of ``seq_length``
    tokens (fields in the module docstring); ``processor`` is the ``PELAProcessor`` that encoded them."""

    def __init__(self, processor: Any, seq_length: int) -> None:
        self.processor = processor
        self.seq_length = seq_length

    def __call__(self, packs: Sequence[Sequence[dict[str, Any]]]) -> BatchFeature:
        samples = [item for pack in packs for item in pack]
        batch = self.processor.collate(samples)
        del batch["first_target_chunk"]
        pad_id = self.processor.tokenizer.pad_token_id or 0
        shape = (len(packs), self.seq_length)
        tokens = {
            "input_ids": torch.full(shape, pad_id, dtype=torch.long),
            "attention_mask": torch.zeros(shape, dtype=torch.long),
            "labels": torch.full(shape, IGNORE_INDEX, dtype=torch.long),
            "chunk_ids": torch.full(shape, -1, dtype=torch.long),
            "position_ids": torch.zeros(shape, dtype=torch.long),
        }
        for row, pack in enumerate(packs):
            start = 0
            for item in pack:
                end = start + item["input_ids"].numel()
                if end > self.seq_length:
                    raise ValueError(
                        f"row {row}: its samples hold {end}+ tokens, more than seq_length={self.seq_length}"
                    )
                for key in ("input_ids", "labels", "chunk_ids"):
                    tokens[key][row, start:end] = item[key]
                tokens["attention_mask"][row, start:end] = 1
                tokens["position_ids"][row, start:end] = torch.arange(end - start)
                start = end
        batch.update(tokens)
        return batch


__all__ = ["PackedCollator", "PackedSamples", "best_fit_decreasing"]
