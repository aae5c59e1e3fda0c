"""Generation speed of the procedural clips: clips per second, with the first and chunk-boundary frames rendered.

Run from the repository root: ``python -m benchmarks.procedural_speed [--num-clips 2000 --num-workers 2]``.
"""

from __future__ import annotations

import argparse
import time

from datasets_unihand_mix import ProceduralConfig, iter_clips


def measure(num_clips: int, config: ProceduralConfig, num_workers: int, render: str) -> tuple[float, int]:
    """(clips per second, rendered frames) for generating ``num_clips`` clips."""
    start = time.perf_counter()
    frames = sum(len(clip._cache.get("frames", {})) for clip in iter_clips(num_clips, config, num_workers, 0, render))
    return num_clips / (time.perf_counter() - start), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-clips", type=int, default=2000)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=96)
    args = parser.parse_args()
    print(f"{args.num_clips} clips per row, {args.num_workers} workers, {args.image_size} px")
    print(f"{'style':<6}{'render':<10}{'clips/s':>9}{'frames/clip':>13}{'10k clips (min)':>17}")
    for style in ("lab", "wild"):
        config = ProceduralConfig(style=style, image_size=args.image_size)
        for render in ("none", "boundary"):
            rate, frames = measure(args.num_clips, config, args.num_workers, render)
            print(f"{style:<6}{render:<10}{rate:>9.1f}{frames / args.num_clips:>13.2f}{1e4 / rate / 60:>17.1f}")


if __name__ == "__main__":
    main()
