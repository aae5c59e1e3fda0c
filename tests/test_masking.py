"""Statistics of the hybrid MCP masking scheme (appendix A.3)."""

from __future__ import annotations

import collections

import pytest
import torch

from trainers.masking import LATER_CHUNK_PROB, TARGET_RATIOS, hybrid_chunk_mask, sample_generator


def _layout(num_chunks: int, tokens: int = 20) -> torch.Tensor:
    """[text x5] then per chunk: <mot> (-1), `tokens` motion positions, </mot> (-1)."""
    ids = [-1] * 5
    for c in range(num_chunks):
        ids += [-1] + [c] * tokens + [-1]
    return torch.tensor(ids)


def test_ratios_are_the_papers_grid():
    assert TARGET_RATIOS == pytest.approx([0.05 + 0.1 * k for k in range(10)] + [1.0])


def test_mask_statistics_over_many_sequences():
    chunk_ids = _layout(4)
    targets, ratios = collections.Counter(), collections.Counter()
    later_masked = later_total = 0
    for i in range(4000):
        result = hybrid_chunk_mask(chunk_ids, labeled=True, generator=sample_generator(0, f"s{i}"))
        t = result.target_chunk
        targets[t] += 1
        ratios[result.ratio] += 1
        assert not result.masked[chunk_ids < t].any()  # earlier chunks and every non-motion token intact
        assert not result.masked[chunk_ids == -1].any()
        assert int(result.masked[chunk_ids == t].sum()) == max(1, round(result.ratio * 20))
        later = chunk_ids > t
        later_masked += int(result.masked[later].sum())
        later_total += int(later.sum())
    assert set(targets) == {0, 1, 2, 3} and min(targets.values()) > 850  # uniform: 1000 each
    assert set(ratios) == set(TARGET_RATIOS) and min(ratios.values()) > 280  # uniform: ~364 each
    rate = later_masked / later_total
    assert abs(rate - LATER_CHUNK_PROB) < 0.006, rate  # ~24k Bernoulli(0.05) draws: std 0.0014


def test_video_only_masks_every_motion_token_without_a_target():
    chunk_ids = _layout(3)
    result = hybrid_chunk_mask(chunk_ids, labeled=False, generator=sample_generator(0, "wild"))
    assert torch.equal(result.masked, chunk_ids >= 0) and result.target_chunk == -1


def test_continuation_targets_come_after_the_context():
    chunk_ids = _layout(4)
    seen = {
        hybrid_chunk_mask(chunk_ids, labeled=True, first_target=2, generator=sample_generator(1, str(i))).target_chunk
        for i in range(200)
    }
    assert seen == {2, 3}
    none = hybrid_chunk_mask(chunk_ids, labeled=True, first_target=4, generator=sample_generator(1, "x"))
    assert none.target_chunk == -1 and not none.masked.any()


def test_masks_depend_only_on_seed_and_sample_id():
    chunk_ids = _layout(3)
    a = hybrid_chunk_mask(chunk_ids, labeled=True, generator=sample_generator(7, "clip/1"))
    b = hybrid_chunk_mask(chunk_ids, labeled=True, generator=sample_generator(7, "clip/1"))
    assert torch.equal(a.masked, b.masked) and a.target_chunk == b.target_chunk
    others = [
        hybrid_chunk_mask(chunk_ids, labeled=True, generator=sample_generator(s, i))
        for s, i in [(8, "clip/1"), (7, "clip/2")]
    ]
    assert any(not torch.equal(a.masked, o.masked) for o in others)


def test_rejects_batched_layouts():
    with pytest.raises(ValueError, match=r"\(L,\)"):
        hybrid_chunk_mask(torch.zeros(2, 5, dtype=torch.long), labeled=True, generator=sample_generator(0, "x"))


def test_full_mask_prob_masks_whole_targets_and_leaves_the_papers_draws_alone_at_zero():
    chunk_ids = _layout(3)
    whole = 0
    for i in range(2000):
        paper = hybrid_chunk_mask(chunk_ids, labeled=True, generator=sample_generator(0, f"s{i}"))
        default = hybrid_chunk_mask(chunk_ids, labeled=True, generator=sample_generator(0, f"s{i}"), full_mask_prob=0.0)
        assert torch.equal(paper.masked, default.masked) and paper.ratio == default.ratio
        half = hybrid_chunk_mask(chunk_ids, labeled=True, generator=sample_generator(0, f"s{i}"), full_mask_prob=0.5)
        assert half.target_chunk == paper.target_chunk
        whole += half.ratio == 1.0
        if half.ratio == 1.0:
            assert bool(half.masked[chunk_ids == half.target_chunk].all())
        always = hybrid_chunk_mask(chunk_ids, labeled=True, generator=sample_generator(0, f"s{i}"), full_mask_prob=1.0)
        assert always.ratio == 1.0 and bool(always.masked[chunk_ids == always.target_chunk].all())
    # P(whole) = 0.5 + 0.5 / 11 = 0.545 over 2000 draws: std 0.011
    assert abs(whole / 2000 - (0.5 + 0.5 / len(TARGET_RATIOS))) < 0.04, whole
    with pytest.raises(ValueError, match="full_mask_prob"):
        hybrid_chunk_mask(chunk_ids, labeled=True, generator=sample_generator(0, "x"), full_mask_prob=1.5)
