"""Pretraining of PELA models on an exported UniHand-Mix folder (the demo's model stage).

* :func:`build_text_tokenizer`: a word-level tokenizer over the dataset's instructions (the tiny backbone has no
  pretrained text vocabulary; real runs use the VLM's own tokenizer).
* :func:`pretrain` trains one model variant (``pela``: MCP + Align; ``pela_wo_align``; ``next_token``: causal
  Being-H0-style decoding) with :class:`~trainers.pela_trainer.PELATrainer` on the streamed ``mix`` train split.
* :func:`save_pretraining_checkpoint` / :func:`load_pretraining_checkpoint`: model, processor and motion tokenizer in
  one folder. Scoring generated motion lives in :mod:`trainers.generation_eval`.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoImageProcessor, PreTrainedTokenizerFast, TrainingArguments
from transformers.models.dinov3_vit.image_processing_dinov3_vit import DINOv3ViTImageProcessor
from transformers.models.got_ocr2.image_processing_got_ocr2 import GotOcr2ImageProcessor

from datasets_unihand_mix.streaming import SkipStats, stream_unihand_mix
from datasets_unihand_mix.tasks import stable_uniform
from modeling_pela import MotionTokenizerModel, PELAConfig, PELAForPretraining, PELAProcessor
from modeling_pela.configuration_pela import PRESETS, motion_vocabulary
from modeling_pela.pipeline_pela import CUSTOM_PIPELINES, MOTION_TOKENIZER_SUBFOLDER, save_pipeline_code
from trainers.checkpointing import check_output_dir, clear_output_dir, last_complete_checkpoint
from trainers.collator import PELADataCollator
from trainers.pela_trainer import PELATrainer

from .arguments import PretrainArguments

CARD_SETTINGS = "pela_card.json"  # what the model card was rendered with (pela eval --update-card re-renders it)
CHECKPOINT_FILES = {  # what load_pretraining_checkpoint needs besides the weights, and what each is
    "config.json": "the model configuration",
    "processor_config.json": "the processor",
    "tokenizer.json": "the instruction tokenizer",
}

VARIANTS: dict[str, dict[str, Any]] = {
    "pela": {"objective": "masked_chunk", "align": True},
    "pela_wo_align": {"objective": "masked_chunk", "align": False},
    "next_token": {"objective": "next_token", "align": False},
}
SPECIALS = ("[PAD]", "[UNK]", "</s>")
_WORD = re.compile(r"\w+|[^\w\s]")


def build_text_tokenizer(texts: Iterable[str], max_words: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer of the ``max_words - 3`` most frequent words (ids below ``max_words``)."""
    counts = collections.Counter(word for text in texts for word in _WORD.findall(text.lower()))
    words = [w for w, _ in counts.most_common(max_words - len(SPECIALS))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate([*SPECIALS, *words])}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")


def make_processor(
    config: PELAConfig, tokenizer: PreTrainedTokenizerFast, image_size: int = 56, frame_processor: Any = None
) -> PELAProcessor:
    """Processor of a tiny PELA: InternVL-style (GOT-OCR2) image processor and ``frame_processor`` (default: a
    DINOv3 image processor at ``image_size``)."""
    image_processor = GotOcr2ImageProcessor(size={"height": image_size, "width": image_size}, crop_to_patches=False)
    if frame_processor is None:
        frame_processor = DINOv3ViTImageProcessor(size={"height": image_size, "width": image_size})
    return PELAProcessor.from_model_config(config, image_processor, tokenizer, frame_processor)


def check_motion_vocabulary(owner: str, config: Any, tokenizer_config: Any) -> None:
    """Raise ``ValueError`` if ``config`` (a PELA config or processor) does not use ``tokenizer_config``'s layout."""
    for name, value in motion_vocabulary(tokenizer_config).items():
        if name in ("codebook_size", "tokens_per_chunk", "chunk_length") and getattr(config, name) != value:
            raise ValueError(
                f"{owner} has {name}={getattr(config, name)}, but the motion tokenizer has {value}: use a processor "
                "and model built for this tokenizer"
            )


def wild_fraction_filter(fraction: float) -> Callable[[Mapping[str, Any]], bool]:
    """Keep every lab row and a stable (per clip id) ``fraction`` of the wild rows (paper Fig. 3)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"wild_fraction must be in [0, 1], got {fraction}")

    def keep(row: Mapping[str, Any]) -> bool:
        return row["subset"] == "lab" or stable_uniform("wild-fraction", row["id"]) < fraction

    return keep


def is_labelled_row(row: Mapping[str, Any]) -> bool:
    """Whether a UniHand-Mix row carries motion labels (video-only rows train only the alignment)."""
    return bool(row["has_motion_labels"]) and row["task_type"] != "video_only"


def pretraining_stream(
    args: PretrainArguments, seed: int, rank: int = 0, world_size: int = 1, stats: SkipStats | None = None
) -> Any:
    """The streamed, wild-fraction-filtered (and cropped) ``train`` split ``pela pretrain`` reads: this ``rank``'s
    share (the same count and lab:wild mixture on every rank) of a run on ``world_size`` processes; skipped rows are
    counted in ``stats``."""
    distributed = {"rank": rank, "world_size": world_size} if world_size > 1 else {}
    rows = stream_unihand_mix(
        args.data, args.dataset_config, "train", shuffle_buffer_size=args.shuffle_buffer_size or None, seed=seed,
        max_skip_fraction=args.max_skip_fraction, stats=stats, **distributed,
    ).filter(wild_fraction_filter(args.wild_fraction))  # fmt: skip
    if args.max_train_chunks:
        rows = rows.map(lambda row: crop_row(row, args.max_train_chunks))
    return rows


def build_model(
    variant: str,
    preset: str = "tiny",
    tokenizer_config: Any = None,
    init_from: str | None = None,
    frame_encoder: str | None = None,
    vlm: str | None = None,
) -> PELAForPretraining:
    """A fresh (or ``init_from``-initialised) :class:`PELAForPretraining` for one of :data:`VARIANTS`, with the motion
    vocabulary of ``tokenizer_config`` (a ``MotionTokenizerConfig``) and, if given, the pretrained ``vlm`` and
    ``frame_encoder`` (the latter frozen; :meth:`PELAForPretraining.from_pretrained_components`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    if init_from:
        model = PELAForPretraining.from_pretrained(init_from, **VARIANTS[variant])
        if tokenizer_config is not None:
            check_motion_vocabulary(f"init_from={init_from!r}", model.config, tokenizer_config)
        return model
    overrides = motion_vocabulary(tokenizer_config) if tokenizer_config is not None else {}
    return PELAForPretraining.from_pretrained_components(
        vlm_name_or_path=vlm, frame_encoder_name_or_path=frame_encoder, preset=preset, **VARIANTS[variant], **overrides
    )


def tiny_processor_for(
    rows: Iterable[Mapping[str, Any]], tokenizer_config: Any, frame_encoder: str | None = None
) -> PELAProcessor:
    """Processor of the tiny preset for UniHand-Mix ``rows`` and a motion tokenizer's configuration: a word-level
    tokenizer (ids below the tiny model's 256) over their instructions and responses, the tiny image processor, and
    the frame processor saved with ``frame_encoder`` (default: the tiny DINOv3 one)."""
    text = build_text_tokenizer((row["instruction"] + " " + row["response"] for row in rows), 250)
    frame_processor = AutoImageProcessor.from_pretrained(frame_encoder) if frame_encoder else None
    config = PELAConfig.tiny(**motion_vocabulary(tokenizer_config))
    return make_processor(config, text, frame_processor=frame_processor)


def pretrain(
    variant: str,
    train_rows: Any,
    processor: PELAProcessor,
    motion_tokenizer: MotionTokenizerModel,
    args: TrainingArguments,
    *,
    preset: str = "tiny",
    init_from: str | None = None,
    frame_encoder: str | None = None,
    vlm: str | None = None,
    dataset: str | None = None,
    max_skip_fraction: float = 0.0,
    data_stats: SkipStats | None = None,
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
    model = build_model(variant, preset, motion_tokenizer.config, init_from, frame_encoder, vlm).train()
    collator = PELADataCollator(processor, motion_tokenizer, seed=args.seed, objective=model.config.objective)
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
        training = (
            f"{trainer.state.global_step} steps x {args.per_device_train_batch_size * args.world_size} sequences "
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


def check_pretrain_arguments(args: PretrainArguments) -> None:
    """Refuse an unknown variant or preset and a local path that does not exist before any data streams or any
    model is built (errors name the flag)."""
    if args.variant not in VARIANTS:
        raise ValueError(f"--variant {args.variant!r} is not one of {sorted(VARIANTS)}")
    if args.model_preset not in PRESETS:
        raise ValueError(f"--model_preset {args.model_preset!r} is not one of {sorted(PRESETS)}")
    for flag in ("data", "motion_tokenizer", "init_from", "vlm", "frame_encoder", "processor"):
        value = getattr(args, flag)
        if value and looks_like_local_path(value) and not Path(value).expanduser().exists():
            raise FileNotFoundError(f"--{flag} {value}: no such file or folder")


def looks_like_local_path(value: str) -> bool:
    """True for what can only be a local path (absolute, ``./``, ``../``, ``~``, or more than one ``/``); a Hub id is
    ``name`` or ``owner/name``."""
    return value.startswith(("/", ".", "~")) or value.count("/") > 1 or "\\" in value


def run_pretraining(args: PretrainArguments, training_args: TrainingArguments) -> PELAForPretraining:
    """``pela pretrain``: stream ``args.data``, build the processor, train, save a self-contained checkpoint."""
    check_pretrain_arguments(args)
    check_output_dir(  # refused before anything is built
        training_args.output_dir, resume=bool(training_args.resume_from_checkpoint),
        overwrite=getattr(training_args, "overwrite_output_dir", False),
    )  # fmt: skip
    motion_tokenizer = MotionTokenizerModel.from_pretrained(args.motion_tokenizer).eval()
    if args.processor:
        processor = PELAProcessor.from_pretrained(args.processor)
    elif args.vlm and not args.init_from:
        processor = PELAProcessor.from_pretrained_components(
            args.vlm, args.motion_tokenizer, args.frame_encoder, preset=args.model_preset
        )
    elif args.model_preset == "tiny" and not args.init_from:
        rows = stream_unihand_mix(args.data, args.dataset_config, max_skip_fraction=args.max_skip_fraction)
        processor = tiny_processor_for(rows, motion_tokenizer.config, args.frame_encoder)
    else:
        raise ValueError(
            f"model_preset={args.model_preset!r} / init_from={args.init_from!r} needs --vlm or --processor: a saved "
            "PELAProcessor (PELAProcessor.from_model_config(config, vlm_image_processor, vlm_tokenizer, "
            "frame_processor).save_pretrained(DIR), or the folder of a PELA checkpoint)"
        )
    check_motion_vocabulary(f"processor {args.processor!r}", processor, motion_tokenizer.config)
    stats = SkipStats()
    model, _ = pretrain(
        args.variant,
        pretraining_stream(args, training_args.seed, training_args.process_index, training_args.world_size, stats),
        processor, motion_tokenizer, training_args,
        preset=args.model_preset, init_from=args.init_from, frame_encoder=args.frame_encoder, vlm=args.vlm,
        dataset=args.data, max_skip_fraction=args.max_skip_fraction, data_stats=stats,
    )  # fmt: skip
    return model


def save_pretraining_checkpoint(
    output_dir: str | Path,
    model: PELAForPretraining,
    processor: PELAProcessor,
    motion_tokenizer: MotionTokenizerModel,
    **card_kwargs: Any,
) -> Path:
    """Model weights + config, processor (tokenizer, image processors), the motion tokenizer (in
    ``motion_tokenizer/``), the ``hand-motion-generation`` pipeline's code (``config.custom_pipelines``) and a model
    card (``README.md``, :func:`pretraining_model_card` with ``card_kwargs``): everything
    :func:`load_pretraining_checkpoint`, ``pela eval`` / ``generate``, ``transformers.pipeline``, the LeRobot policy's
    backbone loader and ``push_to_hub`` need."""
    output_dir = Path(output_dir)
    model.config.custom_pipelines = CUSTOM_PIPELINES
    model.save_pretrained(output_dir)
    save_pipeline_code(output_dir)
    processor.save_pretrained(output_dir)
    motion_tokenizer.save_pretrained(output_dir / MOTION_TOKENIZER_SUBFOLDER)
    pretraining_model_card(model, **card_kwargs).save(str(output_dir / "README.md"))
    (output_dir / CARD_SETTINGS).write_text(json.dumps(card_kwargs, indent=2))
    return output_dir


def update_model_card(checkpoint: str | Path, metrics: Mapping[str, Mapping[str, float]]) -> Path:
    """Re-render the checkpoint's ``README.md`` with ``metrics`` (``{split: {"mpjpe", ...}}``, as ``pela eval``
    returns them) in its results table and model-index, keeping the settings it was written with."""
    checkpoint = Path(checkpoint)
    settings_path = checkpoint / CARD_SETTINGS
    settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
    settings["metrics"] = {split: dict(values) for split, values in metrics.items()}
    kinematics = {values.get("kinematics") for values in metrics.values()} - {None}
    if kinematics:
        settings["kinematics"] = kinematics.pop()
    model = PELAForPretraining.from_pretrained(str(checkpoint))
    pretraining_model_card(model, **settings).save(str(checkpoint / "README.md"))
    settings_path.write_text(json.dumps(settings, indent=2))
    return checkpoint / "README.md"


def pretraining_model_card(
    model: PELAForPretraining,
    repo_id: str = "<org>/<pela-model>",
    dataset: str | None = None,
    training: str | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    kinematics: str = "builtin",
    license: str = "apache-2.0",
    data_skipped: Mapping[str, int] | None = None,
) -> ModelCard:
    """Render ``hub_cards/pela_model_card.md`` for a pretrained PELA model (``metrics``: ``{split: {"mpjpe", ...}}``
    as ``pela eval`` writes them; ``data_skipped``: training rows skipped as unusable, by reason)."""
    config = model.config
    variant = next(
        (name for name, v in VARIANTS.items() if (v["objective"], v["align"]) == (config.objective, config.align)),
        "custom",
    )
    hub_dataset = dataset if dataset and not Path(dataset).exists() else None
    base_model = getattr(config.vlm_config, "_name_or_path", "") or None
    if base_model and Path(base_model).exists():
        base_model = None  # a local folder is not a Hub id
    eval_results = [
        EvalResult(
            task_type="hand-motion-generation",
            task_name="Hand motion generation (first chunk)",
            dataset_type=hub_dataset or "unihand-mix",
            dataset_name=f"UniHand-Mix {split}",
            dataset_config=split,
            dataset_split="test",
            metric_type=metric,
            metric_name=f"{metric.upper().replace('_', '-')} (cm)",
            metric_value=round(float(m[metric]), 4),
        )  # fmt: skip
        for split, m in (metrics or {}).items()
        for metric in ("mpjpe", "pa_mpjpe", "mwte", "mde")
        if metric in m
    ]
    card_data = ModelCardData(
        license=license, library_name="transformers", pipeline_tag="robotics", datasets=[hub_dataset] if hub_dataset
        else None, tags=["pela", "vla", "hand-motion", "robotics", "custom_code"], model_name=repo_id,
        base_model=base_model, eval_results=eval_results or None,
    )  # fmt: skip
    text = config.vlm_config.text_config
    frame = config.frame_encoder_config
    template = files("hub_cards").joinpath("pela_model_card.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=repo_id,
        repo_id=repo_id,
        variant=variant,
        objective=config.objective,
        align=config.align,
        align_layer=config.align_layer,
        backbone=f"`{config.vlm_config.model_type}`, language model {text.num_hidden_layers} layers x {text.hidden_size}",
        frame_encoder=f"`{frame.model_type}` (frozen)" if frame is not None else "precomputed frame features",
        codebook_size=config.codebook_size,
        tokens_per_chunk=config.tokens_per_chunk,
        chunk_length=config.chunk_length,
        dataset_text=f"`{dataset}`" if dataset else "not recorded",
        training=training,
        metrics=dict(metrics or {}),
        kinematics=kinematics,
        license=license,
        data_skipped=dict(data_skipped or {}),
    )


def load_pretraining_checkpoint(
    path: str | Path, motion_tokenizer: str | None = None
) -> tuple[PELAForPretraining, PELAProcessor, MotionTokenizerModel]:
    """(model, processor, motion tokenizer) of a checkpoint written by :func:`save_pretraining_checkpoint` (a local
    folder, or a Hub id with ``motion_tokenizer`` given). Raises ``FileNotFoundError`` naming a local folder and what
    it lacks before anything is built."""
    local = Path(path).exists() or looks_like_local_path(str(path))
    path = Path(path)
    if local and not path.is_dir():
        raise FileNotFoundError(
            f"{path} is not a folder: pass a `pela pretrain` output folder (or a checkpoint-N in it)"
        )
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()] if local else []
    if local and not any(path.glob("model*.safetensors")):
        missing.append("model.safetensors")
    if missing:
        raise FileNotFoundError(
            f"{path} is not a complete PELA checkpoint: it lacks {', '.join(missing)} ("
            + "; ".join(f"{name}: {CHECKPOINT_FILES.get(name, 'the weights')}" for name in missing)
            + "), which `pela pretrain` writes with every checkpoint"
        )
    tokenizer_path = motion_tokenizer or path / MOTION_TOKENIZER_SUBFOLDER
    if not motion_tokenizer and not (path / MOTION_TOKENIZER_SUBFOLDER).is_dir():
        raise FileNotFoundError(
            f"{path} has no {MOTION_TOKENIZER_SUBFOLDER}/ folder: pass the motion tokenizer's folder explicitly "
            "(`pela eval` / `pela generate`: --motion-tokenizer DIR)"
        )
    model = PELAForPretraining.from_pretrained(str(path)).eval()
    processor = PELAProcessor.from_pretrained(str(path))
    return model, processor, MotionTokenizerModel.from_pretrained(str(tokenizer_path)).eval()


def evaluation_rows(
    data: str,
    split: str,
    max_rows: int | None = None,
    num_chunks: int = 1,
    *,
    max_skip_fraction: float = 0.0,
    stats: SkipStats | None = None,
) -> list[dict[str, Any]]:
    """The labelled rows of ``split``/test of an exported UniHand-Mix, cut to their first ``num_chunks`` chunks (what
    evaluation decodes and scores). Unusable data raise, or within ``max_skip_fraction`` are skipped and counted in
    ``stats`` (:func:`~datasets_unihand_mix.streaming.stream_unihand_mix`)."""
    rows = []
    for row in stream_unihand_mix(data, split, "test", max_skip_fraction=max_skip_fraction, stats=stats):
        if row["has_motion_labels"] and int(row["num_chunks"]) >= num_chunks:
            rows.append(crop_row(row, num_chunks))
        if max_rows is not None and len(rows) >= max_rows:
            break
    return rows


def crop_row(row: Mapping[str, Any], max_chunks: int) -> dict[str, Any]:
    """The first ``max_chunks`` chunks of a row (MANO, tokens, boundary frames and counts cut consistently)."""
    num_chunks = int(row["num_chunks"])
    if num_chunks <= max_chunks:
        return dict(row)
    frames = max_chunks * int(row["chunk_length"])
    out = {**row, "num_chunks": max_chunks, "num_frames": frames}
    out["boundary_frames"] = list(row["boundary_frames"])[: max_chunks + 1]
    out["context_chunks"] = min(int(row.get("context_chunks") or 0), max_chunks - 1)
    for side in ("left", "right"):
        mano = row.get(f"mano_{side}")
        if mano is not None:
            out[f"mano_{side}"] = {k: (v[:frames] if k != "betas" else v) for k, v in mano.items()}
        tokens = row.get(f"motion_tokens_{side}")
        if tokens is not None:
            out[f"motion_tokens_{side}"] = list(tokens)[:max_chunks]
    if row.get("frame_features") is not None:
        out["frame_features"] = list(row["frame_features"])[: max_chunks + 1]
    return out


def rows_of(dataset: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Materialise a (small) streamed split."""
    return [dict(row) for row in dataset]


def plot_loss_curves(histories: Mapping[str, list[dict[str, float]]], path: str | Path) -> Path:
    """One panel per logged loss term, one line per model variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("loss", "mcp_loss", "align_loss")
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for axis, key in zip(axes, keys, strict=True):
        for name, history in histories.items():
            points = [(h["step"], h[key]) for h in history if key in h]
            if points:
                axis.plot(*zip(*points, strict=True), label=name)
        axis.set_title(key)
        axis.set_xlabel("step")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def plot_hand_motion(pairs: Sequence[tuple[np.ndarray, np.ndarray]], path: str | Path, title: str) -> Path:
    """Generated (red) vs true (black) hands, camera x-y view, first / middle / last frame of each chunk."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modeling_pela.mano import KEYPOINT_PARENTS

    figure, axes = plt.subplots(1, len(pairs), figsize=(3 * len(pairs), 3), squeeze=False)
    for axis, (generated, true) in zip(axes[0], pairs, strict=True):
        for joints, colour in ((true, "black"), (generated, "tab:red")):
            for t in (0, joints.shape[0] // 2, joints.shape[0] - 1):
                for k, parent in enumerate(KEYPOINT_PARENTS):
                    if parent >= 0:
                        axis.plot(joints[t, [parent, k], 0], -joints[t, [parent, k], 1], color=colour, lw=1)
            axis.plot(joints[:, 0, 0], -joints[:, 0, 1], color=colour, ls=":", lw=1)
        axis.set_aspect("equal")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{title}: generated (red) vs true (black)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
