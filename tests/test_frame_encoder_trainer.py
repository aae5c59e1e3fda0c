"""The DINOv3 stand-in: masked image modelling on training frames, saved as a folder that loads like DINOv3 weights."""

from __future__ import annotations

import pytest
import torch
from pela_testing import single_thread  # noqa: F401  (module fixture: one intra-op thread)
from transformers import AutoImageProcessor, AutoModel, DINOv3ViTConfig

from datasets_unihand_mix import generate_clips
from trainers.frame_encoder_trainer import DINOv3ForMaskedImageModeling, pretrain_frame_encoder


def _config() -> DINOv3ViTConfig:
    return DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           patch_size=8, image_size=32, num_register_tokens=1)  # fmt: skip


def test_loss_is_the_pixel_error_of_every_patch_with_masked_patches_hidden():
    torch.manual_seed(0)
    model = DINOv3ForMaskedImageModeling(_config()).eval()
    pixels = torch.randn(2, 3, 32, 32)
    patches = model.patchify(pixels)
    assert patches.shape == (2, 16, 8 * 8 * 3)
    torch.testing.assert_close(patches[0, 5].view(8, 8, 3), pixels[0, :, 8:16, 8:16].permute(1, 2, 0))  # row 1, col 1
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 3] = True
    with torch.no_grad():
        hidden = model.encoder(pixel_values=pixels, bool_masked_pos=mask).last_hidden_state[:, 2:]
        expected = (model.pixel_head(hidden) - patches).abs().mean()
        torch.testing.assert_close(model(pixels, mask)["loss"], expected)
        unmasked = model.encoder(pixel_values=pixels).last_hidden_state[:, 2:]
        assert not torch.allclose(hidden[:, 3], unmasked[:, 3])  # the masked patch is replaced by the mask token


def test_pretrain_saves_a_folder_that_loads_like_dinov3_weights(tmp_path):
    images = [clip.render_frame(0) for clip in generate_clips(12, render="first")]
    info = pretrain_frame_encoder(images, tmp_path, _config(), max_steps=30, batch_size=12, learning_rate=3e-3)
    assert info["num_images"] == 12 and len(info["loss_history"]) >= 3
    assert info["loss_history"][-1] < info["loss_history"][0]  # it learns to fill in the masked patches
    encoder = AutoModel.from_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(encoder).__name__ == "DINOv3ViTModel" and encoder.config.patch_size == 8
    pixels = processor(images[:2], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 32, 32)
    assert encoder(pixel_values=pixels).last_hidden_state.shape == (2, 1 + 1 + 16, 32)
    with pytest.raises(ValueError, match="at least one"):
        pretrain_frame_encoder([], tmp_path, _config())
