"""Chunk-generation latency: masked multi-pass decoding (MCP) vs. next-token decoding with a KV cache, same size.

Both models have the sizes of :mod:`benchmarks.pela_common` and decode one prompt (instruction, image, latent state)
into ``--num-chunks`` right-hand chunks of 128 tokens: the ``masked_chunk`` model in passes of each of
``--decode-ratios`` of the chunk (5%: 22 passes, the paper's setting), the first ratio also with ``--ensembles``; the
``next_token`` model greedily, one token per cached step. Target: masked decoding (5%) <= 0.3x next-token decoding.
Masked decoding runs ``passes x 128`` token-forwards against ``128`` for next-token decoding: it wins where a
128-token pass costs about as much as a 1-token step (latency-bound accelerators), not on a compute-bound CPU.

Run from the repository root: ``python -m benchmarks.pela_generation_latency [--num-chunks 1 --repeats 5]``.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.pela_common import K, build_model, median_seconds, synthetic_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-chunks", type=int, default=1)
    parser.add_argument("--decode-ratios", type=float, nargs="+", default=[0.05, 0.1, 0.25, 1.0])
    parser.add_argument("--ensembles", type=int, nargs="*", default=[3], help="extra runs at the first ratio")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--preset", default="small", choices=("small", "tiny"), help="model size (pela_common)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    masked = build_model(args.preset, objective="masked_chunk").eval()
    causal = build_model(args.preset, objective="next_token").eval()
    batch = synthetic_batch(masked.config, batch_size=1, num_steps=1)
    prompt_length = 24 + masked.config.vlm_config.image_seq_length + K
    prompt = {
        "input_ids": batch["input_ids"][:, :prompt_length],
        "attention_mask": batch["attention_mask"][:, :prompt_length],
        "pixel_values": batch["pixel_values"],
        "frame_pixel_values": batch["frame_pixel_values"][:, :1],
    }
    common = {"hands": "right", "num_chunks": args.num_chunks}
    next_token, _ = median_seconds(lambda: causal.generate_motion(**prompt, **common), args.repeats, warmup=1)
    print(f"prompt {prompt_length} tokens, {args.num_chunks} chunk(s) of {K} tokens, {args.threads} threads")
    print(f"{'decoding':<28}{'median s':>10}{'ms/chunk':>10}{'vs next-token':>15}")
    print(f"{'next-token (KV cache)':<28}{next_token:>10.3f}{1e3 * next_token / args.num_chunks:>10.0f}{1.0:>15.2f}")
    results = {"next_token_s": next_token}
    runs = [(ratio, 1) for ratio in args.decode_ratios] + [(args.decode_ratios[0], e) for e in args.ensembles]
    for ratio, ensembles in runs:
        seconds, _ = median_seconds(
            lambda r=ratio, e=ensembles: masked.generate_motion(**prompt, **common, decode_ratio=r, num_ensembles=e),
            args.repeats,
            warmup=1,
        )
        passes = -(-K // max(1, round(ratio * K)))
        name = f"masked {ratio:g}: {passes} passes x{ensembles}"
        print(f"{name:<28}{seconds:>10.3f}{1e3 * seconds / args.num_chunks:>10.0f}{seconds / next_token:>15.2f}")
        results[f"ratio_{ratio:g}_ensembles_{ensembles}"] = seconds / next_token
    print("target: masked 0.05 x1 <= 0.3x next-token")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
