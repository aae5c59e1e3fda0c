"""End-to-end jobs behind the ``pela`` subcommands, on the built-in procedural data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modeling_pela.hand_motion import HandMotion


def procedural_motions(
    num_clips: int, style: str, seed: int, num_workers: int = 0, start_index: int = 0
) -> list[HandMotion]:
    """All hand motions of ``num_clips`` procedural clips. Wild clips are slowed by 0.5 to lab speed (curation)."""
    from datasets_unihand_mix import ProceduralConfig, generate_clips

    clips = generate_clips(num_clips, ProceduralConfig(style=style, seed=seed), num_workers, start_index)
    motions = [motion for clip in clips for motion in clip.hands.values()]
    return [m.resample(2.0) for m in motions] if style == "wild" else motions


def tokenizer_config(codebook_size: int):
    """A CPU-sized GRQ-VAE (the paper's layout: 2 groups x 4 steps x 8 quantizers = 64 tokens per part)."""
    from modeling_pela.configuration_motion_tokenizer import MotionTokenizerConfig

    return MotionTokenizerConfig(
        codebook_size=codebook_size, encoder_width=128, decoder_width=128, latent_dim=64, res_depth=2
    )


def train_tokenizer_on_procedural(
    output_dir: str,
    num_clips: int,
    max_steps: int,
    batch_size: int,
    codebook_size: int,
    seed: int,
    num_workers: int = 0,
    mano_dir: str | None = None,
) -> dict[str, Any]:
    """Train on lab clips [0, 0.9 n), evaluate on held-out lab clips and on wild clips; returns the metrics."""
    from modeling_pela.mano import load_hand_kinematics
    from trainers.tokenizer_trainer import evaluate_motion_tokenizer, train_motion_tokenizer

    motions = procedural_motions(num_clips, "lab", seed, num_workers)
    split = int(0.9 * len(motions))
    model, lab_metrics = train_motion_tokenizer(
        motions[:split], motions[split:], output_dir, config=tokenizer_config(codebook_size),
        max_steps=max_steps, batch_size=batch_size, learning_rate=1e-3, seed=seed, use_cpu=True,
    )  # fmt: skip
    kinematics = load_hand_kinematics(mano_dir)
    wild = procedural_motions(max(20, num_clips // 10), "wild", seed + 1, num_workers)
    metrics = {
        "lab": evaluate_motion_tokenizer(model, motions[split:], kinematics=kinematics),
        "wild": evaluate_motion_tokenizer(model, wild, kinematics=kinematics),
        "kinematics": kinematics.source,
        "codebook_size": codebook_size,
        "train_chunks": sum(len(m.chunks()) for m in motions[:split]),
    }
    Path(output_dir, "reconstruction_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def evaluate_tokenizer_on_procedural(
    model_dir: str, style: str, num_clips: int, seed: int, mano_dir: str | None = None
) -> dict[str, Any]:
    from modeling_pela.mano import load_hand_kinematics
    from modeling_pela.modeling_motion_tokenizer import MotionTokenizerModel
    from trainers.tokenizer_trainer import evaluate_motion_tokenizer

    model = MotionTokenizerModel.from_pretrained(model_dir)
    kinematics = load_hand_kinematics(mano_dir)
    return evaluate_motion_tokenizer(model, procedural_motions(num_clips, style, seed), kinematics=kinematics)


def preview_procedural_clips(output: str, style: str, num_clips: int, seed: int, image_size: int) -> Path:
    from PIL import Image

    from datasets_unihand_mix import ProceduralConfig, generate_clips, preview_grid

    clips = generate_clips(num_clips, ProceduralConfig(style=style, seed=seed, image_size=image_size))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(preview_grid(clips)).save(path)
    return path
