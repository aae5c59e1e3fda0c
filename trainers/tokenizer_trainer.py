"""Training and evaluation of the GRQ-VAE motion tokenizer (:mod:`modeling_pela.modeling_motion_tokenizer`).

* :class:`MotionChunkDataset` / :func:`collate_motion_chunks`: every full 15-frame chunk of every hand, as dicts of
  tensors matching :meth:`MotionTokenizerModel.forward`.
* :class:`MotionTokenizerTrainer`: a ``transformers.Trainer`` that logs, next to the loss, the model's extra scalars
  (``recon_loss``, ``commit_loss``, per-part reconstruction losses) averaged over the logging window and the codebook
  usage / perplexity of every part computed over all the codes assigned in that window.
* :func:`train_motion_tokenizer`: fit normalisation, train, save (``save_pretrained``), evaluate.
* :func:`evaluate_motion_tokenizer`: reconstruction errors of decode(encode(chunk)) in cm through forward kinematics,
  plus codebook usage and perplexity on held-out motions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments, set_seed

from modeling_pela.hand_motion import HandMotion
from modeling_pela.mano import BuiltinHandKinematics, HandKinematics
from modeling_pela.modeling_motion_tokenizer import (
    MotionTokenizerConfig,
    MotionTokenizerModel,
    MotionTokenizerOutput,
    codebook_histograms,
    codebook_statistics,
)
from trainers.metrics.hand_motion import compute_hand_motion_metrics

MOTION_KEYS = ("hand_pose", "global_orient", "transl")


class MotionChunkDataset(Dataset):
    """All full ``chunk_length``-frame chunks of ``motions`` (trailing partial chunks dropped), both hands.

    Item ``i`` is ``{"hand_pose": (T, 15, 3), "global_orient": (T, 3), "transl": (T, 3), "is_left": bool ()}``.
    """

    def __init__(self, motions: Sequence[HandMotion], chunk_length: int = 15) -> None:
        chunks = [chunk for motion in motions for chunk in motion.chunks(chunk_length)]
        if not chunks:
            raise ValueError(f"no motion has a full chunk of {chunk_length} frames ({len(motions)} motions given)")
        self.tensors = {key: torch.stack([getattr(c, key).float() for c in chunks]) for key in MOTION_KEYS}
        self.tensors["is_left"] = torch.tensor([c.side == "left" for c in chunks])

    def __len__(self) -> int:
        return len(self.tensors["is_left"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


def collate_motion_chunks(features: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack dataset items into a batch: hand_pose (B, T, 15, 3), global_orient / transl (B, T, 3), is_left (B,)."""
    return {key: torch.stack([f[key] for f in features]) for key in features[0]}


class _StatsWindow:
    """Running sums of a model's scalar outputs and its code-assignment histograms between two logs (kept on the
    model's device until :meth:`summary`, so that logging does not synchronise every step)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.histograms: torch.Tensor | None = None

    def add(self, outputs: MotionTokenizerOutput, config: MotionTokenizerConfig) -> None:
        for key, value in outputs.items():
            if key != "loss" and isinstance(value, torch.Tensor) and value.dim() == 0:
                self.sums[key] = self.sums.get(key, 0) + value.detach().float()
        self.count += 1
        counts = codebook_histograms(outputs.token_ids.detach(), config)
        self.histograms = counts if self.histograms is None else self.histograms + counts

    def summary(self) -> dict[str, float]:
        """Window means of the scalars; usage / perplexity recomputed over the whole window; then reset."""
        if not self.count:
            return {}
        logs = {key: float(value) / self.count for key, value in self.sums.items()}
        logs.update({key: float(value) for key, value in codebook_statistics(self.histograms).items()})
        self.reset()
        return logs


class MotionTokenizerTrainer(Trainer):
    """``Trainer`` for :class:`MotionTokenizerModel`: logs recon/commit losses and codebook usage/perplexity.

    Training logs get the window statistics under their own names (``recon_loss``, ``wrist_usage``, ...);
    evaluation logs get them with the ``eval_`` prefix.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._windows = {"train": _StatsWindow(), "eval": _StatsWindow()}

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, MotionTokenizerOutput]:
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        config = self.accelerator.unwrap_model(model).config
        self._windows["train" if model.training else "eval"].add(outputs, config)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor, None, None]:
        """Evaluation step: the loss only (a tokenizer has no logits/labels to gather)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self._windows["train"].summary())
        elif any(key.startswith("eval_") for key in logs):
            logs.update({f"eval_{key}": value for key, value in self._windows["eval"].summary().items()})
        super().log(logs, start_time)


@torch.no_grad()
def evaluate_motion_tokenizer(
    model: MotionTokenizerModel,
    motions: Sequence[HandMotion],
    kinematics: HandKinematics | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Reconstruct every full chunk of ``motions`` through the tokens (decode(encode(chunk))) and compare keypoints.

    Returns ``mpjpe``, ``pa_mpjpe``, ``mwte``, ``mde`` in cm (per-chunk values averaged over chunks; forward
    kinematics by ``kinematics``, default the built-in skeleton), ``wrist_usage`` / ``finger_usage`` (fraction of the C
    codes of a codebook used on these chunks, averaged over the part's codebooks), ``wrist_perplexity`` /
    ``finger_perplexity``, ``num_chunks`` and ``kinematics`` (the FK back end, e.g. "builtin").
    """
    kinematics = kinematics or BuiltinHandKinematics()
    data = MotionChunkDataset(motions, model.config.chunk_length).tensors
    predicted, reference, histograms = [], [], 0
    for start in range(0, len(data["is_left"]), batch_size):
        batch = {key: value[start : start + batch_size] for key, value in data.items()}
        token_ids = model.encode(batch["hand_pose"], batch["global_orient"], batch["transl"], batch["is_left"])
        histograms = histograms + codebook_histograms(token_ids, model.config).cpu()
        decoded = {key: value.cpu() for key, value in model.decode(token_ids, batch["is_left"]).items()}
        for source, store in ((decoded, predicted), (batch, reference)):
            joints = torch.empty(batch["transl"].shape[:2] + (21, 3))
            for side, mask in (("left", batch["is_left"]), ("right", ~batch["is_left"])):
                if bool(mask.any()):
                    joints[mask] = kinematics.joints(*(source[key][mask] for key in MOTION_KEYS), side).float()
            store.append(joints)
    metrics: dict[str, Any] = compute_hand_motion_metrics(
        torch.cat(predicted).double().numpy(), torch.cat(reference).double().numpy()
    )
    metrics.update({key: float(value) for key, value in codebook_statistics(histograms).items()})
    metrics["num_chunks"] = len(data["is_left"])
    metrics["kinematics"] = kinematics.source
    return metrics


@torch.no_grad()
def _init_codebooks(model: MotionTokenizerModel, dataset: MotionChunkDataset, num_chunks: int) -> None:
    """Run one training-mode forward on ``num_chunks`` random chunks so that the k-means initialisation of every
    codebook sees more vectors than one batch holds (a no-op when the codebooks are already initialised)."""
    index = torch.randperm(len(dataset))[:num_chunks]
    batch = {key: value[index] for key, value in dataset.tensors.items()}
    model.train()
    model(**batch)


def train_motion_tokenizer(
    train_motions: Sequence[HandMotion],
    eval_motions: Sequence[HandMotion],
    output_dir: str | os.PathLike,
    config: MotionTokenizerConfig | None = None,
    max_steps: int = 20000,
    batch_size: int = 256,
    learning_rate: float = 2e-4,
    seed: int = 0,
    logging_steps: int = 100,
    use_cpu: bool = False,
    disable_tqdm: bool = True,
) -> tuple[MotionTokenizerModel, dict[str, Any]]:
    """Train a tokenizer on ``train_motions`` and evaluate it on ``eval_motions``.

    Fits the normalisation on the training motions, initialises the codebooks by k-means on up to
    ``max(batch_size, codebook_size / latent steps)`` chunks, trains with :class:`MotionTokenizerTrainer` (AdamW,
    linear decay), saves the model with ``save_pretrained`` and the trainer state (``trainer_state.json``, with the
    logs) and evaluation results (``eval_results.json``) to ``output_dir``.

    Returns:
        the trained model (eval mode) and the metrics of :func:`evaluate_motion_tokenizer` on ``eval_motions``,
        plus ``train_loss`` (mean training loss) and ``eval_loss`` / ``eval_recon_loss`` / ``eval_commit_loss``.
    """
    output_dir = os.fspath(output_dir)
    set_seed(seed)
    config = config or MotionTokenizerConfig()
    model = MotionTokenizerModel(config)
    model.fit_normalization(train_motions)
    train_dataset = MotionChunkDataset(train_motions, config.chunk_length)
    eval_dataset = MotionChunkDataset(eval_motions, config.chunk_length)
    if config.kmeans_init:
        _init_codebooks(model, train_dataset, max(batch_size, -(-config.codebook_size // config.latent_length)))
    args = TrainingArguments(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        logging_steps=logging_steps,
        save_strategy="no",
        report_to=[],
        use_cpu=use_cpu,
        disable_tqdm=disable_tqdm,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    trainer = MotionTokenizerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collate_motion_chunks,
    )
    train_result = trainer.train()
    eval_logs = trainer.evaluate()
    model.eval()
    model.save_pretrained(output_dir)
    trainer.state.save_to_json(os.path.join(output_dir, "trainer_state.json"))
    metrics = evaluate_motion_tokenizer(model, eval_motions)
    metrics["train_loss"] = float(train_result.training_loss)
    metrics.update({key: float(eval_logs[key]) for key in ("eval_loss", "eval_recon_loss", "eval_commit_loss")})
    trainer.save_metrics("eval", metrics)
    return model, metrics


__all__ = [
    "MotionChunkDataset",
    "MotionTokenizerTrainer",
    "collate_motion_chunks",
    "evaluate_motion_tokenizer",
    "train_motion_tokenizer",
]
