"""The Ray Data engine of ``pela data curate-videos --engine ray``: the stages of
:mod:`datasets_unihand_mix.video_curation` as one streaming Ray Data pipeline.

``from_items(videos) -> flat_map(decode_stage) -> map(KeypointStage, actor pool) -> map(CurateStage, actor pool)``:
videos are decoded in parallel tasks, each keypoint actor loads the hand landmarker once and each curation actor its
judge once, and Ray streams windows between them with back-pressure (object-store memory, not whole videos). The
same stage objects run in :func:`~datasets_unihand_mix.video_curation.run_local`, and the keypoint fit runs on one
thread, so both engines give the same rows. ``address=None`` starts Ray on this machine (``num_cpus`` of them); an
address (``"auto"``, ``"ray://head:10001"``) joins a cluster, whose workers need PELA and its model installed. A
local instance's workers import PELA from where this process does (``PYTHONPATH``), so a checkout runs its own code.
A stage that fails with one of the project's errors (:class:`~modeling_pela.hand_motion.HandMotionError`, e.g. a video
that cannot be decoded) raises that error here, not Ray's wrapper of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modeling_pela.hand_motion import HandMotionError

from .video_curation import CurateStage, KeypointStage, VideoCurationConfig, decode_stage


def run_ray(
    videos: Sequence[Path],
    config: VideoCurationConfig,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
) -> list[dict[str, Any]]:
    """The stage outputs of every window (in no particular order; ``collect`` sorts them).

    Args:
        address: Ray cluster address, or None for a local Ray instance.
        num_cpus: CPUs of a local instance (None: all of this machine's).
        actors: keypoint and curation actors each (None: half the cluster's CPUs, at least 1).
    """
    import ray

    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {}
        if address is None:
            root = str(Path(__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            options = {"num_cpus": num_cpus, "runtime_env": {"env_vars": {"PYTHONPATH": path}}}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False, **options)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.raise_original_map_exception = True
        pool = ray.data.ActorPoolStrategy
        size = actors or max(1, int(ray.cluster_resources().get("CPU", 2)) // 2)
        items = [{"video": str(video), "video_index": index} for index, video in enumerate(videos)]
        dataset = (
            ray.data.from_items(items, override_num_blocks=max(1, len(items)))
            .flat_map(decode_stage, fn_kwargs={"config": config})
            .map(KeypointStage, fn_constructor_kwargs={"config": config}, compute=pool(size=size), num_cpus=1)
            .map(CurateStage, fn_constructor_kwargs={"config": config}, compute=pool(size=size), num_cpus=1)
        )
        try:
            return dataset.take_all()
        except Exception as err:
            cause = project_error(err)
            if cause is None:
                raise
            raise cause from None
    finally:
        if started:
            ray.shutdown()


def project_error(error: BaseException) -> HandMotionError | None:
    """The project's own error inside Ray's wrappers of it (``RayTaskError``, ``UserCodeException``), or None."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, HandMotionError) and type(current).__module__.split(".")[0] != "ray":
            return current
        pending += [getattr(current, "cause", None), current.__cause__, current.__context__]
    return None
