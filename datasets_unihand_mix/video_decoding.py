"""Video files -> fixed-length windows of RGB frames, decoded with PyAV (its wheels bundle FFmpeg).

:func:`iter_video_windows` decodes one video sequentially (memory: one window of frames at a time, never the whole
video), keeps the frames on a regular grid of ``sample_fps`` (every frame when the video's own rate is lower),
downscales them so that their longer side is at most ``max_side`` pixels, and yields :class:`VideoWindow` objects of
``window_seconds`` each (the last one shorter; windows shorter than ``min_seconds`` are dropped).

A window's ``frames`` is a ``(N, H, W, 3)`` ``uint8`` RGB array at ``fps`` frames per second; ``start`` is the time
of its first frame in seconds from the start of the video. :func:`list_videos` expands folders into video files;
:func:`probe_video` checks that a file opens as a video (container, stream, frame rate) without decoding it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .sources import SourceDataError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
UNREADABLE_FIX = "not a readable video: re-encode it or remove it from the input, or pass --skip-bad-videos"


@dataclass
class VideoWindow:
    """One window of a video: ``frames`` (N, H, W, 3) uint8 RGB at ``fps``; ``start`` (s) of its first frame;
    ``index`` its position in the video (0, 1, ...); ``video`` the file it came from."""

    video: str
    index: int
    start: float
    fps: float
    frames: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.frames)


class ArrayFrames:
    """Frame loader over an in-memory (N, H, W, 3) uint8 array: frame indices -> RGB ``PIL.Image`` list."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __call__(self, indices: Sequence[int]) -> list[Image.Image]:
        return [Image.fromarray(self.frames[int(i)]) for i in indices]


def list_videos(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Video files named by ``paths`` (a folder contributes its files with a video suffix, recursively, sorted)."""
    videos: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{path}: no video files ({', '.join(VIDEO_SUFFIXES)})")
            videos.extend(found)
        elif path.is_file():
            videos.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such video file or folder")
    return videos


def _resize(frame: np.ndarray, max_side: int) -> np.ndarray:
    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


@contextlib.contextmanager
def _open_video(where: str) -> Iterator[tuple[Any, Any, float]]:
    """The open container, its first video stream and that stream's frame rate (> 0)."""
    import av

    try:
        container = av.open(where)
    except (av.error.FFmpegError, OSError) as err:
        raise SourceDataError(f"{where}: cannot open video ({err}); {UNREADABLE_FIX}") from err
    with container:
        if not container.streams.video:
            raise SourceDataError(f"{where}: no video stream; {UNREADABLE_FIX}")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        if not rate > 0:
            raise SourceDataError(f"{where}: unknown frame rate (field 'average_rate'); {UNREADABLE_FIX}")
        yield container, stream, rate


def probe_video(path: str | os.PathLike) -> float | None:
    """The duration of ``path`` in seconds (None when the container does not say), after checking that it opens as a
    video with a frame rate, without decoding frames.

    Raises:
        SourceDataError: as :func:`iter_video_windows` when the file cannot be opened (message names the file and
            the fix).
    """
    import av

    with _open_video(os.fspath(path)) as (container, stream, _):
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        return None


def iter_video_windows(
    path: str | os.PathLike,
    *,
    sample_fps: float = 30.0,
    window_seconds: float = 5.0,
    min_seconds: float = 0.5,
    max_side: int = 640,
) -> Iterator[VideoWindow]:
    """The windows of one video (see the module docstring).

    Args:
        path: a video file FFmpeg can read.
        sample_fps: rate of the kept frames (the video's own rate when lower).
        window_seconds: length of a window (5 s: 10 s of output after the paper's 0.5x slow-down).
        min_seconds: windows shorter than this are dropped (0.5 s: one 15-frame chunk after the slow-down).
        max_side: longer image side of the kept frames, in pixels (smaller frames are kept as they are).

    Raises:
        SourceDataError: the file cannot be opened or decoded, or has no video stream (message names the file).
    """
    import av

    where = os.fspath(path)
    with _open_video(where) as (container, stream, rate):
        fps = float(min(rate, sample_fps))
        per_window = max(1, round(window_seconds * fps))
        buffer: list[np.ndarray] = []
        index, kept, start = 0, 0, 0.0
        first_time: float | None = None
        try:
            for frame in container.decode(stream):
                time = float(frame.time) if frame.time is not None else kept / rate
                if first_time is None:
                    first_time = time
                if (time - first_time) * fps + 1e-6 < kept:  # keep the first frame at or after each grid time
                    continue
                if not buffer:
                    start = kept / fps
                buffer.append(_resize(frame.to_ndarray(format="rgb24"), max_side))
                kept += 1
                if len(buffer) == per_window:
                    yield VideoWindow(where, index, start, fps, np.stack(buffer))
                    buffer, index = [], index + 1
        except av.error.FFmpegError as err:
            raise SourceDataError(f"{where}: cannot decode frame {kept} ({err}); {UNREADABLE_FIX}") from err
        if buffer and len(buffer) >= math.ceil(min_seconds * fps - 1e-6):
            yield VideoWindow(where, index, start, fps, np.stack(buffer))
