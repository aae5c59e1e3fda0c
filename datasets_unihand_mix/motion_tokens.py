"""Precomputed motion tokens: fill the ``motion_tokens_left/right`` columns of an exported UniHand-Mix folder.

Training reads the GRQ-VAE ids of every labelled hand-chunk; computing them once, here, takes the tokenizer out of
the training loop. :func:`tokenize_hub_folder` rewrites every parquet shard under ``<folder>/data/`` in place (each
shard is written next to the original and swapped in with one ``os.replace``), leaving every other column byte for
byte as it was:

* ``motion_tokens_<side>``: (num_chunks, K) int32 ids (K = the tokenizer's ``tokens_per_chunk``) of the hand's MANO labels (null where the hand has none);
* ``motion_tokens_model``: the tokenizer's :meth:`~modeling_pela.MotionTokenizerModel.fingerprint`, which the
  ``PELAProcessor`` compares with the tokenizer it is given (a mismatch is refused, never silently trained on).

``pela data tokenize FOLDER --motion-tokenizer DIR`` runs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from .schema import unihand_features

SIDES = ("left", "right")


@dataclass
class TokenizeSummary:
    """What :func:`tokenize_hub_folder` wrote: shards rewritten, rows seen, hand-chunks tokenized, fingerprint."""

    shards: int
    rows: int
    hand_chunks: int
    fingerprint: str


def _hand_chunks(mano: dict[str, Any], num_chunks: int, chunk_length: int, where: str) -> dict[str, np.ndarray]:
    """One hand's MANO columns -> ``hand_pose`` (N, T, 45), ``global_orient`` / ``transl`` (N, T, 3) float32."""
    frames = num_chunks * chunk_length
    out = {}
    for name, width in (("hand_pose", 45), ("global_orient", 3), ("transl", 3)):
        values = np.asarray(mano[name], dtype=np.float32)
        if values.shape != (frames, width) or not np.isfinite(values).all():
            raise ValueError(
                f"{where}.{name}: expected {frames} finite frames of {width} values, got shape {values.shape}"
            )
        out[name] = values.reshape(num_chunks, chunk_length, width)
    return out


@torch.no_grad()
def tokenize_batch(table: pa.Table, motion_tokenizer: Any, shard: str) -> tuple[pa.Table, int]:
    """The rows of ``table`` with ``motion_tokens_*`` and ``motion_tokens_model`` set; also the number of hand-chunks
    tokenized. All hand-chunks of the batch go through the tokenizer in one call."""
    chunk_length = motion_tokenizer.config.chunk_length
    rows = table.select(["id", "num_chunks", "chunk_length", "mano_left", "mano_right"]).to_pylist()
    parts, owners = [], []
    for index, row in enumerate(rows):
        if row["chunk_length"] != chunk_length:
            raise ValueError(
                f"{shard}, sample {row['id']!r}: chunk_length {row['chunk_length']} but the motion tokenizer encodes "
                f"{chunk_length}-frame chunks"
            )
        for side in SIDES:
            mano = row[f"mano_{side}"]
            if mano is not None:
                where = f"{shard}, sample {row['id']!r}, mano_{side}"
                parts.append(_hand_chunks(mano, row["num_chunks"], chunk_length, where))
                owners.append((index, side, row["num_chunks"]))
    tokens: dict[tuple[int, str], list] = {}
    if parts:
        ids = motion_tokenizer.encode(
            torch.from_numpy(np.concatenate([p["hand_pose"] for p in parts])),
            torch.from_numpy(np.concatenate([p["global_orient"] for p in parts])),
            torch.from_numpy(np.concatenate([p["transl"] for p in parts])),
            [side for _, side, count in owners for _ in range(count)],
        ).cpu()
        start = 0
        for index, side, count in owners:
            tokens[(index, side)] = ids[start : start + count].to(torch.int32).tolist()
            start += count
    schema = unihand_features().arrow_schema
    columns = {f"motion_tokens_{side}": [tokens.get((i, side)) for i in range(len(rows))] for side in SIDES}
    columns["motion_tokens_model"] = [motion_tokenizer.fingerprint() if parts else ""] * len(rows)
    for name, values in columns.items():
        array = pa.array(values, type=schema.field(name).type)
        position = table.schema.get_field_index(name)
        table = table.set_column(position, name, array) if position >= 0 else table.append_column(name, array)
    return table.select(schema.names).cast(schema), sum(count for *_, count in owners)


def tokenize_hub_folder(
    folder: str | Path, motion_tokenizer: Any, batch_size: int = 256, progress: bool = False
) -> TokenizeSummary:
    """Fill the precomputed motion-token columns of every shard of an exported UniHand-Mix folder (module docstring);
    ``progress`` shows a progress bar over the rows.

    Raises ``FileNotFoundError`` when ``folder`` has no ``data/**/*.parquet`` shard and ``ValueError`` naming the shard,
    sample and field for MANO labels that cannot be tokenized (wrong length, non-finite values)."""
    folder = Path(folder)
    shards = sorted((folder / "data").glob("**/*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{folder} has no data/**/*.parquet shards: is it a `pela data export` folder?")
    motion_tokenizer.eval()
    schema = unihand_features().arrow_schema
    rows = hand_chunks = 0
    total = sum(pq.ParquetFile(shard).metadata.num_rows for shard in shards)
    bar = tqdm(total=total, desc="tokenizing", unit="row", disable=not progress)
    for shard in shards:
        partial = shard.with_name(f".{shard.name}.partial")  # hidden: readers of the export never list it
        name = shard.relative_to(folder).as_posix()
        with pq.ParquetWriter(partial, schema) as writer:
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_size):
                table, count = tokenize_batch(pa.Table.from_batches([batch]), motion_tokenizer, name)
                writer.write_table(table)
                rows += table.num_rows
                hand_chunks += count
                bar.update(table.num_rows)
        os.replace(partial, shard)
    bar.close()
    return TokenizeSummary(len(shards), rows, hand_chunks, motion_tokenizer.fingerprint())
