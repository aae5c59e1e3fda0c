"""Matplotlib figures of the demo: loss curves and generated vs true hands (camera x-y view)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def plot_loss_curves(histories: Mapping[str, list[dict[str, float]]], path: str | Path) -> Path:
    """One panel per logged loss term, one line per model variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("loss", "mcp_loss", "align_loss")
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for axis, key in zip(axes, keys, strict=True):
        for name, history in histories.items():
            points = [(h["step"], h[key]) for h in history if key in h]
            if points:
                axis.plot(*zip(*points, strict=True), label=name)
        axis.set_title(key)
        axis.set_xlabel("step")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def plot_hand_motion(pairs: Sequence[tuple[np.ndarray, np.ndarray]], path: str | Path, title: str) -> Path:
    """Generated (red) vs true (black) hands, camera x-y view, first / middle / last frame of each chunk."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modeling_pela.mano import KEYPOINT_PARENTS

    figure, axes = plt.subplots(1, len(pairs), figsize=(3 * len(pairs), 3), squeeze=False)
    for axis, (generated, true) in zip(axes[0], pairs, strict=True):
        for joints, colour in ((true, "black"), (generated, "tab:red")):
            for t in (0, joints.shape[0] // 2, joints.shape[0] - 1):
                for k, parent in enumerate(KEYPOINT_PARENTS):
                    if parent >= 0:
                        axis.plot(joints[t, [parent, k], 0], -joints[t, [parent, k], 1], color=colour, lw=1)
            axis.plot(joints[:, 0, 0], -joints[:, 0, 1], color=colour, ls=":", lw=1)
        axis.set_aspect("equal")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{title}: generated (red) vs true (black)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
