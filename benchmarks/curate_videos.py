"""Throughput and memory of ``pela data curate-videos``: clips/s, seconds of video per second, peak memory.

Curates ``--copies`` copies of the real test video (``tests/fixtures_real_hands/hand_video_202f.mp4``: 8.08 s,
640x360, 25 fps, one hand in every frame) with the default settings (every frame, 5 s windows, MediaPipe hand
landmarker, MANO fit, rule-based judge, 0.5x slow-down):

* ``local``: the stages in this process, timed one by one (decode, keypoints, curation = MANO fit + judge +
  slow-down + row encoding); peak memory is this process's maximum resident set size;
* ``ray`` (``--engine ray``): the same windows through the Ray Data pipeline on a local Ray instance of
  ``--num-cpus`` CPUs (its start-up and shut-down included in the wall time); peak memory sums the resident sets of
  this process and the Ray processes, sampled every 0.2 s.

Clips are candidate windows (5 s of video each); a kept clip is a written row. Run from the repository root:
``python -m benchmarks.curate_videos [--copies 4] [--engine local|ray|both]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

from datasets_unihand_mix.video_curation import (
    CurateStage,
    KeypointStage,
    VideoCurationConfig,
    collect,
    decode_stage,
)

VIDEO = Path(__file__).resolve().parent.parent / "tests" / "fixtures_real_hands" / "hand_video_202f.mp4"
VIDEO_SECONDS = 202 / 25


def copies(folder: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"video_{i:03d}.mp4"
        shutil.copyfile(VIDEO, path)
        paths.append(path)
    return paths


def run_local(videos: list[Path], config: VideoCurationConfig) -> dict:
    seconds = {"decode": 0.0, "keypoints": 0.0, "curate": 0.0}
    results = []
    start = time.perf_counter()
    keypoints, curate = KeypointStage(config), CurateStage(config)
    for index, video in enumerate(videos):
        tick = time.perf_counter()
        records = decode_stage({"video": str(video), "video_index": index}, config)
        seconds["decode"] += time.perf_counter() - tick
        for record in records:
            tick = time.perf_counter()
            record = keypoints(record)
            seconds["keypoints"] += time.perf_counter() - tick
            tick = time.perf_counter()
            results.append(curate(record))
            seconds["curate"] += time.perf_counter() - tick
    keypoints.close()
    wall = time.perf_counter() - start
    rows, report, _ = collect(results)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return summary("local", len(videos), wall, report.candidates, len(rows), peak, stage_seconds=seconds)


def ray_memory_mib() -> float:
    total = 0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            line = " ".join(proc.info["cmdline"] or [])
            if (
                "ray" in (proc.info["name"] or "")
                or "ray::" in line
                or "/ray/" in line
                or proc.pid == psutil.Process().pid
            ):
                total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def run_ray_engine(videos: list[Path], config: VideoCurationConfig, num_cpus: int) -> dict:
    from datasets_unihand_mix.video_curation_ray import run_ray

    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], ray_memory_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        results = run_ray(videos, config, num_cpus=num_cpus)
    finally:
        done.set()
    wall = time.perf_counter() - start
    rows, report, _ = collect(results)
    return summary("ray", len(videos), wall, report.candidates, len(rows), peak[0])


def summary(engine: str, videos: int, wall: float, clips: int, kept: int, peak_mib: float, **extra: object) -> dict:
    return {
        "engine": engine,
        "videos": videos,
        "video_seconds": round(videos * VIDEO_SECONDS, 2),
        "wall_s": round(wall, 1),
        "clips": clips,
        "kept": kept,
        "clips_per_s": round(clips / wall, 3),
        "video_s_per_s": round(videos * VIDEO_SECONDS / wall, 3),
        "peak_memory_mib": round(peak_mib),
        **{k: ({n: round(v, 1) for n, v in val.items()} if isinstance(val, dict) else val) for k, val in extra.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--engine", choices=("local", "ray", "both"), default="both")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    config = VideoCurationConfig()
    with tempfile.TemporaryDirectory() as folder:
        videos = copies(Path(folder), args.copies)
        if args.engine in ("local", "both"):
            print(json.dumps(run_local(videos, config)))
        if args.engine in ("ray", "both"):
            print(json.dumps(run_ray_engine(videos, config, args.num_cpus)))


if __name__ == "__main__":
    main()
