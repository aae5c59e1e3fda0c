"""Pretraining of PELA models on an exported UniHand-Mix folder (``pela pretrain``; the demo's model stage).

* :func:`build_model`: a fresh (or initialised) :class:`~modeling_pela.PELAForPretraining` of one of
  :data:`~pela.variants.VARIANTS`, from a preset, a pretrained VLM and a frozen frame encoder;
* :func:`pretrain` trains one variant with :class:`~trainers.pela_trainer.PELATrainer` on streamed rows and saves a
  self-contained checkpoint (:mod:`pela.checkpoints`);
* :func:`run_pretraining` is ``pela pretrain``: arguments checked before anything streams, processor, data, training.

The data it reads are :mod:`pela.training_data`; the processors of tiny models :mod:`pela.processors`; scoring
generated motion lives in :mod:`trainers.generation_eval`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from datasets_unihand_mix.streaming import SkipStats, stream_unihand_mix
from modeling_pela import MotionTokenizerModel, PELAConfig, PELAForPretraining, PELAProcessor
from modeling_pela.configuration_pela import PRESETS, motion_vocabulary
from trainers.checkpointing import check_output_dir, clear_output_dir, last_complete_checkpoint
from trainers.collator import PELADataCollator
from trainers.pela_trainer import PELATrainer

from .arguments import PretrainArguments
from .checkpoints import looks_like_local_path, save_pretraining_checkpoint
from .processors import check_motion_vocabulary, tiny_processor_for
from .training_data import evaluation_rows, is_labelled_row, pretraining_stream
from .variants import VARIANTS


def build_model(
    variant: str,
    preset: str | None = "tiny",
    tokenizer_config: Any = None,
    init_from: str | None = None,
    frame_encoder: str | None = None,
    vlm: str | None = None,
    attn_implementation: str = "sdpa",
) -> PELAForPretraining:
    """A fresh (or ``init_from``-initialised) :class:`PELAForPretraining` for one of :data:`VARIANTS`, with the motion
    vocabulary of ``tokenizer_config`` (a ``MotionTokenizerConfig``), the backbone's ``attn_implementation`` and, if
    given, the pretrained ``vlm`` and ``frame_encoder`` (the latter frozen;
    :meth:`PELAForPretraining.from_pretrained_components`); without either, the preset's networks with random
    weights."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    if init_from:
        model = PELAForPretraining.from_pretrained(
            init_from, attn_implementation=attn_implementation, **VARIANTS[variant]
        )
        if tokenizer_config is not None:
            check_motion_vocabulary(f"init_from={init_from!r}", model.config, tokenizer_config)
        return model
    overrides = motion_vocabulary(tokenizer_config) if tokenizer_config is not None else {}
    if vlm is None and frame_encoder is None:
        config = PELAConfig.from_preset(
            preset, attn_implementation=attn_implementation, **VARIANTS[variant], **overrides
        )
        return PELAForPretraining(config)
    return PELAForPretraining.from_pretrained_components(
        vlm_name_or_path=vlm, frame_encoder_name_or_path=frame_encoder, preset=preset,
        attn_implementation=attn_implementation, **VARIANTS[variant], **overrides,
    )  # fmt: skip


def pretrain(
    variant: str,
    train_rows: Any,
    processor: PELAProcessor,
    motion_tokenizer: MotionTokenizerModel,
    args: TrainingArguments,
    *,
    preset: str | None = "tiny",
    init_from: str | None = None,
    frame_encoder: str | None = None,
    vlm: str | None = None,
    dataset: str | None = None,
    max_skip_fraction: float = 0.0,
    data_stats: SkipStats | None = None,
    attn_implementation: str = "sdpa",
) -> tuple[PELAForPretraining, list[dict[str, float]]]:
    """Train one variant on ``train_rows`` (a ``datasets.IterableDataset`` of UniHand-Mix rows); the result is saved
    to ``args.output_dir`` as a self-contained checkpoint (:func:`save_pretraining_checkpoint`). Resumes from the last
    complete checkpoint in ``args.output_dir`` when ``args.resume_from_checkpoint`` is ``"last"``; refuses an
    ``output_dir`` that holds another run unless ``args.overwrite_output_dir`` (:func:`check_output_dir`).
    ``max_skip_fraction`` is the data-error budget of the evaluation rows (the training rows carry their own);
    ``data_stats``, the training stream's skip counts, are logged (``data_skipped*``) and written into the card."""
    overwrite = getattr(args, "overwrite_output_dir", False)
    if check_output_dir(args.output_dir, resume=bool(args.resume_from_checkpoint), overwrite=overwrite):
        with args.main_process_first(desc="clearing the output_dir of the previous run"):
            if args.should_save:
                clear_output_dir(args.output_dir)
    torch.manual_seed(args.seed)
    model = build_model(
        variant, preset, motion_tokenizer.config, init_from, frame_encoder, vlm, attn_implementation
    ).train()
    use_special_tokens_of(model, processor.tokenizer)
    collator = PELADataCollator(
        processor,
        motion_tokenizer,
        seed=args.seed,
        objective=model.config.objective,
        full_mask_prob=getattr(args, "mcp_full_mask_prob", 0.0),
        cache_size=getattr(args, "encoded_rows_cache", 0),
    )
    if not model.config.align:  # without alignment an unlabelled (video-only) row gives no loss: skip it
        train_rows = train_rows.filter(is_labelled_row)
    eval_rows = None
    if args.eval_strategy != "no":
        if dataset is None:
            raise ValueError(f"eval_strategy={args.eval_strategy!r} needs the dataset folder to score (dataset=)")
        eval_rows = {
            split: evaluation_rows(
                dataset, split, max_rows=getattr(args, "eval_max_rows", None), max_skip_fraction=max_skip_fraction
            )
            for split in ("lab", "wild")
        }
    trainer = PELATrainer(
        model=model, args=args, train_dataset=train_rows, data_collator=collator, processing_class=processor,
        motion_tokenizer=motion_tokenizer, eval_dataset=eval_rows, data_stats=data_stats,
    )  # fmt: skip
    resume = args.resume_from_checkpoint
    if resume == "last":
        resume = last_complete_checkpoint(args.output_dir)
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        rows = f"packed rows of {args.packing_length} tokens" if getattr(args, "packing", False) else "sequences"
        training = (
            f"{trainer.state.global_step} steps x {args.per_device_train_batch_size * args.world_size} {rows} "
            f"(x {args.gradient_accumulation_steps} accumulation), lr {args.learning_rate}, seed {args.seed}"
        )
        skipped = next((h for h in reversed(trainer.state.log_history) if "data_skipped" in h), {})
        skipped = {
            key.removeprefix("data_skipped_"): n for key, n in skipped.items() if key.startswith("data_skipped_")
        }
        save_pretraining_checkpoint(
            args.output_dir, model, processor, motion_tokenizer, dataset=dataset, training=training,
            data_skipped=skipped or None, **({"repo_id": args.hub_model_id} if args.hub_model_id else {}),
        )  # fmt: skip
    return model.eval(), [h for h in trainer.state.log_history if "loss" in h]


def use_special_tokens_of(model: PELAForPretraining, tokenizer: Any) -> None:
    """Give ``model``'s config (and generation config) the ``tokenizer``'s pad / bos / eos ids, which the Trainer
    would otherwise align itself, with a warning, at every start."""
    configs = [model.config] + ([model.generation_config] if getattr(model, "generation_config", None) else [])
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        for config in configs:
            setattr(config, name, getattr(tokenizer, name))


def check_pretrain_arguments(args: PretrainArguments) -> None:
    """Refuse an unknown variant or preset and a local path that does not exist before any data streams or any
    model is built (errors name the flag)."""
    if args.variant not in VARIANTS:
        raise ValueError(f"--variant {args.variant!r} is not one of {sorted(VARIANTS)}")
    if args.model_preset is not None and args.model_preset not in PRESETS:
        raise ValueError(f"--model_preset {args.model_preset!r} is not one of {sorted(PRESETS)}")
    for flag in ("data", "motion_tokenizer", "init_from", "vlm", "frame_encoder", "processor"):
        value = getattr(args, flag)
        if value and looks_like_local_path(value) and not Path(value).expanduser().exists():
            raise FileNotFoundError(f"--{flag} {value}: no such file or folder")


def run_pretraining(args: PretrainArguments, training_args: TrainingArguments) -> PELAForPretraining:
    """``pela pretrain``: stream ``args.data``, build the processor, train, save a self-contained checkpoint."""
    check_pretrain_arguments(args)
    check_output_dir(  # refused before anything is built
        training_args.output_dir, resume=bool(training_args.resume_from_checkpoint),
        overwrite=getattr(training_args, "overwrite_output_dir", False),
    )  # fmt: skip
    motion_tokenizer = MotionTokenizerModel.from_pretrained(args.motion_tokenizer).eval()
    preset = args.model_preset or (None if args.vlm else "tiny")
    if args.processor:
        processor = PELAProcessor.from_pretrained(args.processor)
    elif args.vlm and not args.init_from:
        processor = PELAProcessor.from_pretrained_components(
            args.vlm, args.motion_tokenizer, args.frame_encoder, preset=preset
        )
    elif preset == "tiny" and not args.init_from:
        rows = stream_unihand_mix(args.data, args.dataset_config, max_skip_fraction=args.max_skip_fraction)
        processor = tiny_processor_for(rows, motion_tokenizer.config, args.frame_encoder)
    else:
        raise ValueError(
            f"model_preset={preset!r} / init_from={args.init_from!r} needs --vlm or --processor: a saved "
            "PELAProcessor (PELAProcessor.from_model_config(config, vlm_image_processor, vlm_tokenizer, "
            "frame_processor).save_pretrained(DIR), or the folder of a PELA checkpoint)"
        )
    check_motion_vocabulary(f"processor {args.processor!r}", processor, motion_tokenizer.config)
    stats = SkipStats()
    model, _ = pretrain(
        args.variant,
        pretraining_stream(args, training_args.seed, training_args.process_index, training_args.world_size, stats),
        processor, motion_tokenizer, training_args,
        preset=preset, init_from=args.init_from, frame_encoder=args.frame_encoder, vlm=args.vlm,
        dataset=args.data, max_skip_fraction=args.max_skip_fraction, data_stats=stats,
        attn_implementation=args.attn_implementation,
    )  # fmt: skip
    return model
