"""The model variants `pela pretrain` and `pela demo` train: PELA and the paper's baselines (paper 5.2).

* ``pela``: Masked Chunk Prediction + alignment of the predictive embeddings with latent actions;
* ``pela_wo_align``: Masked Chunk Prediction only;
* ``next_token``: motion tokens decoded causally, teacher-forced on every motion token (Being-H0 style).
"""

from __future__ import annotations

from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "pela": {"objective": "masked_chunk", "align": True},
    "pela_wo_align": {"objective": "masked_chunk", "align": False},
    "next_token": {"objective": "next_token", "align": False},
}
