"""Shared builders for the PELA tests: tiny model, tokenizer, processors, UniHand-Mix-like samples, masked batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.models.dinov3_vit.image_processing_dinov3_vit import DINOv3ViTImageProcessor
from transformers.models.got_ocr2.image_processing_got_ocr2 import GotOcr2ImageProcessor

from modeling_pela import PELAConfig, PELAForPretraining, PELAProcessor
from trainers.masking import hybrid_chunk_mask, sample_generator

WORDS = (
    "[PAD] [UNK] </s> generate the hand motion to pick up a cup and put it on table describe what are hands doing "
    "continue left right move grasp open drawer push block . ?"
).split()
CODEBOOK = 128  # PELAConfig.tiny().codebook_size
K = 128


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread avoids oversubscription (much faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def uncompiled_flex_attention():
    """flex_attention in eager mode. transformers compiles it with inductor, whose CPU kernels are built by the host's
    C++ compiler for the host's vector ISA: they fail to build on some CI hosts. The tests check PELA's mask functions
    (what the BlockMask lets through), which the eager reference implementation evaluates the same way."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(disable=True):
        yield
    torch._dynamo.reset()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer with ids far below the tiny preset's image token (255) and motion offset (256)."""
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")


def tiny_processor(config: PELAConfig, frames: bool = True, frame_size: int = 56) -> PELAProcessor:
    """Processor matching ``config``: 56-px InternVL (GOT-OCR2) image processor, DINOv3 frame processor."""
    image_processor = GotOcr2ImageProcessor(size={"height": 56, "width": 56}, crop_to_patches=False)
    frame_processor = DINOv3ViTImageProcessor(size={"height": frame_size, "width": frame_size}) if frames else None
    return PELAProcessor.from_model_config(config, image_processor, tiny_tokenizer(), frame_processor)


def tiny_model(seed: int = 0, **overrides) -> PELAForPretraining:
    torch.manual_seed(seed)
    return PELAForPretraining(PELAConfig.tiny(**overrides)).eval()


def random_image(rng: np.random.Generator, size: int = 64) -> Image.Image:
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


def random_tokens(rng: np.random.Generator, num_chunks: int) -> list[list[int]]:
    """(num_chunks, 128) tokenizer ids: wrist half in [0, C), finger half in [C, 2C)."""
    wrist = rng.integers(0, CODEBOOK, (num_chunks, K // 2))
    finger = rng.integers(CODEBOOK, 2 * CODEBOOK, (num_chunks, K // 2))
    return np.concatenate([wrist, finger], axis=1).tolist()


def make_sample(
    task: str = "motion_generation",
    hands: tuple[str, ...] = ("right",),
    num_chunks: int = 2,
    seed: int = 0,
    context_chunks: int = 0,
    frame_features: int | None = None,
) -> dict:
    """A UniHand-Mix-like sample (PIL frames, precomputed motion tokens; ``frame_features`` = feature width)."""
    rng = np.random.default_rng(seed)
    frames = [random_image(rng) for _ in range(num_chunks + 1)]
    labeled = task != "video_only"
    sample = {
        "id": f"test/{seed}/{task}",
        "task_type": task,
        "instruction": "describe the hand motion ." if task == "motion_description" else "pick up a cup",
        "response": "the hands grasp a cup ." if task == "motion_description" else "",
        "context_chunks": context_chunks,
        "hands": list(hands),
        "num_chunks": num_chunks,
        "first_frame": frames[0],
        "boundary_frames": frames,
        "has_motion_labels": labeled,
    }
    for hand in ("left", "right"):
        sample[f"motion_tokens_{hand}"] = random_tokens(rng, num_chunks) if labeled and hand in hands else None
        sample[f"mano_{hand}"] = None
    if frame_features is not None:
        sample["frame_features"] = rng.normal(size=(num_chunks + 1, frame_features)).astype(np.float32).tolist()
    return sample


def mask_batch(batch: dict, config: PELAConfig, seed: int = 0) -> dict:
    """What the data collator does: hybrid MCP masking of every sequence (``trainers.masking``), ``[MASK]`` written
    into ``input_ids`` and motion labels kept only at masked positions."""
    out = {key: value.clone() for key, value in batch.items()}
    for row in range(out["input_ids"].shape[0]):
        result = hybrid_chunk_mask(
            out["chunk_ids"][row],
            labeled=bool(out["is_labeled"][row]),
            generator=sample_generator(seed, str(row)),
            first_target=int(out["first_target_chunk"][row]),
        )
        motion = out["chunk_ids"][row] >= 0
        out["labels"][row] = torch.where(motion & ~result.masked, -100, out["labels"][row])
        out["input_ids"][row] = torch.where(result.masked, config.mask_token_id, out["input_ids"][row])
    return out


def model_inputs(batch: dict) -> dict:
    """The processor batch without the collator-only fields."""
    return {key: value for key, value in batch.items() if key != "first_target_chunk"}


def save_tiny_vlm_and_frame_encoder(vlm_dir, frame_encoder_dir) -> list[str]:
    """Save a tiny InternVL as a Hub checkpoint holds it (weights, config, and an ``InternVLProcessor`` whose
    word-level tokenizer has ``<img>`` / ``</img>`` / ``<IMG_CONTEXT>``) and a tiny DINOv3 with its image processor,
    both from ``PELAConfig.tiny()``'s component configs. Returns the tokenizer's words (index = id)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForImageTextToText, DINOv3ViTModel
    from transformers.models.internvl import InternVLProcessor, InternVLVideoProcessor

    words = [*WORDS, "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
               "video_token": "<video>"}  # fmt: skip
    text_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>", extra_special_tokens=special
    )
    tiny = PELAConfig.tiny()
    vlm_config = tiny.vlm_config.__class__(
        **{**tiny.vlm_config.to_dict(), "image_token_id": words.index("<IMG_CONTEXT>")}
    )
    vlm_config.text_config.vocab_size = 256
    AutoModelForImageTextToText.from_config(vlm_config).save_pretrained(vlm_dir)
    image_processor = GotOcr2ImageProcessor(size={"height": 56, "width": 56}, crop_to_patches=False)
    InternVLProcessor(image_processor, text_tokenizer, InternVLVideoProcessor(), image_seq_length=4).save_pretrained(
        vlm_dir
    )
    DINOv3ViTModel(tiny.frame_encoder_config).save_pretrained(frame_encoder_dir)
    DINOv3ViTImageProcessor(size={"height": 56, "width": 56}).save_pretrained(frame_encoder_dir)
    return words
