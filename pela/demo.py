"""``pela demo``: the main job on built-in procedural data, nothing downloaded.

Stages: (1) export the procedural UniHand-Mix (lab + curated wild) as a Hub-native folder; (2) train the GRQ-VAE
motion tokenizer and measure its reconstruction; (3) pretrain tiny PELA and the paper's baselines (w/o align,
next-token) on the streamed ``mix`` train split; (4) generate the first chunk of every labelled Lab / Wild test
sample from its instruction and first frame and score it (MPJPE, PA-MPJPE, MWTE, MDE in cm, built-in skeleton).

Outputs in ``output_dir``: ``results.json`` (``{model: {"lab"|"wild": metrics}}``), ``tokenizer_metrics.json``,
``run_info.json`` (config, timings, data counts), ``loss_curves.png``, ``generated_<model>.png``, previews.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class DemoConfig:
    output_dir: str = "outputs/demo"
    seed: int = 0
    num_lab_clips: int = 800
    num_wild_clips: int = 500
    image_size: int = 96
    tokenizer_steps: int = 400
    codebook_size: int = 512
    num_workers: int = 2
    mano_dir: str | None = None
    num_dataset_clips: int = 600
    pretrain_steps: int = 150
    batch_size: int = 8
    max_train_chunks: int = 2
    wild_fraction: float = 1.0
    models: tuple[str, ...] = ("pela", "pela_wo_align", "next_token")


def run_demo(config: DemoConfig) -> dict:
    from .jobs import preview_procedural_clips, train_tokenizer_on_procedural

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for style in ("lab", "wild"):
        path = preview_procedural_clips(str(out / f"preview_{style}.png"), style, 4, config.seed, config.image_size)
        print(f"[demo] wrote {path}")
    print(f"[demo] training the motion tokenizer on {config.num_lab_clips} procedural lab clips ...")
    metrics = train_tokenizer_on_procedural(
        output_dir=str(out / "motion_tokenizer"),
        num_clips=config.num_lab_clips,
        max_steps=config.tokenizer_steps,
        batch_size=64,
        codebook_size=config.codebook_size,
        seed=config.seed,
        num_workers=config.num_workers,
        mano_dir=config.mano_dir,
    )
    (out / "tokenizer_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"\nMotion tokenizer reconstruction (kinematics: {metrics['kinematics']}), cm")
    print(f"{'split':<6} {'MPJPE':>7} {'PA-MPJPE':>9} {'MWTE':>7} {'MDE':>7} {'usage(w/f)':>12}")
    for split in ("lab", "wild"):
        m = metrics[split]
        print(
            f"{split:<6} {m['mpjpe']:7.2f} {m['pa_mpjpe']:9.2f} {m['mwte']:7.2f} {m['mde']:7.2f} "
            f"{m['wrist_usage']:.2f}/{m['finger_usage']:.2f}"
        )
    results, info = _pretrain_and_evaluate(config, out)
    info.update(config=asdict(config), seconds=round(time.time() - start, 1))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "run_info.json").write_text(json.dumps(info, indent=2))
    print(format_table(results, info["reference_mean_motion"]))
    print(f"\n[demo] done in {info['seconds']} s; results in {out / 'results.json'}")
    return results


def format_table(results: dict, reference: dict | None = None) -> str:
    """Table 1 of the paper in miniature: one row per model, Lab and Wild columns (cm); ``reference`` (the
    mean-motion predictor) as a last row in parentheses."""
    keys = ("mpjpe", "pa_mpjpe", "mwte", "mde")
    header = f"{'model':<15}" + "".join(f"{s + ' ' + k.upper():>15}" for s in ("Lab", "Wild") for k in keys)
    lines = ["", "Hand motion generation, first chunk of each test sample (cm, built-in skeleton)", header]
    rows = [*results.items(), *((("(mean motion)", reference),) if reference else ())]
    for name, splits in rows:
        lines.append(f"{name:<15}" + "".join(f"{splits[s][k]:15.2f}" for s in ("lab", "wild") for k in keys))
    return "\n".join(lines)


def _pretrain_and_evaluate(config: DemoConfig, out: Path) -> tuple[dict, dict]:
    import torch

    from datasets_unihand_mix.builder import UniHandMix
    from datasets_unihand_mix.export import export_hub_folder
    from datasets_unihand_mix.streaming import stream_unihand_mix
    from modeling_pela import MotionTokenizerModel, load_hand_kinematics
    from trainers.generation_eval import evaluate_generation, evaluate_mean_motion
    from trainers.pela_trainer import pela_training_arguments

    from .pretraining import (
        crop_row,
        plot_hand_motion,
        plot_loss_curves,
        pretrain,
        rows_of,
        tiny_processor_for,
        wild_fraction_filter,
    )

    torch.set_num_threads(1)  # tiny matrices: one intra-op thread is much faster than two on 2 cores
    data_dir = out / "data"
    if not (data_dir / "README.md").exists():
        print(f"[demo] exporting {config.num_dataset_clips} procedural UniHand-Mix clips to {data_dir} ...")
        builder = UniHandMix(
            config_name="toy", num_clips=config.num_dataset_clips, seed=config.seed, image_size=64,
            num_workers=config.num_workers,
        )  # fmt: skip
        export_hub_folder(builder, data_dir, overwrite=True)
    tokenizer = MotionTokenizerModel.from_pretrained(str(out / "motion_tokenizer")).eval()
    kinematics = load_hand_kinematics(config.mano_dir)

    keep = wild_fraction_filter(config.wild_fraction)

    all_train = rows_of(stream_unihand_mix(str(data_dir), "mix", "train"))
    processor = tiny_processor_for(all_train, config.codebook_size)
    tests = {
        split: [crop_row(r, 1) for r in rows_of(stream_unihand_mix(str(data_dir), split, "test"))]
        for split in ("lab", "wild")
    }
    train = (
        stream_unihand_mix(str(data_dir), "mix", "train", shuffle_buffer_size=256, seed=config.seed)
        .filter(keep)
        .map(lambda row: crop_row(row, config.max_train_chunks))
    )
    reference = {split: evaluate_mean_motion(all_train, rows, kinematics) for split, rows in tests.items()}
    results, histories, timings = {}, {}, {}
    for name in config.models:
        print(f"[demo] pretraining {name} for {config.pretrain_steps} steps ...")
        started = time.time()
        args = pela_training_arguments(
            str(out / "models" / name), max_steps=config.pretrain_steps, per_device_train_batch_size=config.batch_size,
            learning_rate=1e-3, logging_steps=max(1, config.pretrain_steps // 20), save_strategy="no",
            use_cpu=not torch.cuda.is_available(), disable_tqdm=False, seed=config.seed,
        )  # fmt: skip
        model, histories[name] = pretrain(name, train, processor, tokenizer, args, dataset=str(data_dir))
        trained = time.time()
        results[name], pairs = {}, []
        for split, rows in tests.items():
            results[name][split] = evaluate_generation(model, processor, tokenizer, rows, kinematics, keypoints=pairs)
        timings[name] = {"train": round(trained - started, 1), "generate_and_score": round(time.time() - trained, 1)}
        plot_hand_motion(pairs[:4], out / f"generated_{name}.png", name)
    plot_loss_curves(histories, out / "loss_curves.png")
    info = {
        "kinematics": kinematics.source,
        "train_rows": sum(keep(r) for r in all_train),
        "test_rows": {split: len(rows) for split, rows in tests.items()},
        "model_seconds": timings,
        "reference_mean_motion": reference,
        "loss_history": histories,
    }
    return results, info
