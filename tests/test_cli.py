"""The `pela` command line: discoverable help and a small end-to-end demo run."""

import json
import math
import re
import subprocess
import sys

import av
import pytest

from pela.cli import COMMANDS, main, parse_command_args
from pela.demo import DemoConfig


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "pela.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "data export", "data view", "tokenizer train", "pretrain", "eval", "generate"):
        assert f"  {command} " in out.stdout
    (args,) = parse_command_args(COMMANDS["tokenizer train"], ["--max-steps", "3"])
    assert args.max_steps == 3 and args.codebook_size == 512


def test_every_command_reads_a_yaml_file_of_its_flags_and_flags_win(tmp_path, capsys):
    """One config system: the defaults live in one dataclass per command; a YAML file of its fields comes first."""
    config = tmp_path / "demo.yaml"
    config.write_text("pretrain_steps: 7\nmodels: [pela, next_token]\nseeds: [1, 2]\n")
    (demo,) = parse_command_args(COMMANDS["demo"], [str(config), "--pretrain-steps", "9", "--batch_size", "4"])
    assert isinstance(demo, DemoConfig)
    assert (demo.pretrain_steps, demo.batch_size, demo.models, demo.seeds) == (9, 4, ["pela", "next_token"], [1, 2])
    assert DemoConfig().seeds == [0] and DemoConfig(seed=3).seeds == [3]  # --seeds defaults to --seed
    (default,) = parse_command_args(COMMANDS["demo"], [])
    assert default == DemoConfig()  # the CLI's defaults are the dataclass's: one place
    exported = tmp_path / "eval.yaml"
    exported.write_text("data: some/data\nnum_ensembles: 4\n")
    args, positionals = parse_command_args(COMMANDS["eval"], [str(exported), "ckpt", "--splits", "wild"])
    assert (args.data, args.num_ensembles, args.splits, positionals.checkpoint) == ("some/data", 4, ["wild"], "ckpt")
    config.write_text("pretrain_step: 7\n")
    with pytest.raises(SystemExit):
        parse_command_args(COMMANDS["demo"], [str(config)])
    assert f"pela demo: error: unknown keys in {config}: pretrain_step (did you mean pretrain_steps?)" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):  # a YAML file after the flags
        parse_command_args(COMMANDS["demo"], ["--seed", "1", str(config)])
    assert "a YAML file of flags must come first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--models", "pela", "bogus"])
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "exprt"])
    assert capsys.readouterr().err.strip() == (
        "pela data: error: 'exprt' is not an action; choose one of preview, export, curate-videos, view, push, tokenize"
    )


def test_usage_errors_are_one_line_naming_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "checkpoint"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        "pela generate: error: the following arguments are required: --image, --instruction "
        "(`pela generate --help` lists the options)"
    )
    with pytest.raises(SystemExit):
        main(["pretrain", "--output_dir", "x"])
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # a prefix of a flag is a typo, not that flag
    with pytest.raises(SystemExit):
        main(["pretrain", "--data", "d", "--motion_tokenizer", "t", "--output_dir", "x", "--max_step", "5"])
    error = capsys.readouterr().err.strip()
    assert error.startswith("pela pretrain: error: unrecognized arguments: --max_step (did you mean --max_steps?) 5")
    assert len(error.splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["generate", "checkpoint", "--image", "x.png", "--instr", "pick up the cup"])
    assert "--instr" in capsys.readouterr().err


def test_small_demo_writes_results(tmp_path, capsys):
    argv = ["demo", "--output-dir", str(tmp_path), "--tokenizer-steps", "5", "--frame-encoder-steps", "2",
            "--num-dataset-clips", "30", "--pretrain-steps", "2", "--batch-size", "2", "--num-ensembles", "2",
            "--num-workers", "2", "--parallel-models", "2", "--wild-fractions", "0", "1",
            "--progress-interval", "0.5"]  # fmt: skip
    assert main(argv) == 0
    tok = json.loads((tmp_path / "tokenizer_metrics.json").read_text())
    assert tok["kinematics"] == "builtin" and tok["tokens_per_chunk"] == 32
    for split in ("lab", "wild"):
        for key in ("mpjpe", "pa_mpjpe", "mwte", "mde", "wrist_usage", "finger_usage"):
            assert math.isfinite(tok[split][key]) and tok[split][key] >= 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"pela", "pela_wo_align", "next_token"}  # the public contract's shape
    for splits in results.values():
        assert set(splits) >= {"lab", "wild"}
        for split in ("lab", "wild"):
            assert all(math.isfinite(splits[split][k]) and splits[split][k] > 0 for k in ("mpjpe", "mwte", "mde"))
    for name in ("pela", "pela_wo_align"):  # masked-chunk models: does the model read the frame / instruction?
        reliance = results[name]["frame_reliance"]
        assert all(math.isfinite(reliance[k]) for k in ("mcp_loss", "frame_gain", "instruction_gain"))
    assert "frame_reliance" not in results["next_token"]  # never sees a fully masked chunk
    references = json.loads((tmp_path / "references.json").read_text())
    assert set(references) == {"mean motion", "tokenizer round trip"}
    sweep = json.loads((tmp_path / "wild_fraction_sweep.json").read_text())
    assert set(sweep) == {"0", "1"} and math.isfinite(sweep["0"]["wild"]["mpjpe"])
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert sorted(run["name"] for run in info["runs"]) == ["next_token", "pela", "pela-wild0", "pela_wo_align"]
    assert len({run["pid"] for run in info["runs"]}) == 2  # --parallel-models 2: four models, two worker processes
    assert (tmp_path / "motion_tokenizer" / "config.json").exists()
    assert (tmp_path / "frame_encoder" / "preprocessor_config.json").exists()
    assert (tmp_path / "models" / "pela" / "model.safetensors").exists()
    for name in ("preview_lab.png", "preview_wild.png", "loss_curves.png", "generated_pela.png",
                 "wild_fraction_sweep.png"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    for name in ("pela", "pela_wo_align", "next_token"):  # one video per model: generated next to true hands
        with av.open(str(tmp_path / f"generated_{name}.mp4")) as container:
            assert sum(1 for _ in container.decode(video=0)) == 15
    assert not (tmp_path / "generated_pela-wild0.mp4").exists()
    printed = capsys.readouterr().out
    for stage in ("exporting", "training the motion tokenizer", "pretraining the frame encoder", "pretraining,"):
        assert re.search(rf"\[demo\] {stage}.*: done in \d+ s", printed), stage  # every stage reports its end
    assert re.search(r"\[demo\] pretraining, generating and scoring the models: \d+ s, \d of 4 models done", printed)
    assert info["stage_seconds"]["models"] > 0
    assert "MPJPE" in printed and "pela_wo_align" in printed and "(tokenizer round trip)" in printed
    assert "frame gain" in printed


def test_table_reports_mean_and_spread_over_seeds():
    from pela.demo import aggregate, format_table

    def run(variant, seed, mpjpe):
        scores = {"mpjpe": mpjpe, "pa_mpjpe": 1.0, "mwte": 2.0, "mde": 3.0, "distinct_fraction": 1.0,
                  "num_hand_chunks": 5}  # fmt: skip
        reliance = {"mcp_loss": 3.0, "frame_gain": mpjpe / 10, "instruction_gain": 0.0}
        return {"variant": variant, "seed": seed, "wild_fraction": 1.0, "scores": {"lab": scores, "wild": scores},
                "frame_reliance": reliance}  # fmt: skip

    runs = [run("pela", 0, 4.0), run("pela", 1, 6.0), run("pela", 2, 5.0), run("pela", 0, 99.0) | {"wild_fraction": 0}]
    results = aggregate(runs, ("pela",), (0, 1, 2), 1.0)
    assert results["pela"]["lab"]["mpjpe"] == 5.0 and results["pela"]["lab"]["mpjpe_std"] == 1.0
    assert results["pela"]["lab"]["num_seeds"] == 3
    assert results["pela"]["frame_reliance"]["frame_gain"] == pytest.approx(0.5)
    assert results["pela"]["frame_reliance"]["frame_gain_std"] == pytest.approx(0.1)
    assert "5.00 +- 1.00" in format_table(results, None, num_seeds=3)
