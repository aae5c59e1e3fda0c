"""UniHand-Mix wild curation: procedural junk clips, oracle models, rule-based and transformers judges, the pipeline."""

import numpy as np
import pytest
import torch

from datasets_unihand_mix import ProceduralConfig, generate_clip, generate_clips
from datasets_unihand_mix.curation import (
    CurationItem,
    CurationPipeline,
    InstructionValidation,
    TemporalSlowdown,
    Verdict,
    VisualFilter,
)
from datasets_unihand_mix.curation_models import (
    ProceduralOracleDetector,
    ProceduralOracleEstimator,
    RuleBasedJudge,
    TransformersJudge,
    hand_visibility,
    narration_to_instruction,
    parse_verdict,
)
from datasets_unihand_mix.procedural import JUNK_KINDS
from datasets_unihand_mix.samples import procedural_candidate

JUNK = ProceduralConfig(style="wild", image_size=64, junk_probability=0.3)


@pytest.fixture(scope="module")
def wild_clips():
    return generate_clips(60, JUNK)


@pytest.fixture(scope="module")
def curated(wild_clips):
    pipeline = CurationPipeline.default(ProceduralOracleDetector(), ProceduralOracleEstimator())
    kept = {clip.clip_id: pipeline.process(procedural_candidate(clip)) for clip in wild_clips}
    return pipeline, kept


def _item(clip):
    candidate = procedural_candidate(clip)
    item = CurationItem(candidate)
    item.detection = ProceduralOracleDetector()(candidate)
    item.estimate = ProceduralOracleEstimator()(candidate, item.detection)
    return item


def _kept_clip(wild_clips, curated):
    return next(c for c in wild_clips if curated[1][c.clip_id] is not None)


def test_junk_option_leaves_other_clips_unchanged():
    clean = ProceduralConfig(style="wild", image_size=64)
    kinds = set()
    for index in range(30):
        junk, plain = generate_clip(index, JUNK), generate_clip(index, clean)
        kind = junk.task.get("junk")
        kinds.add(kind)
        if kind is None:
            np.testing.assert_equal(junk.to_dict(), plain.to_dict())
            np.testing.assert_array_equal(junk.render_frame(0), plain.render_frame(0))
        else:
            assert kind in JUNK_KINDS and "junk" not in plain.task
    assert kinds == {None, *JUNK_KINDS}
    with pytest.raises(ValueError, match="junk_probability"):
        ProceduralConfig(junk_probability=1.5)


def test_junk_kinds_look_like_their_names(wild_clips):
    for clip in wild_clips:
        kind = clip.task.get("junk")
        frames = np.arange(0, clip.num_frames, 5)
        visible = hand_visibility(clip, frames).max(axis=1).mean()
        wrist_range = max(float((m.transl.max(0).values - m.transl.min(0).values).norm()) for m in clip.hands.values())
        if kind == "absent":
            assert visible == 0.0
        elif kind == "idle":
            assert wrist_range < 0.02 and visible > 0.5
            assert all(np.abs(o.positions - o.positions[0]).max() == 0 for o in clip.objects)
        else:
            assert visible > 0.3 and wrist_range > 0.03, (clip.clip_id, kind, visible, wrist_range)
        if kind == "distractor":
            assert clip.instruction.split()[0].lower() in ("look", "talk", "glance", "stand", "watch", "listen")


def test_oracle_estimator_confidence_is_calibrated(wild_clips):
    """Lower confidence -> larger pose error (rank correlation), on clean wild clips."""
    detector, estimator = ProceduralOracleDetector(), ProceduralOracleEstimator()
    confidence, error = [], []
    for clip in wild_clips:
        if clip.task.get("junk"):
            continue
        candidate = procedural_candidate(clip)
        estimate = estimator(candidate, detector(candidate))
        for side, motion in estimate.hands.items():
            confidence.append(estimate.per_hand[side])
            error.append(float((motion.transl - clip.hands[side].transl).norm(dim=-1).mean()))
    rho = np.corrcoef(np.argsort(np.argsort(confidence)), np.argsort(np.argsort(error)))[0, 1]  # Spearman
    assert len(confidence) > 40 and rho < -0.7, rho
    # deterministic per clip
    candidate = procedural_candidate(wild_clips[0])
    a, b = detector(candidate), detector(candidate)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_pipeline_drops_every_junk_clip_at_its_stage_and_reports_keep_rates(wild_clips, curated):
    pipeline, kept = curated
    report = pipeline.report
    for clip in wild_clips:
        if clip.task.get("junk"):
            assert kept[clip.clip_id] is None, clip.clip_id
    stages = report.stages
    assert stages["visual_filter"].dropped["low_detection_confidence"] >= sum(
        c.task.get("junk") == "absent" for c in wild_clips
    )
    judged = stages["instruction_validation"].dropped
    for kind in ("idle", "distractor"):  # the judge drops every such clip that the visual filter let through
        passed_filter = 0
        for clip in wild_clips:
            if clip.task.get("junk") == kind:
                alone = CurationPipeline.default(ProceduralOracleDetector(), ProceduralOracleEstimator())
                alone.process(procedural_candidate(clip))
                passed_filter += not alone.report.stages["visual_filter"].dropped
        assert passed_filter >= 2 and judged[kind] == passed_filter, (kind, judged[kind], passed_filter)
    clean = sum(not c.task.get("junk") for c in wild_clips)
    assert report.candidates == 60 and report.kept == sum(v is not None for v in kept.values())
    assert 0.7 * clean <= report.kept < clean  # the visual filter also drops some hard clean clips
    for stage in stages.values():
        assert stage.seen == stage.kept + sum(stage.dropped.values())
    as_dict = report.as_dict()
    assert as_dict["stages"]["visual_filter"]["keep_rate"] == pytest.approx(stages["visual_filter"].keep_rate, abs=1e-4)
    assert "visual_filter: kept" in str(report)


def test_curated_clips_are_slowed_to_lab_speed(wild_clips, curated):
    _, kept = curated
    checked = 0
    for clip in wild_clips:
        out = kept[clip.clip_id]
        if out is None:
            continue
        assert out.subset == "wild" and out.fps == 15.0 and out.num_frames % 15 == 0 and out.num_frames <= 150
        assert out.num_frames > clip.num_frames  # twice as many frames, cut to whole chunks
        source = out.frames.source_frames
        assert source[: 2 * 5 : 2] == (0, 1, 2, 3, 4) and source[-1] <= clip.num_frames - 1
        for side, motion in out.hands.items():  # curated frame 2k shows raw frame k (estimates: +- a few cm)
            truth = clip.hands[side].transl[: (out.num_frames + 1) // 2]
            assert (motion.transl[::2] - truth).norm(dim=-1).mean() < 0.05
        meta = out.metadata
        assert meta["pose_confidence"] >= 0.65 and meta["detection_confidence"] >= 0.65
        assert meta["curation"]["temporal_slowdown"]["factor"] == 0.5
        assert meta["curation"]["instruction_validation"]["narration"] == clip.instruction
        assert out.instruction == clip.instruction  # procedural narrations are already imperative
        checked += 1
    assert checked >= 20


def test_pipeline_requires_its_stages_and_one_shot_settings():
    detector, estimator = ProceduralOracleDetector(), ProceduralOracleEstimator()
    with pytest.raises(ValueError, match="must end with a TemporalSlowdown"):
        CurationPipeline([VisualFilter(detector, estimator), InstructionValidation(RuleBasedJudge())])
    with pytest.raises(ValueError, match="unique"):
        CurationPipeline(
            [
                VisualFilter(detector, estimator),
                InstructionValidation(RuleBasedJudge()),
                VisualFilter(detector, estimator),
                TemporalSlowdown(),
            ]
        )
    with pytest.raises(ValueError, match="on_error"):
        CurationPipeline.default(detector, estimator, on_error="ignore")
    strict = CurationPipeline.default(detector, estimator, detection_threshold=0.99, slowdown=1.0)
    assert "thresholds=0.99/0.65" in strict.describe() and "factor=1.0" in strict.describe()
    for index in range(5):
        assert strict.process(procedural_candidate(generate_clip(index, JUNK))) is None
    assert strict.report.stages["visual_filter"].kept == 0
    real = procedural_candidate(generate_clip(0, JUNK))
    real.procedural = None
    with pytest.raises(ValueError, match="real video: use PrecomputedHandDetector"):
        detector(real)


@pytest.mark.parametrize(
    "narration, instruction",
    [
        ("#C C picks up the knife from the table", "Pick up the knife from the table."),
        ("#C C washes a plate", "Wash a plate."),
        ("#C C carries the box.", "Carry the box."),
        ("Pick up the red cube.", "Pick up the red cube."),
        ("pass the ball to your left hand", "Pass the ball to your left hand."),
    ],
)
def test_narration_to_instruction(narration, instruction):
    assert narration_to_instruction(narration) == instruction


def test_rule_based_judge_grounds_the_narration(wild_clips, curated):
    item = _item(_kept_clip(wild_clips, curated))
    candidate = item.candidate
    judge = RuleBasedJudge()
    assert judge(item).keep
    for narration, reason in [
        ("#O man X picks up a cup", "distractor"),
        ("#C C looks around", "distractor"),
        (None, "distractor"),
        ("#C C stirs the soup", "ok"),
    ]:
        candidate.narration = narration
        assert judge(item).reason == reason, narration


def test_parse_verdict():
    assert parse_verdict('ok {"keep": true, "reason": "ok", "instruction": "Stir the soup."} done') == Verdict(
        True, "ok", "Stir the soup."
    )
    assert parse_verdict('{"keep": "no", "reason": "idle"}') == Verdict(False, "idle", "")
    assert parse_verdict('{"keep": true}') is None  # kept without an instruction
    assert parse_verdict("random words { not json }") is None
    assert parse_verdict([{"role": "assistant", "content": '{"keep": false, "reason": "absent"}'}]).reason == "absent"


def test_transformers_judge_call_conventions(wild_clips, curated):
    calls = []

    class FakeVLM:
        task = "image-text-to-text"

        def __call__(self, **kwargs):
            calls.append(kwargs)
            return [{"generated_text": '{"keep": true, "reason": "ok", "instruction": "Lift the cube."}'}]

    item = _item(_kept_clip(wild_clips, curated))
    verdict = TransformersJudge(FakeVLM())(item)
    assert verdict == Verdict(True, "ok", "Lift the cube.")
    content = calls[0]["text"][0]["content"]
    assert content[0]["type"] == "image" and content[0]["image"].size == (64, 64)
    assert item.candidate.narration in content[1]["text"] and calls[0]["return_full_text"] is False


def test_transformers_judge_with_a_tiny_random_text_generation_pipeline(wild_clips, curated):
    """A real transformers pipeline (random tiny GPT-2, word-level tokenizer built here): its gibberish is
    unparseable, so the clip is dropped, or judged by the fallback."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, pipeline

    words = ["[UNK]", "[PAD]", "[EOS]", "{", "}", '"keep":', "true", "false", "hand", "cube", "the", "ok"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=512, n_embd=16, n_layer=1, n_head=2))
    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    item = _item(_kept_clip(wild_clips, curated))
    assert TransformersJudge(pipe, max_new_tokens=6)(item) == Verdict(False, "judge_unparseable", "")
    assert TransformersJudge(pipe, max_new_tokens=6, fallback=RuleBasedJudge())(item).keep
    judge = TransformersJudge(pipe, max_new_tokens=6)
    pipeline_ = CurationPipeline.default(ProceduralOracleDetector(), ProceduralOracleEstimator(), judge)
    assert pipeline_.process(item.candidate) is None
    assert pipeline_.report.stages["instruction_validation"].dropped == {"judge_unparseable": 1}
