"""Fine-tune PELA policies on a recorded MetaWorld dataset and compare closed-loop success rates on CPU.

The paper's Tables 2-3 comparison in miniature: the same flow-matching head fine-tuned on top of different backbones,
e.g. a PELA-pretrained checkpoint, a PELA checkpoint pretrained without alignment, and a randomly initialised backbone
("from scratch"). For every variant:

1. ``lerobot-train --policy.type=pela --policy.pretrained_backbone=<checkpoint> --dataset.root=<recording> ...``
   (the unmodified LeRobot CLI, in a subprocess);
2. closed-loop evaluation of the final checkpoint with LeRobot's own evaluation loop (``lerobot.scripts.lerobot_eval
   .eval_policy``, the loop behind ``lerobot-eval``) on every task, over seeded episodes. MetaWorld episodes last 500
   steps in ``lerobot-eval``; here the horizon is ``max_steps`` (the scripted experts need 40-100 steps on the
   default tasks), which makes CPU evaluation affordable. Evaluation seeds start at ``eval_seed`` (default 100000),
   disjoint from the recorder's reset seeds.

Results go to ``<output_dir>/results.json`` and a Markdown table ``<output_dir>/results.md``.

Command line::

    python -m lerobot_policy_pela.metaworld_benchmark --dataset-root data/pela_metaworld --output-dir outputs/mw \\
        --variant "PELA=outputs/pretrain/pela" --variant "PELA w/o align=outputs/pretrain/pela_wo_align" \\
        --variant scratch --steps 2000 --episodes 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .metaworld_data import DEFAULT_TASKS

SCRATCH = "scratch"
DEFAULT_EVAL_SEED = 100_000


@dataclass
class Variant:
    """One policy of the comparison: a display name and the PELA checkpoint of its backbone (None: from scratch)."""

    name: str
    backbone: str | None

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``"NAME=CHECKPOINT"`` or ``"scratch"`` (``"NAME=scratch"`` also means a random backbone)."""
        name, _, backbone = text.partition("=")
        if not backbone:
            if name != SCRATCH:
                raise ValueError(f"a variant is NAME=CHECKPOINT or {SCRATCH!r}, got {text!r}")
            return cls(name=SCRATCH, backbone=None)
        return cls(name=name, backbone=None if backbone == SCRATCH else backbone)


@dataclass
class VariantResult:
    """Closed-loop results of one variant: per-task success rates (%) and successes, and their mean."""

    name: str
    backbone: str | None
    checkpoint: str
    success_rate: dict[str, float] = field(default_factory=dict)
    successes: dict[str, list[bool]] = field(default_factory=dict)
    mean_success_rate: float = 0.0


def lerobot_script(name: str) -> str:
    """Path of a LeRobot console script installed next to this interpreter (``lerobot-train``, ``lerobot-eval``)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def finetune_policy(
    dataset_root: str | Path,
    output_dir: str | Path,
    backbone: str | None,
    repo_id: str = "local/pela_metaworld",
    steps: int = 2000,
    batch_size: int = 8,
    seed: int = 0,
    extra_args: Sequence[str] = (),
) -> Path:
    """Fine-tune a PELA policy with the unmodified ``lerobot-train`` CLI; returns the final ``pretrained_model`` folder.

    Args:
        dataset_root / repo_id: the local LeRobotDataset (``metaworld_data.record_metaworld_dataset``).
        output_dir: LeRobot's output folder (must not exist).
        backbone: PELA checkpoint (folder or Hub id) of ``--policy.pretrained_backbone``; None: random backbone.
        extra_args: further ``lerobot-train`` arguments, e.g. ``["--policy.align_layer=2"]``.
    """
    command = [
        lerobot_script("lerobot-train"),
        "--policy.type=pela",
        f"--dataset.repo_id={repo_id}",
        f"--dataset.root={dataset_root}",
        f"--output_dir={output_dir}",
        f"--steps={steps}",
        f"--batch_size={batch_size}",
        f"--seed={seed}",
        f"--save_freq={steps}",
        "--num_workers=0",
        "--policy.push_to_hub=false",
        "--wandb.enable=false",
        *([f"--policy.pretrained_backbone={backbone}"] if backbone else []),
        *extra_args,
    ]
    subprocess.run(command, check=True, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    return Path(output_dir) / "checkpoints" / "last" / "pretrained_model"


def evaluate_on_metaworld(
    policy_path: str | Path,
    tasks: Sequence[str] = DEFAULT_TASKS,
    n_episodes: int = 10,
    max_steps: int = 150,
    eval_seed: int = DEFAULT_EVAL_SEED,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """Closed-loop evaluation of a saved policy with LeRobot's evaluation loop, ``max_steps`` steps per episode.

    Returns, per task, ``{"success_rate": %, "successes": [bool per episode], "seeds": [...]}``. Episode ``i`` of every
    task resets the environment with seed ``eval_seed + i``.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch
    from lerobot.configs import PreTrainedConfig
    from lerobot.envs import close_envs, make_env, make_env_pre_post_processors
    from lerobot.envs.configs import MetaworldEnv as MetaworldEnvConfig
    from lerobot.policies import make_policy, make_pre_post_processors
    from lerobot.scripts.lerobot_eval import eval_policy
    from lerobot.utils.random_utils import set_seed

    policy_config = PreTrainedConfig.from_pretrained(policy_path)
    policy_config.pretrained_path = Path(policy_path)
    policy_config.device = device
    results: dict[str, dict[str, Any]] = {}
    policy = None
    for task in tasks:
        env_config = MetaworldEnvConfig(task=task)
        envs = make_env(env_config, n_envs=1, use_async_envs=False)
        try:
            if policy is None:
                policy = make_policy(policy_config, env_cfg=env_config).eval()
                preprocessor, postprocessor = make_pre_post_processors(
                    policy_config,
                    pretrained_path=str(policy_path),
                    preprocessor_overrides={"device_processor": {"device": device}},
                )
                env_preprocessor, env_postprocessor = make_env_pre_post_processors(env_config, policy_config)
            vector_env = next(iter(envs[task].values()))
            for env in vector_env.envs:
                env.unwrapped._max_episode_steps = max_steps
            set_seed(eval_seed)
            with torch.no_grad():
                info = eval_policy(
                    vector_env, policy, env_preprocessor, env_postprocessor, preprocessor, postprocessor,
                    n_episodes=n_episodes, start_seed=eval_seed,
                )  # fmt: skip
        finally:
            close_envs(envs)
        episodes = info["per_episode"]
        results[task] = {
            "success_rate": info["aggregated"]["pc_success"],
            "successes": [bool(e["success"]) for e in episodes],
            "seeds": [e["seed"] for e in episodes],
        }
    return results


def run_comparison(
    dataset_root: str | Path,
    output_dir: str | Path,
    variants: Sequence[Variant],
    repo_id: str = "local/pela_metaworld",
    tasks: Sequence[str] = DEFAULT_TASKS,
    steps: int = 2000,
    batch_size: int = 8,
    n_episodes: int = 10,
    max_steps: int = 150,
    seed: int = 0,
    eval_seed: int = DEFAULT_EVAL_SEED,
    extra_train_args: Sequence[str] = (),
) -> list[VariantResult]:
    """Fine-tune and evaluate every variant with identical data, steps, seeds and evaluation episodes."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be distinct, got {names}")
    results = []
    for variant in variants:
        run_dir = output_dir / "runs" / _slug(variant.name)
        checkpoint = finetune_policy(
            dataset_root, run_dir, variant.backbone, repo_id=repo_id, steps=steps, batch_size=batch_size, seed=seed,
            extra_args=extra_train_args,
        )  # fmt: skip
        per_task = evaluate_on_metaworld(checkpoint, tasks, n_episodes, max_steps, eval_seed)
        rates = {task: per_task[task]["success_rate"] for task in tasks}
        results.append(
            VariantResult(
                name=variant.name,
                backbone=variant.backbone,
                checkpoint=str(checkpoint),
                success_rate=rates,
                successes={task: per_task[task]["successes"] for task in tasks},
                mean_success_rate=sum(rates.values()) / len(rates),
            )
        )
    settings = {
        "dataset_root": str(dataset_root), "tasks": list(tasks), "steps": steps, "batch_size": batch_size,
        "episodes_per_task": n_episodes, "max_steps": max_steps, "train_seed": seed, "eval_seed": eval_seed,
        "extra_train_args": list(extra_train_args),
    }  # fmt: skip
    (output_dir / "results.json").write_text(
        json.dumps({"settings": settings, "results": [asdict(r) for r in results]}, indent=2)
    )
    (output_dir / "results.md").write_text(results_table(results, tasks, n_episodes, max_steps))
    return results


def results_table(results: Sequence[VariantResult], tasks: Sequence[str], n_episodes: int, max_steps: int) -> str:
    """Markdown table of success rates (%) per task and their mean."""
    lines = [
        f"Closed-loop success rate (%), {n_episodes} seeded episodes per task, at most {max_steps} steps each.",
        "",
        "| policy | " + " | ".join(tasks) + " | mean |",
        "| --- | " + " | ".join("---:" for _ in tasks) + " | ---: |",
    ]
    for result in results:
        rates = " | ".join(f"{result.success_rate[task]:.0f}" for task in tasks)
        lines.append(f"| {result.name} | {rates} | {result.mean_success_rate:.1f} |")
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "variant"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lerobot_policy_pela.metaworld_benchmark",
        description="Fine-tune PELA policies (one per backbone checkpoint) on a recorded MetaWorld dataset with "
        "lerobot-train and report closed-loop success rates over seeded episodes.",
    )
    parser.add_argument("--dataset-root", required=True, help="a dataset written by lerobot_policy_pela.metaworld_data")
    parser.add_argument("--repo-id", default="local/pela_metaworld")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--variant",
        action="append",
        required=True,
        help='"NAME=PELA_CHECKPOINT" (folder or Hub id) or "scratch" (random backbone); repeat for each policy',
    )
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated MetaWorld v3 tasks")
    parser.add_argument("--steps", type=int, default=2000, help="fine-tuning steps per variant")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per task")
    parser.add_argument("--max-steps", type=int, default=150, help="evaluation horizon per episode")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED, help="seed of the first evaluation episode")
    parser.add_argument(
        "--train-arg",
        action="append",
        default=[],
        help="extra lerobot-train argument, e.g. --train-arg=--policy.align_layer=2",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    results = run_comparison(
        args.dataset_root, args.output_dir, [Variant.parse(v) for v in args.variant], repo_id=args.repo_id,
        tasks=tasks, steps=args.steps, batch_size=args.batch_size, n_episodes=args.episodes,
        max_steps=args.max_steps, seed=args.seed, eval_seed=args.eval_seed, extra_train_args=args.train_arg,
    )  # fmt: skip
    print(results_table(results, tasks, args.episodes, args.max_steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
