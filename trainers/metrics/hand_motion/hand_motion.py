"""Hand-motion generation metric: MPJPE, PA-MPJPE, MWTE and MDE on 21-keypoint hand joints (metres in, cm out).

Two ways to use it:
  * ``evaluate.load("trainers/metrics/hand_motion")`` from the repository root gives the ``HandMotion`` metric;
  * the pure numpy functions (:func:`compute_hand_motion_metrics`, :func:`per_sample_hand_motion_errors`,
    :func:`similarity_procrustes`) can be imported from ``trainers.metrics.hand_motion`` by training code.

Importing ``evaluate`` takes seconds (it pulls in transformers), so ``datasets`` and ``evaluate`` are imported only when
the metric class is needed: eagerly when ``evaluate`` is already imported (which is the case under ``evaluate.load``,
so that evaluate finds the class in the module), otherwise on first access of ``HandMotion``.

This file is self-contained on purpose (evaluate copies it into its module cache): besides the standard library it
imports only numpy, datasets and evaluate, one import per line (evaluate 0.4.6's import scanner misreads combined
imports), and no relative imports.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

NUM_JOINTS = 21
WRIST = 0
M_TO_CM = 100.0
METRIC_NAMES = ("mpjpe", "pa_mpjpe", "mwte", "mde")
# Frames per Procrustes batch: bounds the temporaries to roughly 100 MB whatever the input size.
_PROCRUSTES_CHUNK = 65536

_CITATION = """\
@article{umeyama1991least,
  title   = {Least-squares estimation of transformation parameters between two point patterns},
  author  = {Umeyama, Shinji},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume  = {13},
  number  = {4},
  pages   = {376--380},
  year    = {1991}
}
"""

_DESCRIPTION = """\
Hand-motion generation metrics on 21 hand keypoints (joint 0 = wrist, then thumb 1-4, index 5-8, middle 9-12,
ring 13-16, pinky 17-20). Inputs are in METRES, every output is in CENTIMETRES. Each metric is first computed per
sample, and the reported value is the mean over samples (every sample weighted equally, whatever its length).
With p the predicted and g the reference joints of one sample of T frames (frames 0 .. T-1):

- MPJPE: per sample, mean over frames and joints of the Euclidean distance ||p - g||.
- PA-MPJPE: per frame, align the predicted 21 joints to the reference with a similarity Procrustes (optimal scale,
  rotation, translation; reflection fixed so the rotation has det +1 - Umeyama), then mean joint distance; per
  sample, mean over frames.
- MWTE (mean wrist trajectory error): per sample, mean over frames of ||p_t[0] - g_t[0]||.
- MDE (motion displacement error): per sample, ||(p_T[0] - p_0[0]) - (g_T[0] - g_0[0])||, with 0 and T the first
  and last frame.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: predicted joints in metres, either one array of shape (N, T, 21, 3) or a list of N arrays of
        shape (T_i, 21, 3) (variable length allowed).
    references: reference joints in metres, same structure as `predictions`; reference i must have the same shape
        as prediction i.
Returns:
    dict with python floats, in centimetres, each the mean over the N samples of the per-sample value:
    mpjpe: mean per-joint position error.
    pa_mpjpe: MPJPE after per-frame similarity (Umeyama, no reflection) alignment.
    mwte: mean wrist trajectory error.
    mde: motion displacement error of the wrist between the first and the last frame.
Raises:
    ValueError naming the sample index for: empty input, different numbers of predictions and references,
    shapes other than (T, 21, 3) or T == 0, prediction/reference shape mismatch, NaN or inf values.
Examples:
    >>> import numpy as np
    >>> import evaluate
    >>> metric = evaluate.load("trainers/metrics/hand_motion")
    >>> refs = np.zeros((2, 4, 21, 3))
    >>> preds = refs + np.array([0.03, 0.0, 0.04])  # constant 5 cm offset
    >>> {k: round(v, 6) for k, v in metric.compute(predictions=preds, references=refs).items()}
    {'mpjpe': 5.0, 'pa_mpjpe': 0.0, 'mwte': 5.0, 'mde': 0.0}
"""


# ----------------------------------------------------------------------------------------------------------------
# Pure numpy functions
# ----------------------------------------------------------------------------------------------------------------


def similarity_procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Align ``source`` to ``target`` with a per-item similarity transform (Umeyama 1991, rotation det +1).

    Args:
        source: (..., J, 3) points to move (predictions).
        target: (..., J, 3) points to match (references).
    Returns:
        (..., J, 3) ``s * source @ R.T + t`` with the scale ``s``, rotation ``R`` (det +1, no reflection) and
        translation ``t`` minimising the squared distance to ``target``, computed independently for each item of
        the leading dims. A degenerate ``source`` (all J points equal) gets ``s = 0``, i.e. every point is mapped
        to the target centroid.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim < 2 or source.shape[-1] != 3:
        raise ValueError(
            f"similarity_procrustes: expected two (..., J, 3) arrays of equal shape, got {source.shape} and {target.shape}"
        )
    mu_src = source.mean(axis=-2, keepdims=True)
    mu_tgt = target.mean(axis=-2, keepdims=True)
    src = source - mu_src
    tgt = target - mu_tgt
    var_src = np.sum(src * src, axis=(-2, -1))  # (...,), J * variance
    cov = np.swapaxes(tgt, -1, -2) @ src  # (..., 3, 3) = sum_j tgt_j src_j^T
    u, sig, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))  # -1 where U V^T would be a reflection
    d = np.ones(sig.shape, dtype=np.float64)
    d[..., -1] = sign
    rot = (u * d[..., None, :]) @ vt  # U diag(d) V^T
    trace = np.sum(sig * d, axis=-1)
    tiny = var_src <= 1e-300
    scale = np.where(tiny, 0.0, trace / np.where(tiny, 1.0, var_src))
    return scale[..., None, None] * (src @ np.swapaxes(rot, -1, -2)) + mu_tgt


def _as_array(value: Any) -> np.ndarray:
    """Any array-like (numpy, nested lists, torch tensors on any device) -> float64 numpy array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _split_samples(value: Any, name: str) -> list[np.ndarray]:
    """(N, T, 21, 3) array or sequence of N (T_i, 21, 3) arrays -> list of N float64 arrays (shapes not checked)."""
    if value is None:
        raise ValueError(
            f"{name} is missing: pass an array of shape (N, T, {NUM_JOINTS}, 3) or a list of N (T_i, {NUM_JOINTS}, 3) arrays"
        )
    if isinstance(value, np.ndarray) and value.dtype != object:
        array = value.astype(np.float64, copy=False)
    elif isinstance(value, (list, tuple, np.ndarray)):  # list of samples, or an object array of ragged samples
        samples = []
        for i, item in enumerate(value):
            try:
                samples.append(_as_array(item))
            except (TypeError, ValueError) as err:
                raise ValueError(f"sample {i}: {name} is not a numeric (T, {NUM_JOINTS}, 3) array ({err})") from err
        return samples
    else:
        try:
            array = _as_array(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} is not a numeric array ({err})") from err
    if array.ndim != 4:
        raise ValueError(
            f"{name} has shape {array.shape}: expected an array of shape (N, T, {NUM_JOINTS}, 3) "
            f"or a list of N arrays of shape (T_i, {NUM_JOINTS}, 3)"
        )
    return list(array)


def _check_sample_shapes(preds: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> None:
    """Raise a ValueError for empty input, a count mismatch, or the first sample with a bad or mismatched shape."""
    if len(preds) == 0 and len(refs) == 0:
        raise ValueError("empty input: predictions and references hold no sample (expected N >= 1)")
    if len(preds) != len(refs):
        raise ValueError(f"got {len(preds)} predictions but {len(refs)} references: pass one reference per prediction")
    for i, (p, g) in enumerate(zip(preds, refs, strict=True)):
        for name, arr in (("prediction", p), ("reference", g)):
            if arr.ndim != 3 or arr.shape[1:] != (NUM_JOINTS, 3):
                raise ValueError(
                    f"sample {i}: {name} has shape {arr.shape}, expected (T, {NUM_JOINTS}, 3) "
                    f"(T frames, {NUM_JOINTS} hand joints with joint 0 = wrist, xyz in metres)"
                )
            if arr.shape[0] == 0:
                raise ValueError(f"sample {i}: {name} has no frame (T = 0)")
        if p.shape != g.shape:
            raise ValueError(
                f"sample {i}: prediction shape {p.shape} != reference shape {g.shape}; "
                f"both must cover the same frames (trim or resample one of them)"
            )


def _check_finite(joints: np.ndarray, starts: np.ndarray, name: str) -> None:
    """Raise a ValueError naming the sample and frame of the first NaN/inf in ``joints`` (F, 21, 3)."""
    finite = np.isfinite(joints)
    if finite.all():
        return
    frame = int(np.argmax(~finite.reshape(joints.shape[0], -1).all(axis=1)))
    sample = int(np.searchsorted(starts, frame, side="right") - 1)
    kind = "NaN" if np.isnan(joints[frame]).any() else "inf"
    raise ValueError(f"sample {sample}: {name} contains {kind} values (first at frame {frame - int(starts[sample])})")


def per_sample_hand_motion_errors(predictions: Any, references: Any) -> dict[str, np.ndarray]:
    """Per-sample errors in centimetres.

    Args:
        predictions: (N, T, 21, 3) array or list of N (T_i, 21, 3) arrays, metres.
        references: same structure and shapes as ``predictions``, metres.
    Returns:
        dict ``{"mpjpe", "pa_mpjpe", "mwte", "mde"}`` of (N,) float64 arrays in centimetres.
    Raises:
        ValueError naming the sample for empty input, wrong shapes, shape mismatches and NaN/inf values.
    """
    preds = _split_samples(predictions, "predictions")
    refs = _split_samples(references, "references")
    _check_sample_shapes(preds, refs)
    lengths = np.array([p.shape[0] for p in preds], dtype=np.int64)  # (N,)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (N,) first frame of each sample in the flat arrays
    ends = starts + lengths - 1  # (N,) last frame
    pred = np.concatenate(preds, axis=0)  # (F, 21, 3), F = sum T_i
    ref = np.concatenate(refs, axis=0)
    _check_finite(pred, starts, "prediction")
    _check_finite(ref, starts, "reference")

    def joint_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # (F, 21, 3) x2 -> (F, 21)
        diff = a - b
        return np.sqrt(np.sum(diff * diff, axis=-1))

    joint_err = joint_distances(pred, ref)  # (F, 21)
    frame_mpjpe = joint_err.mean(axis=-1)  # (F,)
    frame_wrist = joint_err[:, WRIST]  # (F,)
    frame_pa = np.empty(pred.shape[0], dtype=np.float64)  # (F,)
    for lo in range(0, pred.shape[0], _PROCRUSTES_CHUNK):
        hi = lo + _PROCRUSTES_CHUNK
        frame_pa[lo:hi] = joint_distances(similarity_procrustes(pred[lo:hi], ref[lo:hi]), ref[lo:hi]).mean(axis=-1)

    def sample_mean(per_frame: np.ndarray) -> np.ndarray:  # (F,) -> (N,)
        return np.add.reduceat(per_frame, starts) / lengths

    disp_pred = pred[ends, WRIST] - pred[starts, WRIST]  # (N, 3)
    disp_ref = ref[ends, WRIST] - ref[starts, WRIST]
    return {
        "mpjpe": M_TO_CM * sample_mean(frame_mpjpe),
        "pa_mpjpe": M_TO_CM * sample_mean(frame_pa),
        "mwte": M_TO_CM * sample_mean(frame_wrist),
        "mde": M_TO_CM * np.linalg.norm(disp_pred - disp_ref, axis=-1),
    }


def compute_hand_motion_metrics(predictions: Any, references: Any) -> dict[str, float]:
    """MPJPE, PA-MPJPE, MWTE and MDE in centimetres, each the mean over samples of the per-sample value.

    Args:
        predictions: (N, T, 21, 3) array or list of N (T_i, 21, 3) arrays, metres (joint 0 = wrist).
        references: same structure and shapes as ``predictions``, metres.
    Returns:
        ``{"mpjpe": float, "pa_mpjpe": float, "mwte": float, "mde": float}`` in centimetres.
    Raises:
        ValueError naming the sample for empty input, wrong shapes, shape mismatches and NaN/inf values.
    """
    per_sample = per_sample_hand_motion_errors(predictions, references)
    return {name: float(per_sample[name].mean()) for name in METRIC_NAMES}


# ----------------------------------------------------------------------------------------------------------------
# evaluate wrapper
# ----------------------------------------------------------------------------------------------------------------


def _build_metric_class() -> type:
    """Define the ``evaluate.Metric`` subclass (imports datasets and evaluate)."""
    import datasets
    import evaluate

    @evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
    class HandMotion(evaluate.Metric):
        """evaluate wrapper around :func:`compute_hand_motion_metrics` (inputs in metres, outputs in centimetres).

        evaluate stores the inputs as float32, so results can differ from :func:`compute_hand_motion_metrics` on
        float64 inputs by about 1e-6 cm.
        """

        def _info(self) -> evaluate.MetricInfo:
            joints = datasets.Array3D(shape=(None, NUM_JOINTS, 3), dtype="float32")  # one (T, 21, 3) sample
            info = evaluate.MetricInfo(
                description=_DESCRIPTION,
                citation=_CITATION,
                inputs_description=_KWARGS_DESCRIPTION,
                features=datasets.Features({"predictions": joints, "references": joints}),
                reference_urls=["https://doi.org/10.1109/34.88573"],
            )
            # MetricInfo.__post_init__ only accepts format="numpy" with scalar Value features, but datasets' numpy
            # formatter reads Array3D columns fine (an (N, T, 21, 3) array, or an object array of (T_i, 21, 3)
            # arrays) and is about 4x faster than the default nested python lists (N=2000, T=60: ~2 s instead of
            # ~6 s). _compute accepts both forms, so this is only a speed-up.
            info.format = "numpy"
            return info

        def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
            """Add N samples: (N, T, 21, 3) arrays or lists of N (T_i, 21, 3) arrays (metres). Shapes are checked
            here so that a malformed sample raises a ValueError naming its index in this batch, not an Arrow error."""
            preds = _split_samples(predictions, "predictions")
            refs = _split_samples(references, "references")
            _check_sample_shapes(preds, refs)
            super().add_batch(predictions=preds, references=refs, **kwargs)

        def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
            """Add one sample: (T, 21, 3) prediction and reference (metres)."""
            self.add_batch(predictions=[prediction], references=[reference], **kwargs)

        def _compute(self, predictions: Any, references: Any) -> dict[str, float]:
            """predictions/references: (N, T, 21, 3) float32 array, or an object array of N (T_i, 21, 3) arrays."""
            return compute_hand_motion_metrics(predictions, references)

    HandMotion.__module__ = __name__
    HandMotion.__qualname__ = "HandMotion"  # picklable as <module>.HandMotion
    return HandMotion


def __getattr__(name: str) -> Any:
    """Lazy ``HandMotion``: importing this module for the numpy functions does not import evaluate."""
    if name == "HandMotion":
        cls = _build_metric_class()
        globals()["HandMotion"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if "evaluate" in sys.modules:  # e.g. under evaluate.load, which looks the Metric subclass up in the module's dict
    HandMotion = _build_metric_class()
