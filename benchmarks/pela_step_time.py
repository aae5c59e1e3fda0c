"""Train-step time of PELA (MCP + alignment, LSP/LAP, frozen DINOv3) vs. the bare backbone LM on the same batch.

The bare backbone is PELA's own ``vlm`` (InternVL with the extended vocabulary) trained with its standard causal-LM
loss on the same ``input_ids``/``pixel_values``/``labels``; a step is forward + backward + AdamW step (+ the PELA EMA).
Sizes in :mod:`benchmarks.pela_common`. Target: PELA <= 1.25x the backbone.

Run from the repository root: ``python -m benchmarks.pela_step_time [--batch-size 4 --num-steps 2 --repeats 5]``.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.pela_common import build_model, median_seconds, synthetic_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-steps", type=int, default=2, help="motion chunks per sample")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--preset", default="small", choices=("small", "tiny"), help="model size (pela_common)")
    parser.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = build_model(args.preset, attn_implementation=args.attn).train()
    batch = synthetic_batch(model.config, args.batch_size, args.num_steps)
    pela_optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def pela_step() -> None:
        pela_optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        pela_optimizer.step()
        model.ema_update()

    backbone = build_model(args.preset, attn_implementation=args.attn).vlm.train()
    backbone_batch = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}
    backbone_optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-5)

    def backbone_step() -> None:
        backbone_optimizer.zero_grad(set_to_none=True)
        backbone(**backbone_batch).loss.backward()
        backbone_optimizer.step()

    pela, pela_min = median_seconds(pela_step, args.repeats)
    bare, bare_min = median_seconds(backbone_step, args.repeats)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"batch {args.batch_size} x {batch['input_ids'].shape[1]} tokens ({args.num_steps} chunks), "
        f"{args.threads} threads, {args.attn}; PELA trainable params {trainable / 1e6:.1f}M"
    )
    print(f"{'model':<10}{'median s/step':>15}{'min s/step':>12}")
    print(f"{'backbone':<10}{bare:>15.3f}{bare_min:>12.3f}")
    print(f"{'PELA':<10}{pela:>15.3f}{pela_min:>12.3f}")
    print(f"ratio PELA / backbone: {pela / bare:.2f}x (target <= 1.25x)")
    print(json.dumps({"pela_s": pela, "backbone_s": bare, "ratio": pela / bare}))


if __name__ == "__main__":
    main()
