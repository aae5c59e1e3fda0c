"""``PELATrainer``: pretraining with the hybrid loss ``1[labeled] * MCP + lambda * Align`` (paper eq. 4, appendix A.4).

The loss itself is computed per sample by ``PELAForPretraining.forward``; the trainer adds

* logging of ``mcp_loss``, ``align_loss``, ``text_loss``, the latent-action spread ``latent_action_std`` (a collapse
  shows as a drop towards 0) and the MCP token accuracy on masked positions, averaged over each logging window and
  over every process;
* streaming input: a ``datasets.IterableDataset`` that is not split yet is split across ranks with
  ``split_dataset_by_node`` (by whole shards when their number divides by the world size, else row by row), without
  accelerate re-sharding it; one already split (``stream_unihand_mix(rank=, world_size=)``) is used as it is;
* sequence packing (``packing=True``, streamed training sets): samples laid end to end in rows of ``packing_length``
  tokens (:mod:`trainers.packing`), each sample weighing the same in the loss of a step whatever the rows, the
  accumulated batches and the processes it shares them with;
* crash-safe checkpoints (:class:`~trainers.checkpointing.AtomicCheckpointMixin`) and the decoupled perceiver EMA
  (:class:`~trainers.callbacks.PerceiverEMACallback`, added automatically).

:func:`pela_training_arguments` gives the paper's optimisation defaults.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import SchedulerType, has_length

from datasets_unihand_mix.streaming import SKIP_REASONS, SkipStats
from modeling_pela.mano import HandKinematics
from modeling_pela.pipeline_pela import CUSTOM_PIPELINES, MOTION_TOKENIZER_SUBFOLDER, save_pipeline_code

from .callbacks import PerceiverEMACallback
from .checkpointing import AtomicCheckpointMixin
from .packing import PackedCollator, PackedSamples

IGNORE_INDEX = -100
LOGGED_LOSSES = ("mcp_loss", "align_loss", "text_loss", "latent_action_std")


def _bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class PELATrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the paper's defaults (appendix A.4): AdamW lr 3e-5, weight decay 0.05, betas
    (0.9, 0.95), 5% warm-up then cosine, grad clip 1.0, bf16 where the hardware supports it; checkpoint callbacks
    (the perceiver EMA) restored on resume; the losses logged from the first step and every 10 steps (the
    Trainer's 500 leave a short run silent). Usable with ``HfArgumentParser`` (``pela pretrain``)."""

    learning_rate: float = 3e-5
    weight_decay: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    lr_scheduler_type: SchedulerType | str = "cosine"
    warmup_steps: float = 0.05
    max_grad_norm: float = 1.0
    logging_steps: float = 10
    logging_first_step: bool = True
    bf16: bool = field(default_factory=_bf16_supported)
    remove_unused_columns: bool = False
    restore_callback_states_from_checkpoint: bool = True
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "start over in an output_dir that holds a previous run (its checkpoint-* folders are deleted); "
            "without it such an output_dir is refused unless resume_from_checkpoint is set"
        },
    )
    mcp_full_mask_prob: float = field(
        default=0.0,
        metadata={
            "help": "probability that a Masked Chunk Prediction target chunk is masked whole, as in generation "
            "(0: the paper's hybrid masking, where 1/11 of the targets are)"
        },
    )
    encoded_rows_cache: int = field(
        default=0,
        metadata={
            "help": "rows whose processor encoding is kept and reused in later epochs (by row id; masks are still "
            "drawn per epoch): for small data trained for many epochs; 0 keeps none"
        },
    )
    frame_feature_cache: int = field(
        default=0,
        metadata={
            "help": "frames whose frozen frame-encoder features are kept and reused while training (keyed by their "
            "pixels; PELAForPretraining.use_frame_feature_cache): for small data trained for many epochs; 0 keeps none"
        },
    )
    packing: bool = field(
        default=False,
        metadata={
            "help": "pack streamed samples end to end into rows of packing_length tokens (no padding between them; "
            "per_device_train_batch_size then counts rows); the losses are those of the samples unpacked"
        },
    )
    packing_length: int = field(default=8192, metadata={"help": "tokens per packed row (longer samples are refused)"})
    packing_buffer_size: int = field(
        default=256, metadata={"help": "streamed samples packed together (best-fit-decreasing) into rows"}
    )
    eval_max_rows: int | None = field(
        default=None,
        metadata={
            "help": "labelled test rows per subset (lab, wild) decoded and scored at each evaluation; all if unset"
        },
    )

    def __post_init__(self) -> None:
        cache = self.frame_feature_cache
        if isinstance(cache, bool) or not isinstance(cache, int) or cache < 0:
            raise ValueError(f"frame_feature_cache must be a number of frames >= 0 (0 keeps none), got {cache!r}")
        super().__post_init__()


def pela_training_arguments(output_dir: str, **overrides: Any) -> PELATrainingArguments:
    """:class:`PELATrainingArguments` (paper defaults) for ``output_dir``, with ``overrides``."""
    return PELATrainingArguments(output_dir=output_dir, **overrides)


class _Window:
    """Sums of the model's scalar losses and MCP accuracy counts between two logs (on device until read)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.correct = self.total = 0

    def add(self, outputs: Any, inputs: dict[str, torch.Tensor], motion_token_offset: int) -> None:
        for key in LOGGED_LOSSES:
            value = getattr(outputs, key, None)
            if isinstance(value, torch.Tensor):
                self.sums[key] = self.sums.get(key, 0) + value.detach().float().mean()
                self.counts[key] = self.counts.get(key, 0) + 1
        labels, chunk_ids, logits = inputs.get("labels"), inputs.get("chunk_ids"), outputs.logits
        if labels is None or chunk_ids is None or logits is None or outputs.chunk_mask is None:
            return
        target = labels[chunk_ids >= 0]  # every sample's motion positions, sample after sample, K per chunk
        guess = (logits.detach().argmax(-1) + motion_token_offset)[outputs.chunk_mask].flatten()  # same order
        valid = target != IGNORE_INDEX
        self.correct = self.correct + (guess[valid] == target[valid]).sum()
        self.total = self.total + valid.sum()

    def summary(self, reduce: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> dict[str, float]:
        """Means over the window of every process: ``reduce`` sums a tensor over the processes (every process calls
        this at the same step), so a term that some processes did not compute (no labelled row there) is averaged
        over the batches that have it, wherever they ran."""
        values = [(self.sums.get(key, 0.0), self.counts.get(key, 0)) for key in LOGGED_LOSSES]
        flat = [float(v) for pair in values for v in pair] + [float(self.correct), float(self.total)]
        totals = reduce(torch.tensor(flat, dtype=torch.float64, device=device)).tolist()
        logs = {key: totals[2 * i] / totals[2 * i + 1] for i, key in enumerate(LOGGED_LOSSES) if totals[2 * i + 1] > 0}
        if totals[-1] > 0:
            logs["mcp_accuracy"] = totals[-2] / totals[-1]
        self.__init__()
        return logs


class _EpochDataLoader(DataLoader):
    """A DataLoader over a streamed dataset whose ``set_epoch`` (called by ``Trainer`` before each pass) reaches the
    dataset (a new shuffle order per epoch) and the collator (new MCP masks per epoch)."""

    def set_epoch(self, epoch: int) -> None:
        for target in (self.dataset, self.collate_fn):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)


class _CollatorEpochCallback(TrainerCallback):
    """For map-style training sets: hands the current epoch to the collator's ``set_epoch`` (streamed sets get it
    from :class:`_EpochDataLoader`)."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.collator.set_epoch(math.floor(state.epoch + 1e-6))


class _FrameFeatureCacheCallback(TrainerCallback):
    """Turns the model's frame-feature cache on at the start of training (``frame_feature_cache`` frames) and off at
    its end (:meth:`PELAForPretraining.use_frame_feature_cache`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.model: torch.nn.Module | None = None

    @staticmethod
    def check(model: torch.nn.Module, size: int) -> None:
        if getattr(model, "frame_encoder", None) is None:
            raise ValueError(
                f"frame_feature_cache={size} keeps a frame encoder's features, but this {type(model).__name__} "
                "has no frame encoder (precomputed frame_features): set frame_feature_cache=0"
            )

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        model = kwargs["model"]
        self.check(model, self.size)
        model.use_frame_feature_cache(self.size)
        self.model = model

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.release()

    def release(self) -> None:
        if self.model is not None:
            self.model.use_frame_feature_cache(None)
            self.model = None


class PELATrainer(AtomicCheckpointMixin, Trainer):
    """``transformers.Trainer`` for ``PELAForPretraining`` (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        motion_tokenizer: torch.nn.Module | None = None,
        kinematics: HandKinematics | None = None,
        eval_num_chunks: int = 1,
        data_stats: SkipStats | None = None,
        **kwargs: Any,
    ) -> None:
        """``Trainer`` arguments, plus, for generation-based evaluation: ``motion_tokenizer`` (a
        ``MotionTokenizerModel``; with it and a ``PELAProcessor`` as ``processing_class``, :meth:`evaluate` also decodes
        ``eval_num_chunks`` chunks per labelled row and reports the hand-motion metrics) and ``kinematics``
        (default: the built-in skeleton); ``data_stats``: the training stream's skip counts
        (``stream_unihand_mix(stats=)``), logged with every training log as ``data_skipped`` and
        ``data_skipped_<reason>`` summed over the processes (hence in ``trainer_state.json``). Rows skipped inside
        DataLoader worker processes are logged there, not counted here."""
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if not any(isinstance(c, PerceiverEMACallback) for c in callbacks):
            callbacks.append(PerceiverEMACallback())
        super().__init__(*args, callbacks=callbacks, **kwargs)
        objective = getattr(self.data_collator, "objective", None)
        model_objective = getattr(getattr(self.model, "config", None), "objective", None)
        if objective is not None and model_objective is not None and objective != model_objective:
            raise ValueError(
                f"the data collator builds {objective!r} targets but the model's objective is {model_objective!r}: "
                f"use PELADataCollator(..., objective={model_objective!r})"
            )
        if (
            hasattr(self.data_collator, "set_epoch")
            and self.train_dataset is not None
            and has_length(self.train_dataset)
        ):
            self.add_callback(_CollatorEpochCallback(self.data_collator))
        if getattr(self.args, "packing", False):
            self.model_accepts_loss_kwargs = True  # compute_loss weighs the samples with num_items_in_batch
        self._windows = {"train": _Window(), "eval": _Window()}
        self.motion_tokenizer = motion_tokenizer
        self.kinematics = kinematics
        self.eval_num_chunks = eval_num_chunks
        self._pending_eval: dict[str, float] = {}
        self._eval_prefix = "eval"
        self.data_stats = data_stats
        self._non_embedding_parameters: int | None = None
        self._frame_feature_cache: _FrameFeatureCacheCallback | None = None
        if getattr(self.args, "frame_feature_cache", 0):
            if self.model is not None:
                _FrameFeatureCacheCallback.check(self.model, self.args.frame_feature_cache)
            self._frame_feature_cache = _FrameFeatureCacheCallback(self.args.frame_feature_cache)
            self.add_callback(self._frame_feature_cache)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; with ``args.frame_feature_cache``, the model's frame-feature cache is on for the run
        (from ``on_train_begin``, after a ``model_init`` built the model) and off after it, even if it fails."""
        self._non_embedding_parameters = None
        try:
            return super().train(*args, **kwargs)
        finally:
            if self._frame_feature_cache is not None:
                self._frame_feature_cache.release()

    def floating_point_ops(self, inputs: dict[str, torch.Tensor | Any]) -> int:
        """The Trainer's estimate, 6 x input tokens x non-embedding parameters, with the parameters counted once per
        :meth:`train` call instead of at every step (counting walks every module: ~2% of a small model's CPU step)."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if self._non_embedding_parameters is None:
            self._non_embedding_parameters = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main_input].numel() * self._non_embedding_parameters

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Loss-based evaluation (``eval_loss``, ``eval_mcp_loss``, ...) and, with a motion tokenizer, generation-based
        ``{prefix}_{mpjpe|pa_mpjpe|mwte|mde|distinct_fraction}`` (cm). A dict of datasets (e.g. ``{"lab": ...,
        "wild": ...}``) is evaluated per split with prefix ``eval_<split>``. Every rank scores all rows."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(dataset, str):  # Trainer passes the key of a dict of eval datasets
            dataset = self.eval_dataset[dataset]
        if isinstance(dataset, dict):
            metrics: dict[str, float] = {}
            for name, split in dataset.items():
                metrics.update(self.evaluate(split, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        self._eval_prefix = metric_key_prefix
        if self.motion_tokenizer is not None:
            self._pending_eval = self._generation_metrics(dataset, metric_key_prefix)
        return super().evaluate(dataset, ignore_keys, metric_key_prefix)

    def _generation_metrics(self, rows: Any, prefix: str) -> dict[str, float]:
        from modeling_pela.mano import BuiltinHandKinematics

        from .generation_eval import evaluate_generation

        processor = self.processing_class
        if processor is None or not hasattr(processor, "encode_sample"):
            raise ValueError("generation-based evaluation needs the PELAProcessor as processing_class=")
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            scores = evaluate_generation(
                model, processor, self.motion_tokenizer, list(rows), self.kinematics or BuiltinHandKinematics(),
                num_chunks=self.eval_num_chunks,
            )  # fmt: skip
        finally:
            model.train(was_training)
        return {f"{prefix}_{key}": float(value) for key, value in scores.items()}

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """``Trainer._save`` (weights, config, ``processing_class``) plus, with a ``motion_tokenizer``, the tokenizer in
        ``motion_tokenizer/`` and the ``hand-motion-generation`` pipeline's code: every ``checkpoint-N`` folder, like
        the final one, is self-contained (eval, generate, pipeline, resume, LeRobot fine-tuning)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        complete = self.motion_tokenizer is not None and hasattr(self.processing_class, "encode_sample")
        if complete:
            model.config.custom_pipelines = CUSTOM_PIPELINES
        super()._save(output_dir, state_dict)
        if complete:
            self.motion_tokenizer.save_pretrained(os.path.join(output_dir, MOTION_TOKENIZER_SUBFOLDER))
            save_pipeline_code(output_dir)

    def get_train_dataloader(self) -> DataLoader:
        dataset, packing = self.train_dataset, getattr(self.args, "packing", False)
        if not isinstance(dataset, datasets.IterableDataset):
            if packing:
                raise ValueError(
                    f"packing=True packs a streamed training set, got a {type(dataset).__name__}: pass a "
                    "datasets.IterableDataset (e.g. dataset.to_iterable_dataset()) or set packing=False"
                )
            return super().get_train_dataloader()
        if self.args.world_size > 1 and getattr(dataset, "_distributed", None) is None:  # not split yet
            dataset = split_dataset_by_node(dataset, rank=self.args.process_index, world_size=self.args.world_size)
        collate_fn = self.data_collator
        if packing:
            length = self.args.packing_length
            dataset = PackedSamples(dataset, self.data_collator, length, self.args.packing_buffer_size)
            collate_fn = PackedCollator(self.data_collator.processor, length)
        return _EpochDataLoader(
            dataset,
            batch_size=self.args.per_device_train_batch_size,
            collate_fn=collate_fn,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory and torch.accelerator.is_available(),  # no warning on CPU
            drop_last=self.args.dataloader_drop_last,
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        if outputs.loss is None:
            raise ValueError("the batch gives no loss: it needs labels (MCP/text) or chunk_frames (alignment)")
        offset = self.accelerator.unwrap_model(model).config.motion_token_offset
        self._windows["train" if model.training else "eval"].add(outputs, inputs, offset)
        loss = outputs.loss
        if num_items_in_batch is not None and "position_ids" in inputs:
            loss = loss * outputs.chunk_mask.shape[0] / num_items_in_batch  # sum over this batch's samples / all
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # DDP averages the gradients over the processes
        return (loss, outputs) if return_outputs else loss

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """Packed batches: the number of samples in the batches of one optimiser step (of every process with
        ``average_tokens_across_devices``), by which :meth:`compute_loss` divides their summed losses; ``None`` for
        unpacked batches (their mean loss is averaged over the accumulated batches)."""
        if not batch_samples or "position_ids" not in batch_samples[0]:
            return None
        count = sum(int(((b["position_ids"] == 0) & b["attention_mask"].bool()).sum()) for b in batch_samples)
        count = torch.tensor(count, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def _sum_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor, reduction="sum") if self.args.world_size > 1 else tensor

    def _skip_counts(self) -> dict[str, int]:
        """``data_skipped`` and the nonzero ``data_skipped_<reason>`` of the training stream, over all processes."""
        local = torch.tensor([self.data_stats.counts[reason] for reason in SKIP_REASONS], dtype=torch.long)
        counts = self._sum_over_processes(local.to(self.args.device)).tolist()
        logs = {f"data_skipped_{reason}": n for reason, n in zip(SKIP_REASONS, counts, strict=True) if n}
        return {"data_skipped": sum(counts), **logs}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self._windows["train"].summary(self._sum_over_processes, self.args.device))
            if self.data_stats is not None:
                logs.update(self._skip_counts())
        elif any(key.startswith(f"{self._eval_prefix}_") for key in logs):
            summary = self._windows["eval"].summary(self._sum_over_processes, self.args.device)
            logs.update({f"{self._eval_prefix}_{k}": v for k, v in summary.items()})
            logs.update(self._pending_eval)
            self._pending_eval = {}
        super().log(logs, start_time)
