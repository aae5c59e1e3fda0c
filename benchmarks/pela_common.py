"""Shared set-up of the PELA benchmarks: a small-but-not-trivial random PELA model and a synthetic masked batch.

Sizes (``benchmark_config``): InternVL backbone with a 112-px vision tower (2 layers, width 64; 16 image tokens) and a
Qwen2 text model of width 256, 8 layers, 8 heads (4 KV heads), text vocabulary 4096; codebook 1024 (2048 motion ids);
DINOv3 frame encoder of width 128, 4 layers, 112 px; perceiver width 256, 2 layers; align layer 6 of 8.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from modeling_pela import PELAConfig, PELAForPretraining

IMAGE_SIZE = 112
K = 128


def benchmark_config(**overrides) -> PELAConfig:
    return PELAConfig(
        vlm_config={
            "model_type": "internvl",
            "vision_config": {
                "model_type": "internvl_vision", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 128, "image_size": IMAGE_SIZE, "patch_size": 14,
            },
            "text_config": {
                "model_type": "qwen2", "vocab_size": 4096, "hidden_size": 256, "intermediate_size": 1024,
                "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 4,
                "max_position_embeddings": 4096,
            },
            "image_token_id": 4095,
            "image_seq_length": 16,
        },
        frame_encoder_config={
            "model_type": "dinov3_vit", "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
            "num_attention_heads": 4, "patch_size": 16, "image_size": IMAGE_SIZE, "num_register_tokens": 4,
        },
        perceiver_hidden_size=256,
        perceiver_num_heads=8,
        align_layer=6,
        codebook_size=1024,
        **overrides,
    )  # fmt: skip


def build_model(preset: str = "small", seed: int = 0, **overrides) -> PELAForPretraining:
    """``preset``: ``"small"`` (:func:`benchmark_config`) or ``"tiny"`` (``PELAConfig.tiny``, the test size)."""
    torch.manual_seed(seed)
    config = benchmark_config(**overrides) if preset == "small" else PELAConfig.tiny(**overrides)
    return PELAForPretraining(config)


def synthetic_batch(config: PELAConfig, batch_size: int, num_steps: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-hand samples ``[instruction (24 tokens), image, state, num_steps chunks]``: the first half labelled with
    one chunk half masked (MCP target), the second half video-only (all ``[MASK]``). Returns model inputs."""
    generator = torch.Generator().manual_seed(seed)
    offset, size = config.motion_token_offset, config.codebook_size
    image_size = config.vlm_config.vision_config.image_size[0]
    frame_size = config.frame_encoder_config.image_size
    rows, labels = [], []
    for row in range(batch_size):
        ids = torch.randint(0, config.image_token_id, (24,), generator=generator).tolist()
        ids += [config.image_token_id] * config.vlm_config.image_seq_length + [config.state_right_token_id] * K
        target = [-100] * len(ids)
        for step in range(num_steps):
            wrist = torch.randint(offset, offset + size, (K // 2,), generator=generator)
            finger = torch.randint(offset + size, offset + 2 * size, (K // 2,), generator=generator)
            tokens = torch.cat([wrist, finger])
            chunk_labels = torch.full((K,), -100)
            if row >= batch_size // 2:  # video-only
                tokens = torch.full((K,), config.mask_token_id)
            elif step == num_steps - 1:  # MCP target: half of the chunk masked
                masked = torch.rand(K, generator=generator) < 0.5
                chunk_labels = torch.where(masked, tokens, -100)
                tokens = torch.where(masked, config.mask_token_id, tokens)
            ids += [config.mot_start_token_id, *tokens.tolist(), config.mot_end_token_id]
            target += [-100, *chunk_labels.tolist(), -100]
        rows.append(ids)
        labels.append(target)
    return {
        "input_ids": torch.tensor(rows),
        "attention_mask": torch.ones(batch_size, len(rows[0]), dtype=torch.long),
        "labels": torch.tensor(labels),
        "pixel_values": torch.randn(batch_size, 3, image_size, image_size, generator=generator),
        "frame_pixel_values": torch.randn(batch_size, num_steps + 1, 3, frame_size, frame_size, generator=generator),
        "chunk_hands": torch.ones(batch_size, num_steps, dtype=torch.long),
        "chunk_frames": torch.arange(num_steps).expand(batch_size, -1).clone(),
        "is_labeled": torch.arange(batch_size) < batch_size // 2,
    }


def median_seconds(step: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median, min) wall time of ``step()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)
