"""Record a LeRobotDataset (v3, local, no Hub) of MetaWorld scripted-expert demonstrations with instructions.

Episodes come from LeRobot's own MetaWorld environment (``lerobot.envs.metaworld.MetaworldEnv``: the ``corner2``
camera, flipped, 480 x 480 renders, the 4-D end-effector + gripper state), so the recorded observations match what
``lerobot-eval --env.type=metaworld`` feeds the policy. Actions come from ``metaworld.policies`` experts. Every frame
stores:

* ``observation.image``: (H, W, 3) uint8 image, the render downscaled (antialiased bilinear) to ``image_size`` and
  stored as an image in the parquet files (no video decoding);
* ``observation.state``: (4,) float32, hand position xyz and gripper opening;
* ``action``: (4,) float32, the expert's action clipped to [-1, 1];
* ``task``: the environment's language instruction (``MetaworldEnv.task_description``, e.g. "Reach a goal position").

Episode ``e`` of task ``t`` resets the environment with seed ``seed + 1000 * t + e`` (object and goal positions);
episodes where the expert does not succeed within ``max_steps`` are discarded, unless ``keep_failures``. With
``action_noise > 0`` the executed action is the expert's plus Gaussian noise while the recorded label stays the
expert's clean action (DART-style state coverage).

Command line (needs ``MUJOCO_GL=egl`` on a machine without a display; set by default)::

    python -m lerobot_policy_pela.metaworld_data --root data/pela_metaworld \\
        --tasks reach-v3,push-v3,button-press-v3,drawer-open-v3 --episodes-per-task 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_TASKS = ("reach-v3", "push-v3", "button-press-v3", "drawer-open-v3")
IMAGE_KEY = "observation.image"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
FPS = 80  # MetaworldEnv.metadata["render_fps"]; only sets the dataset's timestamps
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper"]
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper"]


@dataclass
class RecordingSummary:
    """What :func:`record_metaworld_dataset` wrote.

    Attributes:
        root: dataset folder; repo_id: its (local) repository id.
        episodes: kept episodes per task; frames: frames per task.
        attempts: attempted episodes per task; expert_successes: attempts in which the expert succeeded.
        instructions: the language instruction of every task.
    """

    root: str
    repo_id: str
    episodes: dict[str, int] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    expert_successes: dict[str, int] = field(default_factory=dict)
    instructions: dict[str, str] = field(default_factory=dict)


def dataset_features(image_size: int) -> dict[str, dict]:
    """The LeRobotDataset feature specification of the recording (images stored as images, not video)."""
    return {
        IMAGE_KEY: {"dtype": "image", "shape": (image_size, image_size, 3), "names": ["height", "width", "channels"]},
        STATE_KEY: {"dtype": "float32", "shape": (len(STATE_NAMES),), "names": STATE_NAMES},
        ACTION_KEY: {"dtype": "float32", "shape": (len(ACTION_NAMES),), "names": ACTION_NAMES},
    }


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, antialiased bilinear (the policy's image preprocessing resize)."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    resized = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _expert_env_class():
    """``MetaworldEnv`` that also keeps the raw 39-D MetaWorld observation the scripted experts read."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from lerobot.envs.metaworld import MetaworldEnv

    class ExpertMetaworldEnv(MetaworldEnv):
        raw_observation: np.ndarray | None = None

        def _format_raw_obs(self, raw_obs: np.ndarray) -> dict:
            self.raw_observation = raw_obs
            return super()._format_raw_obs(raw_obs)

    return ExpertMetaworldEnv


def record_metaworld_dataset(
    root: str | Path,
    repo_id: str = "local/pela_metaworld",
    tasks: Sequence[str] = DEFAULT_TASKS,
    episodes_per_task: int = 10,
    max_steps: int = 200,
    image_size: int = 96,
    seed: int = 0,
    action_noise: float = 0.0,
    keep_failures: bool = False,
    overwrite: bool = False,
) -> RecordingSummary:
    """Record ``episodes_per_task`` expert episodes of every task into a new LeRobotDataset at ``root``.

    Args:
        root: dataset folder (must not exist, unless ``overwrite``).
        repo_id: repository id stored in the dataset metadata (train with ``--dataset.repo_id=<repo_id>
            --dataset.root=<root>``).
        tasks: MetaWorld v3 task names with a scripted expert (``lerobot.envs.metaworld.TASK_POLICY_MAPPING``).
        episodes_per_task: episodes to keep per task (at most ``3 * episodes_per_task`` attempts).
        max_steps: step limit of one episode (an episode ends at the first success).
        image_size: side of the stored square images.
        seed: base seed of the environment resets.
        action_noise: std of the Gaussian noise added to the executed (not the recorded) actions.
        keep_failures: keep episodes where the expert did not succeed within ``max_steps``.
        overwrite: delete an existing ``root`` first.
    """
    from lerobot.datasets import LeRobotDataset
    from lerobot.envs.metaworld import TASK_POLICY_MAPPING

    unknown = [t for t in tasks if t not in TASK_POLICY_MAPPING]
    if unknown:
        raise ValueError(f"no MetaWorld scripted expert for {unknown}; known tasks: {sorted(TASK_POLICY_MAPPING)}")
    if episodes_per_task < 1 or max_steps < 1 or image_size < 8:
        raise ValueError("episodes_per_task and max_steps must be >= 1, image_size >= 8")
    root = Path(root)
    if root.exists():
        if not overwrite:
            raise FileExistsError(f"{root} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(root)
    dataset = LeRobotDataset.create(
        repo_id=repo_id, fps=FPS, features=dataset_features(image_size), root=root, robot_type="sawyer",
        use_videos=False,
    )  # fmt: skip
    summary = RecordingSummary(root=str(root), repo_id=repo_id)
    env_class = _expert_env_class()
    rng = np.random.default_rng(seed)
    try:
        for task_index, task in enumerate(tasks):
            env = env_class(task=task, obs_type="pixels_agent_pos")
            instruction = env.task_description
            summary.instructions[task] = instruction
            kept = attempts = successes = frames = 0
            try:
                while kept < episodes_per_task and attempts < 3 * episodes_per_task:
                    observation, _ = env.reset(seed=seed + 1000 * task_index + attempts)
                    attempts += 1
                    success, length = False, 0
                    for _ in range(max_steps):
                        action = np.clip(env.expert_policy.get_action(env.raw_observation), -1.0, 1.0)
                        dataset.add_frame(
                            {
                                IMAGE_KEY: resize_image(observation["pixels"], image_size),
                                STATE_KEY: observation["agent_pos"].astype(np.float32),
                                ACTION_KEY: action.astype(np.float32),
                                "task": instruction,
                            }
                        )
                        length += 1
                        executed = action + action_noise * rng.standard_normal(action.shape) if action_noise else action
                        observation, _, terminated, _, info = env.step(np.clip(executed, -1.0, 1.0).astype(np.float32))
                        if info["is_success"] or terminated:
                            success = bool(info["is_success"])
                            break
                    successes += success
                    if success or keep_failures:
                        frames += length
                        dataset.save_episode()
                        kept += 1
                    else:
                        dataset.clear_episode_buffer()
            finally:
                env.close()
            summary.episodes[task] = kept
            summary.frames[task] = frames
            summary.attempts[task] = attempts
            summary.expert_successes[task] = successes
            if kept == 0:
                raise RuntimeError(f"the {task} expert succeeded in none of {attempts} attempts of {max_steps} steps")
    finally:
        dataset.finalize()
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lerobot_policy_pela.metaworld_data",
        description="Record a local LeRobotDataset (v3) from MetaWorld scripted experts, with language instructions.",
    )
    parser.add_argument("--root", required=True, help="dataset folder to create")
    parser.add_argument("--repo-id", default="local/pela_metaworld")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated MetaWorld v3 tasks")
    parser.add_argument("--episodes-per-task", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--action-noise", type=float, default=0.0)
    parser.add_argument("--keep-failures", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary = record_metaworld_dataset(
        args.root, repo_id=args.repo_id, tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        episodes_per_task=args.episodes_per_task, max_steps=args.max_steps, image_size=args.image_size,
        seed=args.seed, action_noise=args.action_noise, keep_failures=args.keep_failures, overwrite=args.overwrite,
    )  # fmt: skip
    print(json.dumps(asdict(summary), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
