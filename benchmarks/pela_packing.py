"""Padded vs packed pretraining batches: padding fraction of UniHand-Mix's clip lengths, and train throughput.

Clip lengths follow the paper's appendix B.2 histogram (Fig. 4, right: 1-10 s, short clips dominating; its bar heights
are not printed in the paper, :data:`CLIP_SECONDS` reads them off approximately). A clip of n seconds holds n time
steps of both hands, i.e. 2n chunks of ``<mot>`` + 128 + ``</mot>`` tokens, after the prompt (instruction, image
tokens, two 128-token latent-state blocks).

1. Padding fraction (no model): at the 2B preset (~300 prompt tokens, 256 image tokens among them) for padded batches
   of ``--batch-size`` streamed samples and for best-fit-decreasing rows of ``--packing-length``
   (:func:`trainers.packing.best_fit_decreasing`, buffers of ``--buffer-size``).
2. Train throughput, in one run on the same samples: a small PELA (``--preset``, :mod:`benchmarks.pela_common`, CPU)
   trained for one pass over ``--num-samples`` UniHand-Mix-like samples (precomputed motion tokens, hybrid masking),
   as padded batches of ``--batch-size`` (``PELADataCollator``) and as packed rows of ``--cpu-packing-length`` tokens
   (``PackedSamples`` + ``PackedCollator``); a step is forward + backward + AdamW + EMA, batches built beforehand.
   Prints samples/s and real tokens/s of each and the packed / padded ratio.

Run from the repository root: ``OMP_NUM_THREADS=1 python -m benchmarks.pela_packing [--num-samples 48]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image

from benchmarks.pela_common import IMAGE_SIZE, build_model
from modeling_pela import PELAConfig, PELAForPretraining
from pela.processors import build_text_tokenizer, make_processor
from trainers.collator import PELADataCollator
from trainers.packing import PackedCollator, PackedSamples, best_fit_decreasing

CLIP_SECONDS = {1: 0.20, 2: 0.20, 3: 0.16, 4: 0.11, 5: 0.08, 6: 0.07, 7: 0.06, 8: 0.05, 9: 0.04, 10: 0.03}
CHUNK_TOKENS = 130  # <mot> + 128 motion tokens + </mot>
PROMPT_2B = 300  # instruction + <img> + 256 image tokens + </img>
STATE_TOKENS = 2 * 128


def clip_seconds(count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(list(CLIP_SECONDS), size=count, p=list(CLIP_SECONDS.values()))


def padding_fractions(lengths: np.ndarray, batch_size: int, packing_length: int, buffer_size: int) -> dict:
    """Padding share of padded batches (stream order) and of packed rows, and the samples per packed row."""
    batches = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
    padded = sum(len(b) * b.max() for b in batches)
    rows = sum(
        len(best_fit_decreasing(lengths[i : i + buffer_size].tolist(), packing_length))
        for i in range(0, len(lengths), buffer_size)
    )
    return {
        "padded": 1 - lengths.sum() / padded,
        "packed": 1 - lengths.sum() / (rows * packing_length),
        "samples_per_row": len(lengths) / rows,
        "mean_tokens": float(lengths.mean()),
    }


def make_rows(count: int, config: PELAConfig, rng: np.random.Generator) -> list[dict]:
    """UniHand-Mix-like rows with precomputed tokens: both hands, clip lengths from :data:`CLIP_SECONDS`, a third
    video-only."""
    size, rows = config.codebook_size, []
    for index, seconds in enumerate(clip_seconds(count, rng)):
        frames = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(seconds + 1)]
        labeled = index % 3 != 2
        row = {
            "id": f"bench/{index}", "task_type": "motion_generation" if labeled else "video_only",
            "instruction": "pick up the cup and put it on the table", "response": "", "context_chunks": 0,
            "hands": ["left", "right"], "num_chunks": int(seconds), "first_frame": frames[0],
            "boundary_frames": frames, "has_motion_labels": labeled,
        }  # fmt: skip
        for hand in ("left", "right"):
            wrist = rng.integers(0, size, (seconds, 64))
            tokens = np.concatenate([wrist, rng.integers(size, 2 * size, (seconds, 64))], axis=1).tolist()
            row[f"motion_tokens_{hand}"] = tokens if labeled else None
            row[f"mano_{hand}"] = None
        rows.append(row)
    return rows


def train_pass(model: PELAForPretraining, batches: list[dict]) -> float:
    """Seconds for one optimiser step per batch (forward, backward, AdamW, EMA)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    start = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
        model.ema_update()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=48, help="samples trained on, per layout")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per padded batch")
    parser.add_argument("--preset", default="small", choices=("small", "tiny"), help="model size (pela_common)")
    parser.add_argument("--cpu-packing-length", type=int, default=3072, help="rows of the CPU model")
    parser.add_argument("--packing-length", type=int, default=8192, help="2B rows, padding fractions")
    parser.add_argument("--buffer-size", type=int, default=1024, help="2B packing buffer, padding fractions")
    parser.add_argument("--repeats", type=int, default=2, help="passes per layout (the fastest is kept)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    lengths = PROMPT_2B + STATE_TOKENS + 2 * CHUNK_TOKENS * clip_seconds(100_000, rng)
    fractions = padding_fractions(lengths, args.batch_size, args.packing_length, args.buffer_size)
    print(
        f"2B lengths (100k clips, mean {fractions['mean_tokens']:.0f} tokens): padding {fractions['padded']:.1%} "
        f"in padded batches of {args.batch_size}, {fractions['packed']:.1%} in packed rows of {args.packing_length} "
        f"({fractions['samples_per_row']:.2f} samples per row)"
    )

    model = build_model(args.preset, seed=args.seed).train()
    rows = make_rows(args.num_samples, model.config, rng)
    tokenizer = build_text_tokenizer([row["instruction"] for row in rows], 250)
    image_size = IMAGE_SIZE if args.preset == "small" else 56
    collator = PELADataCollator(make_processor(model.config, tokenizer, image_size=image_size))
    padded = [collator(rows[i : i + args.batch_size]) for i in range(0, len(rows), args.batch_size)]
    packs = list(PackedSamples(rows, collator, args.cpu_packing_length, buffer_size=len(rows)))
    pack_rows = max(1, round(len(packs) * args.batch_size / len(rows)))  # about batch-size samples per step
    packed = [
        PackedCollator(collator.processor, args.cpu_packing_length)(packs[i : i + pack_rows])
        for i in range(0, len(packs), pack_rows)
    ]
    real = sum(int(b["attention_mask"].sum()) for b in padded)
    slots = {
        "padded": sum(b["input_ids"].numel() for b in padded),
        "packed": sum(b["input_ids"].numel() for b in packed),
    }
    seconds = {}
    for _ in range(args.repeats):
        for name, batches in (("padded", padded), ("packed", packed)):
            seconds[name] = min(seconds.get(name, float("inf")), train_pass(model, batches))
    print(
        f"{args.preset} PELA, {len(rows)} samples ({real} tokens), {args.threads} threads: padded batches of {args.batch_size} "
        f"({len(padded)} steps), packed rows of {args.cpu_packing_length} ({len(packed)} steps of {pack_rows} rows)"
    )
    print(f"{'layout':<8}{'steps':>6}{'padding':>9}{'s/pass':>9}{'samples/s':>11}{'tokens/s':>10}")
    for name, batches in (("padded", padded), ("packed", packed)):
        t = seconds[name]
        print(
            f"{name:<8}{len(batches):>6}{1 - real / slots[name]:>9.1%}{t:>9.2f}{len(rows) / t:>11.2f}{real / t:>10.0f}"
        )
    ratio = seconds["padded"] / seconds["packed"]
    print(f"packed / padded throughput: {ratio:.2f}x")
    print(json.dumps({"padding_2b": fractions, "seconds": seconds, "ratio": ratio}))


if __name__ == "__main__":
    main()
