"""The ``lerobot_policy_pela`` LeRobot plugin: registration, presets, the backbone (align layer, freezing, LoRA, a
pretrained PELA checkpoint and its processor), processors, forward / action queue, saving, reloading in a fresh process
and pushing to the Hub (mocked).

Everything runs on the tiny PELA preset and a tiny head; nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from lerobot.configs import FeatureType, PolicyFeature
from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS
from pela_testing import tiny_model, tiny_processor
from PIL import Image

from lerobot_policy_pela import PelaConfig, PelaPolicy, make_pela_pre_post_processors

STATE_DIM, ACTION_DIM, CHUNK, N_ACTION_STEPS = 4, 4, 8, 4
TASK = "Reach a goal position"


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(cameras: tuple[str, ...] = ("observation.image",), image_size: int = 64, **overrides) -> PelaConfig:
    config = PelaConfig(device="cpu", chunk_size=CHUNK, n_action_steps=N_ACTION_STEPS, **overrides)
    config.input_features = {key: PolicyFeature(FeatureType.VISUAL, (3, image_size, image_size)) for key in cameras}
    config.input_features["observation.state"] = PolicyFeature(FeatureType.STATE, (STATE_DIM,))
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}
    return config


def stats() -> dict[str, dict[str, torch.Tensor]]:
    return {
        "observation.state": {"mean": torch.full((STATE_DIM,), 0.5), "std": torch.full((STATE_DIM,), 0.2)},
        "action": {"mean": torch.zeros(ACTION_DIM), "std": torch.full((ACTION_DIM,), 0.5)},
    }


def observation(batch: int = 1, seed: int = 0, cameras: tuple[str, ...] = ("observation.image",), size: int = 64):
    generator = torch.Generator().manual_seed(seed)
    obs = {key: torch.rand(batch, 3, size, size, generator=generator) for key in cameras}
    obs["observation.state"] = torch.rand(batch, STATE_DIM, generator=generator)
    obs["task"] = [TASK] * batch
    return obs


def training_batch(batch: int = 3, seed: int = 0) -> dict:
    obs = observation(batch, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    obs["action"] = torch.randn(batch, CHUNK, ACTION_DIM, generator=generator) * 0.5
    obs["action_is_pad"] = torch.zeros(batch, CHUNK, dtype=torch.bool)
    obs["action_is_pad"][0, -3:] = True
    return obs


def build(config: PelaConfig, seed: int = 0) -> tuple[PelaPolicy, object, object]:
    torch.manual_seed(seed)
    policy = PelaPolicy(config)
    policy.preprocessor, policy.postprocessor = make_pela_pre_post_processors(config, stats())
    return policy, policy.preprocessor, policy.postprocessor


@pytest.fixture(scope="module")
def policy_and_processors():
    return build(tiny_config())


# -- registration and configuration -------------------------------------------------------------------------------


def test_plugin_registers_the_pela_policy_with_lerobot():
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class
    from lerobot.utils.import_utils import register_third_party_plugins

    register_third_party_plugins()
    assert PreTrainedConfig.get_choice_class("pela") is PelaConfig
    assert get_policy_class("pela") is PelaPolicy
    assert PelaPolicy.name == "pela" and PelaConfig().type == "pela"


def test_training_presets_follow_the_paper():
    config = tiny_config()
    optimizer = config.get_optimizer_preset()
    assert (optimizer.lr, optimizer.betas, optimizer.grad_clip_norm) == (1e-4, (0.9, 0.95), 1.0)
    layer = torch.nn.Linear(2, 2)
    scheduler = config.get_scheduler_preset().build(torch.optim.AdamW(layer.parameters(), lr=1e-4), 1000)
    rates = []
    for _ in range(1000):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert np.argmax(rates) in (49, 50)  # linear warm-up over 5% of the run, then cosine decay
    assert rates[50] == pytest.approx(1e-4, rel=1e-2) and rates[-1] < 2e-6 and rates[500] < rates[100]
    assert config.action_delta_indices == list(range(CHUNK)) and config.observation_delta_indices is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"n_action_steps": 20}, "n_action_steps"),
        ({"backbone_tuning": "partial"}, "backbone_tuning"),
        ({"motion_hands": "three"}, "motion_hands"),
        ({"align_layer": 0}, "align_layer"),
    ],
)
def test_invalid_configuration_raises(overrides, message):
    with pytest.raises(ValueError, match=message):
        PelaConfig(device="cpu", chunk_size=CHUNK, **{"n_action_steps": N_ACTION_STEPS, **overrides})


def test_missing_features_and_too_deep_align_layer_raise():
    config = tiny_config()
    del config.input_features["observation.state"]
    with pytest.raises(ValueError, match="observation.state"):
        PelaPolicy(config)
    with pytest.raises(ValueError, match="align_layer=9"):
        PelaPolicy(tiny_config(align_layer=9))  # the tiny backbone has 4 LLM layers


# -- backbone -----------------------------------------------------------------------------------------------------


def test_backbone_reads_the_chosen_layer_and_freezes_vision():
    policy, preprocessor, _ = build(tiny_config(align_layer=2))
    model = policy.backbone.model
    assert len(model.get_decoder().layers) == 2  # layers after the align layer are dropped
    reference = tiny_model(seed=0)  # same initialisation as the policy's backbone (seed 0, built first)
    reference.config.align_layer = 2
    batch = preprocessor(observation(2))
    with torch.no_grad():
        cond = policy.predictive_embeddings(batch)
        ids = torch.cat(
            [batch[OBS_LANGUAGE_TOKENS], policy.backbone.prompt_suffix(1, torch.device("cpu")).expand(2, -1)], 1
        )
        length = batch[OBS_LANGUAGE_TOKENS].shape[1]
        mask = torch.cat([batch[OBS_LANGUAGE_ATTENTION_MASK].long(), torch.ones(2, ids.shape[1] - length).long()], 1)
        frames = batch["observation.image"] * policy.backbone.frame_scale + policy.backbone.frame_shift
        expected = reference.get_predictive_embeddings(
            ids, mask, pixel_values=batch["observation.image"], frame_pixel_values=frames[:, None]
        ).predictive_embeddings
    assert cond.shape == (2, 128, 64)
    torch.testing.assert_close(cond, expected.flatten(1, 2))
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    assert all(name.startswith(("head.", "backbone.model.vlm.model.language_model.")) for name in trainable)
    assert any(name.startswith("head.") for name in trainable) and any("language_model" in n for n in trainable)
    for frozen in ("vision_tower", "multi_modal_projector", "frame_encoder", "perceiver"):
        assert not any(frozen in name for name in trainable), frozen
    assert {id(p) for p in policy.get_optim_params()} == {id(p) for p in policy.parameters() if p.requires_grad}
    policy.train()  # the frozen parts keep eval mode: no batch statistics of the latent standardisation
    assert model.get_decoder().training
    for frozen in (model.perceiver, model.frame_encoder, model.vlm.model.vision_tower):
        assert not any(module.training for module in frozen.modules())


def test_lora_and_frozen_tuning():
    lora, preprocessor, _ = build(tiny_config(backbone_tuning="lora", lora_rank=4))
    trainable = [name for name, p in lora.named_parameters() if p.requires_grad]
    backbone_trainable = [name for name in trainable if name.startswith("backbone.")]
    assert backbone_trainable and all("lora_" in name and "language_model" in name for name in backbone_trainable)
    loss, _ = lora.forward(preprocessor(training_batch()))
    loss.backward()
    assert all(p.grad is not None for name, p in lora.named_parameters() if "lora_B" in name)
    frozen, preprocessor, _ = build(tiny_config(backbone_tuning="frozen"))
    assert all(name.startswith("head.") for name, p in frozen.named_parameters() if p.requires_grad)


def test_pretrained_backbone_checkpoint_with_its_processor(tmp_path):
    """A PELA checkpoint saved with its PELAProcessor: weights, tokenizer and image statistics are the checkpoint's,
    and the policy's embeddings equal the model's on the processor-built prompt."""
    model = tiny_model(seed=5)
    processor = tiny_processor(model.config)
    backbone = tmp_path / "backbone"
    model.save_pretrained(backbone)
    processor.save_pretrained(backbone)
    config = tiny_config(image_size=56, pretrained_backbone=str(backbone), backbone_tuning="frozen")
    policy, preprocessor, _ = build(config)
    loaded = policy.backbone.model.state_dict()
    for name, value in model.state_dict().items():
        if name in loaded:
            assert torch.equal(loaded[name], value), name
    inputs = config.backbone_inputs
    assert inputs["has_tokenizer"] and inputs["image_mean"] == pytest.approx(list(processor.image_processor.image_mean))
    image = (np.random.default_rng(0).random((56, 56, 3)) * 255).astype(np.uint8)
    sample = {
        "id": "robot", "task_type": "video_only", "instruction": "pick up a cup", "hands": ["right"], "num_chunks": 1,
        "first_frame": Image.fromarray(image), "has_motion_labels": False,
    }  # fmt: skip
    prompt = processor(sample)
    with torch.no_grad():
        expected = model.get_predictive_embeddings(
            prompt["input_ids"], prompt["attention_mask"], pixel_values=prompt["pixel_values"],
            frame_pixel_values=prompt["frame_pixel_values"][:, :1],
        ).predictive_embeddings.flatten(1, 2)  # fmt: skip
        obs = {"observation.image": torch.from_numpy(image).permute(2, 0, 1)[None] / 255.0, "task": ["pick up a cup"]}
        obs["observation.state"] = torch.zeros(1, STATE_DIM)
        cond = policy.predictive_embeddings(preprocessor(obs))
    torch.testing.assert_close(cond, expected, atol=1e-5, rtol=1e-4)
    # the saved pre-processor carries the instruction tokenizer: it loads after the backbone folder is gone
    from lerobot.processor import PolicyProcessorPipeline, batch_to_transition, transition_to_batch

    preprocessor.save_pretrained(tmp_path / "policy")
    shutil.rmtree(backbone)
    reloaded = PolicyProcessorPipeline.from_pretrained(
        tmp_path / "policy",
        "policy_preprocessor.json",
        to_transition=batch_to_transition,
        to_output=transition_to_batch,
    )
    assert torch.equal(reloaded(obs)[OBS_LANGUAGE_TOKENS], preprocessor(obs)[OBS_LANGUAGE_TOKENS])


# -- processors, training forward, inference ----------------------------------------------------------------------


def test_preprocessor_resizes_normalises_and_tokenises(policy_and_processors, tmp_path):
    _, preprocessor, _ = policy_and_processors
    obs = observation(2, size=96)
    batch = preprocessor(obs)
    resized = torch.nn.functional.interpolate(obs["observation.image"], size=(56, 56), mode="bilinear", antialias=True)
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    torch.testing.assert_close(batch["observation.image"], (resized - mean) / std)  # the tiny backbone's 56 px
    tokens, mask = batch[OBS_LANGUAGE_TOKENS][0], batch[OBS_LANGUAGE_ATTENTION_MASK][0]
    assert tokens.shape == (48,) and not mask[: 48 - len(TASK)].any() and mask[-len(TASK) :].all()  # left padding
    assert tokens[-len(TASK) :].tolist() == [b + 3 for b in TASK.encode()]  # byte-level, no special tokens
    torch.testing.assert_close(batch["observation.state"], (obs["observation.state"] - 0.5) / 0.2)
    preprocessor.save_pretrained(tmp_path)
    from lerobot.processor import PolicyProcessorPipeline, batch_to_transition, transition_to_batch

    reloaded = PolicyProcessorPipeline.from_pretrained(
        tmp_path, "policy_preprocessor.json", to_transition=batch_to_transition, to_output=transition_to_batch
    )
    again = reloaded(observation(2, size=96))
    for key in ("observation.image", "observation.state", OBS_LANGUAGE_TOKENS):
        torch.testing.assert_close(again[key], batch[key])


def test_forward_loss_gradients_and_reduction(policy_and_processors):
    policy, preprocessor, _ = policy_and_processors
    policy.train()
    batch = preprocessor(training_batch(3))
    loss, info = policy.forward(batch)
    assert loss.ndim == 0 and info["flow_matching_loss"] == pytest.approx(loss.item())
    loss.backward()
    assert policy.head.action_decoder[-1].weight.grad is not None
    assert policy.backbone.model.get_decoder().layers[0].mlp.up_proj.weight.grad is not None
    assert policy.backbone.model.frame_encoder.embeddings.patch_embeddings.weight.grad is None
    policy.zero_grad()
    per_sample, _ = policy.forward(batch, reduction="none")
    assert per_sample.shape == (3,)


def test_select_action_runs_the_backbone_once_per_chunk(policy_and_processors):
    policy, preprocessor, postprocessor = policy_and_processors
    policy.reset()
    batch = preprocessor(observation(2))
    with mock.patch.object(policy.backbone, "forward", wraps=policy.backbone.forward) as backbone:
        torch.manual_seed(0)
        actions = [policy.select_action(batch) for _ in range(2 * N_ACTION_STEPS)]
    assert backbone.call_count == 2 and all(a.shape == (2, ACTION_DIM) for a in actions)
    torch.manual_seed(0)
    chunk = policy.predict_action_chunk(batch)
    assert chunk.shape == (2, CHUNK, ACTION_DIM)
    torch.testing.assert_close(torch.stack(actions[:N_ACTION_STEPS], 1), chunk[:, :N_ACTION_STEPS])
    assert postprocessor(chunk).shape == chunk.shape
    policy.reset()
    assert len(policy._action_queue) == 0


def test_two_camera_libero_style_policy():
    """LIBERO datasets have two cameras, an 8-D state and 7-D actions; every camera is one image block."""
    cameras = ("observation.images.image", "observation.images.image2")
    config = tiny_config(cameras=cameras, image_size=128)
    config.input_features["observation.state"] = PolicyFeature(FeatureType.STATE, (8,))
    config.output_features["action"] = PolicyFeature(FeatureType.ACTION, (7,))
    torch.manual_seed(0)
    policy = PelaPolicy(config)
    preprocessor, _ = make_pela_pre_post_processors(config)
    obs = observation(2, cameras=cameras, size=128)
    obs["observation.state"] = torch.rand(2, 8)
    suffix = policy.backbone.prompt_suffix(2, torch.device("cpu"))
    assert int((suffix == policy.backbone.model.config.image_token_id).sum()) == 2 * 4
    assert policy.predict_action_chunk(preprocessor(obs)).shape == (2, CHUNK, 7)


# -- saving, reloading, Hub ---------------------------------------------------------------------------------------

RELOAD_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from lerobot_policy_pela.modeling_pela import PelaPolicy
    torch.set_num_threads(1)
    policy = PelaPolicy.from_pretrained(sys.argv[1])
    obs = torch.load(sys.argv[2])
    torch.manual_seed(1234)
    batch = policy.preprocessor(obs)
    chunk = policy.postprocessor(policy.predict_action_chunk(batch))
    policy.reset()
    torch.manual_seed(1234)
    first = policy.postprocessor(policy.select_action(batch))
    torch.save({"chunk": chunk, "first": first}, sys.argv[3])
    """
)


def test_save_pretrained_and_reload_in_a_fresh_process(policy_and_processors, tmp_path):
    policy, preprocessor, postprocessor = policy_and_processors
    policy.eval()
    directory = tmp_path / "policy"
    policy.save_pretrained(directory, card_kwargs={"dataset_repo_id": "local/pela_metaworld"})
    files = {path.name for path in directory.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "policy_preprocessor.json"} <= files
    assert {"policy_postprocessor.json"} <= files and any(
        name.endswith("normalizer_processor.safetensors") for name in files
    )
    config = json.loads((directory / "config.json").read_text())
    assert config["type"] == "pela" and config["backbone_config"]["model_type"] == "pela"
    obs = observation(2, seed=3, size=96)
    torch.save(obs, tmp_path / "obs.pt")
    torch.manual_seed(1234)
    batch = preprocessor(obs)
    expected_chunk = postprocessor(policy.predict_action_chunk(batch))
    policy.reset()
    torch.manual_seed(1234)
    expected_first = postprocessor(policy.select_action(batch))
    policy.reset()
    script = tmp_path / "reload.py"
    script.write_text(RELOAD_SCRIPT)
    subprocess.run(
        [sys.executable, str(script), str(directory), str(tmp_path / "obs.pt"), str(tmp_path / "out.pt")],
        check=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    out = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(out["chunk"], expected_chunk, rtol=0, atol=0)
    torch.testing.assert_close(out["first"], expected_first, rtol=0, atol=0)


def test_model_card_from_hub_cards(policy_and_processors):
    policy, _, _ = policy_and_processors
    card = policy.model_card(dataset_repo_id="me/metaworld", metrics={"reach-v3 success (%)": 40.0})
    data = card.data.to_dict()
    assert {"lerobot", "robotics", "vla"} <= set(data["tags"]) and data["license"] == "apache-2.0"
    assert data["datasets"] == ["me/metaworld"] and data["library_name"] == "lerobot"
    text = str(card)
    assert "| reach-v3 success (%) | 40.0 |" in text and "Base model" in text and "random initialisation" in text


def test_the_policy_records_its_training_dataset_for_the_card(tmp_path):
    from types import SimpleNamespace

    torch.manual_seed(0)
    policy = PelaPolicy(tiny_config(), dataset_meta=SimpleNamespace(repo_id="me/metaworld-reach"))  # as make_policy
    assert policy.config.dataset_repo_id == "me/metaworld-reach"
    policy.save_pretrained(tmp_path)  # a plain checkpoint save, no card arguments
    assert json.loads((tmp_path / "config.json").read_text())["dataset_repo_id"] == "me/metaworld-reach"
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.datasets == ["me/metaworld-reach"] and "`me/metaworld-reach`" in card.text


def test_push_to_hub_uploads_weights_processors_and_card(policy_and_processors):
    policy, _, _ = policy_and_processors
    uploaded = {}

    def upload_folder(*, folder_path, repo_id, **kwargs):
        uploaded["repo_id"] = repo_id
        uploaded["files"] = {path.name: path.read_bytes() for path in folder_path.iterdir()}
        return "https://huggingface.co/me/pela-metaworld/commit/0"

    with mock.patch("lerobot.utils.hub.HfApi") as api_class:
        api = api_class.return_value
        api.create_repo.return_value = mock.Mock(repo_id="me/pela-metaworld")
        api.upload_folder.side_effect = upload_folder
        policy.push_to_hub("me/pela-metaworld", card_kwargs={"metrics": {"push-v3 success (%)": 10.0}})
    api.create_repo.assert_called_once()
    assert uploaded["repo_id"] == "me/pela-metaworld"
    files = uploaded["files"]
    assert {"config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"} <= set(files)
    readme = files["README.md"].decode()
    assert "- vla" in readme and "push-v3 success (%)" in readme
