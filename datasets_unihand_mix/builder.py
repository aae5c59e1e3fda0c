"""The UniHand-Mix ``datasets`` builder: procedural (``toy``), lab converters (``lab``), curated wild videos (``wild``)
and both (``mix``).

``datasets`` 4.x no longer runs loading scripts, so the builder is used directly::

    from datasets_unihand_mix.builder import UniHandMix

    builder = UniHandMix(config_name="toy", num_clips=200)            # procedural lab + curated wild clips
    stream = builder.as_streaming_dataset(split="train")              # generated on the fly
    builder.download_and_prepare()                                     # or: write Arrow files to the cache ...
    ds = builder.as_dataset(split="test")                              # ... and memory-map them

    UniHandMix(config_name="lab", data_dir="raw", mano_dir="mano")    # raw/arctic, raw/dexycb, raw/hot3d,
                                                                       # raw/hot3d_sequences, raw/custom (your own)
    UniHandMix(config_name="wild", data_dir="raw")                    # raw/wild/<clip>/ (see iter_wild_folder)
    UniHandMix(config_name="mix", data_dir="raw", mano_dir="mano")    # both

To publish, :func:`~datasets_unihand_mix.export.export_hub_folder` (``pela data export``) writes the Hub-native
parquet folder that plain ``datasets.load_dataset(..., streaming=True)`` reads.

Splits: ``toy`` draws train and test clips from disjoint index ranges of the generator (test from index
:data:`TEST_INDEX_OFFSET`), with exact sizes; real data is split by recording (hash of ``<source>/<recording>``,
``test_fraction``), unless a wild clip's ``meta.json`` fixes its split.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .converters import CONVERTERS, get_converter
from .curation import CurationPipeline, CurationReport, HandDetector, HandPoseEstimator, Judge, WildCandidate
from .procedural import ProceduralConfig, iter_clips
from .samples import (
    IMAGE_FORMATS,
    assign_split,
    iter_wild_folder,
    procedural_candidate,
    procedural_source_clip,
    sample_row,
)
from .schema import SPLITS, SUBSETS, unihand_features
from .sources import SourceClip, SourceDataError
from .tasks import DEFAULT_TASK_MIX

logger = logging.getLogger(__name__)

TEST_INDEX_OFFSET = 1_000_000
HOMEPAGE = "https://openreview.net/forum?id=PELA"
CITATION = """@inproceedings{pela,
  title = {Predictive Embedding as Latent Action: Scaling VLA Pretraining with Lab and In-the-Wild Human Videos},
  note = {UniHand-Mix: section 5 and appendix B}
}"""


@dataclass
class UniHandMixConfig(datasets.BuilderConfig):
    """Settings of a UniHand-Mix build (any field can be overridden as a keyword of :class:`UniHandMix`).

    Args:
        subsets: which of ``lab`` / ``wild`` to build.
        procedural: build from the procedural generator (``toy``) instead of ``data_dir``.
        num_clips: procedural clips in all (``toy``); the wild share is the ``video_only`` weight of ``task_mix``
            (29.1% by default), each subset's test share ``test_fraction`` (at least one clip per split when the
            subset has two or more).
        seed / image_size / junk_probability / num_workers: procedural generation (``junk_probability``: share of
            wild candidates that are idle/absent/distractor clips the curation must drop).
        mano_dir: folder with ``MANO_LEFT.pkl`` / ``MANO_RIGHT.pkl`` (lab converters).
        lab_sources: converter names read from ``data_dir/<name>`` (default: every converter, your own ``custom``
            clips included; missing folders are skipped).
        test_fraction: share of recordings (real data) or clips (toy) in the test split.
        task_mix: task-type weights (default: the paper's, :data:`~datasets_unihand_mix.tasks.DEFAULT_TASK_MIX`).
        image_format: ``jpeg`` (quality 90) or ``png`` for the stored frames.
        detector / estimator / judge: curation models (default: oracle models for ``toy``, precomputed outputs for
            real videos, the rule-based judge); see :mod:`datasets_unihand_mix.curation_models`.
        detection_threshold / pose_threshold / slowdown: curation settings (paper: 0.65, 0.65, 0.5).
    """

    subsets: tuple[str, ...] = SUBSETS
    procedural: bool = False
    num_clips: int = 200
    seed: int = 0
    image_size: int = 96
    junk_probability: float = 0.15
    num_workers: int = 0
    mano_dir: str | None = None
    lab_sources: tuple[str, ...] = tuple(CONVERTERS)
    test_fraction: float = 0.1
    task_mix: dict[str, float] | None = None
    image_format: str = "jpeg"
    detector: HandDetector | None = None
    estimator: HandPoseEstimator | None = None
    judge: Judge | None = None
    detection_threshold: float = 0.65
    pose_threshold: float = 0.65
    slowdown: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Check the settings (``datasets`` sets keyword overrides after construction, so the builder calls this)."""
        self.subsets = tuple(self.subsets)
        self.lab_sources = tuple(self.lab_sources)
        if not self.subsets or not set(self.subsets) <= set(SUBSETS):
            raise ValueError(f"subsets must be a non-empty subset of {SUBSETS}, got {self.subsets}")
        unknown = set(self.lab_sources) - set(CONVERTERS)
        if unknown:
            raise ValueError(f"unknown lab sources {sorted(unknown)}; known: {sorted(CONVERTERS)}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if self.num_clips < 1:
            raise ValueError(f"num_clips must be positive, got {self.num_clips}")

    @property
    def mix(self) -> dict[str, float]:
        return dict(DEFAULT_TASK_MIX if self.task_mix is None else self.task_mix)


def toy_split_sizes(config: UniHandMixConfig) -> dict[tuple[str, str], int]:
    """Clips per (subset, split) of a procedural build (see :class:`UniHandMixConfig`)."""
    mix = config.mix
    wild_share = mix.get("video_only", 0.0) / sum(mix.values()) if "wild" in config.subsets else 0.0
    if "lab" not in config.subsets:
        wild_share = 1.0
    totals = {"wild": round(config.num_clips * wild_share)}
    totals["lab"] = config.num_clips - totals["wild"]
    sizes = {}
    for subset, total in totals.items():
        test = max(1, round(total * config.test_fraction)) if total >= 2 and config.test_fraction > 0 else 0
        sizes[(subset, "train")], sizes[(subset, "test")] = total - test, test
    return sizes


class UniHandMix(datasets.GeneratorBasedBuilder):
    """UniHand-Mix: instruction / frames / MANO hand-motion samples from lab captures and curated in-the-wild video.

    One row per sample, schema :func:`~datasets_unihand_mix.schema.unihand_features`. After a split has been
    generated, :attr:`curation_reports` holds the wild curation report of that split and :attr:`skipped` counts
    source clips that could not become samples (e.g. no RGB frames), each logged.
    """

    BUILDER_CONFIG_CLASS = UniHandMixConfig
    BUILDER_CONFIGS = [
        UniHandMixConfig(
            name="toy",
            procedural=True,
            description="Procedural lab clips and curated procedural wild clips (no downloads; demo and tests).",
        ),
        UniHandMixConfig(name="lab", subsets=("lab",), description="Lab captures through the source converters."),
        UniHandMixConfig(name="wild", subsets=("wild",), description="Raw in-the-wild clips through curation."),
        UniHandMixConfig(name="mix", description="Lab and curated wild clips."),
    ]
    DEFAULT_CONFIG_NAME = "toy"
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("dataset_name", "unihand_mix")
        super().__init__(*args, **kwargs)
        self.config.validate()
        self.curation_reports: dict[str, CurationReport] = {}
        self.skipped: Counter = Counter()

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.config.description or "UniHand-Mix",
            features=unihand_features(),
            homepage=HOMEPAGE,
            citation=CITATION,
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        self._check_inputs()
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split}) for split in SPLITS]

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for row in self.iter_rows(split):
            yield row["id"], row

    def _check_inputs(self) -> None:
        config = self.config
        if config.procedural:
            return
        layout = "data_dir/<source>/ for lab sources " + str(list(config.lab_sources)) + ", data_dir/wild/ for wild"
        if not config.data_dir or not Path(config.data_dir).is_dir():
            raise FileNotFoundError(
                f"UniHand-Mix config '{config.name}' builds from local raw data: pass data_dir= an existing folder "
                f"({layout}); got {config.data_dir!r}. For data without downloads use config_name='toy'."
            )
        if "lab" in config.subsets:
            if not config.mano_dir:
                raise ValueError(f"config '{config.name}' converts lab sources: pass mano_dir= (MANO_LEFT/RIGHT.pkl)")
            if not any((Path(config.data_dir) / name).is_dir() for name in config.lab_sources):
                raise FileNotFoundError(f"no lab source folder in {config.data_dir} ({layout})")
        if "wild" in config.subsets and not (Path(config.data_dir) / "wild").is_dir():
            raise FileNotFoundError(f"no wild clip folder {Path(config.data_dir) / 'wild'} ({layout})")

    def iter_rows(self, split: str) -> Iterator[dict[str, Any]]:
        """The rows of ``split`` (lab rows first, then wild rows), as plain dicts with encoded images."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self._check_inputs()
        config = self.config
        clips: list[Iterator[SourceClip]] = []
        if "lab" in config.subsets:
            clips.append(self._procedural_lab(split) if config.procedural else self._source_lab(split))
        if "wild" in config.subsets:
            pipeline = self.curation_pipeline()
            self.curation_reports[split] = pipeline.report
            candidates = self._procedural_wild(split, pipeline) if config.procedural else self._folder_wild(split)
            clips.append(pipeline.run(candidates))
        for stream in clips:
            for clip in stream:
                try:
                    yield sample_row(clip, split=split, task_mix=config.task_mix, image_format=config.image_format)
                except SourceDataError as err:
                    self.skipped["invalid_clip"] += 1
                    logger.warning("UniHand-Mix: skipping %s/%s: %s", clip.source, clip.clip_id, err)

    def curation_pipeline(self) -> CurationPipeline:
        """A fresh curation pipeline with this config's models and settings."""
        from .curation_models import (
            PrecomputedHandDetector,
            PrecomputedPoseEstimator,
            ProceduralOracleDetector,
            ProceduralOracleEstimator,
        )

        config = self.config
        detector = config.detector or (ProceduralOracleDetector() if config.procedural else PrecomputedHandDetector())
        estimator = config.estimator or (
            ProceduralOracleEstimator() if config.procedural else PrecomputedPoseEstimator()
        )
        return CurationPipeline.default(
            detector,
            estimator,
            config.judge,
            detection_threshold=config.detection_threshold,
            pose_threshold=config.pose_threshold,
            slowdown=config.slowdown,
        )

    def _procedural_config(self, style: str) -> ProceduralConfig:
        config = self.config
        junk = config.junk_probability if style == "wild" else 0.0
        return ProceduralConfig(style=style, seed=config.seed, image_size=config.image_size, junk_probability=junk)

    def _procedural_lab(self, split: str) -> Iterator[SourceClip]:
        count = toy_split_sizes(self.config)[("lab", split)]
        start = 0 if split == "train" else TEST_INDEX_OFFSET
        for clip in iter_clips(count, self._procedural_config("lab"), self.config.num_workers, start, "boundary"):
            yield procedural_source_clip(clip)

    def _procedural_wild(self, split: str, pipeline: CurationPipeline) -> Iterator[WildCandidate]:
        """Candidates until ``pipeline`` has kept the split's quota (at most 4x + 16 candidates)."""
        target = toy_split_sizes(self.config)[("wild", split)]
        start = 0 if split == "train" else TEST_INDEX_OFFSET
        limit, tried = 4 * target + 16, 0
        while pipeline.report.kept < target and tried < limit:
            batch = min(limit - tried, max(8, 2 * (target - pipeline.report.kept)))
            for clip in iter_clips(batch, self._procedural_config("wild"), self.config.num_workers, start + tried):
                tried += 1
                yield procedural_candidate(clip)
                if pipeline.report.kept >= target:
                    return
        if pipeline.report.kept < target:
            logger.warning(
                "UniHand-Mix toy: only %d of %d wild %s clips passed curation after %d candidates",
                pipeline.report.kept,
                target,
                split,
                tried,
            )

    def _source_lab(self, split: str) -> Iterator[SourceClip]:
        config = self.config
        for name in config.lab_sources:
            root = Path(config.data_dir) / name
            if not root.is_dir():
                logger.info("UniHand-Mix: no %s folder in %s, skipping that source", name, config.data_dir)
                continue
            for clip in get_converter(name)(root, config.mano_dir):
                recording = clip.metadata.get("recording", clip.clip_id)
                if assign_split(f"{clip.source}/{recording}", config.test_fraction) == split:
                    yield clip

    def _folder_wild(self, split: str) -> Iterator[WildCandidate]:
        for candidate in iter_wild_folder(Path(self.config.data_dir) / "wild"):
            key = f"{candidate.source}/{candidate.metadata['recording']}"
            if (candidate.split or assign_split(key, self.config.test_fraction)) == split:
                candidate.split = split
                yield candidate
