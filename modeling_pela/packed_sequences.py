"""Packed sequences: several samples laid end to end in one row, told apart by ``position_ids`` restarting at 0.

A packed batch has R rows of L tokens holding S samples (row-major order: the samples of row 0 first). A sample is a
run of real tokens (``attention_mask`` 1) whose ``position_ids`` count 0, 1, 2, ...; the tokens after the last sample
of a row are padding (``attention_mask`` 0). :class:`SampleLayout` maps between the packed rows (R, L, ...) and a
per-sample view (S, L_s, ...), L_s the longest sample, right-padded: PELA runs its per-sample bookkeeping (chunks,
latent state, losses) on the view and only the decoder on the packed rows, where :func:`same_sample_function`
keeps attention inside each sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SampleLayout:
    """Where the S samples of R packed rows of L tokens lie.

    Attributes:
        sample_index: (R, L) int64, the sample (0..S-1) of every token; -1 for padding.
        token_index: (S, L_s) int64, the flat position (``row * L + column``) of token ``t`` of sample ``s``; 0 where
            ``valid`` is False.
        valid: (S, L_s) bool, true for the tokens of each sample (its first ``length_s`` entries).
    """

    sample_index: torch.Tensor
    token_index: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def from_position_ids(cls, position_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> SampleLayout:
        """Read the layout of ``position_ids`` (R, L) int (restarting at 0 at each sample) and ``attention_mask``
        (R, L), 0 for padding (default: no padding). Raises ``ValueError`` naming the row and column of a token that
        neither starts a sample nor continues the one before it."""
        rows, length = position_ids.shape
        real = torch.ones_like(position_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        starts = real & (position_ids == 0)
        previous = torch.cat([position_ids.new_full((rows, 1), -2), position_ids[:, :-1]], dim=1)
        previous_real = torch.cat([real.new_zeros(rows, 1), real[:, :-1]], dim=1)
        continues = previous_real & (position_ids == previous + 1)
        broken = real & ~starts & ~continues
        if bool(broken.any()):
            row, column = (int(v) for v in broken.nonzero()[0])
            raise ValueError(
                f"position_ids row {row}, column {column}: {int(position_ids[row, column])} after "
                f"{int(previous[row, column]) if bool(previous_real[row, column]) else 'padding'}; packed samples "
                "restart at 0 and count up by 1 over real tokens (trainers.packing.PackedCollator builds them)"
            )
        sample_index = torch.where(real, starts.flatten().long().cumsum(0).view(rows, length) - 1, -1)
        num_samples = int(starts.sum())
        flat = real.flatten().nonzero().flatten()
        owner = sample_index.flatten()[flat]
        offset = position_ids.flatten()[flat].long()
        longest = int(offset.max()) + 1 if flat.numel() else 0
        token_index = torch.zeros(num_samples, longest, dtype=torch.long, device=position_ids.device)
        valid = torch.zeros(num_samples, longest, dtype=torch.bool, device=position_ids.device)
        token_index[owner, offset] = flat
        valid[owner, offset] = True
        return cls(sample_index=sample_index, token_index=token_index, valid=valid)

    @property
    def num_samples(self) -> int:
        return self.token_index.shape[0]

    def unpack(self, packed: torch.Tensor, fill: float | int = 0) -> torch.Tensor:
        """(R, L, ...) -> (S, L_s, ...) per-sample view, ``fill`` after each sample's end."""
        values = packed.flatten(0, 1)[self.token_index.to(packed.device)]
        valid = self.valid.to(packed.device).view(*self.valid.shape, *[1] * (packed.dim() - 2))
        return torch.where(valid, values, torch.as_tensor(fill, dtype=packed.dtype, device=packed.device))

    def pack(self, samples: torch.Tensor) -> torch.Tensor:
        """(S, L_s, ...) per-sample view -> (R, L, ...) packed rows, zeros at padding."""
        rows, length = self.sample_index.shape
        out = samples.new_zeros(rows * length, *samples.shape[2:])
        valid = self.valid.to(samples.device)
        out = out.index_put((self.token_index.to(samples.device)[valid],), samples[valid])
        return out.view(rows, length, *samples.shape[2:])


def same_sample_function(sample_index: torch.Tensor) -> Callable:
    """Mask function ``(batch, head, q, kv) -> bool``, true when query and key belong to the same packed sample
    (``sample_index`` (R, L_total), -1 for padding, which attends only to padding). AND-ed with PELA's attention by
    ``transformers.masking_utils``, it keeps every sample blind to the others in its row."""
    length = sample_index.shape[-1]

    def same_sample(batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor):
        q_sample = sample_index[batch_idx, q_idx.clamp(max=length - 1)]
        kv_sample = sample_index[batch_idx, kv_idx.clamp(max=length - 1)]
        return (q_sample == kv_sample) & (q_idx < length) & (kv_idx < length)

    return same_sample


__all__ = ["SampleLayout", "same_sample_function"]
