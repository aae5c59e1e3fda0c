"""Run a Python snippet in a fresh process in which this repository's packages cannot be imported.

The test venv has the project installed in editable mode, so removing it from ``PYTHONPATH`` is not enough: a
``MetaPathFinder`` placed first on ``sys.meta_path`` refuses the project's top-level packages, as for a Hub user who
never installed them. The snippet runs with ``cwd`` as working directory and its own ``HF_MODULES_CACHE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT_PACKAGES = ("modeling_pela", "datasets_unihand_mix", "trainers", "pela")

PRELUDE = f"""
import importlib.abc, sys

class HideProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(PROJECT_PACKAGES)!r}:
            raise ModuleNotFoundError(name)
        return None

sys.meta_path.insert(0, HideProject())
try:
    import modeling_pela
    raise AssertionError("modeling_pela must not be importable here")
except ModuleNotFoundError:
    pass
"""


def run_without_project(script: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``script`` (dedented) after :data:`PRELUDE` in a subprocess; returns the completed process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(Path(cwd) / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
