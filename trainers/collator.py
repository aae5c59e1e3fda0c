"""The PELA pretraining data collator: UniHand-Mix rows -> model inputs whose targets follow the model's objective.

* ``objective="masked_chunk"`` (PELA, PELA w/o align): the hybrid MCP masking of appendix A.3 (:mod:`trainers.masking`),
  ``[MASK]`` written into ``input_ids``, motion labels kept only at masked positions.
* ``objective="next_token"`` (the Being-H0 baseline): teacher forcing, as in Being-H0: the motion chunks stay intact
  (no ``[MASK]``) and every motion token of a target chunk is a label, predicted from the previous position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import BatchFeature

from modeling_pela.configuration_pela import OBJECTIVES

from .masking import check_full_mask_prob, hybrid_chunk_mask, sample_generator

IGNORE_INDEX = -100


class PELADataCollator:
    """Encodes rows with a ``PELAProcessor``, builds each sample's targets for ``objective`` and pads the batch.

    Masked chunk prediction, per sample (masks depend only on ``(seed, row id, epoch)``, see :mod:`trainers.masking`):

    * motion generation / continuation: one target chunk (after the continuation context), partially masked, later
      chunks masked at 5%; ``labels`` are kept only at masked motion positions;
    * video-only: every motion token is already ``[MASK]`` (processor), no labels: alignment only;
    * motion description: motion is context (nothing masked), ``labels`` on the response text.

    Next-token prediction: the processor's labels as they are (every motion token of the target chunks; the response
    text of descriptions); video-only rows carry no target.

    Args:
        processor: a ``modeling_pela.PELAProcessor`` matching the model.
        motion_tokenizer: a ``MotionTokenizerModel`` for rows without precomputed ``motion_tokens_*`` (and to check that
            precomputed tokens were made by it).
        seed: masking seed.
        objective: the model's ``config.objective`` (``PELATrainer`` refuses a collator that does not match it).
        full_mask_prob: probability that an MCP target chunk is masked whole
            (:func:`trainers.masking.hybrid_chunk_mask`; 0 is the paper's scheme).
        cache_size: rows whose processor encoding (image preprocessing, token layout) is kept, by row ``id``, and
            reused when the row comes again in a later pass over the data; masks are still drawn per pass. For small
            data trained for many epochs (the demo); 0 (default) keeps none. A cached id that comes back with another
            instruction, task, hands or length raises ``ValueError`` naming it (two rows sharing an id).
    """

    def __init__(
        self,
        processor: Any,
        motion_tokenizer: Any = None,
        seed: int = 0,
        objective: str = "masked_chunk",
        full_mask_prob: float = 0.0,
        cache_size: int = 0,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        check_full_mask_prob(full_mask_prob)
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.cache_size = cache_size
        self._encoded: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self.full_mask_prob = full_mask_prob
        self.processor = processor
        self.motion_tokenizer = motion_tokenizer
        self.seed = seed
        self.objective = objective
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the masks of pass ``epoch`` over the data (``PELATrainer`` calls it at the start of every epoch)."""
        self.epoch = int(epoch)

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
            generator=sample_generator(self.seed, sample_id, self.epoch),
            full_mask_prob=self.full_mask_prob,
        )
        input_ids = encoded["input_ids"].clone()
        input_ids[mask.masked] = self.processor.mask_token_id
        new_labels = torch.where(chunk_ids >= 0, torch.where(mask.masked, labels, IGNORE_INDEX), labels)
        return {**encoded, "input_ids": input_ids, "labels": new_labels}

    def encode_row(
        self, row: Mapping[str, Any], index: int = 0, tokenizer_fingerprint: str | None = None
    ) -> dict[str, Any]:
        """One UniHand-Mix row -> its unpadded ``PELAProcessor.encode_sample`` tensors with this collator's targets
        (``index`` names a row without ``id`` in errors and seeds its mask; ``tokenizer_fingerprint``, the motion
        tokenizer's, when the caller has it)."""
        sample_id = str(row.get("id", index))
        item = self._cached(row, sample_id)
        if item is None:
            try:
                item = self.processor.encode_sample(
                    row, self.motion_tokenizer, tokenizer_fingerprint=tokenizer_fingerprint
                )
            except (KeyError, ValueError) as err:
                raise ValueError(f"sample {sample_id!r}: cannot build PELA inputs ({err})") from err
            if "id" in row and len(self._encoded) < self.cache_size:
                self._encoded[sample_id] = (_identity(row), item)
        return self.mask_encoded(item, sample_id) if self.objective == "masked_chunk" else item

    def _cached(self, row: Mapping[str, Any], sample_id: str) -> dict[str, Any] | None:
        if "id" not in row or sample_id not in self._encoded:
            return None
        identity, item = self._encoded[sample_id]
        if identity != _identity(row):
            raise ValueError(
                f"sample {sample_id!r}: a different row with this id was encoded earlier (instruction, task, hands or "
                f"number of chunks differ: {identity} vs {_identity(row)}); row ids must be unique, or pass "
                "cache_size=0"
            )
        return item

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> BatchFeature:
        tokenizer = self.motion_tokenizer
        fingerprint = tokenizer.fingerprint() if tokenizer is not None else None  # once a batch, not once a row
        batch = self.processor.collate([self.encode_row(row, index, fingerprint) for index, row in enumerate(rows)])
        del batch["first_target_chunk"]  # a collator field, not a model input
        return batch


def _identity(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must match for a cached encoding to stand for ``row``."""
    return (
        row.get("instruction"),
        row.get("task_type"),
        tuple(row.get("hands") or ()),
        row.get("num_chunks"),
        row.get("has_motion_labels"),
        row.get("context_chunks"),
        row.get("motion_tokens_model"),
    )
