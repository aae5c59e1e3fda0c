"""PELAProcessor: sequence layout of every task, left/right interleaving, labels, frames, MANO tokenisation,
generation prompts, collator compatibility and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pela_testing import (
    CODEBOOK,
    K,
    make_sample,
    mask_batch,
    single_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_processor,
)

from modeling_pela import HandMotion, MotionTokenizerConfig, MotionTokenizerModel, PELAConfig


@pytest.fixture(scope="module")
def config() -> PELAConfig:
    return PELAConfig.tiny()


@pytest.fixture(scope="module")
def processor(config):
    return tiny_processor(config)


def chunk_tokens(batch, row: int, chunk: int) -> torch.Tensor:
    return batch["input_ids"][row][batch["chunk_ids"][row] == chunk]


def test_motion_generation_layout(config, processor):
    sample = make_sample("motion_generation", hands=("right",), num_chunks=2, seed=0)
    batch = processor.encode(sample)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    words = processor.tokenizer(sample["instruction"], add_special_tokens=False)["input_ids"]
    n = len(words)
    assert ids[:n].tolist() == words
    assert ids[n : n + 4].tolist() == [config.image_token_id] * 4  # 56 px, patch 14, pixel shuffle 0.5
    assert ids[n + 4 : n + 4 + K].tolist() == [config.state_right_token_id] * K
    start = n + 4 + K
    for chunk in range(2):
        block = ids[start + chunk * (K + 2) : start + (chunk + 1) * (K + 2)]
        assert block[0] == config.mot_start_token_id and block[-1] == config.mot_end_token_id
        expected = torch.tensor(sample["motion_tokens_right"][chunk]) + config.motion_token_offset
        assert torch.equal(block[1:-1], expected)
    assert ids.numel() == start + 2 * (K + 2)
    motion = batch["chunk_ids"][0] >= 0
    assert torch.equal(labels[motion], ids[motion]) and bool((labels[~motion] == -100).all())
    assert batch["chunk_hands"].tolist() == [[1, 1]] and batch["chunk_frames"].tolist() == [[0, 1]]
    assert batch["frame_pixel_values"].shape == (1, 3, 3, 56, 56) and batch["pixel_values"].shape == (1, 3, 56, 56)
    assert batch["is_labeled"].tolist() == [True] and batch["first_target_chunk"].tolist() == [0]
    assert torch.equal(tiny_model().chunk_ids_from_input_ids(batch["input_ids"]), batch["chunk_ids"])


def test_two_hands_are_interleaved_in_time(config, processor):
    sample = make_sample("motion_generation", hands=("right", "left"), num_chunks=2, seed=1)
    batch = processor.encode(sample)
    ids = batch["input_ids"][0]
    assert int((ids == config.state_left_token_id).sum()) == K and int((ids == config.state_right_token_id).sum()) == K
    assert (ids == config.state_left_token_id).nonzero().max() < (ids == config.state_right_token_id).nonzero().min()
    assert batch["chunk_hands"].tolist() == [[0, 1, 0, 1]] and batch["chunk_frames"].tolist() == [[0, 0, 1, 1]]
    order = [("left", 0), ("right", 0), ("left", 1), ("right", 1)]
    for chunk, (hand, step) in enumerate(order):
        expected = torch.tensor(sample[f"motion_tokens_{hand}"][step]) + config.motion_token_offset
        assert torch.equal(chunk_tokens(batch, 0, chunk), expected)


def test_continuation_description_and_video_only(config, processor):
    continuation = make_sample("motion_continuation", hands=("left", "right"), num_chunks=3, context_chunks=1, seed=2)
    description = make_sample("motion_description", seed=3)
    video = make_sample("video_only", hands=("left", "right"), seed=4)
    batch = processor.encode([continuation, description, video])
    assert batch["first_target_chunk"].tolist() == [2, 2, 0]
    assert batch["is_labeled"].tolist() == [True, True, False]
    labels, chunk_ids = batch["labels"], batch["chunk_ids"]
    assert bool((labels[0][(chunk_ids[0] >= 0) & (chunk_ids[0] < 2)] == -100).all())  # context chunks
    assert bool((labels[0][chunk_ids[0] >= 2] >= config.motion_token_offset).all())  # targets
    response = processor.tokenizer(description["response"], add_special_tokens=False)["input_ids"]
    targets = labels[1][labels[1] != -100].tolist()
    assert targets == response + [processor.tokenizer.eos_token_id]
    assert bool((chunk_ids[1][labels[1] != -100] == -1).all())
    motion = chunk_ids[2] >= 0
    assert int(motion.sum()) == 4 * K and bool((batch["input_ids"][2][motion] == config.mask_token_id).all())
    assert bool((labels[2] == -100).all())
    # Right padding, -1 padding of the chunk tables, zero-padded frames.
    lengths = batch["attention_mask"].sum(-1)
    assert batch["attention_mask"][1, lengths[1] :].sum() == 0 and bool((labels[1, lengths[1] :] == -100).all())
    assert batch["chunk_hands"][1].tolist() == [1, 1, -1, -1, -1, -1]
    assert batch["frame_pixel_values"].shape == (3, 4, 3, 56, 56) and batch["frame_pixel_values"][1, 3].abs().sum() == 0
    # The collator's hybrid masking (trainers.masking) on these chunk ids: context kept, video-only fully masked.
    masked = mask_batch(batch, config)
    assert torch.equal(masked["input_ids"][0][chunk_ids[0] < 2], batch["input_ids"][0][chunk_ids[0] < 2])
    assert bool((masked["labels"][0][chunk_ids[0] >= 0] != -100).any())
    assert bool((masked["input_ids"][2][motion] == config.mask_token_id).all())
    assert torch.equal(masked["input_ids"][1], batch["input_ids"][1])  # description: motion is context only


def test_generation_prompts_are_left_padded_and_stop_before_the_targets(config, processor):
    generation = make_sample("motion_generation", seed=5)
    continuation = make_sample("motion_continuation", num_chunks=3, context_chunks=2, seed=6)
    batch = processor.encode([generation, continuation], generation=True)
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].tolist() == [1, 1]
    assert int((batch["chunk_ids"][0] >= 0).sum()) == 0 and int((batch["chunk_ids"][1] >= 0).sum()) == 2 * K
    assert bool((batch["labels"] == -100).all())
    assert batch["frame_pixel_values"].shape[1] == 1  # only the first frame (LSP input)


def test_mano_is_tokenized_with_the_motion_tokenizer(config, processor):
    torch.manual_seed(0)
    tokenizer = MotionTokenizerModel(
        MotionTokenizerConfig(codebook_size=CODEBOOK, encoder_width=16, decoder_width=16, latent_dim=16)
    ).eval()
    rng = np.random.default_rng(0)
    mano = {
        "hand_pose": (rng.normal(size=(30, 45)) * 0.2).tolist(),
        "global_orient": rng.normal(size=(30, 3)).tolist(),
        "transl": rng.normal(size=(30, 3)).tolist(),
    }
    motion = HandMotion("right", torch.tensor(mano["hand_pose"]), torch.tensor(mano["global_orient"]),
                        torch.tensor(mano["transl"]))  # fmt: skip
    tokenizer.fit_normalization([motion])
    tokenizer.init_codebooks([motion])
    sample = dict(make_sample(seed=7), motion_tokens_right=None, mano_right=mano)
    with pytest.raises(ValueError, match="pass motion_tokenizer="):
        processor.encode(sample)
    batch = processor.encode(sample, motion_tokenizer=tokenizer)
    expected = tokenizer.encode_motion(motion) + config.motion_token_offset
    assert torch.equal(chunk_tokens(batch, 0, 0), expected[0]) and torch.equal(chunk_tokens(batch, 0, 1), expected[1])


def test_precomputed_frame_features(config):
    processor = tiny_processor(config, frames=False)
    batch = processor.encode(
        [make_sample(seed=8, frame_features=24), make_sample(num_chunks=1, seed=9, frame_features=24)]
    )
    assert "frame_pixel_values" not in batch and batch["frame_features"].shape == (2, 3, 24)
    with pytest.raises(ValueError, match="no frame_processor and no precomputed frame_features"):
        processor.encode(make_sample(seed=10))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(task_type="captioning"), "unknown task_type"),
        (dict(hands=[]), "'hands' must name at least one"),
        (dict(motion_tokens_right=None), "neither motion_tokens_right nor mano_right"),
        (dict(motion_tokens_right=[[0] * K]), r"motion tokens have shape \(1, 128\), expected \(2, 128\)"),
        (dict(motion_tokens_right=[[0] * K] * 2), "out of range .*vocab/codebook mismatch"),
    ],
)
def test_processor_errors(processor, changes, message):
    with pytest.raises(ValueError, match=message):
        processor.encode({**make_sample(seed=11), **changes})


def test_frames_of_every_image_mode_become_rgb(processor):
    """load_dataset decodes PNG frames to whatever mode they were saved in (RGBA crashed the image processors)."""
    from PIL import Image

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8))
    reference = processor(images=rgb, text="pick up the cup")
    grey = rgb.convert("L")
    for frame in (rgb.convert("RGBA"), np.asarray(rgb.convert("RGBA")), rgb.convert("P"), rgb.convert("CMYK")):
        batch = processor(images=frame, text="pick up the cup")
        assert batch["pixel_values"].shape == reference["pixel_values"].shape
        if not isinstance(frame, Image.Image) or frame.mode == "RGBA":  # opaque alpha: the same pixels
            torch.testing.assert_close(batch["pixel_values"], reference["pixel_values"])
    grey_reference = processor(images=grey.convert("RGB"), text="pick up the cup")["pixel_values"]
    for frame in (grey, grey.convert("LA"), np.asarray(grey), np.asarray(grey)[..., None]):
        torch.testing.assert_close(processor(images=frame, text="pick up the cup")["pixel_values"], grey_reference)
    deep = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)  # 16-bit grey: scaled to 8 bits, not clipped
    assert deep.mode.startswith("I")
    torch.testing.assert_close(processor(images=deep, text="pick up the cup")["pixel_values"], grey_reference,
                               atol=0.05, rtol=0)  # fmt: skip
