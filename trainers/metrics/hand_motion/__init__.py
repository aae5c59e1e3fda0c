"""Hand-motion metrics (MPJPE, PA-MPJPE, MWTE, MDE; metres in, centimetres out) as numpy functions.

The ``evaluate`` metric is ``evaluate.load("trainers/metrics/hand_motion")``; importing this package does not import
evaluate (``HandMotion`` is resolved lazily by :mod:`.hand_motion`).
"""

from .hand_motion import (
    METRIC_NAMES,
    NUM_JOINTS,
    compute_hand_motion_metrics,
    per_sample_hand_motion_errors,
    similarity_procrustes,
)

__all__ = [
    "METRIC_NAMES",
    "NUM_JOINTS",
    "compute_hand_motion_metrics",
    "per_sample_hand_motion_errors",
    "similarity_procrustes",
]
