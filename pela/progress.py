"""A heartbeat for long jobs: a stage that runs for minutes without printing looks hung, so :class:`Heartbeat` prints
one line every ``interval`` seconds while the stage runs (elapsed time and the latest status), and one when it ends.

    with Heartbeat("[demo] training the motion tokenizer", interval=20) as beat:
        ...
        beat.status("2 of 3 models done")
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Heartbeat:
    """Context manager: prints ``"<label>: <elapsed> s<, status>"`` every ``interval`` seconds from a daemon thread
    until the block ends, then ``"<label>: done in <elapsed> s"``. ``stream`` defaults to ``sys.stdout`` at entry."""

    def __init__(self, label: str, interval: float = 20.0, stream: TextIO | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.label, self.interval, self.stream = label, interval, stream
        self._status = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = 0.0
        self.seconds: float | None = None  # the block's duration, once it has ended

    def status(self, text: str) -> None:
        """Set the status shown by the next lines (e.g. how many of the stage's parts are done)."""
        self._status = text

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            status = f", {self._status}" if self._status else ""
            self._print(f"{self.label}: {self.elapsed:.0f} s{status}")

    def __enter__(self) -> Heartbeat:
        self.stream = self.stream or sys.stdout
        self._stop.clear()
        self.started, self.seconds = time.monotonic(), None
        self._print(f"{self.label} ...")
        self._thread = threading.Thread(target=self._run, name=f"heartbeat: {self.label}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.seconds = self.elapsed
        if exc_type is None:
            self._print(f"{self.label}: done in {self.seconds:.0f} s")
