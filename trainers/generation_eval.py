"""Generation-based evaluation of a PELA model: decode the first chunks of labelled UniHand-Mix rows from their
instruction and first frame and score them with the ``evaluate`` hand-motion metrics (MPJPE, PA-MPJPE, MWTE, MDE in
cm). Used by :class:`~trainers.pela_trainer.PELATrainer` (``evaluate``), ``pela eval`` and the demo.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_pela.hand_motion import DEFAULT_SHAPE_CONVENTION
from modeling_pela.mano import HandKinematics

from .metrics.hand_motion import compute_hand_motion_metrics

GENERATION_INPUTS = ("input_ids", "attention_mask", "pixel_values", "frame_pixel_values", "frame_features")


def mano_inputs(
    mano: Mapping[str, Any], frames: int, shape: Mapping[str, Any] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, str]:
    """Forward-kinematics inputs of the first ``frames`` frames of one hand's MANO fields (any array-likes:
    ``hand_pose`` (T, 45) or (T, 15, 3), ``global_orient`` and ``transl`` (T, 3)): ``hand_pose`` (frames, 15, 3),
    ``global_orient`` and ``transl`` (frames, 3), and the hand shape of ``shape`` (a MANO value with ``betas`` (10,)
    or None and ``shape_convention``; default: ``mano``'s own) as ``betas`` (10,) or None and its convention."""

    def field(name: str, width: int) -> torch.Tensor:
        return torch.as_tensor(np.asarray(mano[name], dtype=np.float32)[:frames]).reshape(frames, -1, width)

    shape = mano if shape is None else shape
    betas = shape.get("betas")
    betas = None if betas is None else torch.as_tensor(np.asarray(betas, dtype=np.float32))
    convention = shape.get("shape_convention") or DEFAULT_SHAPE_CONVENTION
    return field("hand_pose", 3), field("global_orient", 3)[:, 0], field("transl", 3)[:, 0], betas, convention


def mano_keypoints(
    mano: Mapping[str, Any],
    side: str,
    frames: int,
    kinematics: HandKinematics,
    shape: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """(frames, 21, 3) keypoints (metres) of the first ``frames`` frames of one hand's MANO fields with the hand shape
    of ``shape`` (:func:`mano_inputs`). Generated motions carry no shape: they are scored with the shape of the true
    hand they are compared with."""
    pose, orient, transl, betas, convention = mano_inputs(mano, frames, shape)
    return kinematics.joints(pose, orient, transl, side, betas, convention)


@torch.no_grad()
def evaluate_generation(
    model: Any,
    processor: Any,
    motion_tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    kinematics: HandKinematics,
    *,
    num_chunks: int = 1,
    num_ensembles: int = 1,
    ensemble_method: str = "mean",
    batch_size: int = 16,
    generator: torch.Generator | None = None,
    keypoints: list[tuple[np.ndarray, np.ndarray]] | None = None,
    motions: list[dict[str, np.ndarray]] | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Generate ``num_chunks`` chunks per labelled row from its instruction + first frame; metrics in cm, plus
    ``distinct_fraction``: the share of distinct generated hand motions (near 0: the model ignores its inputs).
    ``num_ensembles`` > 1 decodes that many members per prompt and scores their mean motion (``ensemble_method="mean"``,
    see ``PELAForPretraining.generate_motion``), drawn from ``generator``.

    Rows with the same hands are decoded together, ``batch_size`` prompts at a time (left-padded; without ensembles
    the result does not depend on the batching). ``keypoints``, if given, receives ``(generated, true)`` (T, 21, 3)
    keypoint arrays of every scored hand, in row order, and ``motions`` the generated MANO fields (``hand_pose``,
    ``global_orient``, ``transl``) of the same hands. ``progress`` shows a progress bar over the rows."""
    scored = [row for row in rows if row.get("has_motion_labels") and int(row["num_chunks"]) >= num_chunks]
    if not scored:
        raise ValueError("no labelled test sample to evaluate")
    groups: dict[tuple[str, ...], list[int]] = collections.defaultdict(list)
    for index, row in enumerate(scored):
        groups[tuple(row["hands"])].append(index)
    frames = num_chunks * processor.chunk_length
    generated: dict[tuple[int, str], np.ndarray] = {}
    generated_mano: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    bar = tqdm(total=len(scored), desc="generating", unit="clip", disable=not progress)
    for hands, indices in groups.items():
        for start in range(0, len(indices), batch_size):
            batch_rows = [scored[i] for i in indices[start : start + batch_size]]
            prompts = [{**row, "task_type": "motion_generation", "context_chunks": 0} for row in batch_rows]
            batch = processor(prompts, generation=True)  # a generation prompt holds no motion chunk
            inputs = {key: batch[key] for key in GENERATION_INPUTS if key in batch}
            output = model.generate_motion(
                **inputs, hands=list(hands), num_chunks=num_chunks, num_ensembles=num_ensembles,
                ensemble_method=ensemble_method, generator=generator, motion_tokenizer=motion_tokenizer,
            )  # fmt: skip
            for offset, index in enumerate(indices[start : start + batch_size]):
                for side in hands:
                    mano = {k: v[offset].cpu().numpy() for k, v in output.mano[side].items()}
                    truth = batch_rows[offset][f"mano_{side}"]
                    generated[(index, side)] = mano_keypoints(mano, side, frames, kinematics, truth).numpy()
                    generated_mano[(index, side)] = mano
            bar.update(len(batch_rows))
    bar.close()
    predictions, references = [], []
    for index, row in enumerate(scored):
        for side in row["hands"]:
            predictions.append(generated[(index, side)])
            references.append(mano_keypoints(row[f"mano_{side}"], side, frames, kinematics).numpy())
    if keypoints is not None:
        keypoints.extend(zip(predictions, references, strict=True))
    if motions is not None:
        motions.extend(generated_mano[(index, side)] for index, row in enumerate(scored) for side in row["hands"])
    metrics = compute_hand_motion_metrics(predictions=predictions, references=references)
    distinct = len({np.round(p, 4).tobytes() for p in predictions}) / len(predictions)
    return {**metrics, "num_hand_chunks": len(predictions) * num_chunks, "distinct_fraction": distinct}


def evaluate_mean_motion(
    train_rows: Iterable[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    kinematics: HandKinematics,
    *,
    num_chunks: int = 1,
) -> dict[str, float]:
    """A reference without a model: predict, for every test hand, the mean keypoint trajectory of that hand over the
    labelled ``train_rows``' first ``num_chunks`` chunks. Same metrics and rows as :func:`evaluate_generation`; a
    model that does not beat it has not learned to use the instruction and the image."""
    frames = num_chunks * int(rows[0]["chunk_length"]) if rows else 0
    sums: dict[str, np.ndarray] = {}
    counts: collections.Counter[str] = collections.Counter()
    for row in train_rows:
        if row.get("has_motion_labels") and int(row["num_chunks"]) >= num_chunks:
            for side in row["hands"]:
                joints = mano_keypoints(row[f"mano_{side}"], side, frames, kinematics).numpy()
                sums[side] = sums.get(side, 0.0) + joints
                counts[side] += 1
    predictions, references = [], []
    for row in rows:
        if not row.get("has_motion_labels") or int(row["num_chunks"]) < num_chunks:
            continue
        for side in row["hands"]:
            if not counts[side]:
                raise ValueError(f"no labelled training clip with a {side} hand for the mean-motion reference")
            predictions.append(sums[side] / counts[side])
            references.append(mano_keypoints(row[f"mano_{side}"], side, frames, kinematics).numpy())
    if not predictions:
        raise ValueError("no labelled test sample to evaluate")
    metrics = compute_hand_motion_metrics(predictions=predictions, references=references)
    return {**metrics, "num_hand_chunks": len(predictions) * num_chunks}


@torch.no_grad()
def evaluate_round_trip(
    motion_tokenizer: Any, rows: Sequence[Mapping[str, Any]], kinematics: HandKinematics, *, num_chunks: int = 1
) -> dict[str, float]:
    """The decoding upper bound of generation: every scored hand's true first ``num_chunks`` chunks encoded by the
    motion tokenizer and decoded again, with the rows and metrics of :func:`evaluate_generation`. A model that
    predicted every token right would score this."""
    predictions, references = [], []
    chunk_length = motion_tokenizer.config.chunk_length
    frames = num_chunks * chunk_length
    for row in rows:
        if not row.get("has_motion_labels") or int(row["num_chunks"]) < num_chunks:
            continue
        for side in row["hands"]:
            mano = row[f"mano_{side}"]
            fields = {
                name: torch.as_tensor(np.asarray(mano[name], dtype=np.float32)[:frames]).reshape(
                    num_chunks, chunk_length, -1
                )
                for name in ("hand_pose", "global_orient", "transl")
            }
            tokens = motion_tokenizer.encode(fields["hand_pose"], fields["global_orient"], fields["transl"], side)
            decoded = {k: v.flatten(0, 1).cpu().numpy() for k, v in motion_tokenizer.decode(tokens, side).items()}
            predictions.append(mano_keypoints(decoded, side, frames, kinematics, mano).numpy())
            references.append(mano_keypoints(mano, side, frames, kinematics).numpy())
    if not predictions:
        raise ValueError("no labelled test sample to evaluate")
    metrics = compute_hand_motion_metrics(predictions=predictions, references=references)
    return {**metrics, "num_hand_chunks": len(predictions) * num_chunks}
