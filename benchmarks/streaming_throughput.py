"""Streaming throughput of an exported UniHand-Mix: samples/s fully decoded, and memory over a full pass.

Exports ``--num-clips`` toy clips (``pela data export --config toy``), then streams the ``mix`` train split once per
reader, decoding every frame to a uint8 array and every MANO sequence to float32 arrays:

* ``datasets``: plain ``datasets.load_dataset(folder, "mix", split="train", streaming=True)``;
* ``stream_unihand_mix``: the validating reader (:mod:`datasets_unihand_mix.streaming`);
* ``+ DataLoader(2 workers)``: the same through ``torch.utils.data.DataLoader(num_workers=2)``.

Then what training consumes, on the same stream with the demo's settings (tiny PELA, chunks cropped to 2, batch
``--batch-size``): the MCP collator alone (MANO tokenized by a GRQ-VAE, images processed, hybrid masking) and full
``PELATrainer`` steps (``--train-steps``), in samples/s, so the two can be compared with the readers above.

Run from the repository root: ``python -m benchmarks.streaming_throughput [--num-clips 1000]``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import psutil


def memory_mib() -> float:
    """Memory of this process and its children (DataLoader workers), MiB: proportional set size (shared pages
    split between the processes that map them) where the OS reports it, else resident set size."""
    process = psutil.Process()
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        total += getattr(info, "pss", info.rss)
    return total / 2**20


def decode(sample: dict[str, Any]) -> dict[str, Any]:
    """Decode what a training step reads: all frames to (N, H, W, 3) uint8, MANO to float32 arrays."""
    frames = np.stack(
        [np.asarray(image.convert("RGB")) for image in [sample["first_frame"], *sample["boundary_frames"]]]
    )
    mano = {
        side: {key: np.asarray(sample[f"mano_{side}"][key], dtype=np.float32) for key in ("hand_pose", "transl")}
        for side in ("left", "right")
        if sample[f"mano_{side}"] is not None
    }
    return {"frames": frames, "mano": mano}


def measure(make: Callable[[], Iterable[Any]], decoded: bool) -> dict[str, float]:
    """One full pass: samples/s, frames/s and memory (start, peak sampled every 20 samples, end)."""
    start_mem, peak = memory_mib(), 0.0
    start = time.perf_counter()
    samples = frames = 0
    for item in make():
        item = item if decoded else decode(item)
        samples += 1
        frames += len(item["frames"])
        if samples % 20 == 0:
            peak = max(peak, memory_mib())
    elapsed = time.perf_counter() - start
    end_mem = memory_mib()
    return {
        "samples": samples,
        "samples_s": samples / elapsed,
        "frames_s": frames / elapsed,
        "mem_start": start_mem,
        "mem_peak": max(peak, end_mem),
        "mem_end": end_mem,
    }


def main() -> None:
    import datasets
    import torch

    from datasets_unihand_mix.export import load_export_stats
    from datasets_unihand_mix.streaming import SkipStats, stream_unihand_mix

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-clips", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--num-workers", type=int, default=2, help="generator processes and DataLoader workers")
    parser.add_argument("--max-shard-size", default="4MB", help="export shard size (several shards feed the workers)")
    parser.add_argument("--output", default=None, help="export folder (default: a temporary one)")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch of the consumption measurements")
    parser.add_argument("--train-steps", type=int, default=30, help="PELATrainer steps timed (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.output or Path(tmp) / "unihand")
        start = time.perf_counter()
        options = {
            "--num-clips": args.num_clips,
            "--image-size": args.image_size,
            "--num-workers": args.num_workers,
            "--max-shard-size": args.max_shard_size,
            "--output": folder,
        }
        command = [sys.executable, "-m", "pela.cli", "data", "export", "--config", "toy", "--overwrite"]
        subprocess.run(
            command + [str(v) for item in options.items() for v in item], check=True, stdout=subprocess.DEVNULL
        )
        export_s = time.perf_counter() - start
        parquet = list((folder / "data").rglob("*.parquet"))
        stats = load_export_stats(folder)
        print(
            f"export (pela data export, separate process): {args.num_clips} clips ({args.image_size} px) in "
            f"{export_s:.1f} s ({args.num_clips / export_s:.1f} clips/s), "
            f"{sum(p.stat().st_size for p in parquet) / 2**20:.1f} MiB in {len(parquet)} shards, rows {stats['rows']}"
        )

        skips = SkipStats()
        readers = {
            "datasets.load_dataset": (
                lambda: datasets.load_dataset(str(folder), "mix", split="train", streaming=True),
                False,
            ),
            "stream_unihand_mix": (lambda: stream_unihand_mix(str(folder), "mix", "train", stats=skips), False),
            f"+ DataLoader({args.num_workers} workers)": (
                lambda: torch.utils.data.DataLoader(
                    stream_unihand_mix(str(folder), "mix", "train"),
                    batch_size=None,
                    num_workers=args.num_workers,
                    collate_fn=decode,
                ),
                True,
            ),
        }
        print(f"\nfull pass over mix/train, every frame and MANO sequence decoded ({psutil.cpu_count()} CPUs)")
        print(f"{'reader':<26}{'samples':>8}{'samples/s':>11}{'frames/s':>10}{'PSS start':>11}{'peak':>8}{'end':>8}")
        for name, (make, decoded) in readers.items():
            r = measure(make, decoded)
            print(
                f"{name:<26}{r['samples']:>8}{r['samples_s']:>11.1f}{r['frames_s']:>10.0f}"
                f"{r['mem_start']:>9.0f} M{r['mem_peak']:>6.0f} M{r['mem_end']:>6.0f} M"
            )
        print(f"skipped by the validating reader: {skips.as_dict()['skipped'] or 'none'}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of the streaming process (getrusage, torch/datasets imports included): {peak:.0f} MiB")
        consumption(str(folder), args.batch_size, args.train_steps)


def consumption(folder: str, batch_size: int, train_steps: int) -> None:
    """Samples/s of the MCP collator over the whole ``mix`` train split and of ``train_steps`` trainer steps."""
    import itertools

    from datasets_unihand_mix import generate_clips
    from datasets_unihand_mix.streaming import stream_unihand_mix
    from modeling_pela import MotionTokenizerConfig, MotionTokenizerModel
    from pela.pretraining import pretrain
    from pela.processors import tiny_processor_for
    from trainers.collator import PELADataCollator
    from trainers.pela_trainer import pela_training_arguments

    tokenizer = MotionTokenizerModel(MotionTokenizerConfig(codebook_size=512)).eval()  # untrained: same cost
    motions = [motion for clip in generate_clips(8) for motion in clip.hands.values()]
    tokenizer.fit_normalization(motions)
    tokenizer.init_codebooks(motions)
    rows = list(stream_unihand_mix(folder, "mix", "train", max_chunks=2))
    processor = tiny_processor_for(rows, tokenizer.config)
    collator = PELADataCollator(processor, tokenizer, seed=0)
    start = time.perf_counter()
    for batch in itertools.batched(rows, batch_size):
        collator(list(batch))
    collate_s = len(rows) / (time.perf_counter() - start)
    print(f"\nwhat training consumes (tiny PELA, 2 chunks, batch {batch_size}, 1 thread)")
    print(f"MCP collator alone (tokenize MANO, process images, mask): {collate_s:.1f} samples/s")
    if train_steps:
        stream = stream_unihand_mix(folder, "mix", "train", shuffle_buffer_size=256, max_chunks=2)
        with tempfile.TemporaryDirectory() as out:
            args = pela_training_arguments(
                out, max_steps=train_steps, per_device_train_batch_size=batch_size, learning_rate=1e-3,
                save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=train_steps,
            )  # fmt: skip
            start = time.perf_counter()
            pretrain("pela", stream, processor, tokenizer, args)
            train_s = train_steps * batch_size / (time.perf_counter() - start)
        print(f"PELATrainer steps (stream + collator + forward/backward + EMA): {train_s:.1f} samples/s")


if __name__ == "__main__":
    main()
