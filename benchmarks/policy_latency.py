"""Inference latency of the PELA LeRobot policy per action chunk.

One chunk = the backbone prefix once per observation (instruction, camera image(s), latent state and one all-[MASK]
motion chunk through the LLM up to the align layer) + the condition projected to the cross-attention keys/values once
+ ``--euler-steps`` (4) forward Euler steps of the flow-matching DiT head. Reported (median over ``--repeats``, after
``--warmup`` runs, on random weights and a LIBERO-like observation: 256-px cameras, 8-D state, 7-D actions):

* ``preprocess``: the policy pre-processor (instruction tokenisation, resize + normalisation, state normalisation);
* ``backbone``: predictive embeddings (B, N*K, D);
* ``head``: condition encoding + Euler steps;
* ``chunk``: ``predict_action_chunk`` (backbone + head), the figure the < 50 ms GPU target refers to;
* ``per_env_step``: ``select_action`` averaged over ``n_action_steps`` calls (one chunk per ``n_action_steps``).

Sizes: ``--size tiny`` (CPU: tiny PELA preset + tiny head) or ``--size full`` (the paper: PELA 2B = InternVL3-2B with
the align layer 19 of 28, DiT head of 16 layers, 32 heads, hidden 2048; for a GPU, with ``--dtype bfloat16``).

Run from the repository root::

    python -m benchmarks.policy_latency                                   # CPU, tiny
    python -m benchmarks.policy_latency --size full --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from lerobot.configs import FeatureType, PolicyFeature

from lerobot_policy_pela import PelaConfig, PelaPolicy, make_pela_pre_post_processors

STATE_DIM, ACTION_DIM, IMAGE_SIZE = 8, 7, 256
TASK = "put the black bowl on the plate"


def build_policy(
    size: str, device: str, dtype: torch.dtype, cameras: int, euler_steps: int
) -> tuple[PelaPolicy, object]:
    """A random-weight policy of ``size`` on ``device`` and its pre-processor."""
    config = PelaConfig(
        device=device,
        backbone_preset="tiny" if size == "tiny" else "2b",
        head_preset=size,
        align_layer=None if size == "tiny" else 19,
        num_inference_steps=euler_steps,
        backbone_tuning="frozen",
    )
    keys = ["observation.image"] if cameras == 1 else [f"observation.images.camera{i}" for i in range(cameras)]
    config.input_features = {key: PolicyFeature(FeatureType.VISUAL, (3, IMAGE_SIZE, IMAGE_SIZE)) for key in keys}
    config.input_features["observation.state"] = PolicyFeature(FeatureType.STATE, (STATE_DIM,))
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}
    with torch.device(device):
        policy = PelaPolicy(config)
    policy = policy.to(device=device, dtype=dtype).eval()
    stats = {
        "observation.state": {"mean": torch.zeros(STATE_DIM), "std": torch.ones(STATE_DIM)},
        "action": {"mean": torch.zeros(ACTION_DIM), "std": torch.ones(ACTION_DIM)},
    }
    preprocessor, _ = make_pela_pre_post_processors(config, stats)
    return policy, preprocessor


def median_ms(fn: Callable[[], object], device: str, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` in milliseconds (CUDA synchronised)."""
    times = []
    for index in range(warmup + repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--euler-steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    policy, preprocessor = build_policy(args.size, args.device, dtype, args.cameras, args.euler_steps)
    observation = {key: torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE) for key in policy.config.image_features}
    observation.update({"observation.state": torch.rand(1, STATE_DIM), "task": [TASK]})
    batch = preprocessor(dict(observation))
    head = policy.head

    def run_head():
        condition = head.encode_condition(cond)
        head.sample_from_condition(condition, batch["observation.state"])

    def run_steps():
        policy.reset()
        for _ in range(policy.config.n_action_steps):
            policy.select_action(batch)

    with torch.inference_mode():
        cond = policy.predictive_embeddings(batch)
        timings = {
            "preprocess": median_ms(lambda: preprocessor(dict(observation)), args.device, args.repeats, args.warmup),
            "backbone": median_ms(lambda: policy.predictive_embeddings(batch), args.device, args.repeats, args.warmup),
            "head": median_ms(run_head, args.device, args.repeats, args.warmup),
            "chunk": median_ms(lambda: policy.predict_action_chunk(batch), args.device, args.repeats, args.warmup),
            "per_env_step": median_ms(run_steps, args.device, args.repeats, args.warmup) / policy.config.n_action_steps,
        }
    counts = {
        "backbone_params": sum(p.numel() for p in policy.backbone.parameters()),
        "head_params": sum(p.numel() for p in policy.head.parameters()),
        "cond_tokens": int(cond.shape[1]),
        "prompt_tokens": policy.config.tokenizer_max_length
        + int(policy.backbone.prompt_suffix(args.cameras, torch.device("cpu")).numel()),
    }
    print(json.dumps({"settings": vars(args), "ms": {k: round(v, 2) for k, v in timings.items()}, **counts}, indent=2))


if __name__ == "__main__":
    main()
