"""Motion generation: masked multi-pass decoding with the KV cache, ensembles, next-token decoding, left padding,
MANO through the motion tokenizer, and argument errors."""

from __future__ import annotations

import pytest
import torch
from pela_testing import (
    CODEBOOK,
    K,
    make_sample,
    single_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_processor,
)

from modeling_pela import HandMotion, MotionTokenizerConfig, MotionTokenizerModel, PELAForPretraining

PROMPT_KEYS = ("input_ids", "attention_mask", "pixel_values", "frame_pixel_values")


@pytest.fixture(scope="module")
def model() -> PELAForPretraining:
    return tiny_model(seed=1)


@pytest.fixture(scope="module")
def processor(model):
    return tiny_processor(model.config)


def prompt(processor, *samples: dict) -> dict:
    batch = processor(list(samples), generation=True)
    return {key: batch[key] for key in PROMPT_KEYS}


def teacher_forced_logits(model: PELAForPretraining, inputs: dict, sequences: torch.Tensor, mask_chunk: int | None):
    """Forward logits (B, N, K, 2C) of the generated sequences; ``mask_chunk``: chunk replaced by [MASK] first."""
    ids = sequences.clone()
    if mask_chunk is not None:
        chunk_ids = model.chunk_ids_from_input_ids(ids)
        ids[chunk_ids == mask_chunk] = model.config.mask_token_id
    pad = ids.shape[1] - inputs["attention_mask"].shape[1]
    attention = torch.cat([inputs["attention_mask"], inputs["attention_mask"].new_ones(ids.shape[0], pad)], 1)
    with torch.no_grad():
        return model(
            input_ids=ids,
            attention_mask=attention,
            pixel_values=inputs["pixel_values"],
            frame_pixel_values=inputs["frame_pixel_values"],
        ).logits


def test_single_pass_masked_decoding_matches_the_full_forward(model, processor):
    """With decode_ratio=1 each chunk is the argmax of one forward over [prefix, <mot>, [MASK] x K]: the cached
    generation path gives exactly what the training forward predicts, chunk after chunk."""
    inputs = prompt(processor, make_sample(hands=("left", "right"), seed=0))
    out = model.generate_motion(**inputs, hands="both", num_chunks=2, decode_ratio=1.0)
    assert out.motion_tokens.shape == (1, 2, 2, K) and out.hands == ("left", "right")
    assert out.sequences.shape == (1, inputs["input_ids"].shape[1] + 4 * (K + 2))
    chunks = out.motion_tokens.flatten(1, 2)  # chunk order: step 0 left, step 0 right, step 1 left, ...
    for chunk in range(4):
        logits = teacher_forced_logits(
            model, inputs, out.sequences[:, : inputs["input_ids"].shape[1] + (chunk + 1) * (K + 2)], chunk
        )
        assert torch.equal(logits[:, chunk].argmax(-1), chunks[:, chunk])


def test_multi_pass_decoding_uses_the_expected_number_of_passes(model, processor):
    inputs = prompt(processor, make_sample(seed=1))
    calls = []
    handle = model.get_decoder().register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        model.generate_motion(**inputs, hands="right", num_chunks=2, decode_ratio=0.05)
        two_chunks, calls[:] = len(calls), []
        out = model.generate_motion(**inputs, hands="right", num_chunks=1, decode_ratio=0.05)
    finally:
        handle.remove()
    passes = -(-K // round(0.05 * K))  # ~5% of the chunk per pass
    assert len(calls) == 1 + passes  # the prefix, then the passes; the last chunk is not run through the model again
    assert two_chunks == 1 + passes + 1 + passes  # appending the first chunk (its hidden state starts the second)
    tokens = out.motion_tokens[0, 0, 0]
    assert bool(((tokens[: K // 2] >= 0) & (tokens[: K // 2] < CODEBOOK)).all())
    assert bool(((tokens[K // 2 :] >= CODEBOOK) & (tokens[K // 2 :] < 2 * CODEBOOK)).all())
    # The sequence is well formed: the training forward accepts it.
    assert teacher_forced_logits(model, inputs, out.sequences, None).shape == (1, 1, K, 2 * CODEBOOK)


def test_ensembles(model, processor):
    inputs = prompt(processor, make_sample(seed=2))
    single = model.generate_motion(**inputs, hands="right", decode_ratio=0.25)
    same = model.generate_motion(**inputs, hands="right", decode_ratio=0.25, num_ensembles=3, ensemble_noise=0.0)
    assert torch.equal(single.motion_tokens, same.motion_tokens)  # identical members vote for the greedy result
    runs = [
        model.generate_motion(
            **inputs, hands="right", decode_ratio=0.25, num_ensembles=4, generator=torch.Generator().manual_seed(0)
        ).motion_tokens
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (1, 1, 1, K)


def test_next_token_decoding_with_kv_cache_is_greedy_teacher_forcing(processor):
    model = tiny_model(seed=2, objective="next_token")
    inputs = prompt(processor, make_sample(hands=("left", "right"), seed=3))
    out = model.generate_motion(**inputs, hands=["right", "left"], num_chunks=1)
    assert out.hands == ("left", "right")
    logits = teacher_forced_logits(model, inputs, out.sequences, None)
    assert torch.equal(logits.argmax(-1), out.motion_tokens.flatten(1, 2))
    with pytest.raises(ValueError, match="'vote' applies to masked decoding"):
        model.generate_motion(**inputs, hands="left", num_ensembles=2)


def test_left_padded_batch_matches_single_prompts(model, processor):
    short = make_sample(seed=4)
    long = dict(make_sample(seed=5), instruction="open the drawer and push the block to the left .")
    batch = prompt(processor, short, long)
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][1].all()
    together = model.generate_motion(**batch, hands="right", decode_ratio=0.5).motion_tokens
    for row, sample in enumerate((short, long)):
        alone = model.generate_motion(**prompt(processor, sample), hands="right", decode_ratio=0.5).motion_tokens
        assert torch.equal(together[row], alone[0])


def test_continuation_prompt_keeps_the_context_chunks(model, processor):
    sample = make_sample("motion_continuation", num_chunks=3, context_chunks=2, seed=6)
    inputs = prompt(processor, sample)
    assert int((inputs["input_ids"] == model.config.mot_start_token_id).sum()) == 2
    out = model.generate_motion(**inputs, hands="right", num_chunks=1, decode_ratio=1.0)
    logits = teacher_forced_logits(model, inputs, out.sequences, 2)
    assert torch.equal(logits[:, 2].argmax(-1), out.motion_tokens[:, 0, 0])


@pytest.fixture(scope="module")
def tokenizer() -> MotionTokenizerModel:
    torch.manual_seed(0)
    tokenizer_config = MotionTokenizerConfig(codebook_size=CODEBOOK, encoder_width=16, decoder_width=16, latent_dim=16)
    tokenizer = MotionTokenizerModel(tokenizer_config).eval()
    motions = [HandMotion("right", torch.randn(30, 45) * 0.2, torch.randn(30, 3), torch.randn(30, 3))]
    tokenizer.fit_normalization(motions)
    tokenizer.init_codebooks(motions)
    return tokenizer


@pytest.mark.parametrize("objective", ["masked_chunk", "next_token"])
def test_mean_ensembles_average_the_members_motions(objective, processor, tokenizer):
    """Members 1.. sample; the MANO is their mean motion (translations averaged, rotations averaged in 6-D)."""
    model = tiny_model(seed=3, objective=objective, align=False)
    inputs = prompt(processor, make_sample(seed=8), make_sample(seed=9))
    options = dict(hands="right", decode_ratio=0.25, motion_tokenizer=tokenizer, ensemble_method="mean")
    greedy = model.generate_motion(**inputs, **options)
    cold = model.generate_motion(**inputs, **options, num_ensembles=3, temperature=1e-7, ensemble_noise=0.0)
    assert torch.equal(cold.ensemble_motion_tokens[:, 1], cold.motion_tokens)  # near-zero temperature: greedy
    torch.testing.assert_close(cold.mano["right"]["transl"], greedy.mano["right"]["transl"])
    hot = [
        model.generate_motion(**inputs, **options, num_ensembles=4, generator=torch.Generator().manual_seed(1))
        for _ in range(2)
    ]
    assert torch.equal(hot[0].ensemble_motion_tokens, hot[1].ensemble_motion_tokens)  # reproducible
    members = hot[0].ensemble_motion_tokens
    assert members.shape == (2, 4, 1, 1, K) and torch.equal(members[:, 0], greedy.motion_tokens)
    assert not torch.equal(members[:, 1], members[:, 0])  # sampled members differ from the greedy one
    decoded = tokenizer.decode(members[:, :, 0, 0].flatten(0, 1), "right")
    torch.testing.assert_close(hot[0].mano["right"]["transl"], decoded["transl"].unflatten(0, (2, 4)).mean(1))
    with pytest.raises(ValueError, match="ensemble_method"):
        model.generate_motion(**inputs, hands="right", ensemble_method="median")


def test_mano_through_the_motion_tokenizer(model, processor, tokenizer):
    inputs = prompt(processor, make_sample(hands=("left", "right"), seed=7))
    out = model.generate_motion(**inputs, hands="both", num_chunks=2, decode_ratio=0.5, motion_tokenizer=tokenizer)
    assert set(out.mano) == {"left", "right"}
    for hand in ("left", "right"):
        assert out.mano[hand]["hand_pose"].shape == (1, 30, 15, 3)
        assert out.mano[hand]["global_orient"].shape == out.mano[hand]["transl"].shape == (1, 30, 3)
    second = tokenizer.decode(out.motion_tokens[:, 1, 1], "right")
    torch.testing.assert_close(out.mano["right"]["transl"][:, 15:], second["transl"])
    small = MotionTokenizerModel(
        MotionTokenizerConfig(codebook_size=64, encoder_width=16, decoder_width=16, latent_dim=16)
    )
    with pytest.raises(ValueError, match="vocab/codebook mismatch"):
        model.generate_motion(**inputs, hands="right", decode_ratio=1.0, motion_tokenizer=small)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(hands="middle"), "hands must be"),
        (dict(hands=["left", "left"]), "hands must be"),
        (dict(hands="left", num_chunks=0), "num_chunks must be a positive int"),
        (dict(hands="left", decode_ratio=0.0), r"decode_ratio must be in \(0, 1\]"),
        (dict(hands="left", num_ensembles=0), "num_ensembles must be a positive int"),
        (dict(hands="left", frame_pixel_values=None), "need frame_pixel_values"),
    ],
)
def test_generation_argument_errors(model, processor, kwargs, message):
    inputs = prompt(processor, make_sample(seed=8))
    with pytest.raises(ValueError, match=message):
        model.generate_motion(**{**inputs, **kwargs})
