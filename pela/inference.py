"""``pela eval`` and ``pela generate``: a pretrained PELA checkpoint (:func:`~pela.pretraining.save_pretraining_checkpoint`)
scored on a UniHand-Mix test split, or asked for hand motion from one image and an instruction.

Generated MANO is in the camera frame of the image (the convention of UniHand-Mix); :func:`render_hands_on_image`
projects its keypoints with a pinhole camera whose focal length is ``focal_factor * width`` (the built-in procedural
camera's, 0.9) unless the caller knows better.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from modeling_pela.mano import KEYPOINT_PARENTS, HandKinematics, load_hand_kinematics
from trainers.generation_eval import evaluate_generation

from .pretraining import evaluation_rows, load_pretraining_checkpoint

HAND_COLOURS = {"left": (40, 120, 255), "right": (255, 60, 40)}
DEFAULT_FOCAL_FACTOR = 0.9  # datasets_unihand_mix.procedural.FOCAL_FACTOR


def evaluate_checkpoint(
    checkpoint: str,
    data: str,
    splits: Sequence[str] = ("lab", "wild"),
    *,
    num_chunks: int = 1,
    num_ensembles: int = 1,
    max_rows: int | None = None,
    mano_dir: str | None = None,
    motion_tokenizer: str | None = None,
) -> dict[str, dict[str, float]]:
    """``{split: metrics}`` (MPJPE, PA-MPJPE, MWTE, MDE in cm) of the first ``num_chunks`` generated chunks of every
    labelled ``split``/test row of the exported UniHand-Mix at ``data`` (``motion_tokenizer``: a tokenizer folder
    replacing the checkpoint's ``motion_tokenizer/``)."""
    model, processor, motion_tokenizer = load_pretraining_checkpoint(checkpoint, motion_tokenizer)
    kinematics = load_hand_kinematics(mano_dir)
    results = {}
    for split in splits:
        rows = evaluation_rows(data, split, max_rows, num_chunks)
        results[split] = evaluate_generation(
            model, processor, motion_tokenizer, rows, kinematics, num_chunks=num_chunks, num_ensembles=num_ensembles,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        results[split]["kinematics"] = kinematics.source
    return results


@torch.no_grad()
def generate_for_image(
    checkpoint: str,
    image: Image.Image,
    instruction: str,
    hands: Sequence[str] = ("left", "right"),
    *,
    num_chunks: int = 1,
    num_ensembles: int = 1,
    seed: int = 0,
    motion_tokenizer: str | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """MANO of ``num_chunks`` generated chunks per hand: ``{hand: {"hand_pose" (T, 15, 3), "global_orient" (T, 3),
    "transl" (T, 3)}}`` with ``T = num_chunks * chunk_length``; with ``num_ensembles`` > 1 the mean motion of that many
    decoding runs (seeded by ``seed``)."""
    model, processor, motion_tokenizer = load_pretraining_checkpoint(checkpoint, motion_tokenizer)
    prompt = processor(images=image.convert("RGB"), text=instruction, hands=list(hands))
    output = model.generate_motion(
        **prompt, num_chunks=num_chunks,
        num_ensembles=num_ensembles, ensemble_method="mean", generator=torch.Generator().manual_seed(seed),
        motion_tokenizer=motion_tokenizer,
    )  # fmt: skip
    return {hand: {k: v[0].cpu().numpy() for k, v in output.mano[hand].items()} for hand in hands}


def project(points: np.ndarray, width: int, height: int, focal_factor: float = DEFAULT_FOCAL_FACTOR) -> np.ndarray:
    """(..., 3) camera-frame points (OpenCV: x right, y down, z forward; metres) -> (..., 2) pixel coordinates."""
    focal = focal_factor * width
    depth = np.maximum(points[..., 2:], 1e-3)
    return points[..., :2] / depth * focal + np.array([width / 2, height / 2])


def render_hands_on_image(
    image: Image.Image,
    mano: dict[str, dict[str, np.ndarray]],
    kinematics: HandKinematics,
    path: str | Path,
    *,
    num_panels: int = 3,
    focal_factor: float = DEFAULT_FOCAL_FACTOR,
    scale: int = 4,
) -> Path:
    """Panels of the generated hands (keypoint skeletons, left blue / right red, the wrist's path dotted) drawn over
    ``image`` at ``num_panels`` evenly spaced frames of the generated motion; saved as a PNG at ``path``."""
    from PIL import ImageDraw

    base = image.convert("RGB")
    width, height = base.size
    keypoints = {
        hand: kinematics.joints(
            torch.as_tensor(m["hand_pose"], dtype=torch.float32).reshape(-1, 15, 3),
            torch.as_tensor(m["global_orient"], dtype=torch.float32),
            torch.as_tensor(m["transl"], dtype=torch.float32),
            hand,
        ).numpy()
        for hand, m in mano.items()
    }
    frames = next(iter(keypoints.values())).shape[0]
    times = np.linspace(0, frames - 1, num_panels).round().astype(int)
    big = (width * scale, height * scale)
    sheet = Image.new("RGB", (big[0] * num_panels, big[1]), "white")
    for panel, t in enumerate(times):
        canvas = base.resize(big, Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(canvas)
        for hand, joints in keypoints.items():
            pixels = project(joints, width, height, focal_factor) * scale
            colour = HAND_COLOURS[hand]
            for k, parent in enumerate(KEYPOINT_PARENTS):
                if parent >= 0:
                    draw.line([tuple(pixels[t, parent]), tuple(pixels[t, k])], fill=colour, width=2)
            for u, v in pixels[: t + 1, 0]:
                draw.ellipse([u - 1.5, v - 1.5, u + 1.5, v + 1.5], fill=colour)
        draw.text((4, 4), f"t={t}", fill=(255, 255, 255))
        sheet.paste(canvas, (panel * big[0], 0))
    sheet.save(path)
    return Path(path)


def mano_to_json(mano: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """JSON-ready copy of :func:`generate_for_image`'s output."""
    return {hand: {k: np.asarray(v).round(6).tolist() for k, v in fields.items()} for hand, fields in mano.items()}
