"""Processors of tiny PELA models (the demo, the tests): a word-level instruction tokenizer over the data, InternVL-style
and DINOv3 image processors, and the check that a processor's motion vocabulary is the motion tokenizer's. Real runs
use the pretrained VLM's own tokenizer and image processors (``PELAProcessor.from_pretrained_components``).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping
from typing import Any

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoImageProcessor, PreTrainedTokenizerFast
from transformers.models.dinov3_vit.image_processing_dinov3_vit import DINOv3ViTImageProcessor
from transformers.models.got_ocr2.image_processing_got_ocr2 import GotOcr2ImageProcessor

from modeling_pela import PELAConfig, PELAProcessor
from modeling_pela.configuration_pela import motion_vocabulary

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
