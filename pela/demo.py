"""``pela demo``: the main job on built-in procedural data, nothing downloaded.

Stages:

1. export the procedural UniHand-Mix (lab + curated wild) as a Hub-native folder (``data/``);
2. train the GRQ-VAE motion tokenizer on its lab *train* split and measure reconstruction (``motion_tokenizer/``);
3. precompute the motion tokens of the export (``pela data tokenize``);
4. pretrain the frozen frame encoder, a small DINOv3-architecture stand-in, on the lab *train* frames by masked image
   modelling (``frame_encoder/``; real runs load DINOv3 weights the same way);
5. pretrain PELA and the paper's baselines (w/o align, next-token) on the streamed ``mix`` train split, one model per
   (variant, seed[, wild fraction]), ``parallel_models`` at a time in separate single-threaded processes (the default
   3 trains the three models of one seed together: on 2 cores the OS shares them, which ends sooner than two at a
   time followed by the third alone);
6. generate the first chunk of every labelled Lab / Wild test sample from its instruction and first frame (mean of
   ``num_ensembles`` decoding runs) and score it (MPJPE, PA-MPJPE, MWTE, MDE in cm, built-in skeleton), next to two
   references without a model: the mean training motion and the tokenizer round trip (the decoding upper bound);
7. for the masked-chunk models, measure whether they read the first frame and the instruction: the full-mask MCP loss
   on the Lab test rows and its rise when frames or instructions are swapped between rows
   (:mod:`trainers.frame_reliance`).

Outputs in ``output_dir``: ``results.json`` (``{model: {"lab"|"wild": metrics, "frame_reliance": ...}}``, averaged
over seeds with ``<metric>_std``), ``references.json``, ``tokenizer_metrics.json``, ``run_info.json`` (config, timings, per-seed
results, loss histories), ``loss_curves.png``, ``generated_<model>.png`` and ``generated_<model>.mp4`` (the first Lab
test sample, generated next to true hands), previews, and with ``wild_fractions`` the
sweep of paper Fig. 3 (``wild_fraction_sweep.json`` / ``.png``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .arguments import KinematicsArguments
from .progress import Heartbeat
from .variants import VARIANTS

MODELS = tuple(VARIANTS)
METRICS = ("mpjpe", "pa_mpjpe", "mwte", "mde")
SPLITS = ("lab", "wild")


@dataclass(kw_only=True)
class DemoConfig(KinematicsArguments):
    """Everything ``pela demo`` does (``pela demo --help``; the defaults are ``make demo``'s)."""

    output_dir: str = "outputs/demo"
    seed: int = field(default=0, metadata={"help": "seed of the data, tokenizer and frame encoder"})
    seeds: list[int] = field(
        default_factory=list,
        metadata={"help": "training seeds of the models (default: --seed); the table reports mean +- std over them"},
    )
    num_dataset_clips: int = field(default=3000, metadata={"help": "procedural UniHand-Mix clips (lab + wild)"})
    image_size: int = field(default=64, metadata={"help": "frame size in pixels"})
    tokenizer_steps: int = 400
    codebook_size: int = 64
    num_quantizers: int = field(
        default=2, metadata={"help": "residual quantizers per group (the paper's 8: 128 tokens a chunk)"}
    )
    frame_encoder_steps: int = 300
    pretrain_steps: int = field(default=3000, metadata={"help": "optimiser steps per pretrained model"})
    batch_size: int = 8
    learning_rate: float = 3e-3
    max_train_chunks: int = field(default=1, metadata={"help": "training clips cropped to this many chunks"})
    mcp_full_mask_prob: float = field(
        default=1.0,
        metadata={
            "help": "probability that an MCP target chunk is masked whole (0: the paper's hybrid masking); the demo "
            "trains one chunk per clip and scores generation, where every token of the chunk is masked"
        },
    )
    num_ensembles: int = field(default=16, metadata={"help": "decoding runs averaged per test clip"})
    wild_fraction: float = field(default=1.0, metadata={"help": "share of the wild training clips used (paper Fig. 3)"})
    wild_fractions: list[float] = field(
        default_factory=list,
        metadata={
            "help": "also train PELA at each of these shares of the wild clips (Fig. 3 sweep, e.g. 0 0.25 0.5 1)"
        },
    )
    models: list[str] = field(default_factory=lambda: list(MODELS), metadata={"choices": list(MODELS)})
    num_workers: int = field(default=2, metadata={"help": "data generator processes"})
    parallel_models: int = field(
        default=3,
        metadata={
            "help": "models trained at once, one single-threaded process each (more than the cores: the OS shares them)"
        },
    )
    progress_interval: float = field(
        default=20.0, metadata={"help": "seconds between progress lines of a running stage"}
    )

    def __post_init__(self) -> None:
        self.seeds = list(self.seeds) or [self.seed]
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown models {unknown}; choose from {list(MODELS)}")


def run_demo(config: DemoConfig) -> dict:
    from .jobs import (
        pretrain_frame_encoder_on_export,
        preview_procedural_clips,
        train_tokenizer_on_export,
    )

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start, beats = time.time(), {}

    def stage(name: str, label: str) -> Heartbeat:
        beats[name] = Heartbeat(f"[demo] {label}", config.progress_interval)
        return beats[name]

    for style in ("lab", "wild"):
        path = preview_procedural_clips(str(out / f"preview_{style}.png"), style, 4, config.seed, 96)
        print(f"[demo] wrote {path}")
    data = out / "data"
    with stage("export", f"exporting {config.num_dataset_clips} procedural UniHand-Mix clips to {data}"):
        _export(config, data)

    with stage("tokenizer", "training the motion tokenizer on the lab train split"):
        metrics = train_tokenizer_on_export(
            str(data), str(out / "motion_tokenizer"), max_steps=config.tokenizer_steps, batch_size=64,
            codebook_size=config.codebook_size, num_quantizers=config.num_quantizers, seed=config.seed,
            mano_dir=config.mano_dir,
        )  # fmt: skip
    (out / "tokenizer_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(format_tokenizer_table(metrics))

    with stage("tokenize", "precomputing the motion tokens of the export"):
        _tokenize(data, out / "motion_tokenizer")

    with stage("frame_encoder", "pretraining the frame encoder (DINOv3 stand-in) on the lab train frames"):
        frame_info = pretrain_frame_encoder_on_export(
            str(data), str(out / "frame_encoder"), image_size=config.image_size, patch_size=8,
            max_steps=config.frame_encoder_steps, seed=config.seed,
        )  # fmt: skip

    with stage("models", "pretraining, generating and scoring the models") as beat:
        runs, references = _pretrain_and_evaluate(config, out, data, beat)
    results = aggregate(runs, config.models, config.seeds, config.wild_fraction)
    info = {
        "config": asdict(config),
        "seconds": round(time.time() - start, 1),
        "stage_seconds": {name: round(beat.seconds, 1) for name, beat in beats.items()},
        "frame_encoder": frame_info,
        "references": references,
        "runs": runs,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "references.json").write_text(json.dumps(references, indent=2))
    (out / "run_info.json").write_text(json.dumps(info, indent=2))
    print(format_table(results, references, len(config.seeds)))
    if config.wild_fractions:
        sweep = aggregate_sweep(runs, config.wild_fractions)
        (out / "wild_fraction_sweep.json").write_text(json.dumps(sweep, indent=2))
        plot_sweep(sweep, out / "wild_fraction_sweep.png")
        print(format_sweep(sweep))
    print(f"\n[demo] done in {info['seconds']} s; results in {out / 'results.json'}")
    return results


def _export(config: DemoConfig, data: Path) -> None:
    from datasets_unihand_mix.builder import UniHandMix
    from datasets_unihand_mix.export import export_hub_folder

    if not (data / "README.md").exists():
        builder = UniHandMix(
            config_name="toy", num_clips=config.num_dataset_clips, seed=config.seed, image_size=config.image_size,
            num_workers=config.num_workers,
        )  # fmt: skip
        export_hub_folder(builder, data, overwrite=True)


def _tokenize(data: Path, tokenizer_dir: Path) -> None:
    from datasets_unihand_mix.motion_tokens import tokenize_hub_folder
    from modeling_pela import MotionTokenizerModel

    summary = tokenize_hub_folder(data, MotionTokenizerModel.from_pretrained(str(tokenizer_dir)))
    print(f"[demo] precomputed {summary.hand_chunks} hand-chunk token sequences ({summary.fingerprint})")


def _jobs(config: DemoConfig) -> list[dict[str, Any]]:
    """One job per model to train: every variant for every seed at ``wild_fraction``, then (sweep) PELA at every
    other wild fraction."""
    jobs = [
        {"variant": name, "seed": seed, "wild_fraction": config.wild_fraction}
        for seed in config.seeds
        for name in config.models
    ]
    for fraction in config.wild_fractions:
        if fraction != config.wild_fraction or "pela" not in config.models:
            jobs += [{"variant": "pela", "seed": seed, "wild_fraction": fraction} for seed in config.seeds]
    return jobs


def job_name(job: dict[str, Any], config: DemoConfig) -> str:
    name = job["variant"]
    if len(config.seeds) > 1:
        name += f"-seed{job['seed']}"
    if job["wild_fraction"] != config.wild_fraction:
        name += f"-wild{job['wild_fraction']:g}"
    return name


def _pretrain_and_evaluate(config: DemoConfig, out: Path, data: Path, beat: Heartbeat) -> tuple[list[dict], dict]:
    import torch

    from datasets_unihand_mix.streaming import stream_unihand_mix
    from modeling_pela import MotionTokenizerModel, load_hand_kinematics
    from trainers.generation_eval import evaluate_mean_motion, evaluate_round_trip

    from .processors import tiny_processor_for
    from .training_data import evaluation_rows, rows_of

    torch.set_num_threads(1)
    all_train = rows_of(stream_unihand_mix(str(data), "mix", "train").decode(False))  # text and MANO: no pixels
    tokenizer = MotionTokenizerModel.from_pretrained(str(out / "motion_tokenizer")).eval()
    processor = tiny_processor_for(all_train, tokenizer.config, str(out / "frame_encoder"))
    processor.save_pretrained(out / "processor")

    def references() -> dict[str, dict[str, dict[str, float]]]:
        kinematics = load_hand_kinematics(config.mano_dir)
        tests = {split: evaluation_rows(str(data), split) for split in SPLITS}
        return {
            "mean motion": {split: evaluate_mean_motion(all_train, rows, kinematics) for split, rows in tests.items()},
            "tokenizer round trip": {
                split: evaluate_round_trip(tokenizer, rows, kinematics) for split, rows in tests.items()
            },
        }

    jobs = [
        {**job, "name": job_name(job, config), "output_dir": str(out / "models" / job_name(job, config))}
        for job in _jobs(config)
    ]
    shared = {"config": asdict(config), "data": str(data), "out": str(out)}
    for job in jobs:  # one video per variant: of its run with the first seed
        job["render"] = job["seed"] == config.seeds[0] and job["wild_fraction"] == config.wild_fraction
    workers = max(1, min(config.parallel_models, len(jobs)))
    print(f"[demo] pretraining {len(jobs)} models, {workers} at a time ({config.pretrain_steps} steps each)")
    beat.status(f"0 of {len(jobs)} models done")
    if workers == 1:
        scores, runs = references(), []
        for job in jobs:
            runs.append(train_and_score({**shared, **job}))
            beat.status(f"{len(runs)} of {len(jobs)} models done")
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(train_and_score, {**shared, **job}) for job in jobs]
            scores = references()  # while the models train
            for done, _ in enumerate(as_completed(futures), start=1):
                beat.status(f"{done} of {len(jobs)} models done")
            runs = [future.result() for future in futures]
    plot_runs(runs, out)
    return runs, scores


def train_and_score(job: dict[str, Any]) -> dict[str, Any]:
    """Train one model (in a worker process) and score it on the Lab / Wild test rows."""
    import torch

    from datasets_unihand_mix.streaming import stream_unihand_mix
    from modeling_pela import MotionTokenizerModel, PELAProcessor, load_hand_kinematics
    from trainers.frame_reliance import evaluate_frame_reliance
    from trainers.generation_eval import evaluate_generation
    from trainers.pela_trainer import pela_training_arguments

    from .pretraining import pretrain
    from .training_data import evaluation_rows, wild_fraction_filter
    from .visualization import by_row, render_row

    torch.set_num_threads(1)  # tiny matrices: one intra-op thread per process is fastest on a small CPU
    config, out, data = DemoConfig(**job["config"]), Path(job["out"]), job["data"]
    tokenizer = MotionTokenizerModel.from_pretrained(str(out / "motion_tokenizer")).eval()
    processor = PELAProcessor.from_pretrained(str(out / "processor"))
    kinematics = load_hand_kinematics(config.mano_dir)
    seed, chunks = job["seed"], config.max_train_chunks
    train = stream_unihand_mix(data, "mix", "train", shuffle_buffer_size=256, seed=seed, max_chunks=chunks)
    train = train.filter(wild_fraction_filter(job["wild_fraction"]))
    args = pela_training_arguments(
        job["output_dir"], max_steps=config.pretrain_steps, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, mcp_full_mask_prob=config.mcp_full_mask_prob,
        encoded_rows_cache=config.num_dataset_clips,  # every row is seen ~8 times: encode each once
        frame_feature_cache=config.num_dataset_clips * (chunks + 1),  # and each of its boundary frames
        logging_steps=max(1, config.pretrain_steps // 20), save_strategy="no",
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, seed=seed, report_to="none",
        overwrite_output_dir=True,  # a re-run into the same --output-dir replaces its models
    )  # fmt: skip
    started = time.time()
    model, history = pretrain(
        job["variant"], train, processor, tokenizer, args, frame_encoder=str(out / "frame_encoder"), dataset=data
    )
    trained = time.time()
    scores, pairs = {}, []
    tests = {split: evaluation_rows(data, split) for split in SPLITS}
    for split, rows in tests.items():
        scores[split] = evaluate_generation(
            model, processor, tokenizer, rows, kinematics, num_ensembles=config.num_ensembles,
            generator=torch.Generator().manual_seed(seed), keypoints=pairs if split == "lab" else None,
        )  # fmt: skip
    reliance = None
    if model.config.objective == "masked_chunk":
        reliance = evaluate_frame_reliance(model, processor, tokenizer, tests["lab"], seed=seed)
    if job.get("render"):
        path = render_row(
            tests["lab"][0], out / f"generated_{job['variant']}.mp4", kinematics,
            generated=by_row(tests["lab"], [prediction for prediction, _ in pairs])[0],
        )  # fmt: skip
        print(f"[demo] wrote {path}")
    print(f"[demo] {job['name']}: Lab MPJPE {scores['lab']['mpjpe']:.2f}, Wild {scores['wild']['mpjpe']:.2f} cm")
    return {
        **{key: job[key] for key in ("name", "variant", "seed", "wild_fraction")},
        "scores": scores,
        "frame_reliance": reliance,
        "history": history,
        "seconds": {"train": round(trained - started, 1), "generate_and_score": round(time.time() - trained, 1)},
        "keypoints": [(generated.tolist(), true.tolist()) for generated, true in pairs[:4]],
        "pid": os.getpid(),
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(
    runs: list[dict], models: tuple[str, ...], seeds: tuple[int, ...], wild_fraction: float
) -> dict[str, dict[str, dict[str, float]]]:
    """``{model: {split: {metric: mean over seeds, metric_std: std over seeds, ...}}}`` at ``wild_fraction``."""
    results = {}
    for name in models:
        chosen = [run for run in runs if run["variant"] == name and run["wild_fraction"] == wild_fraction]
        results[name] = {}
        for split in SPLITS:
            merged: dict[str, float] = {"num_seeds": len(chosen)}
            for key in (*METRICS, "distinct_fraction"):
                mean, std = _mean_std([run["scores"][split][key] for run in chosen])
                merged[key], merged[f"{key}_std"] = mean, std
            merged["num_hand_chunks"] = chosen[0]["scores"][split]["num_hand_chunks"]
            results[name][split] = merged
        reliance = [run["frame_reliance"] for run in chosen if run.get("frame_reliance")]
        if reliance:
            results[name]["frame_reliance"] = {}
            for key in ("mcp_loss", "frame_gain", "instruction_gain"):
                mean, std = _mean_std([item[key] for item in reliance])
                results[name]["frame_reliance"].update({key: mean, f"{key}_std": std})
    return results


def aggregate_sweep(runs: list[dict], fractions: tuple[float, ...]) -> dict[str, dict[str, dict[str, float]]]:
    """PELA's metrics per wild fraction (paper Fig. 3): ``{fraction: {split: {metric, metric_std}}}``."""
    sweep = {}
    for fraction in fractions:
        chosen = [run for run in runs if run["variant"] == "pela" and run["wild_fraction"] == fraction]
        sweep[f"{fraction:g}"] = {
            split: {
                key: value
                for metric in METRICS
                for key, value in zip(
                    (metric, f"{metric}_std"), _mean_std([run["scores"][split][metric] for run in chosen]), strict=True
                )
            }
            for split in SPLITS
        }
    return sweep


def format_tokenizer_table(metrics: dict) -> str:
    lines = [f"\nMotion tokenizer reconstruction (kinematics: {metrics['kinematics']}), cm"]
    lines.append(f"{'split':<6} {'MPJPE':>7} {'PA-MPJPE':>9} {'MWTE':>7} {'MDE':>7} {'usage(w/f)':>12}")
    for split in SPLITS:
        m = metrics[split]
        lines.append(
            f"{split:<6} {m['mpjpe']:7.2f} {m['pa_mpjpe']:9.2f} {m['mwte']:7.2f} {m['mde']:7.2f} "
            f"{m['wrist_usage']:.2f}/{m['finger_usage']:.2f}"
        )
    return "\n".join(lines)


def format_table(results: dict, references: dict | None = None, num_seeds: int = 1) -> str:
    """Table 1 of the paper in miniature: one row per model, Lab and Wild columns (cm; mean +- std over seeds), the
    references without a model in parentheses."""
    header = f"{'model':<24}" + "".join(f"{s + ' ' + k.upper():>18}" for s in ("Lab", "Wild") for k in METRICS)
    seeds = f", mean +- std over {num_seeds} seeds" if num_seeds > 1 else ""
    lines = ["", f"Hand motion generation, first chunk of each test sample (cm, built-in skeleton{seeds})", header]
    for name, splits in results.items():
        cells = []
        for split in SPLITS:
            for key in METRICS:
                std = splits[split].get(f"{key}_std", 0.0)
                cells.append(f"{splits[split][key]:.2f} +- {std:.2f}" if num_seeds > 1 else f"{splits[split][key]:.2f}")
        lines.append(f"{name:<24}" + "".join(f"{cell:>18}" for cell in cells))
    for name, splits in (references or {}).items():
        lines.append(f"{'(' + name + ')':<24}" + "".join(f"{splits[s][k]:18.2f}" for s in SPLITS for k in METRICS))
    read = {name: splits["frame_reliance"] for name, splits in results.items() if "frame_reliance" in splits}
    if read:
        lines += ["", "Does the model read its inputs? Lab test, full-mask MCP loss (nats/token) and its rise when first frames",
                  "or instructions are swapped between rows (trainers.frame_reliance)",
                  f"{'model':<24}{'MCP loss':>18}{'frame gain':>18}{'instruction gain':>18}"]  # fmt: skip
        for name, item in read.items():
            cells = [
                f"{item[k]:.3f} +- {item[k + '_std']:.3f}" if num_seeds > 1 else f"{item[k]:.3f}"
                for k in ("mcp_loss", "frame_gain", "instruction_gain")
            ]
            lines.append(f"{name:<24}" + "".join(f"{cell:>18}" for cell in cells))
    return "\n".join(lines)


def format_sweep(sweep: dict) -> str:
    lines = ["", "PELA vs share of wild training clips (paper Fig. 3), MPJPE cm", f"{'wild':>6}{'Lab':>16}{'Wild':>16}"]
    for fraction, splits in sweep.items():
        cells = [f"{splits[s]['mpjpe']:.2f} +- {splits[s]['mpjpe_std']:.2f}" for s in SPLITS]
        lines.append(f"{fraction:>6}" + "".join(f"{cell:>16}" for cell in cells))
    return "\n".join(lines)


def plot_sweep(sweep: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = [float(f) for f in sweep]
    figure, axis = plt.subplots(figsize=(4.5, 3.2))
    for split in SPLITS:
        means = [sweep[f][split]["mpjpe"] for f in sweep]
        stds = [sweep[f][split]["mpjpe_std"] for f in sweep]
        axis.errorbar(fractions, means, yerr=stds, marker="o", capsize=3, label=split.capitalize())
    axis.set_xlabel("share of wild training clips")
    axis.set_ylabel("MPJPE (cm)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_runs(runs: list[dict], out: Path) -> None:
    """Loss curves of every run, and generated vs true hands of the first seed's run of every variant."""
    import numpy as np

    from .plots import plot_hand_motion, plot_loss_curves

    plot_loss_curves({run["name"]: run["history"] for run in runs}, out / "loss_curves.png")
    shown = set()
    for run in runs:
        if run["variant"] not in shown and run["keypoints"]:
            shown.add(run["variant"])
            pairs = [(np.asarray(g), np.asarray(t)) for g, t in run["keypoints"]]
            plot_hand_motion(pairs, out / f"generated_{run['variant']}.png", run["variant"])
