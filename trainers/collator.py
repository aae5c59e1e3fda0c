"""The PELA pretraining data collator: UniHand-Mix rows -> masked model inputs (hybrid MCP masking, appendix A.3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import BatchFeature

from .masking import hybrid_chunk_mask, sample_generator

IGNORE_INDEX = -100


class PELADataCollator:
    """Encodes rows with a ``PELAProcessor``, draws each sample's MCP mask and pads the batch.

    Per sample (masks depend only on ``(seed, row id)``, see :mod:`trainers.masking`):

    * motion generation / continuation: one target chunk (after the continuation context), partially masked, later
      chunks masked at 5%; ``labels`` are kept only at masked motion positions;
    * video-only: every motion token is already ``[MASK]`` (processor), no labels: alignment only;
    * motion description: motion is context (nothing masked), ``labels`` on the response text.

    Args:
        processor: a ``modeling_pela.PELAProcessor`` matching the model.
        motion_tokenizer: a ``MotionTokenizerModel`` for rows without precomputed ``motion_tokens_*``.
        seed: masking seed.
    """

    def __init__(self, processor: Any, motion_tokenizer: Any = None, seed: int = 0) -> None:
        self.processor = processor
        self.motion_tokenizer = motion_tokenizer
        self.seed = seed

    def mask_encoded(self, encoded: dict[str, Any], sample_id: str) -> dict[str, Any]:
        """Apply the hybrid mask to one ``PELAProcessor.encode_sample`` output (returns a new dict)."""
        chunk_ids, labels = encoded["chunk_ids"], encoded["labels"]
        is_motion_target = (chunk_ids >= 0) & (labels != IGNORE_INDEX)
        if not encoded["is_labeled"] or not bool(is_motion_target.any()):
            return dict(encoded)  # video-only (already [MASK]) or description (motion is context)
        mask = hybrid_chunk_mask(
            chunk_ids,
            labeled=True,
            first_target=int(encoded["first_target_chunk"]),
            generator=sample_generator(self.seed, sample_id),
        )
        input_ids = encoded["input_ids"].clone()
        input_ids[mask.masked] = self.processor.mask_token_id
        new_labels = torch.where(chunk_ids >= 0, torch.where(mask.masked, labels, IGNORE_INDEX), labels)
        return {**encoded, "input_ids": input_ids, "labels": new_labels}

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> BatchFeature:
        encoded = []
        for index, row in enumerate(rows):
            sample_id = str(row.get("id", index))
            try:
                item = self.processor.encode_sample(row, self.motion_tokenizer)
            except (KeyError, ValueError) as err:
                raise ValueError(f"sample {sample_id!r}: cannot build PELA inputs ({err})") from err
            encoded.append(self.mask_encoded(item, sample_id))
        batch = self.processor.collate(encoded)
        del batch["first_target_chunk"]  # a collator field, not a model input
        return batch
