"""Pretraining a small frame encoder of the DINOv3 architecture, the stand-in for DINOv3 weights where none can be
downloaded (the demo, the tests).

PELA reads its boundary frames through a *frozen* pretrained encoder (paper 4.2). Real runs load DINOv3 (or V-JEPA2)
weights; on a machine without them, :func:`pretrain_frame_encoder` trains a ``DINOv3ViTModel`` of any size by masked
image modelling (SimMIM, Xie et al., 2022): a random ``mask_ratio`` of the patches is replaced by the model's mask
token, and a linear head predicts the normalised pixels of every patch from its output token (L1 loss). Unlike SimMIM,
the loss covers the visible patches too: PELA reads the features of whole, unmasked frames, and a linear readout of
every token's own patch keeps what each patch shows in its feature, while the masked patches teach the encoder the
context (at this scale, the masked-only loss gave features from which a perceiver located the hands more slowly than
from a random encoder's). No labels are used. The result is an ordinary Hugging Face folder,
``DINOv3ViTModel`` weights + config + ``DINOv3ViTImageProcessor``, which ``AutoModel.from_pretrained`` and
``PELAForPretraining.from_pretrained_components(frame_encoder_name_or_path=...)`` load like real DINOv3 weights.

Shapes: images (N, 3, S, S) normalised by the image processor; ``S / patch_size`` patches per side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import DINOv3ViTConfig, DINOv3ViTModel, Trainer, TrainingArguments, set_seed
from transformers.models.dinov3_vit.image_processing_dinov3_vit import DINOv3ViTImageProcessor


class DINOv3ForMaskedImageModeling(nn.Module):
    """``DINOv3ViTModel`` + a linear pixel head. ``forward(pixel_values (B, 3, S, S), bool_masked_pos (B, P))`` returns
    ``{"loss": L1 between predicted and true normalised pixels of all patches}``, the masked ones seen only through
    their context."""

    def __init__(self, config: DINOv3ViTConfig) -> None:
        super().__init__()
        self.encoder = DINOv3ViTModel(config)
        self.pixel_head = nn.Linear(config.hidden_size, config.patch_size**2 * config.num_channels)

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, P, patch * patch * C), patches in row-major order."""
        patch = self.encoder.config.patch_size
        patches = pixel_values.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, C, h, w, p, p)
        return patches.permute(0, 2, 3, 4, 5, 1).flatten(1, 2).flatten(2)

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.encoder(pixel_values=pixel_values, bool_masked_pos=bool_masked_pos).last_hidden_state
        patches = hidden[:, 1 + self.encoder.config.num_register_tokens :]
        return {"loss": (self.pixel_head(patches) - self.patchify(pixel_values)).abs().mean()}


class MaskedFrames(Dataset):
    """Processed frames with a fresh random patch mask per access (``mask_ratio`` of the P patches)."""

    def __init__(self, pixel_values: torch.Tensor, num_patches: int, mask_ratio: float) -> None:
        self.pixel_values, self.num_patches = pixel_values, num_patches
        self.num_masked = max(1, round(mask_ratio * num_patches))

    def __len__(self) -> int:
        return self.pixel_values.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        mask = torch.zeros(self.num_patches, dtype=torch.bool)
        mask[torch.randperm(self.num_patches)[: self.num_masked]] = True
        return {"pixel_values": self.pixel_values[index], "bool_masked_pos": mask}


def pretrain_frame_encoder(
    images: Sequence[Any],
    output_dir: str | Path,
    config: DINOv3ViTConfig,
    *,
    max_steps: int = 300,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    mask_ratio: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a ``DINOv3ViTModel`` with ``config`` on ``images`` (PIL images or arrays; the training frames only) by
    masked image modelling and save it with its image processor to ``output_dir``.

    Returns ``{"loss_history": [...], "num_images": N, "mask_ratio": r}``. Raises ``ValueError`` for an empty image
    list or an image size that is not a whole number of patches."""
    if not images:
        raise ValueError("pretrain_frame_encoder needs at least one training image")
    if config.image_size % config.patch_size:
        raise ValueError(f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}")
    set_seed(seed)
    processor = DINOv3ViTImageProcessor(size={"height": config.image_size, "width": config.image_size})
    pixel_values = processor(list(images), return_tensors="pt")["pixel_values"]
    num_patches = (config.image_size // config.patch_size) ** 2
    model = DINOv3ForMaskedImageModeling(config)
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, weight_decay=0.05, warmup_steps=0.05, lr_scheduler_type="cosine",
        logging_steps=max(1, max_steps // 10), save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True, seed=seed, remove_unused_columns=False,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=MaskedFrames(pixel_values, num_patches, mask_ratio))
    trainer.train()
    model.encoder.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    history = [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h]
    return {"loss_history": history, "num_images": len(images), "mask_ratio": mask_ratio}
