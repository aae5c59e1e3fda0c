"""End-to-end jobs behind the ``pela`` subcommands, on the built-in procedural data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
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


def tokenizer_config(codebook_size: int, num_quantizers: int = 8):
    """A CPU-sized GRQ-VAE: 2 groups x 4 latent steps x ``num_quantizers`` residual quantizers per part (8: the
    paper's 64 tokens per part)."""
    from modeling_pela.configuration_motion_tokenizer import MotionTokenizerConfig

    return MotionTokenizerConfig(
        codebook_size=codebook_size, encoder_width=128, decoder_width=128, latent_dim=64, res_depth=2,
        num_quantizers=num_quantizers,
    )  # fmt: skip


def hand_motions_of_rows(rows: Iterable[Mapping[str, Any]]) -> list[HandMotion]:
    """Every labelled hand of UniHand-Mix ``rows`` as a :class:`HandMotion` (errors name the sample and field)."""
    motions = []
    for row in rows:
        for side in row["hands"]:
            mano = row.get(f"mano_{side}")
            if row.get("has_motion_labels") and mano is not None:
                motions.append(HandMotion.from_dict({**mano, "side": side, "fps": float(row["fps"])}, row["id"]))
    return motions


MANO_COLUMNS = ["id", "hands", "fps", "has_motion_labels", "mano_left", "mano_right"]


def train_tokenizer_on_export(
    data: str,
    output_dir: str,
    *,
    max_steps: int,
    batch_size: int,
    codebook_size: int,
    dataset_config: str = "lab",
    num_quantizers: int = 8,
    seed: int = 0,
    mano_dir: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train the motion tokenizer on the labelled rows of the ``dataset_config`` (``"lab"``, ``"wild"`` or ``"mix"``)
    *train* split of an exported (or Hub) UniHand-Mix (every 10th labelled row held out for its reconstruction
    metrics) and measure it on the held-out rows and on the wild test rows. Only :data:`MANO_COLUMNS` are streamed (no
    frames are decoded or held). Writes ``reconstruction_metrics.json`` next to the model and returns the metrics;
    ``progress`` shows the Trainer's progress bar."""
    from datasets_unihand_mix.streaming import stream_unihand_mix
    from modeling_pela.mano import load_hand_kinematics
    from trainers.tokenizer_trainer import evaluate_motion_tokenizer, train_motion_tokenizer

    train, held_out = [], []
    rows = stream_unihand_mix(data, dataset_config, "train").select_columns(MANO_COLUMNS)
    for index, row in enumerate(row for row in rows if row["has_motion_labels"]):
        (train if index % 10 else held_out).extend(hand_motions_of_rows([row]))
    if not train:
        raise ValueError(
            f"{data}: the {dataset_config!r} train split has no row with MANO labels (has_motion_labels) to train "
            "the motion tokenizer on; pass --config lab (or mix)"
        )
    model, _ = train_motion_tokenizer(
        train, held_out, output_dir, config=tokenizer_config(codebook_size, num_quantizers), max_steps=max_steps,
        batch_size=batch_size, learning_rate=1e-3, seed=seed, use_cpu=True, disable_tqdm=not progress,
    )  # fmt: skip
    kinematics = load_hand_kinematics(mano_dir)
    wild = hand_motions_of_rows(stream_unihand_mix(data, "wild", "test").select_columns(MANO_COLUMNS))
    metrics = {
        "lab": evaluate_motion_tokenizer(model, held_out, kinematics=kinematics),
        "wild": evaluate_motion_tokenizer(model, wild, kinematics=kinematics),
        "kinematics": kinematics.source,
        "codebook_size": codebook_size,
        "tokens_per_chunk": model.config.tokens_per_chunk,
        "train_chunks": sum(len(m.chunks()) for m in train),
    }
    Path(output_dir, "reconstruction_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def pretrain_frame_encoder_on_export(
    data: str, output_dir: str, *, image_size: int, patch_size: int, max_steps: int, seed: int = 0
) -> dict[str, Any]:
    """The DINOv3 stand-in (:mod:`trainers.frame_encoder_trainer`) pretrained on every first and boundary frame of the
    lab *train* split of an exported UniHand-Mix (no test or wild frame)."""
    from transformers import DINOv3ViTConfig

    from datasets_unihand_mix.streaming import stream_unihand_mix
    from trainers.frame_encoder_trainer import pretrain_frame_encoder

    images = [frame for row in stream_unihand_mix(data, "lab", "train") for frame in row["boundary_frames"]]
    config = DINOv3ViTConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, patch_size=patch_size,
        image_size=image_size, num_register_tokens=1,
    )  # fmt: skip
    return pretrain_frame_encoder(images, output_dir, config, max_steps=max_steps, seed=seed)


def train_tokenizer_on_procedural(
    output_dir: str,
    num_clips: int,
    max_steps: int,
    batch_size: int,
    codebook_size: int,
    seed: int,
    num_workers: int = 0,
    mano_dir: str | None = None,
    num_quantizers: int = 8,
    progress: bool = False,
) -> dict[str, Any]:
    """Train on lab clips [0, 0.9 n), evaluate on held-out lab clips and on wild clips; returns the metrics
    (``progress``: the Trainer's progress bar)."""
    from modeling_pela.mano import load_hand_kinematics
    from trainers.tokenizer_trainer import evaluate_motion_tokenizer, train_motion_tokenizer

    motions = procedural_motions(num_clips, "lab", seed, num_workers)
    split = int(0.9 * len(motions))
    model, lab_metrics = train_motion_tokenizer(
        motions[:split], motions[split:], output_dir, config=tokenizer_config(codebook_size, num_quantizers),
        max_steps=max_steps, batch_size=batch_size, learning_rate=1e-3, seed=seed, use_cpu=True,
        disable_tqdm=not progress,
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
