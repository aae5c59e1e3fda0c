"""The ``pela`` command line: ``pela COMMAND [ACTION] [CONFIG.yaml] [--flag value ...]``.

Every command's flags are the fields of one dataclass (:mod:`pela.arguments`, :class:`~pela.demo.DemoConfig`,
:class:`~trainers.pela_trainer.PELATrainingArguments`) parsed by ``transformers.HfArgumentParser``: an optional YAML
file of the same fields first, flags after it win, ``--flag_name`` and ``--flag-name`` are the same flag, and a prefix
of a flag is an error. Commands import their dependencies lazily so ``pela --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

from . import __version__
from .arguments import (
    DataCurateVideosArguments,
    DataExportArguments,
    DataPreviewArguments,
    DataPushArguments,
    DataTokenizeArguments,
    DataViewArguments,
    EvalArguments,
    GenerateArguments,
    TokenizerEvalArguments,
    TokenizerTrainArguments,
)
from .demo import DemoConfig


def _cmd_demo(config: DemoConfig) -> int:
    from .demo import run_demo

    run_demo(config)
    return 0


def _cmd_data_preview(args: SimpleNamespace) -> int:
    from .jobs import preview_procedural_clips

    path = preview_procedural_clips(
        args.output, style=args.style, num_clips=args.num_clips, seed=args.seed, image_size=args.image_size
    )
    print(f"wrote {path}")
    return 0


def _cmd_data_export(args: SimpleNamespace) -> int:
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


def _cmd_data_curate_videos(args: SimpleNamespace) -> int:
    from datasets_unihand_mix.video_curation import REPORT_FILE, VideoCurationConfig, curate_videos

    config = VideoCurationConfig(
        sample_fps=args.sample_fps, window_seconds=args.window_seconds, max_side=args.max_side,
        detection_threshold=args.detection_threshold, pose_threshold=args.pose_threshold, slowdown=args.slowdown,
        fov_degrees=args.fov_degrees, narration=args.narration, source=args.source, license=args.license,
        citation=args.citation, split=args.split, test_fraction=args.test_fraction, image_format=args.image_format,
        judge_model=args.judge_model, mirrored=args.mirrored, skip_bad_videos=args.skip_bad_videos,
    )  # fmt: skip
    summary = curate_videos(
        args.videos, args.output, config, engine=args.engine, ray_address=args.ray_address, num_cpus=args.num_cpus,
        overwrite=args.overwrite, progress=True,
    )  # fmt: skip
    print(summary.report)
    unproductive = summary.unproductive()
    if unproductive:
        print(f"{len(unproductive)} of {len(summary.videos)} videos gave no row:")
        for video in unproductive:
            print(f"  {video['video']}: {video['status']}: {video['reason']}")
    report = summary.output_dir / REPORT_FILE
    if summary.written:
        print("wild  " + "  ".join(f"{split}: {count} rows" for split, count in summary.written.items()))
        print(f"wrote {summary.output_dir} (keep rates and every video's outcome: {report})")
    else:
        print(
            f"no clip passed curation (the reasons are above): wrote only {report}; {summary.output_dir} has no "
            "'wild' config for load_dataset"
        )
    return 0


def _cmd_data_view(args: SimpleNamespace) -> int:
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


def _cmd_data_push(args: SimpleNamespace) -> int:
    from datasets_unihand_mix.export import push_to_hub

    url = push_to_hub(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"uploaded {args.folder} to {args.repo_id}: {url}")
    return 0


def _cmd_data_tokenize(args: SimpleNamespace) -> int:
    from datasets_unihand_mix.motion_tokens import tokenize_hub_folder
    from modeling_pela import MotionTokenizerModel

    tokenizer = MotionTokenizerModel.from_pretrained(args.motion_tokenizer)
    summary = tokenize_hub_folder(args.folder, tokenizer, batch_size=args.batch_size, progress=True)
    print(
        f"tokenized {summary.hand_chunks} hand-chunks in {summary.rows} rows ({summary.shards} shards) of "
        f"{args.folder} with motion tokenizer {summary.fingerprint}"
    )
    return 0


def _cmd_tokenizer_train(args: SimpleNamespace) -> int:
    from .jobs import train_tokenizer_on_export, train_tokenizer_on_procedural

    options = dict(
        max_steps=args.max_steps, batch_size=args.batch_size, codebook_size=args.codebook_size,
        num_quantizers=args.num_quantizers, seed=args.seed, mano_dir=args.mano_dir, progress=True,
    )  # fmt: skip
    if args.data:
        metrics = train_tokenizer_on_export(args.data, args.output_dir, dataset_config=args.config, **options)
    else:
        metrics = train_tokenizer_on_procedural(
            output_dir=args.output_dir, num_clips=args.num_clips, num_workers=args.num_workers, **options
        )
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_tokenizer_eval(args: SimpleNamespace) -> int:
    from .jobs import evaluate_tokenizer_on_procedural

    metrics = evaluate_tokenizer_on_procedural(
        args.model, style=args.style, num_clips=args.num_clips, seed=args.seed, mano_dir=args.mano_dir
    )
    print(json.dumps(metrics, indent=2))
    return 0


def _training_arguments() -> tuple[type, ...]:
    from trainers.pela_trainer import PELATrainingArguments

    from .arguments import PretrainArguments

    return PretrainArguments, PELATrainingArguments


def parse_pretrain_args(argv: Sequence[str]) -> tuple[Any, Any]:
    """``pela pretrain`` arguments: ``[CONFIG.yaml] [--flag value ...]`` into ``(PretrainArguments,
    PELATrainingArguments)``."""
    return tuple(parse_command_args(COMMANDS["pretrain"], argv))


def _cmd_pretrain(pretrain_args: Any, training_args: Any) -> int:
    import torch

    from .pretraining import run_pretraining

    run_pretraining(pretrain_args, training_args)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # under `accelerate launch`: exit without a live process group
    print(f"wrote {training_args.output_dir}")
    return 0


def _cmd_eval(args: SimpleNamespace) -> int:
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
        from .model_card import update_model_card

        print(f"updated {update_model_card(args.checkpoint, results)}")
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text)
    print(text)
    return 0


def _cmd_generate(args: SimpleNamespace) -> int:
    from PIL import Image

    from modeling_pela.mano import load_hand_kinematics

    from .inference import generate_for_image, mano_to_json
    from .visualization import hand_keypoints, hand_meshes, render_motion

    image = Image.open(args.image)
    mano = generate_for_image(
        args.checkpoint, image, args.instruction, args.hands, num_chunks=args.num_chunks,
        num_ensembles=args.num_ensembles, seed=args.seed, motion_tokenizer=args.motion_tokenizer,
    )  # fmt: skip
    kinematics = load_hand_kinematics(args.mano_dir)
    keypoints, meshes = hand_keypoints(mano, kinematics), hand_meshes(mano, kinematics)
    outputs = [args.output, args.video] if args.output or args.video else [GENERATED_PICTURE]
    for output in filter(None, outputs):
        path = render_motion(
            image, keypoints, output, focal_factor=args.focal_factor, panel_size=args.panel_size, generated_mesh=meshes
        )
        print(f"wrote {path}")
    if args.save_mano:
        with open(args.save_mano, "w") as handle:
            json.dump(mano_to_json(mano), handle)
        print(f"wrote {args.save_mano}")
    return 0


@dataclass(frozen=True)
class Command:
    """A ``pela`` command: its name (``"data export"``), one-line help, the dataclasses of its flags (a function, so
    that heavy ones import lazily), its positional inputs ``(name, help)``, and ``run``, called with what
    :func:`parse_command_args` returns (:func:`_flat` turns that into one namespace)."""

    name: str
    help: str
    arguments: Callable[[], tuple[type, ...]]
    run: Callable[..., int]
    positionals: tuple[tuple[str, str], ...] = ()


def _flat(run: Callable[[Any], int]) -> Callable[..., int]:
    """Call ``run`` with one namespace holding the fields of every parsed dataclass and the positionals."""

    def call(*parsed: Any) -> int:
        values: dict[str, Any] = {}
        for item in parsed:
            values.update(asdict(item) if hasattr(item, "__dataclass_fields__") else vars(item))
        return run(SimpleNamespace(**values))

    return call


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command("demo", "the main job on built-in procedural data (no downloads)", lambda: (DemoConfig,), _cmd_demo),
        Command(
            "data preview", "render a grid of procedural clips (first/middle/last frame)",
            lambda: (DataPreviewArguments,), _flat(_cmd_data_preview),
        ),
        Command(
            "data export", "build UniHand-Mix and write the Hub-native folder (parquet shards + dataset card) that "
            "datasets.load_dataset(FOLDER, 'lab'|'wild'|'mix', streaming=True) reads",
            lambda: (DataExportArguments,), _flat(_cmd_data_export),
        ),
        Command(
            "data curate-videos", "decode videos, detect hands and fit their poses, curate clips (visual filter, "
            "judge, 0.5x slow-down) and write wild rows in the layout of `pela data export`",
            lambda: (DataCurateVideosArguments,), _flat(_cmd_data_curate_videos),
            (("videos...", "video files or folders of videos"),),
        ),
        Command(
            "data view", "render one UniHand-Mix row (frames, true hands, instruction, task type, curation fields)",
            lambda: (DataViewArguments,), _flat(_cmd_data_view),
            (("source", "exported UniHand-Mix folder or Hub dataset id"),),
        ),
        Command(
            "data push", "upload an exported folder to a Hub dataset repository (token: HF_TOKEN or `hf auth login`)",
            lambda: (DataPushArguments,), _flat(_cmd_data_push), (("folder", "a folder written by `pela data export`"),),
        ),
        Command(
            "data tokenize", "precompute the motion tokens of an exported folder in place (records the tokenizer's "
            "fingerprint; training then never runs the tokenizer)",
            lambda: (DataTokenizeArguments,), _flat(_cmd_data_tokenize),
            (("folder", "a folder written by `pela data export`"),),
        ),
        Command(
            "pretrain", "pretrain PELA (or a baseline) on an exported UniHand-Mix (works under `accelerate launch`)",
            _training_arguments, _cmd_pretrain,
        ),
        Command(
            "eval", "score a pretrained checkpoint's generated motion on UniHand-Mix test splits",
            lambda: (EvalArguments,), _flat(_cmd_eval), (("checkpoint", "a `pela pretrain` output folder"),),
        ),
        Command(
            "generate", "hand motion for an image + instruction, drawn over the image and optionally saved",
            lambda: (GenerateArguments,), _flat(_cmd_generate), (("checkpoint", "a `pela pretrain` output folder"),),
        ),
        Command(
            "tokenizer train", "train the GRQ-VAE motion tokenizer on an export (--data) or built-in procedural motion",
            lambda: (TokenizerTrainArguments,), _flat(_cmd_tokenizer_train),
        ),
        Command(
            "tokenizer eval", "reconstruction metrics of a saved tokenizer on procedural clips",
            lambda: (TokenizerEvalArguments,), _flat(_cmd_tokenizer_eval),
            (("model", "a saved tokenizer folder (save_pretrained output)"),),
        ),
    )
}  # fmt: skip
GENERATED_PICTURE = "outputs/generated.png"  # `pela generate` without --output or --video
# Errors a user can act on (bad data, a wrong path, an invalid option): one line, no traceback (``--traceback``).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def _short_error(parser: argparse.ArgumentParser, message: str) -> None:
    """argparse's error without the full usage block: one line, and where the options are listed."""
    parser.exit(2, f"{parser.prog}: error: {message} (`{parser.prog} --help` lists the options)\n")


def command_parser(command: Command) -> argparse.ArgumentParser:
    """The ``HfArgumentParser`` of one command: its dataclasses' fields as flags, its positionals, one-line errors,
    no abbreviations."""
    from transformers import HfArgumentParser

    usage_yaml = "[CONFIG.yaml] " if not command.positionals else ""
    parser = HfArgumentParser(
        command.arguments(), prog=f"pela {command.name}", description=command.help, allow_abbrev=False,
        formatter_class=_HelpFormatter,
        epilog=f"An optional YAML file of the same fields may come first ({usage_yaml}--flag value ...); flags win.",
    )  # fmt: skip
    parser.error = lambda message: _short_error(parser, message)  # type: ignore[method-assign]
    for name, text in command.positionals:  # "name..." takes one or more values
        parser.add_argument(name.removesuffix("..."), nargs="+" if name.endswith("...") else None, help=text)
    return parser


def parse_command_args(command: Command, argv: Sequence[str]) -> list[Any]:
    """``[CONFIG.yaml] [positionals] [--flag value ...]`` -> the command's dataclasses (and a namespace of its
    positionals). YAML keys must be fields; flags override them. Exits (status 2) with a one-line error on an unknown
    flag or key, naming the closest known one."""
    import yaml

    parser = command_parser(command)
    options = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    flags = [option for action in options for option in action.option_strings]
    argv = list(argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        path = argv.pop(0)
        with open(path) as handle:
            values = yaml.safe_load(handle) or {}
        known = {action.dest for action in options}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"unknown keys in {path}: {', '.join(_with_suggestion(key, known) for key in unknown)}")
        parser.set_defaults(**values)
        for action in parser._actions:
            if action.dest in values:
                action.required = False
    *parsed, remaining = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    if remaining:
        words = [_with_suggestion(word, flags) if word.startswith("-") else word for word in remaining]
        hint = (
            " (a YAML file of flags must come first)" if any(w.endswith((".yaml", ".yml")) for w in remaining) else ""
        )
        parser.error(f"unrecognized arguments: {' '.join(words)}{hint}")
    return parsed


def _with_suggestion(word: str, known: Sequence[str] | set[str]) -> str:
    """``word``, followed by the closest of ``known`` when one is close (a misspelt flag or key)."""
    import difflib

    close = difflib.get_close_matches(word.split("=", 1)[0], sorted(known), n=1)
    return f"{word} (did you mean {close[0]}?)" if close else word


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` unless the help already says what the default does, or the default is None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.required:
            return text
        return super()._get_help_string(action)


def _overview(group: str = "") -> str:
    commands = {name: c for name, c in COMMANDS.items() if name.startswith(group)}
    width = max(len(name) for name in commands) + 2
    listing = [
        textwrap.fill(c.help, 118, initial_indent=f"  {name.ljust(width)}", subsequent_indent=" " * (width + 2))
        for name, c in commands.items()
    ]
    usage = f"pela {group.strip()} ACTION" if group else "pela [--version] COMMAND [ACTION]"
    lines = [
        f"usage: {usage} [CONFIG.yaml] [--flag value ...] [--traceback]",
        "",
        "PELA: Predictive Embedding as Latent Action. Hand-motion VLA pretraining on lab and in-the-wild human videos.",
        "",
        "commands:",
        *listing,
        "",
        "`pela COMMAND --help` lists a command's flags; --traceback shows where an error came from.",
    ]
    return "\n".join(lines) + "\n"


def _find_command(argv: list[str]) -> tuple[Command, list[str]]:
    """The command named by the first one or two words of ``argv`` and the rest; prints the help of a group
    (``pela data --help``) or a one-line error otherwise, and exits."""
    for words in (2, 1):
        name = " ".join(argv[:words])
        if len(argv) >= words and name in COMMANDS:
            return COMMANDS[name], argv[words:]
    group = argv[0]
    actions = [name.split(" ", 1)[1] for name in COMMANDS if name.startswith(f"{group} ")]
    if actions and argv[1:2] in (["-h"], ["--help"]):
        sys.stdout.write(_overview(f"{group} "))
        raise SystemExit(0)
    if actions:
        wanted = f"'{argv[1]}' is not an action" if len(argv) > 1 and not argv[1].startswith("-") else "needs an action"
        sys.stderr.write(f"pela {group}: error: {wanted}; choose one of {', '.join(actions)}\n")
    else:
        sys.stderr.write(f"pela: error: unknown command {group!r} (`pela --help` lists the commands)\n")
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pela`` command. Returns 0 on success and 1 after printing ``pela <command>: error: <message>`` for an
    error in :data:`USER_ERRORS` (with ``--traceback`` anywhere on the command line it raises, with the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--traceback" in argv
    argv = [arg for arg in argv if arg != "--traceback"]
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_overview())
        return 0
    if argv[0] == "--version":
        print(f"pela {__version__}")
        return 0
    command, rest = _find_command(argv)
    try:
        return command.run(*parse_command_args(command, rest))
    except USER_ERRORS as error:
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"pela {command.name}: error: {message} (--traceback shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
