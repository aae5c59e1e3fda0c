"""Hub-native export of UniHand-Mix: parquet shards + a dataset card that plain ``datasets`` streams, and the upload.

:func:`export_hub_folder` writes::

    <output>/README.md                              dataset card; its YAML ``configs:`` declare lab, wild and mix
                                                    (default), each with train/test data files
    <output>/data/<lab|wild>/<split>-00000-of-0000N.parquet   shards of at most ``max_shard_size`` (Features embedded)
    <output>/unihand_mix_stats.png / .json          statistics (appendix B.2): sources, task types, clip lengths,
                                                    curation keep rates

so that ``datasets.load_dataset(<output or repo id>, "wild", split="test", streaming=True)`` works with no custom
code. :func:`write_hub_folder` writes the same folder from any :class:`RowSource` (rows per split and what the card
says about them; ``pela data curate-videos`` uses it). :func:`push_to_hub` uploads the folder with
``huggingface_hub``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets.arrow_writer import ParquetWriter
from datasets.utils.py_utils import convert_file_size_to_int
from tqdm.auto import tqdm

from .builder import UniHandMix
from .curation import CurationReport
from .samples import PROCEDURAL_LICENSE
from .schema import SPLITS, SUBSETS, unihand_features
from .schema import __doc__ as schema_doc
from .tasks import DEFAULT_TASK_MIX

logger = logging.getLogger(__name__)

CARD_TEMPLATE = "unihand_mix_card.md"
STATS_PLOT = "unihand_mix_stats.png"
STATS_JSON = "unihand_mix_stats.json"
DEFAULT_MAX_SHARD_SIZE = "256MB"
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")


@dataclass
class ExportSummary:
    """What :func:`export_hub_folder` wrote: ``files[subset][split]`` (paths relative to ``output_dir``),
    ``rows[config][split]`` and the statistics shown in the card."""

    output_dir: Path
    files: dict[str, dict[str, list[str]]]
    rows: dict[str, dict[str, int]]
    stats: dict[str, Any]


class _ShardWriter:
    """Parquet shards of one (subset, split), rolled over at ``max_bytes`` of (approximate) row data."""

    def __init__(self, folder: Path, split: str, max_bytes: int) -> None:
        self.folder, self.split, self.max_bytes = folder, split, max_bytes
        self.paths: list[Path] = []
        self.writer: ParquetWriter | None = None
        self.bytes = 0
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.paths.append(self.folder / f"{self.split}-{len(self.paths):05d}.parquet.partial")
            self.writer = ParquetWriter(path=str(self.paths[-1]), features=unihand_features())
        self.writer.write(row)
        self.rows += 1
        self.bytes += _row_nbytes(row)
        if self.bytes >= self.max_bytes:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.finalize()
            self.writer.close()
            self.writer, self.bytes = None, 0

    def finish(self) -> list[Path]:
        """Close and rename the shards ``<split>-<i>-of-<n>.parquet``."""
        self.close()
        final = []
        for i, path in enumerate(self.paths):
            target = path.with_name(f"{self.split}-{i:05d}-of-{len(self.paths):05d}.parquet")
            path.replace(target)
            final.append(target)
        return final


def _row_nbytes(row: dict[str, Any]) -> int:
    """Approximate stored size of a row: encoded frames plus 4 bytes per MANO value."""
    frames = sum(len(image["bytes"]) for image in [row["first_frame"], *row["boundary_frames"]])
    hands = sum(1 for side in ("left", "right") if row[f"mano_{side}"] is not None)
    return frames + 4 * 51 * row["num_frames"] * hands + 1024


@dataclass
class RowSource:
    """Rows to export and what the card says about them.

    Attributes:
        name: the build's config name (``toy``, ``wild``, ...).
        rows: split -> that split's rows (schema :func:`~datasets_unihand_mix.schema.unihand_features`).
        curation: the wild curation report, read after all rows were generated (None without wild rows).
        pipeline: :meth:`~datasets_unihand_mix.curation.CurationPipeline.describe` of the curation, or None.
        build: the command that rebuilds the export (shown in the card).
        procedural: the rows come from the procedural generator.
        task_mix: task-type weights the rows were drawn with (the card compares the exported mix with them).
    """

    name: str
    rows: Callable[[str], Iterable[dict[str, Any]]]
    curation: Callable[[], CurationReport | None]
    pipeline: str | None
    build: str
    procedural: bool = False
    task_mix: dict[str, float] | None = None


def builder_source(builder: UniHandMix) -> RowSource:
    """A builder's rows (every split, lab then wild) as a :class:`RowSource`."""

    def curation() -> CurationReport | None:
        reports = list(builder.curation_reports.values())
        return functools.reduce(CurationReport.merge, reports) if reports else None

    config = builder.config
    return RowSource(
        name=config.name,
        rows=builder.iter_rows,
        curation=curation,
        pipeline=builder.curation_pipeline().describe() if "wild" in config.subsets else None,
        build=_build_description(builder),
        procedural=config.procedural,
        task_mix=config.mix,
    )


def export_hub_folder(
    builder: UniHandMix,
    output_dir: str | Path,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    repo_id: str = "<org>/unihand-mix",
    overwrite: bool = False,
    progress: bool = False,
) -> ExportSummary:
    """Generate every split of ``builder`` and write the Hub-native folder (module docstring).

    Args:
        builder: a :class:`~datasets_unihand_mix.builder.UniHandMix` (any config; rows are routed by subset).
        output_dir: the folder to write (must be empty or absent unless ``overwrite``).
        max_shard_size: target shard size (bytes or a string like ``"256MB"``); streaming reads shard by shard.
        repo_id: the Hub repository named in the card's usage snippet.
        overwrite: replace an existing export in ``output_dir`` (its ``data/`` folder and card).
        progress: show a progress bar of the rows written per split.
    """
    return write_hub_folder(
        builder_source(builder),
        output_dir,
        max_shard_size=max_shard_size,
        repo_id=repo_id,
        overwrite=overwrite,
        progress=progress,
    )


def write_hub_folder(
    source: RowSource,
    output_dir: str | Path,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    repo_id: str = "<org>/unihand-mix",
    overwrite: bool = False,
    progress: bool = False,
) -> ExportSummary:
    """Write the Hub-native folder (module docstring) from ``source``; arguments as :func:`export_hub_folder`."""
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace the export")
        shutil.rmtree(out / "data", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    max_bytes = convert_file_size_to_int(max_shard_size)
    writers = {
        (subset, split): _ShardWriter(out / "data" / subset, split, max_bytes) for subset in SUBSETS for split in SPLITS
    }
    collector = _StatsCollector()
    for split in SPLITS:
        for row in tqdm(source.rows(split), desc=f"exporting {split}", unit="row", disable=not progress):
            writers[(row["subset"], split)].write(row)
            collector.add(row)
    files: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for (subset, split), writer in writers.items():
        paths = writer.finish()
        if paths:
            files[subset][split] = [path.relative_to(out).as_posix() for path in paths]
    if not files:
        raise ValueError(f"the '{source.name}' build produced no rows; nothing to export")
    rows = _rows_per_config(writers, files)
    stats = collector.stats(source, source.curation(), rows)
    (out / STATS_JSON).write_text(json.dumps(stats, indent=2) + "\n")
    _plot_stats(stats, out / STATS_PLOT)
    _write_card(out, files, rows, stats, source.build, repo_id)
    for config, per_split in rows.items():
        for split in SPLITS:
            if split not in per_split:
                logger.warning(
                    "UniHand-Mix export: config '%s' has no %s rows; that split is not declared", config, split
                )
    logger.info("UniHand-Mix export: wrote %s (%s)", out, json.dumps(rows))
    return ExportSummary(out, dict(files), rows, stats)


def _rows_per_config(
    writers: dict[tuple[str, str], _ShardWriter], files: dict[str, dict[str, list[str]]]
) -> dict[str, dict[str, int]]:
    rows: dict[str, dict[str, int]] = {}
    for subset in SUBSETS:
        if subset in files:
            rows[subset] = {split: writers[(subset, split)].rows for split in SPLITS if split in files[subset]}
    rows["mix"] = {
        split: sum(writers[(s, split)].rows for s in SUBSETS)
        for split in SPLITS
        if any(split in f for f in files.values())
    }
    return rows


class _StatsCollector:
    """Running counts of the exported rows (sources, task types, clip lengths) for the card."""

    def __init__(self) -> None:
        self.sources: dict[str, dict[str, Any]] = {}
        self.task_types: Counter = Counter()
        self.seconds: Counter = Counter()
        self.total = 0

    def add(self, row: dict[str, Any]) -> None:
        source = self.sources.setdefault(
            row["source"],
            {"subset": row["subset"], "rows": 0, "license": row["license"], "attribution": row["attribution"]},
        )
        source["rows"] += 1
        self.task_types[row["task_type"]] += 1
        seconds = row["num_frames"] / row["fps"]
        self.seconds[min(9, max(0, math.ceil(seconds - 1e-6) - 1))] += 1  # bins (0, 1], (1, 2], ..., (9, 10] s
        self.total += 1

    def stats(
        self, source: RowSource, curation: CurationReport | None, rows: dict[str, dict[str, int]]
    ) -> dict[str, Any]:
        mix = DEFAULT_TASK_MIX if source.task_mix is None else source.task_mix
        target = {task: weight / sum(mix.values()) for task, weight in mix.items()}
        return {
            "config": source.name,
            "procedural": source.procedural,
            "total_rows": self.total,
            "rows": rows,
            "sources": dict(sorted(self.sources.items())),
            "task_types": {task: self.task_types.get(task, 0) for task in DEFAULT_TASK_MIX},
            "task_mix_target": target,
            "clip_seconds_histogram": {"bin_edges": list(range(11)), "counts": [self.seconds[b] for b in range(10)]},
            "curation": None if curation is None else curation.as_dict(),
            "curation_pipeline": source.pipeline,
        }


def _plot_stats(stats: dict[str, Any], path: Path) -> None:
    """Figure 4 of the paper from the exported rows: source pie, task-type bars (with the target mix), clip lengths."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_source, ax_task, ax_length = fig.subplots(1, 3)
    sources = stats["sources"]
    ax_source.pie(
        [s["rows"] for s in sources.values()], labels=list(sources), autopct="%1.0f%%", textprops={"fontsize": 8}
    )
    ax_source.set_title("sources")
    tasks = list(stats["task_types"])
    total = max(1, stats["total_rows"])
    positions = range(len(tasks))
    ax_task.bar([p - 0.2 for p in positions], [100 * stats["task_types"][t] / total for t in tasks], 0.4, label="data")
    ax_task.bar(
        [p + 0.2 for p in positions],
        [100 * stats["task_mix_target"].get(t, 0) for t in tasks],
        0.4,
        label="target (B.2)",
    )
    ax_task.set_xticks(list(positions), [t.replace("motion_", "") for t in tasks], fontsize=8)
    ax_task.set_ylabel("% of samples")
    ax_task.set_title("task types")
    ax_task.legend(fontsize=8)
    hist = stats["clip_seconds_histogram"]
    ax_length.bar([b + 0.5 for b in range(10)], hist["counts"], 0.9)  # bar k spans the bin (k, k + 1] s
    ax_length.set_xticks(hist["bin_edges"])
    ax_length.set_xlabel("clip length (s)")
    ax_length.set_ylabel("samples")
    ax_length.set_title("clip lengths")
    fig.savefig(path, dpi=90)


def _card_data(
    files: dict[str, dict[str, list[str]]], rows: dict[str, dict[str, int]], out: Path, stats: dict[str, Any]
) -> Any:
    """The card's YAML: license, task categories, ``configs`` (mix default) and ``dataset_info`` per config."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    procedural = all(s["license"] == PROCEDURAL_LICENSE for s in stats["sources"].values())
    total = stats["total_rows"]
    size = next(
        label
        for limit, label in (
            (1e3, "n<1K"),
            (1e4, "1K<n<10K"),
            (1e5, "10K<n<100K"),
            (1e6, "100K<n<1M"),
            (1e7, "1M<n<10M"),
            (float("inf"), "10M<n<100M"),
        )
        if total < limit
    )
    card_data = DatasetCardData(
        license="apache-2.0" if procedural else "other",
        pretty_name="UniHand-Mix",
        task_categories=["robotics", "video-text-to-text"],
        size_categories=[size],
        tags=["hand-motion", "mano", "egocentric", "vla", "pela", "unihand-mix"]
        + (["synthetic"] if procedural else []),
    )
    if not procedural:
        card_data["license_name"] = "unihand-mix-per-source"
        card_data["license_details"] = "Each sample carries its source's license in the 'license' column."
    config_files = {subset: per_split for subset, per_split in files.items()}
    config_files["mix"] = {
        split: [f"data/{subset}/{split}-*" for subset in SUBSETS if split in files.get(subset, {})]
        for split in SPLITS
        if any(split in per_split for per_split in files.values())
    }
    metadata, infos = {}, {}
    for config, per_split in config_files.items():
        data_files = []
        for split in per_split:
            patterns = per_split[split] if config == "mix" else [f"data/{config}/{split}-*"]
            data_files.append({"split": split, "path": patterns[0] if len(patterns) == 1 else patterns})
        metadata[config] = {"data_files": data_files, **({"default": True} if config == "mix" else {})}
        splits = SplitDict()
        for split, count in rows[config].items():
            subsets = SUBSETS if config == "mix" else (config,)
            size_bytes = sum((out / f).stat().st_size for s in subsets for f in files.get(s, {}).get(split, []))
            splits.add(SplitInfo(name=split, num_bytes=size_bytes, num_examples=count))
        infos[config] = DatasetInfo(features=unihand_features(), splits=splits)
    MetadataConfigs(metadata).to_dataset_card_data(card_data)
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    return card_data


def _write_card(
    out: Path,
    files: dict[str, dict[str, list[str]]],
    rows: dict[str, dict[str, int]],
    stats: dict[str, Any],
    build: str,
    repo_id: str,
) -> None:
    """Render ``hub_cards/unihand_mix_card.md`` (jinja) with the statistics and write ``README.md``."""
    from huggingface_hub import DatasetCard

    template = card_template_path().read_text()
    total = max(1, stats["total_rows"])
    target = stats["task_mix_target"]
    hist = stats["clip_seconds_histogram"]
    curation = stats["curation"]
    card = DatasetCard.from_template(
        _card_data(files, rows, out, stats),
        template_str=template,
        repo_id=repo_id,
        stats=stats,
        plot=STATS_PLOT,
        stats_json=STATS_JSON,
        config_rows=[
            {
                "config": config,
                "split": split,
                "rows": count,
                "files": len(files.get(config, {}).get(split, []))
                if config != "mix"
                else sum(len(files.get(s, {}).get(split, [])) for s in SUBSETS),
            }
            for config, per_split in rows.items()
            for split, count in per_split.items()
        ],
        sources=[{"name": name, **info, "share": info["rows"] / total} for name, info in stats["sources"].items()],
        task_rows=[
            {"task": task, "rows": count, "share": count / total, "target": target.get(task, 0.0)}
            for task, count in stats["task_types"].items()
        ],
        length_rows=[{"bin": f"({a}, {a + 1}] s", "rows": count} for a, count in enumerate(hist["counts"])],
        curation_rows=[]
        if curation is None
        else [{"stage": name, **stage} for name, stage in curation["stages"].items()],
        schema_table="\n".join(
            re.sub(r":\w+:`", "`", line) for line in (schema_doc or "").splitlines() if line.startswith("|")
        ),
        build=build,
    )
    (out / "README.md").write_text(str(card) + "\n")


def card_template_path() -> Path:
    """``hub_cards/unihand_mix_card.md`` (looked up on the package path, which also works for namespace installs)."""
    import hub_cards

    for folder in hub_cards.__path__:
        path = Path(folder) / CARD_TEMPLATE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{CARD_TEMPLATE} not found in hub_cards ({list(hub_cards.__path__)})")


def _build_description(builder: UniHandMix) -> str:
    config = builder.config
    if config.procedural:
        return (
            f"`pela data export --config {config.name} --num-clips {config.num_clips} --seed {config.seed} "
            f"--image-size {config.image_size}`"
        )
    return f"`pela data export --config {config.name} --data-dir <raw data> --mano-dir <MANO models>`"


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload UniHand-Mix",
    api: Any = None,
) -> str:
    """Upload an exported folder to the dataset repository ``repo_id`` (created if needed); returns the commit URL.

    ``token`` defaults to ``huggingface_hub``'s own (``HF_TOKEN`` or ``hf auth login``); it is only passed to the
    client, never written. The upload is refused if a file of the folder contains a token-like string.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "README.md").is_file() or not (folder / "data").is_dir():
        raise FileNotFoundError(f"{folder} is not an exported UniHand-Mix folder (README.md and data/ expected)")
    _refuse_secrets(folder, token)
    api = api or HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        revision=revision,
        commit_message=commit_message,
        ignore_patterns=["*.partial", ".cache/*"],
    )
    return str(getattr(commit, "commit_url", commit))


def _refuse_secrets(folder: Path, token: str | None) -> None:
    """Raise if a text file (card, statistics) of ``folder`` contains ``token`` or an ``hf_...`` token."""
    for path in folder.rglob("*"):
        if path.suffix not in (".md", ".json", ".yaml", ".yml", ".txt") or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        if (token and token in text) or _TOKEN_PATTERN.search(text):
            raise ValueError(f"{path} contains an access token; remove it before uploading")


def load_export_stats(folder: str | Path) -> dict[str, Any]:
    """The statistics an export wrote (``unihand_mix_stats.json``)."""
    return json.loads((Path(folder) / STATS_JSON).read_text())
