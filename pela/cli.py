"""The ``pela`` command line. Subcommands import their dependencies lazily so ``pela --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .demo import MODELS


def _add_kinematics_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mano-dir",
        default=None,
        help="folder with your licensed MANO_RIGHT.pkl / MANO_LEFT.pkl for forward kinematics through smplx "
        "(default: the built-in MANO-free skeleton; every metric records which one was used)",
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    config = DemoConfig(
        output_dir=args.output_dir,
        seed=args.seed,
        seeds=tuple(args.seeds or (args.seed,)),
        num_dataset_clips=args.num_dataset_clips,
        image_size=args.image_size,
        tokenizer_steps=args.tokenizer_steps,
        codebook_size=args.codebook_size,
        num_quantizers=args.num_quantizers,
        frame_encoder_steps=args.frame_encoder_steps,
        pretrain_steps=args.pretrain_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        num_ensembles=args.num_ensembles,
        wild_fraction=args.wild_fraction,
        wild_fractions=tuple(args.wild_fractions or ()),
        models=tuple(args.models),
        num_workers=args.num_workers,
        parallel_models=args.parallel_models,
        progress_interval=args.progress_interval,
        mano_dir=args.mano_dir,
    )
    run_demo(config)
    return 0


def _cmd_data_preview(args: argparse.Namespace) -> int:
    from .jobs import preview_procedural_clips

    path = preview_procedural_clips(
        args.output, style=args.style, num_clips=args.num_clips, seed=args.seed, image_size=args.image_size
    )
    print(f"wrote {path}")
    return 0


def _cmd_data_export(args: argparse.Namespace) -> int:
    from datasets_unihand_mix.builder import UniHandMix
    from datasets_unihand_mix.export import export_hub_folder

    options = {"test_fraction": args.test_fraction, "image_format": args.image_format}
    if args.config == "toy":
        options.update(seed=args.seed, image_size=args.image_size, num_workers=args.num_workers)
        options.update(junk_probability=args.junk_probability)
        if args.num_clips is not None:
            options["num_clips"] = args.num_clips
    else:
        options.update(data_dir=args.data_dir, mano_dir=args.mano_dir)
    builder = UniHandMix(config_name=args.config, **options)
    summary = export_hub_folder(
        builder, args.output, max_shard_size=args.max_shard_size, repo_id=args.repo_id, overwrite=args.overwrite,
        progress=True,
    )  # fmt: skip
    for config, splits in summary.rows.items():
        print(f"{config:5s} " + "  ".join(f"{split}: {count} rows" for split, count in splits.items()))
    if summary.stats.get("curation"):
        rates = {name: stage["keep_rate"] for name, stage in summary.stats["curation"]["stages"].items()}
        print(f"curation keep rates: {json.dumps(rates)}")
    print(f"wrote {summary.output_dir}")
    return 0


def _cmd_data_view(args: argparse.Namespace) -> int:
    from datasets_unihand_mix.streaming import stream_unihand_mix
    from modeling_pela.mano import load_hand_kinematics

    from .visualization import render_row

    if args.index < 0:
        raise ValueError(f"--index must be >= 0, got {args.index}")
    row, count = None, 0
    for count, candidate in enumerate(stream_unihand_mix(args.source, args.config, args.split), start=1):
        if count == args.index + 1:
            row = candidate
            break
    if row is None:
        raise ValueError(
            f"{args.source} has {count} {args.config}/{args.split} rows, so --index must be below {count} "
            "(--config and --split choose the rows)"
        )
    path = render_row(
        row, args.output or f"outputs/view_{args.config}_{args.split}_{args.index}.mp4",
        load_hand_kinematics(args.mano_dir), panel_size=args.panel_size,
    )  # fmt: skip
    print(f"{row['id']}: wrote {path}")
    return 0


def _cmd_data_push(args: argparse.Namespace) -> int:
    from datasets_unihand_mix.export import push_to_hub

    url = push_to_hub(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"uploaded {args.folder} to {args.repo_id}: {url}")
    return 0


def _cmd_data_tokenize(args: argparse.Namespace) -> int:
    from datasets_unihand_mix.motion_tokens import tokenize_hub_folder
    from modeling_pela import MotionTokenizerModel

    tokenizer = MotionTokenizerModel.from_pretrained(args.motion_tokenizer)
    summary = tokenize_hub_folder(args.folder, tokenizer, batch_size=args.batch_size, progress=True)
    print(
        f"tokenized {summary.hand_chunks} hand-chunks in {summary.rows} rows ({summary.shards} shards) of "
        f"{args.folder} with motion tokenizer {summary.fingerprint}"
    )
    return 0


def _cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from .jobs import train_tokenizer_on_export, train_tokenizer_on_procedural

    options = dict(
        max_steps=args.max_steps, batch_size=args.batch_size, codebook_size=args.codebook_size,
        num_quantizers=args.num_quantizers, seed=args.seed, mano_dir=args.mano_dir, progress=True,
    )  # fmt: skip
    if args.data:
        metrics = train_tokenizer_on_export(args.data, args.output_dir, **options)
    else:
        metrics = train_tokenizer_on_procedural(
            output_dir=args.output_dir, num_clips=args.num_clips, num_workers=args.num_workers, **options
        )
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_tokenizer_eval(args: argparse.Namespace) -> int:
    from .jobs import evaluate_tokenizer_on_procedural

    metrics = evaluate_tokenizer_on_procedural(
        args.model, style=args.style, num_clips=args.num_clips, seed=args.seed, mano_dir=args.mano_dir
    )
    print(json.dumps(metrics, indent=2))
    return 0


def parse_pretrain_args(argv: Sequence[str]) -> tuple[Any, Any]:
    """``pela pretrain`` arguments: ``[CONFIG.yaml] [--flag value ...]`` (flags override the YAML file) parsed by
    ``HfArgumentParser`` into ``(PretrainArguments, PELATrainingArguments)``."""
    import yaml
    from transformers import HfArgumentParser

    from trainers.pela_trainer import PELATrainingArguments

    from .pretraining import PretrainArguments

    parser = HfArgumentParser((PretrainArguments, PELATrainingArguments), prog="pela pretrain")
    parser.error = lambda message: _short_error(parser, message)  # type: ignore[method-assign]
    parser.allow_abbrev = False  # `--max_step 5` is a typo, not --max_steps
    argv = list(argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        with open(argv.pop(0)) as handle:
            values = yaml.safe_load(handle) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SystemExit(f"pela pretrain: unknown keys in the YAML file: {unknown}")
        parser.set_defaults(**values)
        for action in parser._actions:
            if action.dest in values:
                action.required = False
    pretrain_args, training_args = parser.parse_args_into_dataclasses(argv)
    return pretrain_args, training_args


def _cmd_pretrain(argv: Sequence[str]) -> int:
    import torch

    from .pretraining import run_pretraining

    pretrain_args, training_args = parse_pretrain_args(argv)
    run_pretraining(pretrain_args, training_args)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # under `accelerate launch`: exit without a live process group
    print(f"wrote {training_args.output_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .inference import evaluate_checkpoint

    results = evaluate_checkpoint(
        args.checkpoint, args.data, args.splits, num_chunks=args.num_chunks, num_ensembles=args.num_ensembles,
        max_rows=args.max_rows, mano_dir=args.mano_dir, motion_tokenizer=args.motion_tokenizer,
        render=args.render, render_dir=args.render_dir, progress=True, max_skip_fraction=args.max_skip_fraction,
    )  # fmt: skip
    if args.render:
        print(f"wrote up to {args.render} renders per split to {args.render_dir}")
    text = json.dumps(results, indent=2)
    if args.update_card:
        from .pretraining import update_model_card

        print(f"updated {update_model_card(args.checkpoint, results)}")
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text)
    print(text)
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from PIL import Image

    from modeling_pela.mano import load_hand_kinematics

    from .inference import generate_for_image, mano_to_json
    from .visualization import hand_keypoints, render_motion

    image = Image.open(args.image)
    mano = generate_for_image(
        args.checkpoint, image, args.instruction, args.hands, num_chunks=args.num_chunks,
        num_ensembles=args.num_ensembles, seed=args.seed, motion_tokenizer=args.motion_tokenizer,
    )  # fmt: skip
    keypoints = hand_keypoints(mano, load_hand_kinematics(args.mano_dir))
    outputs = [args.output, args.video] if args.output or args.video else [GENERATED_PICTURE]
    for output in filter(None, outputs):
        path = render_motion(image, keypoints, output, focal_factor=args.focal_factor, panel_size=args.panel_size)
        print(f"wrote {path}")
    if args.save_mano:
        with open(args.save_mano, "w") as handle:
            json.dump(mano_to_json(mano), handle)
        print(f"wrote {args.save_mano}")
    return 0


def _short_error(parser: argparse.ArgumentParser, message: str) -> None:
    """argparse's error without the full usage block: one line, and where the options are listed."""
    parser.exit(2, f"{parser.prog}: error: {message} (`{parser.prog} --help` lists the options)\n")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})  # a misspelt flag is an error, not a prefix

    def error(self, message: str) -> None:  # type: ignore[override]
        _short_error(self, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pela",
        description="PELA: Predictive Embedding as Latent Action. Hand-motion VLA pretraining on lab and "
        "in-the-wild human videos.",
    )
    parser.add_argument("--version", action="version", version=f"pela {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the main job on built-in procedural data (no downloads)")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data, tokenizer and frame encoder")
    demo.add_argument(
        "--seeds", type=int, nargs="+", default=None,
        help="training seeds of the models (default: --seed); the table reports mean +- std over them",
    )  # fmt: skip
    demo.add_argument("--num-dataset-clips", type=int, default=2000, help="procedural UniHand-Mix clips (lab + wild)")
    demo.add_argument("--image-size", type=int, default=64, help="frame size in pixels")
    demo.add_argument("--tokenizer-steps", type=int, default=400)
    demo.add_argument("--codebook-size", type=int, default=64)
    demo.add_argument(
        "--num-quantizers",
        type=int,
        default=2,
        help="residual quantizers per group (the paper's 8: 128 tokens a chunk)",
    )
    demo.add_argument("--frame-encoder-steps", type=int, default=300)
    demo.add_argument("--pretrain-steps", type=int, default=1200, help="optimiser steps per pretrained model")
    demo.add_argument("--batch-size", type=int, default=8)
    demo.add_argument("--learning-rate", type=float, default=3e-3)
    demo.add_argument("--num-ensembles", type=int, default=16, help="decoding runs averaged per test clip")
    demo.add_argument(
        "--wild-fraction", type=float, default=1.0, help="share of the wild training clips used (paper Fig. 3)"
    )
    demo.add_argument(
        "--wild-fractions", type=float, nargs="+", default=None,
        help="also train PELA at each of these shares of the wild clips (paper Fig. 3 sweep, e.g. 0 0.25 0.5 1.0)",
    )  # fmt: skip
    demo.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    demo.add_argument("--num-workers", type=int, default=2, help="data generator processes")
    demo.add_argument(
        "--progress-interval", type=float, default=20.0, help="seconds between progress lines of a running stage"
    )
    demo.add_argument(
        "--parallel-models", type=int, default=3,
        help="models trained at once, one single-threaded process each (more than the cores: the OS shares them)",
    )  # fmt: skip
    _add_kinematics_arg(demo)
    demo.set_defaults(func=_cmd_demo)

    data = sub.add_parser("data", help="built-in procedural data; UniHand-Mix export and upload")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    preview = data_sub.add_parser("preview", help="render a grid of procedural clips (first/middle/last frame)")
    preview.add_argument("--output", default="outputs/preview.png")
    preview.add_argument("--style", choices=("lab", "wild"), default="lab")
    preview.add_argument("--num-clips", type=int, default=6)
    preview.add_argument("--image-size", type=int, default=128)
    preview.add_argument("--seed", type=int, default=0)
    preview.set_defaults(func=_cmd_data_preview)
    export = data_sub.add_parser(
        "export",
        help="build UniHand-Mix and write the Hub-native folder (parquet shards + dataset card) that "
        "datasets.load_dataset(FOLDER, 'lab'|'wild'|'mix', streaming=True) reads",
    )
    export.add_argument(
        "--config",
        choices=("toy", "lab", "wild", "mix"),
        default="toy",
        help="toy: procedural lab + curated wild clips (no downloads); lab/wild/mix: local raw data",
    )
    export.add_argument("--output", required=True, help="folder to write (empty or absent, unless --overwrite)")
    export.add_argument("--num-clips", type=int, default=None, help="toy: number of clips (default 200)")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--image-size", type=int, default=96, help="toy: frame size in pixels")
    export.add_argument("--num-workers", type=int, default=2, help="toy: generator processes")
    export.add_argument(
        "--junk-probability",
        type=float,
        default=0.15,
        help="toy: share of wild candidates that are idle/absent/distractor clips",
    )
    export.add_argument(
        "--data-dir", default=None, help="lab/wild/mix: raw data (DATA_DIR/arctic, /dexycb, /hot3d, /wild)"
    )
    export.add_argument("--mano-dir", default=None, help="lab/mix: folder with MANO_LEFT.pkl / MANO_RIGHT.pkl")
    export.add_argument("--test-fraction", type=float, default=0.1)
    export.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg")
    export.add_argument("--max-shard-size", default="256MB", help="target parquet shard size, e.g. 256MB")
    export.add_argument("--repo-id", default="<org>/unihand-mix", help="repository named in the card's usage snippet")
    export.add_argument("--overwrite", action="store_true", help="replace an existing export in --output")
    export.set_defaults(func=_cmd_data_export)
    view = data_sub.add_parser(
        "view",
        help="render one UniHand-Mix row (frames, true hands, instruction, task type, curation fields) to a video",
    )
    view.add_argument("source", help="exported UniHand-Mix folder or Hub dataset id")
    view.add_argument("--config", choices=("lab", "wild", "mix"), default="mix")
    view.add_argument("--split", choices=("train", "test"), default="train")
    view.add_argument("--index", type=int, default=0, help="row number in the streamed config/split")
    view.add_argument(
        "--output", default=None, help=".mp4, .gif or .png (default outputs/view_<config>_<split>_<index>.mp4)"
    )
    view.add_argument("--panel-size", type=int, default=None, help="longer side in pixels (default: the frame's)")
    _add_kinematics_arg(view)
    view.set_defaults(func=_cmd_data_view)
    push = data_sub.add_parser(
        "push", help="upload an exported folder to a Hub dataset repository (token: HF_TOKEN or `hf auth login`)"
    )
    push.add_argument("folder", help="a folder written by `pela data export`")
    push.add_argument("--repo-id", required=True, help="e.g. my-org/unihand-mix")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    push.set_defaults(func=_cmd_data_push)
    tokenize = data_sub.add_parser(
        "tokenize",
        help="precompute the motion tokens of an exported folder (fills motion_tokens_left/right in place and records "
        "the tokenizer's fingerprint in motion_tokens_model; training then never runs the tokenizer)",
    )
    tokenize.add_argument("folder", help="a folder written by `pela data export`")
    tokenize.add_argument("--motion-tokenizer", required=True, help="a trained GRQ-VAE folder (`pela tokenizer train`)")
    tokenize.add_argument("--batch-size", type=int, default=256, help="rows tokenized per tokenizer call")
    tokenize.set_defaults(func=_cmd_data_tokenize)

    pretrain = sub.add_parser(
        "pretrain",
        add_help=False,
        help="pretrain PELA (or a baseline) on an exported UniHand-Mix: [CONFIG.yaml] [--flag value ...] "
        "(`pela pretrain --help` lists the flags; works under `accelerate launch`)",
    )
    pretrain.add_argument("args", nargs=argparse.REMAINDER)  # parsed by HfArgumentParser (see main)
    pretrain.set_defaults(func=lambda args: _cmd_pretrain(args.args))

    evaluate = sub.add_parser(
        "eval", help="score a pretrained checkpoint's generated motion on UniHand-Mix test splits"
    )
    evaluate.add_argument("checkpoint", help="a `pela pretrain` output folder")
    evaluate.add_argument("--data", required=True, help="exported UniHand-Mix folder or Hub dataset id")
    evaluate.add_argument("--splits", nargs="+", default=["lab", "wild"], choices=["lab", "wild"])
    evaluate.add_argument("--num-chunks", type=int, default=1, help="generated chunks per test clip")
    evaluate.add_argument(
        "--num-ensembles",
        type=int,
        default=1,
        help="decoding runs per clip (members 1.. sample); their mean motion is scored",
    )
    evaluate.add_argument("--max-rows", type=int, default=None, help="at most this many clips per split")
    evaluate.add_argument("--output", default=None, help="also write the metrics to this JSON file")
    evaluate.add_argument(
        "--update-card", action="store_true", help="write the metrics into the checkpoint's model card (README.md)"
    )
    evaluate.add_argument(
        "--motion-tokenizer", default=None, help="motion tokenizer folder (default: the checkpoint's motion_tokenizer/)"
    )
    evaluate.add_argument(
        "--render", type=int, default=0, metavar="N",
        help="write the first N test rows per split, generated next to true hands, as MP4 videos",
    )  # fmt: skip
    evaluate.add_argument("--render-dir", default="outputs/renders", help="folder of the --render videos")
    evaluate.add_argument(
        "--max-skip-fraction", type=float, default=0.0,
        help="data-error budget per split: 0 stops at the first unreadable shard or malformed sample; above 0 such "
        "rows are skipped (counted in the output's data_skipped) until they exceed this fraction",
    )  # fmt: skip
    _add_kinematics_arg(evaluate)
    evaluate.set_defaults(func=_cmd_eval)

    generate = sub.add_parser(
        "generate", help="hand motion for an image + instruction, drawn over the image (PNG) and optionally saved"
    )
    generate.add_argument("checkpoint", help="a `pela pretrain` output folder")
    generate.add_argument("--image", required=True, help="first frame (any format PIL reads)")
    generate.add_argument("--instruction", required=True)
    generate.add_argument("--hands", nargs="+", default=["left", "right"], choices=["left", "right"])
    generate.add_argument("--num-chunks", type=int, default=1)
    generate.add_argument("--num-ensembles", type=int, default=1, help="decoding runs averaged (members 1.. sample)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--focal-factor", type=float, default=0.9, help="focal length / image width")
    generate.add_argument(
        "--output", default=None,
        help="picture of the motion: .png (first, middle, last frame), .mp4 or .gif (every frame); default "
        "outputs/generated.png unless --video is given",
    )  # fmt: skip
    generate.add_argument("--video", default=None, help="write the animated motion to this .mp4 or .gif")
    generate.add_argument(
        "--panel-size", type=int, default=None,
        help="longer side of the picture in pixels (default: the image's, at most 720)",
    )  # fmt: skip
    generate.add_argument("--save-mano", default=None, help="write the generated MANO parameters to this JSON file")
    generate.add_argument(
        "--motion-tokenizer", default=None, help="motion tokenizer folder (default: the checkpoint's motion_tokenizer/)"
    )
    _add_kinematics_arg(generate)
    generate.set_defaults(func=_cmd_generate)

    tok = sub.add_parser("tokenizer", help="the GRQ-VAE motion tokenizer")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    train = tok_sub.add_parser(
        "train", help="train on an exported UniHand-Mix (--data) or built-in procedural lab motion; held-out MPJPE"
    )
    train.add_argument("--output-dir", default="outputs/motion_tokenizer")
    train.add_argument(
        "--data", default=None,
        help="exported UniHand-Mix folder or Hub id: train on its lab train split (default: built-in procedural clips)",
    )  # fmt: skip
    train.add_argument("--num-clips", type=int, default=1500, help="built-in procedural clips (without --data)")
    train.add_argument("--max-steps", type=int, default=1500)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--codebook-size", type=int, default=512)
    train.add_argument("--num-quantizers", type=int, default=8, help="residual quantizers per group (8: 128 tokens)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--num-workers", type=int, default=2)
    _add_kinematics_arg(train)
    train.set_defaults(func=_cmd_tokenizer_train)
    evaluate = tok_sub.add_parser("eval", help="reconstruction metrics of a saved tokenizer on procedural clips")
    evaluate.add_argument("model", help="a saved tokenizer folder (save_pretrained output)")
    evaluate.add_argument("--style", choices=("lab", "wild"), default="lab")
    evaluate.add_argument("--num-clips", type=int, default=200)
    evaluate.add_argument("--seed", type=int, default=1)
    _add_kinematics_arg(evaluate)
    evaluate.set_defaults(func=_cmd_tokenizer_eval)
    return parser


GENERATED_PICTURE = "outputs/generated.png"  # `pela generate` without --output or --video
# Errors a user can act on (bad data, a wrong path, an invalid option): one line, no traceback (``--traceback``).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pela`` command. Returns 0 on success and 1 after printing ``pela <command>: error: <message>`` for an
    error in :data:`USER_ERRORS` (with ``--traceback`` anywhere on the command line it raises, with the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--traceback" in argv
    argv = [arg for arg in argv if arg != "--traceback"]
    command = argv[0] if argv and not argv[0].startswith("-") else ""
    try:
        if argv[:1] == ["pretrain"]:  # argparse cannot hand flags (``--help``, ``--output_dir``) to a REMAINDER
            return _cmd_pretrain(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        command = " ".join(filter(None, (args.command, getattr(args, f"{args.command}_command", None))))
        return args.func(args)
    except USER_ERRORS as error:
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(
            f"{' '.join(filter(None, ('pela', command)))}: error: {message} (--traceback shows where)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
