"""GRQ-VAE motion tokenizer: token layout, exact decode, mirroring, errors, training, saving and remote-code loading.

All tests use a tiny configuration and synthetic smooth motions (low-frequency sinusoids driving a few finger
"synergies", the wrist rotation and the translation). One short training run is shared by the tests that need a
trained model.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from remote_code import run_without_project
from transformers import AutoModel

from modeling_pela.hand_motion import HandMotion
from modeling_pela.mano import BuiltinHandKinematics
from modeling_pela.modeling_motion_tokenizer import MotionTokenizerConfig, MotionTokenizerModel
from trainers.metrics.hand_motion import compute_hand_motion_metrics
from trainers.tokenizer_trainer import MotionChunkDataset, evaluate_motion_tokenizer, train_motion_tokenizer

CODEBOOK = 128
TRAIN_STEPS = 60
STAT_KEYS = ("recon_loss", "commit_loss", "wrist_usage", "finger_usage", "wrist_perplexity", "finger_perplexity")


def tiny_config(**overrides) -> MotionTokenizerConfig:
    values = dict(
        codebook_size=CODEBOOK, encoder_width=32, decoder_width=32, latent_dim=32, res_depth=2, ema_decay=0.9,
        dead_code_threshold=0.1,
    )  # fmt: skip
    values.update(overrides)
    return MotionTokenizerConfig(**values)


def synthetic_motions(num: int, frames: int, seed: int, synergies: int = 4) -> list[HandMotion]:
    """Alternating right/left hands; every MANO parameter is a sum of sinusoids below 0.7 Hz (15 fps)."""
    mixing = torch.Generator().manual_seed(1234)  # the same finger synergies for every split
    synergy = torch.randn(synergies, 45, generator=mixing) * 0.25
    rest = torch.randn(45, generator=mixing) * 0.2
    rng = torch.Generator().manual_seed(seed)
    t = torch.arange(frames, dtype=torch.float32)[:, None] / 15.0

    def waves(dims: int) -> torch.Tensor:  # (frames, dims)
        freq = 0.1 + 0.6 * torch.rand(2, 1, dims, generator=rng)
        phase = 2 * math.pi * torch.rand(2, 1, dims, generator=rng)
        amp = torch.rand(2, 1, dims, generator=rng)
        return (amp * torch.sin(2 * math.pi * freq * t + phase)).sum(0)

    return [
        HandMotion(
            side="left" if i % 2 else "right",
            hand_pose=(rest + waves(synergies) @ synergy).reshape(frames, 15, 3),
            global_orient=torch.tensor([1.2, 0.0, 0.3]) + 0.4 * waves(3),
            transl=torch.tensor([0.0, 0.05, 0.45]) + 0.04 * waves(3),
        )
        for i in range(num)
    ]


def batch_of(motions: list[HandMotion]) -> dict[str, torch.Tensor]:
    return MotionChunkDataset(motions).tensors


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train_motions() -> list[HandMotion]:
    return synthetic_motions(64, 90, seed=0)


@pytest.fixture(scope="module")
def eval_motions() -> list[HandMotion]:
    return synthetic_motions(16, 90, seed=1)


@pytest.fixture(scope="module")
def fitted_model(train_motions) -> MotionTokenizerModel:
    """Untrained tiny tokenizer with fitted normalisation and k-means-initialised codebooks, in eval mode."""
    torch.manual_seed(0)
    model = MotionTokenizerModel(tiny_config())
    model.fit_normalization(train_motions)
    model.init_codebooks(train_motions)
    return model.eval()


@pytest.fixture(scope="module")
def trained(train_motions, eval_motions, tmp_path_factory):
    """One short training run: (model, metrics, output_dir)."""
    output_dir = tmp_path_factory.mktemp("motion_tokenizer")
    model, metrics = train_motion_tokenizer(
        train_motions, eval_motions, output_dir, config=tiny_config(), max_steps=TRAIN_STEPS, batch_size=32,
        learning_rate=1e-2, seed=0, logging_steps=20, use_cpu=True,
    )  # fmt: skip
    return model, metrics, output_dir


# ------------------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------------------


def test_config_derived_sizes_and_validation():
    config = MotionTokenizerConfig()
    assert (config.tokens_per_part, config.tokens_per_chunk, config.vocab_size) == (64, 128, 8192)
    assert (config.wrist_dim, config.finger_dim, config.latent_length) == (9, 90, 4)
    assert MotionTokenizerConfig(finger_use_joint_positions=True).finger_dim == 150
    assert MotionTokenizerConfig(num_quantizers=2).tokens_per_chunk == 32  # a CPU-sized layout
    bad = {
        r"divisible by 2\*\*down_t": dict(padded_length=18),
        "must be >= chunk_length": dict(padded_length=12, down_t=1, num_quantizers=4),
        "latent_dim": dict(latent_dim=33),
        "ema_decay": dict(ema_decay=1.0),
        "codebook_size": dict(codebook_size=1),
    }
    for message, kwargs in bad.items():
        with pytest.raises(ValueError, match=message):
            MotionTokenizerConfig(**kwargs)
    config = tiny_config()
    config.latent_dim = 33  # mutated after construction: the model re-checks it
    with pytest.raises(ValueError, match="latent_dim"):
        MotionTokenizerModel(config)


# ------------------------------------------------------------------------------------------------------------------
# Layout, exact decoding, mirroring
# ------------------------------------------------------------------------------------------------------------------


def test_token_layout_and_decode_shapes(fitted_model, eval_motions):
    batch = batch_of(eval_motions[:4])
    ids = fitted_model.encode(batch["hand_pose"], batch["global_orient"], batch["transl"], batch["is_left"])
    assert ids.shape == (len(batch["is_left"]), 128) and ids.dtype == torch.int64
    assert bool(((ids[:, :64] >= 0) & (ids[:, :64] < CODEBOOK)).all())
    assert bool(((ids[:, 64:] >= CODEBOOK) & (ids[:, 64:] < 2 * CODEBOOK)).all())
    decoded = fitted_model.decode(ids, batch["is_left"])
    n = len(ids)
    assert {k: tuple(v.shape) for k, v in decoded.items()} == {
        "hand_pose": (n, 15, 15, 3), "global_orient": (n, 15, 3), "transl": (n, 15, 3),
    }  # fmt: skip


def test_decode_of_encode_is_the_quantized_reconstruction(fitted_model, eval_motions):
    batch = batch_of(eval_motions[:4])
    output = fitted_model(**batch)
    ids = fitted_model.encode(**batch)
    assert torch.equal(ids, output.token_ids)
    decoded = fitted_model.decode(ids, batch["is_left"])
    for key in ("hand_pose", "global_orient", "transl"):
        torch.testing.assert_close(decoded[key], output[key], atol=1e-5, rtol=0)
    # The wrist and finger halves are independent: swapping the wrist halves of two chunks swaps their wrists only.
    swapped = ids.clone()
    swapped[:, :64] = ids.flip(0)[:, :64]
    is_left = batch["is_left"][:1].expand(len(ids))  # one side for all, so that chunk order does not matter
    plain, mixed = fitted_model.decode(ids, is_left), fitted_model.decode(swapped, is_left)
    assert torch.equal(mixed["hand_pose"], plain["hand_pose"])
    assert torch.equal(mixed["transl"], plain["transl"].flip(0))
    assert torch.equal(mixed["global_orient"], plain["global_orient"].flip(0))


def test_token_order_is_group_step_depth(fitted_model, eval_motions):
    batch = batch_of(eval_motions[:2])
    ids = fitted_model.encode(**batch)
    features = fitted_model._normalized_features(
        batch["hand_pose"], batch["global_orient"], batch["transl"], batch["is_left"]
    )
    for offset, part in enumerate(("wrist", "finger")):
        _, _, indices = getattr(fitted_model, part).quantize(fitted_model._pad(features[part]))
        assert indices.shape == (2, len(ids), 4, 8)  # (group, batch, step, depth)
        for group, step, depth in ((0, 0, 0), (0, 0, 7), (0, 1, 0), (1, 0, 0), (1, 3, 7)):
            position = offset * 64 + (group * 4 + step) * 8 + depth
            assert torch.equal(ids[:, position], indices[group, :, step, depth] + offset * CODEBOOK)


def test_left_hand_is_encoded_as_its_mirror_image(fitted_model, eval_motions):
    left = [m for m in eval_motions if m.side == "left"][:3]
    mirrored = [m.mirrored() for m in left]  # right hands
    left_batch, right_batch = batch_of(left), batch_of(mirrored)
    assert bool(left_batch["is_left"].all()) and not bool(right_batch["is_left"].any())
    left_ids = fitted_model.encode(**left_batch)
    assert torch.equal(left_ids, fitted_model.encode(**right_batch))
    as_left = fitted_model.decode(left_ids, "left")
    as_right = fitted_model.decode(left_ids, "right")
    flip_rot, flip_pos = torch.tensor([1.0, -1.0, -1.0]), torch.tensor([-1.0, 1.0, 1.0])
    torch.testing.assert_close(as_left["hand_pose"], as_right["hand_pose"] * flip_rot)
    torch.testing.assert_close(as_left["global_orient"], as_right["global_orient"] * flip_rot)
    torch.testing.assert_close(as_left["transl"], as_right["transl"] * flip_pos)
    # HandMotion convenience: chunking, side and fps are kept.
    motion_ids = fitted_model.encode_motion(left[0])
    assert motion_ids.shape == (6, 128)
    decoded = fitted_model.decode_motion(motion_ids, "left", fps=15.0)
    assert (decoded.side, decoded.num_frames, decoded.fps) == ("left", 90, 15.0)
    torch.testing.assert_close(decoded.transl[:15], as_left["transl"][0])


def test_joint_position_features_are_wrist_relative(train_motions, eval_motions):
    torch.manual_seed(0)
    model = MotionTokenizerModel(tiny_config(finger_use_joint_positions=True))
    model.fit_normalization(train_motions)
    left = eval_motions[1]
    chunk = {k: v[:1] for k, v in batch_of([left]).items()}
    _, finger = model._raw_features(chunk["hand_pose"], chunk["global_orient"], chunk["transl"], chunk["is_left"])
    assert finger.shape == (1, 15, 150)
    joints = BuiltinHandKinematics().joints(  # mirrored to a right hand, wrist frame = world frame
        chunk["hand_pose"] * torch.tensor([1.0, -1.0, -1.0]), torch.zeros(1, 15, 3), torch.zeros(1, 15, 3), "right"
    )
    torch.testing.assert_close(finger[..., 90:], joints[..., 1:, :].flatten(-2))
    output = model.eval()(**batch_of(eval_motions[:2]))
    assert output.finger_features.shape[-1] == 150 and output.token_ids.shape[-1] == 128


# ------------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------------


def test_helpful_errors(fitted_model, eval_motions):
    batch = batch_of(eval_motions[:2])
    with pytest.raises(ValueError, match="fit_normalization"):
        MotionTokenizerModel(tiny_config()).encode(**batch)
    untrained = MotionTokenizerModel(tiny_config())
    untrained.fit_normalization(eval_motions)
    # encoding must not silently k-means-initialise the codebooks (per data-loading process / rank)
    for call in (lambda: untrained.encode(**batch), lambda: untrained.decode(fitted_model.encode(**batch), "right")):
        with pytest.raises(ValueError, match="codebooks are not initialised"):
            call()
    untrained.init_codebooks(eval_motions)
    assert untrained.codebooks_initialized and fitted_model.codebooks_initialized
    first = untrained.encode(**batch)
    assert torch.equal(untrained.encode(**batch), first)
    nan_pose = batch["hand_pose"].clone()
    nan_pose[1, 3, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"hand_pose contains NaN or inf \(first in chunk 1"):
        fitted_model.encode(nan_pose, batch["global_orient"], batch["transl"], batch["is_left"])
    with pytest.raises(ValueError, match=r"expected hand_pose \(B, 15, 15, 3\)"):
        fitted_model.encode(batch["hand_pose"][:, :14], batch["global_orient"], batch["transl"], batch["is_left"])
    with pytest.raises(ValueError, match="transl"):
        fitted_model(batch["hand_pose"], batch["global_orient"], batch["transl"][..., :2], batch["is_left"])
    with pytest.raises(ValueError, match="is_left must have shape"):
        fitted_model.encode(batch["hand_pose"], batch["global_orient"], batch["transl"], torch.tensor([True]))
    with pytest.raises(ValueError, match="side must be a list"):
        fitted_model.encode(batch["hand_pose"], batch["global_orient"], batch["transl"], ["left", "up"])
    ids = fitted_model.encode(**batch)
    wrong = ids.clone()
    wrong[0, 70] = 3  # a wrist id in a finger position
    with pytest.raises(ValueError, match=r"token_ids\[0, 70\] = 3 is not a finger id.*\[128, 256\)"):
        fitted_model.decode(wrong, batch["is_left"])
    wrong = ids.clone()
    wrong[1, 5] = CODEBOOK
    with pytest.raises(ValueError, match=r"token_ids\[1, 5\] = 128 is not a wrist id"):
        fitted_model.decode(wrong, batch["is_left"])
    with pytest.raises(ValueError, match=r"shape \(B, 128\)"):
        fitted_model.decode(ids[:, :64], batch["is_left"])
    with pytest.raises(ValueError, match="integer tensor"):
        fitted_model.decode(ids.float(), batch["is_left"])
    with pytest.raises(ValueError, match="fewer than one chunk"):
        fitted_model.encode_motion(eval_motions[0].slice(0, 10))


# ------------------------------------------------------------------------------------------------------------------
# Training, logs, saving
# ------------------------------------------------------------------------------------------------------------------


def mean_pose_mpjpe(model: MotionTokenizerModel, motions: list[HandMotion]) -> float:
    """MPJPE (cm) of predicting the training mean features (the normalisation mean) for every frame."""
    batch = batch_of(motions)
    n = len(batch["is_left"])
    zeros = {"wrist": torch.zeros(n, 15, model.config.wrist_dim), "finger": torch.zeros(n, 15, model.config.finger_dim)}
    mean_pose = model._to_mano(zeros, batch["is_left"])
    kinematics = BuiltinHandKinematics()

    def joints(source: dict[str, torch.Tensor]) -> torch.Tensor:
        out = torch.empty(n, 15, 21, 3)
        for side, mask in (("left", batch["is_left"]), ("right", ~batch["is_left"])):
            out[mask] = kinematics.joints(
                source["hand_pose"][mask], source["global_orient"][mask], source["transl"][mask], side
            )
        return out

    return compute_hand_motion_metrics(joints(mean_pose).double().numpy(), joints(batch).double().numpy())["mpjpe"]


def test_training_reduces_reconstruction_error(trained, fitted_model, eval_motions):
    model, metrics, _ = trained
    before = evaluate_motion_tokenizer(fitted_model, eval_motions)["mpjpe"]
    baseline = mean_pose_mpjpe(model, eval_motions)
    print(f"MPJPE (cm) before {before:.3f}, after {metrics['mpjpe']:.3f}, mean-pose baseline {baseline:.3f}")
    assert metrics["kinematics"] == "builtin" and metrics["num_chunks"] == 96
    assert metrics["mpjpe"] < 0.8 * before
    assert metrics["mpjpe"] < 0.8 * baseline
    assert metrics["pa_mpjpe"] <= metrics["mpjpe"]
    for part in ("wrist", "finger"):
        assert 0.1 < metrics[f"{part}_usage"] <= 1.0
        assert 1.0 < metrics[f"{part}_perplexity"] <= CODEBOOK


def test_trainer_logs_losses_usage_and_perplexity(trained):
    _, metrics, output_dir = trained
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    train_logs = [log for log in history if "loss" in log]
    assert len(train_logs) == TRAIN_STEPS // 20
    for log in train_logs:
        assert set(STAT_KEYS) <= set(log), log
        assert 0.0 < log["wrist_usage"] <= 1.0 and 1.0 <= log["finger_perplexity"] <= CODEBOOK
        assert log["loss"] == pytest.approx(log["recon_loss"] + 0.02 * log["commit_loss"], rel=1e-4)
    assert train_logs[-1]["recon_loss"] < train_logs[0]["recon_loss"]
    eval_log = next(log for log in history if "eval_loss" in log)
    assert {f"eval_{key}" for key in STAT_KEYS} <= set(eval_log)
    assert metrics["eval_recon_loss"] == eval_log["eval_recon_loss"]
    assert json.loads((output_dir / "eval_results.json").read_text())["mpjpe"] == pytest.approx(metrics["mpjpe"])


def test_save_and_load_round_trip(trained, eval_motions):
    model, _, output_dir = trained
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "pela_motion_tokenizer"
    assert "modeling_motion_tokenizer.MotionTokenizerModel" in str(config["auto_map"]["AutoModel"])
    assert "configuration_motion_tokenizer.MotionTokenizerConfig" in str(config["auto_map"]["AutoConfig"])
    assert (output_dir / "model.safetensors").exists()
    batch = batch_of(eval_motions[:4])
    ids = model.encode(**batch)
    for loaded in (MotionTokenizerModel.from_pretrained(output_dir), AutoModel.from_pretrained(output_dir)):
        assert type(loaded) is MotionTokenizerModel
        assert bool(loaded.normalization_fitted)
        for name in ("wrist_mean", "wrist_std", "finger_mean", "finger_std"):
            assert torch.equal(getattr(loaded, name), getattr(model, name))
        assert all(bool(torch.isfinite(buffer.float()).all()) for buffer in loaded.buffers())
        assert torch.equal(loaded.encode(**batch), ids)


def test_remote_code_load_in_a_fresh_process(trained, eval_motions, tmp_path):
    model, _, output_dir = trained
    batch = batch_of(eval_motions[:4])
    torch.save(batch, tmp_path / "batch.pt")
    script = f"""
        import json
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
        assert "modeling_pela" not in sys.modules
        ids = model.encode(**torch.load("batch.pt"))
        print("IDS=" + json.dumps([type(model).__module__, ids.tolist()]))
        """
    result = run_without_project(script, tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    module, remote_ids = json.loads(result.stdout.split("IDS=")[-1])
    assert module.startswith("transformers_modules.")
    assert torch.equal(torch.tensor(remote_ids), model.encode(**batch))
