"""PELAConfig: presets, token layout, serialisation and clear errors for inconsistent values."""

from __future__ import annotations

import pytest

from modeling_pela import PELAConfig


def test_presets_and_token_layout():
    tiny = PELAConfig.tiny()
    assert tiny.text_config.num_hidden_layers == 4 and tiny.align_layer == 3 and tiny.codebook_size == 128
    offset = tiny.motion_token_offset
    assert offset == 256 and tiny.text_config.vocab_size == offset + 2 * 128 + 5
    assert tiny.wrist_token_range == (offset, offset + 128)
    assert tiny.finger_token_range == (offset + 128, offset + 256)
    assert [tiny.mot_start_token_id, tiny.mot_end_token_id, tiny.mask_token_id] == [offset + 256 + i for i in range(3)]
    assert (tiny.state_left_token_id, tiny.state_right_token_id) == (offset + 259, offset + 260)
    assert tiny.image_token_id < offset and tiny.frame_encoder_type == "dinov3_vit"

    paper = PELAConfig.from_preset("2b")
    assert paper.to_dict() == PELAConfig().to_dict()
    assert paper.text_config.num_hidden_layers == 28 and paper.align_layer == 19 and paper.hidden_size == 1536
    assert (paper.lambda_align, paper.ema_alpha, paper.chunk_length) == (0.5, 0.999, 15)
    assert (paper.codebook_size, paper.tokens_per_chunk, paper.num_latent_queries, paper.perceiver_num_layers) == (
        4096, 128, 128, 2,
    )  # fmt: skip
    assert paper.motion_token_offset == 151674 and paper.text_config.vocab_size == 151674 + 8192 + 5
    assert paper.objective == "masked_chunk" and paper.align and paper.use_latent_state
    with pytest.raises(ValueError, match="unknown PELA preset"):
        PELAConfig.from_preset("7b")


def test_round_trip_keeps_the_extended_vocabulary(tmp_path):
    config = PELAConfig.tiny(objective="next_token", align=False)
    config.save_pretrained(tmp_path)
    loaded = PELAConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.motion_token_offset == 256 and loaded.text_config.vocab_size == 517  # not extended twice
    features = PELAConfig.tiny(frame_encoder_config=None, frame_feature_dim=24)
    assert features.frame_encoder_type is None and features.frame_dim == 24


def test_backbone_config_is_not_mutated():
    backbone = PELAConfig.tiny().vlm_config.__class__(**PELAConfig.tiny().vlm_config.to_dict())
    backbone.text_config.vocab_size = 300
    config = PELAConfig.tiny(vlm_config=backbone, motion_token_offset=None)
    assert backbone.text_config.vocab_size == 300 and config.text_config.vocab_size == 300 + 261
    assert config.motion_token_offset == 300


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(align_layer=5), r"align_layer \(5\) is beyond the depth .* \(4 layers\)"),
        (dict(codebook_size=64, motion_token_offset=256), "vocab/codebook mismatch"),
        (dict(num_latent_queries=64), "must equal tokens_per_chunk"),
        (dict(tokens_per_chunk=127, num_latent_queries=127), "must be even"),
        (dict(objective="diffusion"), "objective must be one of"),
        (dict(align=True, use_latent_state=False), "align=True needs use_latent_state=True"),
        (dict(frame_encoder_config={"model_type": "vit"}), "frame_encoder_config must be one of"),
        (dict(frame_feature_dim=16), "either frame_encoder_config or frame_feature_dim"),
        (dict(frame_encoder_config=None, frame_feature_dim=0), "frame_feature_dim must be a positive int"),
        (dict(perceiver_num_heads=3), "divisible by perceiver_num_heads"),
        (dict(ema_alpha=1.5), r"ema_alpha must be in \[0, 1\]"),
        (dict(lambda_align=-1.0), "lambda_align must be >= 0"),
        (dict(align_layer=0), "align_layer must be a positive int"),
    ],
)
def test_inconsistent_configs_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        PELAConfig.tiny(**overrides)


def test_image_token_must_lie_in_the_text_vocabulary():
    vlm = PELAConfig.tiny().vlm_config.to_dict()
    vlm["text_config"]["vocab_size"] = 256
    vlm["image_token_id"] = 300
    with pytest.raises(ValueError, match=r"image_token_id \(300\) must lie in the text vocabulary"):
        PELAConfig.tiny(vlm_config=vlm)
