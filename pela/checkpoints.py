"""Self-contained PELA checkpoints: weights and config, processor, motion tokenizer (``motion_tokenizer/``), the
``hand-motion-generation`` pipeline's code and a model card, in one folder that ``pela eval`` / ``generate``,
``transformers.pipeline``, the LeRobot policy and ``push_to_hub`` read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modeling_pela import MotionTokenizerModel, PELAForPretraining, PELAProcessor
from modeling_pela.pipeline_pela import CUSTOM_PIPELINES, MOTION_TOKENIZER_SUBFOLDER, save_pipeline_code

from .model_card import CARD_SETTINGS, pretraining_model_card

CHECKPOINT_FILES = {  # what load_pretraining_checkpoint needs besides the weights, and what each is
    "config.json": "the model configuration",
    "processor_config.json": "the processor",
    "tokenizer.json": "the instruction tokenizer",
}


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


def looks_like_local_path(value: str) -> bool:
    """True for what can only be a local path (absolute, ``./``, ``../``, ``~``, or more than one ``/``); a Hub id is
    ``name`` or ``owner/name``."""
    return value.startswith(("/", ".", "~")) or value.count("/") > 1 or "\\" in value
