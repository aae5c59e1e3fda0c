"""MetaWorld on CPU through unmodified LeRobot: the scripted-expert recorder writes a LeRobotDataset v3, ``lerobot-train
--policy.type=pela`` trains on it, LeRobot's evaluation loop runs the checkpoint in closed loop, ``lerobot-eval`` runs
it (slow: MetaWorld episodes last 500 rendered steps), and LIBERO is reachable by configuration.

The recording, training and evaluation are kept tiny (a few frames and steps); the point is the plumbing, not success.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from lerobot_policy_pela.metaworld_benchmark import (
    Variant,
    VariantResult,
    evaluate_on_metaworld,
    lerobot_script,
    results_table,
)
from lerobot_policy_pela.metaworld_data import record_metaworld_dataset

from lerobot_policy_pela import PelaConfig

REPO_ID = "local/pela_metaworld_test"
SUBPROCESS_ENV = {**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("metaworld") / "dataset"
    summary = record_metaworld_dataset(
        root, repo_id=REPO_ID, tasks=["reach-v3"], episodes_per_task=2, max_steps=6, keep_failures=True
    )
    return root, summary


@pytest.fixture(scope="module")
def checkpoint(recording, tmp_path_factory):
    """``lerobot-train --policy.type=pela`` for 2 steps on the recording (unmodified LeRobot CLI)."""
    root, _ = recording
    output = tmp_path_factory.mktemp("train") / "run"
    command = [
        lerobot_script("lerobot-train"), "--policy.type=pela", f"--dataset.repo_id={REPO_ID}",
        f"--dataset.root={root}", f"--output_dir={output}", "--steps=2", "--batch_size=2", "--num_workers=0",
        "--save_freq=2", "--log_freq=1", "--policy.device=cpu", "--policy.push_to_hub=false", "--wandb.enable=false",
        "--policy.chunk_size=8", "--policy.n_action_steps=4", "--policy.tokenizer_max_length=24",
    ]  # fmt: skip
    result = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "flow_matching_loss" in result.stdout + result.stderr
    return output / "checkpoints" / "last" / "pretrained_model"


def test_recorder_writes_a_lerobot_dataset_with_instructions(recording):
    from lerobot.datasets import LeRobotDataset

    root, summary = recording
    assert summary.episodes == {"reach-v3": 2} and summary.frames == {"reach-v3": 12}
    assert summary.instructions == {"reach-v3": "Reach a goal position"}
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["total_frames"] == 12
    assert info["features"]["observation.image"]["dtype"] == "image"  # stored as images, not video
    assert info["features"]["observation.image"]["shape"] == [96, 96, 3]
    assert not any(root.rglob("*.mp4"))
    dataset = LeRobotDataset(REPO_ID, root=root)
    item = dataset[3]
    assert item["observation.image"].shape == (3, 96, 96) and item["observation.state"].shape == (4,)
    assert item["task"] == "Reach a goal position"
    assert float(item["action"].abs().max()) <= 1.0


def test_recorder_rejects_bad_requests(tmp_path, recording):
    with pytest.raises(ValueError, match="no MetaWorld scripted expert"):
        record_metaworld_dataset(tmp_path / "x", tasks=["fly-to-the-moon-v3"])
    with pytest.raises(FileExistsError, match="overwrite"):
        record_metaworld_dataset(recording[0], tasks=["reach-v3"])


def test_lerobot_train_checkpoint_runs_in_closed_loop(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["type"] == "pela" and config["chunk_size"] == 8
    assert (checkpoint / "policy_preprocessor.json").exists() and (checkpoint / "model.safetensors").exists()
    results = evaluate_on_metaworld(checkpoint, ["reach-v3"], n_episodes=1, max_steps=12, eval_seed=100_000)
    assert set(results) == {"reach-v3"}
    assert results["reach-v3"]["seeds"] == [100_000] and len(results["reach-v3"]["successes"]) == 1
    assert 0.0 <= results["reach-v3"]["success_rate"] <= 100.0


def test_comparison_helpers():
    assert Variant.parse("scratch") == Variant("scratch", None)
    assert Variant.parse("PELA w/o align=/ckpt/a") == Variant("PELA w/o align", "/ckpt/a")
    with pytest.raises(ValueError, match="NAME=CHECKPOINT"):
        Variant.parse("/ckpt/a")
    table = results_table([VariantResult("PELA", "/c", "/r", {"reach-v3": 50.0}, {}, 50.0)], ["reach-v3"], 2, 100)
    assert "| PELA | 50 | 50.0 |" in table


@pytest.mark.slow
def test_lerobot_eval_cli_on_metaworld(checkpoint, tmp_path):
    """Unmodified ``lerobot-eval`` (one 500-step MetaWorld episode with video: about 3-6 minutes on 2 busy cores)."""
    command = [
        lerobot_script("lerobot-eval"), f"--policy.path={checkpoint}", "--env.type=metaworld", "--env.task=reach-v3",
        "--eval.n_episodes=1", "--eval.batch_size=1", "--eval.use_async_envs=false", "--policy.device=cpu",
        f"--output_dir={tmp_path / 'eval'}",
    ]  # fmt: skip
    result = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 1


def test_libero_is_reachable_by_configuration():
    """``--env.type=libero`` resolves and its features build a PELA policy config (two cameras)."""
    from lerobot.envs import env_to_policy_features
    from lerobot.envs.configs import EnvConfig

    env_config = EnvConfig.get_choice_class("libero")(task="libero_spatial")
    features = env_to_policy_features(env_config)
    cameras = [key for key, feature in features.items() if feature.type.name == "VISUAL"]
    assert cameras == ["observation.images.image", "observation.images.image2"]
    config = PelaConfig(device="cpu")
    config.input_features = {key: features[key] for key in cameras}
    assert list(config.image_features) == cameras


def test_robocasa_is_reachable_by_configuration():
    """``--env.type=robocasa`` resolves and its features build a PELA policy config (three cameras)."""
    from lerobot.envs import env_to_policy_features
    from lerobot.envs.configs import EnvConfig

    features = env_to_policy_features(EnvConfig.get_choice_class("robocasa")(task="CloseFridge"))
    cameras = [key for key, feature in features.items() if feature.type.name == "VISUAL"]
    assert len(cameras) == 3
    config = PelaConfig(device="cpu")
    config.input_features = {key: features[key] for key in cameras}
    assert list(config.image_features) == cameras


def test_libero_env_creation():
    pytest.importorskip(
        "libero",
        reason="hf-libero is not installed here (pip install 'lerobot[libero]'); even installed, LIBERO fetches its "
        "scene assets from the Hugging Face Hub at first use, which this machine cannot reach",
    )
    from lerobot.envs import close_envs, make_env
    from lerobot.envs.configs import EnvConfig

    envs = make_env(EnvConfig.get_choice_class("libero")(task="libero_spatial", task_ids=[0]), n_envs=1)
    try:
        vector_env = next(iter(next(iter(envs.values())).values()))
        observation, _ = vector_env.reset(seed=0)
        assert all(np.asarray(image).shape[-1] == 3 for image in observation["pixels"].values())
    finally:
        close_envs(envs)
