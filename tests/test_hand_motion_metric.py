"""Hand-motion metric (trainers/metrics/hand_motion): hand-computed cases, Procrustes checks, evaluate wrapper, errors.

All joints are (T, 21, 3) in metres; metric values are in centimetres.
"""

from pathlib import Path

import numpy as np
import pytest

import trainers.metrics.hand_motion.hand_motion as hand_motion_module
from trainers.metrics.hand_motion import (
    compute_hand_motion_metrics,
    per_sample_hand_motion_errors,
    similarity_procrustes,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
METRIC_DIR = REPO_ROOT / "trainers" / "metrics" / "hand_motion"
NAMES = ("mpjpe", "pa_mpjpe", "mwte", "mde")


def random_hand(num_frames: int, seed: int) -> np.ndarray:
    """(T, 21, 3) anisotropic hand-sized joint cloud around (0, 0, 0.5) m, varying over frames."""
    rng = np.random.default_rng(seed)
    joints = rng.normal(size=(num_frames, 21, 3)) * np.array([0.08, 0.04, 0.015])
    return joints + np.array([0.0, 0.0, 0.5])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) uniformly random proper rotation (det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def horn_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(J, 3) x2 -> (3, 3) least-squares proper rotation by Horn's quaternion method (independent of the SVD)."""
    a = source - source.mean(0)
    b = target - target.mean(0)
    m = a.T @ b  # M[i, j] = sum a_i b_j
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = m
    n = np.array(
        [
            [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
            [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
            [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
            [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
        ]
    )
    w, x, y, z = np.linalg.eigh(n)[1][:, -1]  # unit quaternion of the largest eigenvalue
    return np.array(
        [
            [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z],
        ]
    )


def reference_pa_mpjpe_cm(pred: np.ndarray, ref: np.ndarray) -> float:
    """(T, 21, 3) x2 -> PA-MPJPE of one sample in cm, frame by frame with Horn's rotation and the LSQ scale."""
    errors = []
    for p, g in zip(pred, ref, strict=True):
        rot = horn_rotation(p, g)
        pc, gc = p - p.mean(0), g - g.mean(0)
        rotated = pc @ rot.T
        scale = np.sum(gc * rotated) / np.sum(pc * pc)
        aligned = scale * rotated + g.mean(0)
        errors.append(np.linalg.norm(aligned - g, axis=-1).mean())
    return 100.0 * float(np.mean(errors))


def assert_metrics(result: dict, expected: dict, abs_tol: float = 1e-9) -> None:
    assert set(result) == set(NAMES)
    assert all(type(v) is float for v in result.values())
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=abs_tol), name


# ------------------------------------------------------------------------------------------------ hand-computed cases


def test_identity_gives_zero():
    ref = np.stack([random_hand(12, seed) for seed in range(3)])  # (3, 12, 21, 3)
    assert_metrics(compute_hand_motion_metrics(ref.copy(), ref), dict.fromkeys(NAMES, 0.0))


def test_constant_translation():
    ref = np.stack([random_hand(10, seed) for seed in range(4)])
    d = np.array([0.03, -0.04, 0.12])  # |d| = 0.13 m = 13 cm
    result = compute_hand_motion_metrics(ref + d, ref)
    assert_metrics(result, {"mpjpe": 13.0, "mwte": 13.0, "pa_mpjpe": 0.0, "mde": 0.0})


def test_linearly_growing_translation():
    num_frames = 11
    ref = random_hand(num_frames, 0)[None]
    d = np.array([0.03, 0.0, 0.04])  # final offset, |d| = 5 cm
    offsets = np.linspace(0.0, 1.0, num_frames)[:, None, None] * d  # (T, 1, 3), 0 at the first frame
    result = compute_hand_motion_metrics(ref + offsets, ref)
    # Offset norm grows linearly from 0 to 5 cm -> its mean over frames is 2.5 cm for every joint.
    assert_metrics(result, {"mde": 5.0, "mwte": 2.5, "mpjpe": 2.5, "pa_mpjpe": 0.0})


def test_per_joint_errors_wrist_and_finger():
    ref = random_hand(5, 0)[None]
    # Only the wrist (joint 0) is off by 2.1 cm: MWTE 2.1, MPJPE 2.1 / 21 = 0.1 (a mean, not an RMS: 0.458).
    pred = ref.copy()
    pred[:, :, 0] += np.array([0.0, 0.021, 0.0])
    assert_metrics(compute_hand_motion_metrics(pred, ref), {"mwte": 2.1, "mpjpe": 0.1, "mde": 0.0})
    # Only the index tip (joint 8) is off by 4.2 cm, growing in the last frame: the wrist metrics stay 0.
    pred = ref.copy()
    pred[:, :, 8] += np.array([0.042, 0.0, 0.0])
    pred[:, -1, 8] += np.array([0.0, 0.0, 0.05])
    result = compute_hand_motion_metrics(pred, ref)
    assert_metrics(result, {"mwte": 0.0, "mde": 0.0})
    assert result["mpjpe"] == pytest.approx((4 * 4.2 + np.hypot(4.2, 5.0)) / 5 / 21, abs=1e-9)
    # The wrist alone moving in the last frame by (3, 4, 0) cm: MDE 5 cm, MWTE 5 / 5 frames = 1 cm.
    pred = ref.copy()
    pred[:, -1, 0] += np.array([0.03, 0.04, 0.0])
    assert_metrics(compute_hand_motion_metrics(pred, ref), {"mde": 5.0, "mwte": 1.0, "mpjpe": 1.0 / 21})


def test_similarity_transform_is_removed_by_pa_mpjpe():
    rng = np.random.default_rng(7)
    ref = np.stack([random_hand(8, seed) for seed in range(3)])
    pred = np.empty_like(ref)
    for i in range(ref.shape[0]):
        for t in range(ref.shape[1]):  # a different rotation and translation in every frame
            pred[i, t] = 1.7 * ref[i, t] @ random_rotation(rng).T + rng.normal(size=3) * 0.1
    result = compute_hand_motion_metrics(pred, ref)
    assert result["pa_mpjpe"] == pytest.approx(0.0, abs=1e-5)
    assert result["mpjpe"] > 1.0 and result["mwte"] > 1.0


def test_reflection_is_not_allowed():
    ref = np.stack([random_hand(6, seed) for seed in (3, 4)])
    pred = ref * np.array([-1.0, 1.0, 1.0])  # mirror image: no proper similarity maps it back
    result = compute_hand_motion_metrics(pred, ref)
    expected = np.mean([reference_pa_mpjpe_cm(pred[i], ref[i]) for i in range(2)])
    assert result["pa_mpjpe"] > 0.5  # a reflection-allowing Procrustes would give 0
    assert result["pa_mpjpe"] == pytest.approx(expected, rel=1e-9)
    # The aligned hand is no better than what any of 2000 random rotations (with optimal scale) achieves.
    p, g = pred[0, 0], ref[0, 0]
    aligned = similarity_procrustes(p, g)
    best_sq = np.sum((aligned - g) ** 2)
    rng = np.random.default_rng(0)
    pc, gc = p - p.mean(0), g - g.mean(0)
    for _ in range(2000):
        rotated = pc @ random_rotation(rng).T
        scale = max(np.sum(gc * rotated) / np.sum(pc * pc), 0.0)
        assert np.sum((scale * rotated - gc) ** 2) >= best_sq - 1e-15


def test_similarity_procrustes_recovers_transform_and_batches():
    rng = np.random.default_rng(1)
    src = random_hand(5, 2)  # (5, 21, 3): batched over frames
    rots = np.stack([random_rotation(rng) for _ in range(5)])
    tgt = 0.6 * np.einsum("tij,tkj->tki", rots, src) + rng.normal(size=(5, 1, 3))
    np.testing.assert_allclose(similarity_procrustes(src, tgt), tgt, atol=1e-12)
    np.testing.assert_allclose(similarity_procrustes(src[2], tgt[2]), tgt[2], atol=1e-12)  # unbatched (21, 3)


def test_collapsed_prediction_maps_to_reference_centroid():
    ref = random_hand(3, 0)[None]
    pred = np.zeros_like(ref) + 0.2  # all 21 joints at one point: zero scale, aligned to the reference centroid
    expected = 100.0 * np.linalg.norm(ref - ref.mean(axis=2, keepdims=True), axis=-1).mean()
    assert compute_hand_motion_metrics(pred, ref)["pa_mpjpe"] == pytest.approx(expected, rel=1e-12)


def test_mean_over_samples_weights_samples_equally():
    # Sample A: 2 frames, every joint off by 1 cm; sample B: 6 frames, off by 3 cm. Per-sample mean -> 2 cm
    # (a per-frame mean would give (2 * 1 + 6 * 3) / 8 = 2.5 cm).
    ref_a, ref_b = random_hand(2, 0), random_hand(6, 1)
    pred_a = ref_a + np.array([0.01, 0.0, 0.0])
    pred_b = ref_b + np.array([0.0, 0.03, 0.0])
    result = compute_hand_motion_metrics([pred_a, pred_b], [ref_a, ref_b])
    assert_metrics(result, {"mpjpe": 2.0, "mwte": 2.0, "pa_mpjpe": 0.0, "mde": 0.0})
    # MDE: the wrist displacement error is 1 cm in A and 3 cm in B -> 2 cm.
    pred_a, pred_b = ref_a.copy(), ref_b.copy()
    pred_a[-1] += np.array([0.0, 0.0, 0.01])
    pred_b[-1] += np.array([0.03, 0.0, 0.0])
    assert compute_hand_motion_metrics([pred_a, pred_b], [ref_a, ref_b])["mde"] == pytest.approx(2.0, abs=1e-9)
    per_sample = per_sample_hand_motion_errors([pred_a, pred_b], [ref_a, ref_b])
    np.testing.assert_allclose(per_sample["mde"], [1.0, 3.0], atol=1e-9)


def test_metres_in_centimetres_out():
    ref = random_hand(4, 0)[None]
    result = compute_hand_motion_metrics(ref + np.array([0.0, 0.0, 0.01]), ref)  # 0.01 m
    assert result["mpjpe"] == pytest.approx(1.0, abs=1e-9)  # not 0.01 (metres) and not 10 (millimetres)
    assert result["mwte"] == pytest.approx(1.0, abs=1e-9)


def test_variable_length_list_equals_per_sample_average(monkeypatch):
    lengths = (1, 5, 17, 60)
    rng = np.random.default_rng(3)
    refs = [random_hand(t, seed) for seed, t in enumerate(lengths)]
    preds = [g + rng.normal(size=g.shape) * 0.01 + rng.normal(size=3) * 0.02 for g in refs]
    result = compute_hand_motion_metrics(preds, refs)
    separate = [compute_hand_motion_metrics([p], [g]) for p, g in zip(preds, refs, strict=True)]
    for name in NAMES:
        assert result[name] == pytest.approx(np.mean([s[name] for s in separate]), rel=1e-12)
    assert separate[0]["mde"] == 0.0  # a single frame has no displacement
    assert result["pa_mpjpe"] < result["mpjpe"]
    # Procrustes chunks that cut through samples give the same numbers.
    monkeypatch.setattr(hand_motion_module, "_PROCRUSTES_CHUNK", 7)
    assert compute_hand_motion_metrics(preds, refs) == pytest.approx(result, rel=1e-12)
    # A stacked (N, T, 21, 3) array and the list of its samples give the same numbers.
    stacked_pred = np.stack([p[:5] for p in preds[1:]])
    stacked_ref = np.stack([g[:5] for g in refs[1:]])
    assert compute_hand_motion_metrics(stacked_pred, stacked_ref) == compute_hand_motion_metrics(
        list(stacked_pred), list(stacked_ref)
    )


# ------------------------------------------------------------------------------------------------------------- errors


def _samples(lengths=(4, 5, 6)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    refs = [random_hand(t, seed) for seed, t in enumerate(lengths)]
    return [g + 0.01 for g in refs], refs


def _nan_in_sample_1(preds, refs):
    preds[1][3, 7, 2] = np.nan


def _inf_in_reference_2(preds, refs):
    refs[2][0, 0, 0] = np.inf


def _wrong_joint_count(preds, refs):
    preds[2] = preds[2][:, :20]


def _wrong_last_dim(preds, refs):
    refs[1] = np.concatenate([refs[1], np.ones((5, 21, 1))], axis=-1)


def _mismatched_frames(preds, refs):
    refs[1] = refs[1][:-1]


@pytest.mark.parametrize(
    "corrupt, words",
    [
        (_nan_in_sample_1, ["sample 1", "NaN", "frame 3"]),
        (_inf_in_reference_2, ["sample 2", "reference", "inf"]),
        (_wrong_joint_count, ["sample 2", "(6, 20, 3)", "(T, 21, 3)"]),
        (_wrong_last_dim, ["sample 1", "(5, 21, 4)", "(T, 21, 3)"]),
        (_mismatched_frames, ["sample 1", "(5, 21, 3)", "(4, 21, 3)"]),
    ],
)
def test_invalid_inputs_name_the_sample(corrupt, words):
    preds, refs = _samples()
    corrupt(preds, refs)
    with pytest.raises(ValueError) as info:
        compute_hand_motion_metrics(preds, refs)
    for word in words:
        assert word in str(info.value)


def test_invalid_array_inputs():
    ref = np.stack([random_hand(4, seed) for seed in range(3)])
    with pytest.raises(ValueError, match=r"sample 0: prediction has shape \(4, 21, 2\)"):
        compute_hand_motion_metrics(ref[..., :2], ref[..., :2])
    with pytest.raises(ValueError, match="empty input"):
        compute_hand_motion_metrics([], [])
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        compute_hand_motion_metrics(ref, ref[:2])
    with pytest.raises(ValueError, match=r"shape \(4, 21, 3\): expected an array of shape \(N, T, 21, 3\)"):
        compute_hand_motion_metrics(ref[0], ref[0])
    with pytest.raises(ValueError, match="sample 1: prediction has no frame"):
        compute_hand_motion_metrics([ref[0], ref[0, :0]], [ref[0], ref[0, :0]])


# ----------------------------------------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def hand_motion_metric():
    evaluate = pytest.importorskip("evaluate")
    mp = pytest.MonkeyPatch()
    mp.chdir(REPO_ROOT)
    try:
        yield evaluate.load(METRIC_DIR.relative_to(REPO_ROOT).as_posix())  # "trainers/metrics/hand_motion"
    finally:
        mp.undo()


def test_evaluate_load_matches_numpy(hand_motion_metric):
    rng = np.random.default_rng(5)
    ref = np.stack([random_hand(9, seed) for seed in range(5)])
    pred = ref + rng.normal(size=ref.shape) * 0.01 + np.linspace(0, 0.05, 9)[None, :, None, None]
    result = hand_motion_metric.compute(predictions=pred, references=ref)
    # evaluate stores float32: identical to the numpy function on float32 inputs, ~1e-6 cm from the float64 result.
    assert result == pytest.approx(
        compute_hand_motion_metrics(pred.astype(np.float32), ref.astype(np.float32)), rel=1e-12
    )
    assert result == pytest.approx(compute_hand_motion_metrics(pred, ref), abs=1e-4)
    assert all(type(v) is float for v in result.values())

    preds, refs = list(pred[:3]), list(ref[:3])
    preds[1], refs[1] = preds[1][:4], refs[1][:4]  # variable lengths 9, 4, 9
    preds[2], refs[2] = preds[2][:1], refs[2][:1]
    result = hand_motion_metric.compute(predictions=preds, references=refs)
    assert result == pytest.approx(compute_hand_motion_metrics(preds, refs), abs=1e-4)
    assert result["mpjpe"] > 0.5


def test_evaluate_errors_name_the_sample(hand_motion_metric):
    preds, refs = _samples()
    _wrong_joint_count(preds, refs)
    with pytest.raises(ValueError, match=r"sample 2: prediction has shape \(6, 20, 3\)"):
        hand_motion_metric.compute(predictions=preds, references=refs)
    preds, refs = _samples()
    _nan_in_sample_1(preds, refs)
    with pytest.raises(ValueError, match="sample 1: prediction contains NaN"):
        hand_motion_metric.compute(predictions=preds, references=refs)
    preds, refs = _samples()
    _mismatched_frames(preds, refs)
    with pytest.raises(ValueError, match="sample 1: prediction shape"):
        hand_motion_metric.compute(predictions=preds, references=refs)
    # The metric still works after the failed calls.
    preds, refs = _samples()
    assert hand_motion_metric.compute(predictions=preds, references=refs)["pa_mpjpe"] == pytest.approx(0.0, abs=1e-4)
