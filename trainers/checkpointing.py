"""Crash-safe checkpoints for ``transformers.Trainer``.

``Trainer`` writes ``checkpoint-<step>/`` file by file, so a run killed while saving leaves a folder that looks like a
checkpoint but lacks weights, optimizer or RNG state, and ``get_last_checkpoint`` picks it on resume.
:class:`AtomicCheckpointMixin` writes every checkpoint into ``<output_dir>/.staging/checkpoint-<step>/`` and moves it
into place with one ``os.replace`` once all ranks have written their part and the files are flushed to disk, so a
``checkpoint-<step>/`` folder is either complete or absent, whatever moment a kill (even SIGKILL) hits.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints

STAGING_DIR = ".staging"


def _fsync_tree(path: str) -> None:
    """Flush every file under ``path`` and the directories themselves to disk."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(root)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-<step>`` under ``output_dir`` (None if there is none).

    With :class:`AtomicCheckpointMixin` every such folder is complete; half-written saves stay in ``.staging/``,
    which is ignored (and cleared by the next save).
    """
    output_dir = os.fspath(output_dir)
    return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None


RUN_MARKERS = ("config.json", "trainer_state.json", "pela_card.json", STAGING_DIR)  # what says "a training run"


def check_output_dir(output_dir: str | os.PathLike, *, resume: bool, overwrite: bool) -> bool:
    """Whether a new run must first clear ``output_dir`` (:func:`clear_output_dir`). A folder that holds another
    run is refused, since its checkpoints would be rotated in place of the new run's and
    ``resume_from_checkpoint="last"`` would resume the old run: it needs ``resume`` (continue it) or ``overwrite``
    (start over in it). Raises ``FileExistsError`` naming the folder and the options; ``overwrite`` of a non-empty
    folder that is not a training run is refused too (nothing there is ours to delete). Reads only: call it on every
    process."""
    path = Path(output_dir)
    if resume or not path.is_dir() or not any(path.iterdir()):
        return False
    names = sorted(p.name for p in path.iterdir())
    is_run = any(name in RUN_MARKERS or name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") for name in names)
    if not overwrite or not is_run:
        raise FileExistsError(
            f"output_dir {path} is not empty ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}); "
            + (
                "it holds a run: pass --resume_from_checkpoint last to continue it, --overwrite_output_dir to start "
                "over in it (its contents are deleted), or another --output_dir"
                if is_run
                else "it is not a training run's folder, so it is never overwritten: choose another --output_dir"
            )
        )
    return True


def clear_output_dir(output_dir: str | os.PathLike) -> None:
    """Delete everything in a run's ``output_dir`` (checkpoints, the final model, its card): call it on the main
    process only, after :func:`check_output_dir` returned True on every process."""
    for entry in Path(output_dir).iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


class AtomicCheckpointMixin:
    """Mixin for ``Trainer`` subclasses (put it first in the bases): checkpoints appear atomically.

    Works with several processes: every rank writes its RNG state into the staging folder, the main process renames
    it after a barrier, then rotates old checkpoints (``save_total_limit``).
    """

    def _save_checkpoint(self: Any, model: Any, trial: Any) -> None:
        run_dir = self._get_output_dir(trial=trial)
        staging_root = os.path.join(run_dir, STAGING_DIR)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = os.path.join(staging_root, name), os.path.join(run_dir, name)
        if self.args.should_save and os.path.exists(staging_root):
            shutil.rmtree(staging_root)  # leftovers of a save that was killed
        self.accelerator.wait_for_everyone()
        self._get_output_dir = lambda trial=None: staging_root  # the base class saves into the staging folder
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            _fsync_tree(staged)
            if os.path.exists(final):  # the same step saved again (e.g. after a resume)
                shutil.rmtree(final)
            os.replace(staged, final)
            _fsync_dir(run_dir)
            os.rmdir(staging_root)
            if self.state.best_model_checkpoint == staged:
                self.state.best_model_checkpoint = final
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()
