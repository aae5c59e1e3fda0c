"""``pela eval`` and ``pela generate``: a pretrained PELA checkpoint (:func:`~pela.checkpoints.save_pretraining_checkpoint`)
scored on a UniHand-Mix test split, or asked for hand motion from one image and an instruction.

Generated MANO is in the camera frame of the image (the convention of UniHand-Mix); :mod:`pela.visualization` draws
it over the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from datasets_unihand_mix.streaming import SkipStats
from modeling_pela.mano import load_hand_kinematics
from trainers.generation_eval import evaluate_generation

from .checkpoints import load_pretraining_checkpoint
from .training_data import evaluation_rows
from .visualization import by_row, render_row


def evaluate_checkpoint(
    checkpoint: str,
    data: str,
    splits: Sequence[str] = ("lab", "wild"),
    *,
    num_chunks: int = 1,
    num_ensembles: int = 1,
    max_rows: int | None = None,
    mano_dir: str | None = None,
    motion_tokenizer: str | None = None,
    render: int = 0,
    render_dir: str | Path = "outputs/renders",
    progress: bool = False,
    max_skip_fraction: float = 0.0,
) -> dict[str, dict[str, float]]:
    """``{split: metrics}`` (MPJPE, PA-MPJPE, MWTE, MDE in cm) of the first ``num_chunks`` generated chunks of every
    labelled ``split``/test row of the exported UniHand-Mix at ``data`` (``motion_tokenizer``: a tokenizer folder
    replacing the checkpoint's ``motion_tokenizer/``). ``render`` > 0 also writes the first ``render`` rows of each
    split, generated next to true hands over the first frame, as ``render_dir/<split>_<index>.mp4``. Unusable test data
    raise, or within ``max_skip_fraction`` are skipped; ``data_skipped`` (rows skipped by reason) says how many."""
    if render < 0:
        raise ValueError(f"--render must be a number of rows >= 0, got {render}")
    model, processor, motion_tokenizer = load_pretraining_checkpoint(checkpoint, motion_tokenizer)
    kinematics = load_hand_kinematics(mano_dir)
    results = {}
    for split in splits:
        stats = SkipStats()
        rows = evaluation_rows(data, split, max_rows, num_chunks, max_skip_fraction=max_skip_fraction, stats=stats)
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        motions: list[dict[str, np.ndarray]] = []
        results[split] = evaluate_generation(
            model, processor, motion_tokenizer, rows, kinematics, num_chunks=num_chunks, num_ensembles=num_ensembles,
            generator=torch.Generator().manual_seed(0), keypoints=pairs, motions=motions, progress=progress,
        )  # fmt: skip
        results[split]["kinematics"] = kinematics.source
        results[split]["data_skipped"] = dict(stats.counts)
        generated, generated_mano = by_row(rows, [prediction for prediction, _ in pairs]), by_row(rows, motions)
        for index, row in enumerate(rows[:render]):
            render_row(
                row, Path(render_dir) / f"{split}_{index:03d}.mp4", kinematics, generated=generated[index],
                generated_mano=generated_mano[index],
            )  # fmt: skip
    return results


@torch.no_grad()
def generate_for_image(
    checkpoint: str,
    image: Image.Image,
    instruction: str,
    hands: Sequence[str] = ("left", "right"),
    *,
    num_chunks: int = 1,
    num_ensembles: int = 1,
    seed: int = 0,
    motion_tokenizer: str | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """MANO of ``num_chunks`` generated chunks per hand: ``{hand: {"hand_pose" (T, 15, 3), "global_orient" (T, 3),
    "transl" (T, 3)}}`` with ``T = num_chunks * chunk_length``; with ``num_ensembles`` > 1 the mean motion of that many
    decoding runs (seeded by ``seed``)."""
    model, processor, motion_tokenizer = load_pretraining_checkpoint(checkpoint, motion_tokenizer)
    prompt = processor(images=image.convert("RGB"), text=instruction, hands=list(hands))
    output = model.generate_motion(
        **prompt, num_chunks=num_chunks,
        num_ensembles=num_ensembles, ensemble_method="mean", generator=torch.Generator().manual_seed(seed),
        motion_tokenizer=motion_tokenizer,
    )  # fmt: skip
    return {hand: {k: v[0].cpu().numpy() for k, v in output.mano[hand].items()} for hand in hands}


def mano_to_json(mano: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """JSON-ready copy of :func:`generate_for_image`'s output."""
    return {hand: {k: np.asarray(v).round(6).tolist() for k, v in fields.items()} for hand, fields in mano.items()}
