"""The heartbeat of long stages (pela.progress): a running stage prints at least every ``interval`` seconds."""

from __future__ import annotations

import io
import re
import time

import pytest

from pela.progress import Heartbeat


def test_a_running_stage_prints_every_interval_and_when_it_ends():
    stream = io.StringIO()
    with Heartbeat("[job] working", interval=0.1, stream=stream) as beat:
        time.sleep(0.35)
        beat.status("1 of 2 parts done")
        time.sleep(0.35)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[job] working ..."
    beats = [line for line in lines[1:-1] if re.fullmatch(r"\[job\] working: \d+ s(, .+)?", line)]
    assert len(beats) >= 3 and len(beats) == len(lines) - 2  # ~7 intervals in 0.7 s, nothing else printed
    assert beats[-1].endswith(", 1 of 2 parts done") and not beats[0].endswith("done")
    assert re.fullmatch(r"\[job\] working: done in \d+ s", lines[-1])
    assert beat.seconds >= 0.7


def test_a_failing_stage_stops_its_heartbeat_without_claiming_success():
    stream = io.StringIO()
    with pytest.raises(RuntimeError), Heartbeat("[job] failing", interval=0.05, stream=stream):
        raise RuntimeError("boom")
    printed = stream.getvalue()
    time.sleep(0.15)
    assert stream.getvalue() == printed and "done" not in printed  # the thread has stopped
    with pytest.raises(ValueError, match="interval"):
        Heartbeat("x", interval=0)
