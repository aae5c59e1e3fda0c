"""The in-the-wild curation pipeline of UniHand-Mix (appendix B.1), as composable stages with pluggable models.

A :class:`WildCandidate` (a raw clip: frames, fps, the source's narration) goes through the stages of a
:class:`CurationPipeline`; each stage keeps the clip or drops it with a reason, and the pipeline's
:class:`CurationReport` counts per-stage keep rates and drop reasons. The default stages are the paper's:

1. :class:`VisualFilter`: a :class:`HandDetector` and a :class:`HandPoseEstimator` give per-clip confidences; the clip
   is kept when both are >= 0.65. The estimator's MANO poses are kept as approximate labels (used by the Wild
   evaluation split only, never for training).
2. :class:`InstructionValidation`: a :class:`Judge` drops clips with absent, idle or distractor hands and writes the
   instruction (default :class:`~datasets_unihand_mix.curation_models.RuleBasedJudge`; a VLM/LLM through
   :class:`~datasets_unihand_mix.curation_models.TransformersJudge`).
3. :class:`TemporalSlowdown`: slows the clip by 0.5 (lab motion speed), resamples it to 15 fps and cuts it to whole
   15-frame chunks (at most 10 s); it yields the curated :class:`~datasets_unihand_mix.sources.SourceClip`.

Models live in :mod:`datasets_unihand_mix.curation_models` (offline defaults: oracle-plus-noise models for procedural
clips, readers of precomputed detector/estimator outputs for real videos).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from modeling_pela.hand_motion import HAND_SIDES, HandMotion

from .schema import CHUNK_LENGTH
from .sources import FrameLoader, SourceClip, SourceDataError

if TYPE_CHECKING:
    from .procedural import ProceduralClip

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.65
DEFAULT_SLOWDOWN = 0.5


@dataclass
class WildCandidate:
    """One raw in-the-wild clip before curation.

    Attributes:
        clip_id / source / license / citation: identity and provenance (``clip_id`` unique within ``source``).
        fps / num_frames: frame rate and length of the raw clip.
        frames: lazy loader, raw frame indices -> RGB ``PIL.Image`` list.
        narration: the source's text for the clip (e.g. an Ego4D narration), or None.
        split: ``train``/``test`` when the raw data fixes it, else None (assigned by the builder).
        metadata: provenance (``recording``, the clip folder ``dir`` for precomputed model outputs, ...).
        procedural: the generating :class:`~datasets_unihand_mix.procedural.ProceduralClip` of toy clips (render
            metadata for the oracle models), None for real videos.
    """

    clip_id: str
    source: str
    license: str
    citation: str
    fps: float
    num_frames: int
    frames: FrameLoader
    narration: str | None = None
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    procedural: ProceduralClip | None = None


@dataclass
class Detection:
    """Hand-detector output on the evaluated frames of a clip.

    Attributes:
        frames: (N,) raw frame indices that were evaluated.
        scores: (N, 2) per-frame confidence of a left / right hand (0 when none is found).
        model: the detector's name.
    """

    frames: np.ndarray
    scores: np.ndarray
    model: str

    @property
    def confidence(self) -> float:
        """Clip confidence: the mean over frames of the best hand's score (0 without evaluated frames)."""
        return float(self.scores.max(axis=1).mean()) if len(self.scores) else 0.0

    @property
    def presence(self) -> float:
        """Fraction of evaluated frames where some hand scores >= 0.5."""
        return float((self.scores.max(axis=1) >= 0.5).mean()) if len(self.scores) else 0.0

    @property
    def hands(self) -> tuple[str, ...]:
        """Sides whose mean score is >= 0.5."""
        if not len(self.scores):
            return ()
        return tuple(side for side, score in zip(HAND_SIDES, self.scores.mean(axis=0), strict=True) if score >= 0.5)


@dataclass
class PoseEstimate:
    """Hand-pose estimator output: MANO motion per detected hand (at the candidate's fps, all its frames).

    Attributes:
        hands: ``{side: HandMotion}`` (approximate labels).
        per_hand: ``{side: confidence}``.
        model: the estimator's name.
    """

    hands: dict[str, HandMotion]
    per_hand: dict[str, float]
    model: str

    @property
    def confidence(self) -> float:
        """Clip confidence: the mean over estimated hands (0 when none)."""
        return float(np.mean(list(self.per_hand.values()))) if self.per_hand else 0.0


@dataclass
class Verdict:
    """A judge's decision: ``keep``, the drop ``reason`` (``ok`` when kept) and the clip's ``instruction``."""

    keep: bool
    reason: str
    instruction: str = ""


class HandDetector(Protocol):
    name: str

    def __call__(self, candidate: WildCandidate) -> Detection: ...


class HandPoseEstimator(Protocol):
    name: str

    def __call__(self, candidate: WildCandidate, detection: Detection) -> PoseEstimate: ...


class Judge(Protocol):
    name: str

    def __call__(self, item: CurationItem) -> Verdict: ...


@dataclass
class CurationItem:
    """A candidate travelling through the pipeline, with what the stages found (``record`` is stored per sample)."""

    candidate: WildCandidate
    detection: Detection | None = None
    estimate: PoseEstimate | None = None
    instruction: str | None = None
    clip: SourceClip | None = None
    record: dict[str, Any] = field(default_factory=dict)


class CurationStage(Protocol):
    """A pipeline stage: updates the item and returns a drop reason, or None to keep it."""

    name: str

    def __call__(self, item: CurationItem) -> str | None: ...


@dataclass
class VisualFilter:
    """Stage 1: keep clips whose detector and pose-estimator confidences both reach their thresholds."""

    detector: HandDetector
    estimator: HandPoseEstimator
    detection_threshold: float = DEFAULT_THRESHOLD
    pose_threshold: float = DEFAULT_THRESHOLD
    name: str = "visual_filter"

    def __call__(self, item: CurationItem) -> str | None:
        detection = self.detector(item.candidate)
        item.detection = detection
        item.record[self.name] = {
            "detector": detection.model,
            "detection_confidence": round(detection.confidence, 4),
            "thresholds": [self.detection_threshold, self.pose_threshold],
        }
        if not len(detection.frames):
            return "no_detections"
        if detection.confidence < self.detection_threshold:
            return "low_detection_confidence"
        estimate = self.estimator(item.candidate, detection)
        item.estimate = estimate
        item.record[self.name].update(estimator=estimate.model, pose_confidence=round(estimate.confidence, 4))
        if not estimate.hands:
            return "no_pose_estimates"
        if estimate.confidence < self.pose_threshold:
            return "low_pose_confidence"
        return None


@dataclass
class InstructionValidation:
    """Stage 2: the judge drops absent/idle/distractor clips and writes the instruction of the kept ones."""

    judge: Judge
    name: str = "instruction_validation"

    def __call__(self, item: CurationItem) -> str | None:
        verdict = self.judge(item)
        item.record[self.name] = {
            "judge": self.judge.name,
            "reason": verdict.reason,
            "narration": item.candidate.narration,
        }
        if not verdict.keep:
            return verdict.reason or "rejected"
        if not verdict.instruction.strip():
            return "no_instruction"
        item.instruction = verdict.instruction.strip()
        return None


class RetimedFrames:
    """Frame loader of a retimed clip: output frame ``i`` is raw frame ``source_frames[i]``."""

    def __init__(self, frames: FrameLoader, source_frames: Sequence[int]) -> None:
        self.frames = frames
        self.source_frames = tuple(int(i) for i in source_frames)

    def __len__(self) -> int:
        return len(self.source_frames)

    def __call__(self, indices: Sequence[int]) -> list[Image.Image]:
        return self.frames([self.source_frames[i] for i in indices])


@dataclass
class TemporalSlowdown:
    """Stage 3: play the clip ``factor`` times as fast (0.5: half speed), at ``fps``, cut to whole 15-frame chunks.

    Output frame ``j`` shows raw time ``j * factor / fps`` (nearest raw frame); the estimated MANO motion is
    resampled to the same times (slerp). Clips shorter than one chunk are dropped (``too_short``); longer ones are
    cut to at most ``max_seconds``. This stage must be last: it builds the curated clip.
    """

    factor: float = DEFAULT_SLOWDOWN
    fps: float = 15.0
    max_seconds: float = 10.0
    name: str = "temporal_slowdown"

    def __post_init__(self) -> None:
        if not self.factor > 0 or not self.fps > 0 or self.max_seconds * self.fps < CHUNK_LENGTH:
            raise ValueError("TemporalSlowdown needs factor > 0, fps > 0 and max_seconds of at least one chunk")

    def __call__(self, item: CurationItem) -> str | None:
        cand = item.candidate
        if item.estimate is None or item.instruction is None:
            raise ValueError("TemporalSlowdown must follow a VisualFilter and an InstructionValidation stage")
        rate = self.fps / (self.factor * cand.fps)  # output frames per raw frame
        num_full = round((cand.num_frames - 1) * rate) + 1
        max_chunks = int(self.max_seconds * self.fps + 1e-6) // CHUNK_LENGTH
        num_frames = min(num_full // CHUNK_LENGTH, max_chunks) * CHUNK_LENGTH
        item.record[self.name] = {"factor": self.factor, "source_fps": cand.fps, "num_frames": num_frames}
        if num_frames == 0:
            return "too_short"
        positions = np.linspace(0, cand.num_frames - 1, num_full)[:num_frames]
        source_frames = np.floor(positions + 0.5).astype(int).tolist()
        sample_id = f"{cand.source}/{cand.clip_id}"
        hands = {
            side: replace(motion.resample(rate).slice(0, num_frames), fps=self.fps, sample_id=sample_id)
            for side, motion in item.estimate.hands.items()
        }
        item.clip = SourceClip(
            clip_id=cand.clip_id,
            source=cand.source,
            license=cand.license,
            citation=cand.citation,
            subset="wild",
            fps=self.fps,
            hands=hands,
            frames=RetimedFrames(cand.frames, source_frames),
            instruction=item.instruction,
            metadata={
                **cand.metadata,
                "split": cand.split,
                "narration": cand.narration,
                "source_frames": source_frames,
                "detection_confidence": item.detection.confidence if item.detection else 0.0,
                "pose_confidence": item.estimate.confidence,
                "curation": item.record,
            },
        )
        return None


@dataclass
class StageReport:
    """Counts of one stage: clips seen, kept, and dropped per reason."""

    name: str
    seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    @property
    def keep_rate(self) -> float:
        return self.kept / self.seen if self.seen else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "kept": self.kept,
            "keep_rate": round(self.keep_rate, 4) if self.seen else None,
            "dropped": dict(sorted(self.dropped.items())),
        }


@dataclass
class CurationReport:
    """Per-stage keep rates of a pipeline run (``as_dict`` for the dataset card)."""

    stages: dict[str, StageReport]
    candidates: int = 0
    kept: int = 0

    @property
    def keep_rate(self) -> float:
        return self.kept / self.candidates if self.candidates else math.nan

    def merge(self, other: CurationReport) -> CurationReport:
        """The sum of two reports of the same pipeline (e.g. the train and test splits)."""
        stages = {}
        for name, stage in self.stages.items():
            theirs = other.stages.get(name, StageReport(name))
            stages[name] = StageReport(name, stage.seen + theirs.seen, stage.kept + theirs.kept)
            stages[name].dropped = stage.dropped + theirs.dropped
        return CurationReport(stages, self.candidates + other.candidates, self.kept + other.kept)

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "kept": self.kept,
            "keep_rate": round(self.keep_rate, 4) if self.candidates else None,
            "stages": {name: stage.as_dict() for name, stage in self.stages.items()},
        }

    def __str__(self) -> str:
        lines = [f"curation: kept {self.kept}/{self.candidates} candidates"]
        for name, stage in self.stages.items():
            reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(stage.dropped.items()))
            lines.append(f"  {name}: kept {stage.kept}/{stage.seen}" + (f" (dropped: {reasons})" if reasons else ""))
        return "\n".join(lines)


class CurationPipeline:
    """Runs candidates through ``stages`` in order; :attr:`report` counts what each stage kept and dropped.

    The stages must contain a :class:`VisualFilter` (pose estimates) and an :class:`InstructionValidation`, and end
    with a :class:`TemporalSlowdown` (``factor=1.0`` for none); other stages (dedup, blur, ...) may be inserted.

    Args:
        stages: the stages, in order.
        on_error: a :class:`~datasets_unihand_mix.sources.SourceDataError` raised by a stage (a malformed precomputed
            model output, an unreadable frame) drops the clip with reason ``invalid_input`` and a logged warning
            (``"skip"``) or propagates (``"raise"``).
    """

    def __init__(self, stages: Sequence[CurationStage], on_error: str = "skip") -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        kinds = [type(stage) for stage in stages]
        if VisualFilter not in kinds or InstructionValidation not in kinds or kinds[-1:] != [TemporalSlowdown]:
            raise ValueError(
                "a curation pipeline needs a VisualFilter and an InstructionValidation stage and must end with a "
                f"TemporalSlowdown (use factor=1.0 for no slow-down); got {[k.__name__ for k in kinds]}"
            )
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self.stages = list(stages)
        self.on_error = on_error
        self.report = CurationReport({name: StageReport(name) for name in names})

    @classmethod
    def default(
        cls,
        detector: HandDetector,
        estimator: HandPoseEstimator,
        judge: Judge | None = None,
        *,
        detection_threshold: float = DEFAULT_THRESHOLD,
        pose_threshold: float = DEFAULT_THRESHOLD,
        slowdown: float = DEFAULT_SLOWDOWN,
        on_error: str = "skip",
    ) -> CurationPipeline:
        """The paper's pipeline: visual filter, instruction validation (rule-based judge by default), slow-down."""
        from .curation_models import RuleBasedJudge

        return cls(
            [
                VisualFilter(detector, estimator, detection_threshold, pose_threshold),
                InstructionValidation(judge or RuleBasedJudge()),
                TemporalSlowdown(slowdown),
            ],
            on_error=on_error,
        )

    def describe(self) -> str:
        """One line naming the stages and their models, for logs and the dataset card."""
        parts = []
        for stage in self.stages:
            if isinstance(stage, VisualFilter):
                parts.append(
                    f"{stage.name}(detector={stage.detector.name}, estimator={stage.estimator.name}, "
                    f"thresholds={stage.detection_threshold}/{stage.pose_threshold})"
                )
            elif isinstance(stage, InstructionValidation):
                parts.append(f"{stage.name}(judge={stage.judge.name})")
            elif isinstance(stage, TemporalSlowdown):
                parts.append(f"{stage.name}(factor={stage.factor}, fps={stage.fps})")
            else:
                parts.append(stage.name)
        return " -> ".join(parts)

    def process(self, candidate: WildCandidate) -> SourceClip | None:
        """The curated clip, or None when a stage drops the candidate (counted in :attr:`report`)."""
        item = CurationItem(candidate)
        self.report.candidates += 1
        for stage in self.stages:
            counts = self.report.stages[stage.name]
            counts.seen += 1
            try:
                reason = stage(item)
            except SourceDataError as err:
                if self.on_error == "raise":
                    raise
                logger.warning(
                    "curation: dropping %s/%s at %s: %s", candidate.source, candidate.clip_id, stage.name, err
                )
                reason = "invalid_input"
            if reason is not None:
                counts.dropped[reason] += 1
                logger.debug(
                    "curation: %s/%s dropped by %s (%s)", candidate.source, candidate.clip_id, stage.name, reason
                )
                return None
            counts.kept += 1
        self.report.kept += 1
        return item.clip

    def run(self, candidates: Iterable[WildCandidate]) -> Iterator[SourceClip]:
        """Curate a stream of candidates, yielding the kept clips; logs the report at the end."""
        for candidate in candidates:
            clip = self.process(candidate)
            if clip is not None:
                yield clip
        logger.info("%s", self.report)


def curation_json(record: dict[str, Any]) -> str:
    """The compact JSON stored in a sample's ``curation`` field."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=float)
