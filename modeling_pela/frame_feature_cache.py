"""A cache of the frozen frame encoder's features, keyed by the pixels they were computed from (opt-in:
:meth:`PELAForPretraining.use_frame_feature_cache`, ``PELATrainingArguments.frame_feature_cache``).

The frame encoder of PELA (DINOv3 or V-JEPA2, paper section 4.2) is frozen and runs in eval mode, so the features of
an encoder input depend only on its pixels and on the encoder's weights. Training a small model on a small dataset for
many epochs re-encodes the same frames in every epoch, and the first frame twice in every step (the LSP reads it, the
LAP reads it again as a chunk's start frame). The cache encodes each distinct input once:

* a *unit* is one encoder input: a frame (3, H, W) for DINOv3, a 2-frame clip (2, 3, H, W) for V-JEPA2;
* its key is the BLAKE2b digest of the unit's dtype, shape and bytes (identical pixels in two rows share an entry);
* its value is the encoder's output tokens for that unit, (P, D), on the device they were computed on;
* beyond ``max_entries`` units the least recently used are dropped;
* the cache empties itself when the encoder's weights or the autocast setting change: a parameter or buffer replaced
  or modified in place through autograd-tracked ops (``load_state_dict``, ``.to()``, an optimiser step), a new dtype
  or device (``PELAForPretraining`` also empties it on every ``.to()``, whose dtype round trip can reuse the same
  storage). An edit through ``param.data`` is invisible to it: call :meth:`FrameFeatureCache.clear` after one;
* ``PELAForPretraining`` reads and fills it in training mode only: evaluation and generation frames never evict the
  training frames.

A unit's features are those of encoding it in any batch when the encoder's forward is batch-invariant (as on a CPU
with one intra-op thread); otherwise they may differ from an uncached forward by floating-point rounding.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn


def _keys(units: torch.Tensor) -> list[bytes]:
    """One key per unit of ``units`` (M, ...): digest of its dtype, shape and bytes (one copy to the host per batch)."""
    header = f"{units.dtype}{tuple(units.shape[1:])}".encode()
    host = units.detach().contiguous().cpu()
    keys = []
    for unit in host:
        digest = hashlib.blake2b(header, digest_size=16)
        digest.update(unit.view(torch.uint8).numpy().tobytes())
        keys.append(digest.digest())
    return keys


def _signature(encoder: nn.Module, device: torch.device) -> tuple:
    """Storage, in-place version counter, dtype and device of every parameter and buffer, and the autocast setting:
    changes whenever the encoder's output for the same pixels may."""
    tensors = [*encoder.parameters(), *encoder.buffers()]
    weights = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
    return weights, torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)


class FrameFeatureCache:
    """Least-recently-used cache of encoder outputs per input unit (see the module docstring)."""

    def __init__(self, max_entries: int) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive int (units kept), got {max_entries!r}")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._signature: tuple | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def encode(
        self, encoder: nn.Module, units: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``encode(units)`` for ``units`` (M, ...) -> (M, P, D), where ``encode`` runs ``encoder`` on a batch of
        units; only the units missing from the cache are encoded, each distinct one once, in one batch."""
        signature = _signature(encoder, units.device)
        if signature != self._signature:
            self._entries.clear()
            self._signature = signature
        keys = _keys(units)
        found: dict[bytes, torch.Tensor] = {}
        missing: dict[bytes, int] = {}
        for index, key in enumerate(keys):
            if key in found or key in missing:
                continue
            if key in self._entries:
                self._entries.move_to_end(key)
                found[key] = self._entries[key]
            else:
                missing[key] = index
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            fresh = encode(units[list(missing.values())])
            for key, tokens in zip(missing, fresh, strict=True):
                found[key] = self._entries[key] = tokens.clone()
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return torch.stack([found[key] for key in keys])
