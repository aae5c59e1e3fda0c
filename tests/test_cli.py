"""The `pela` command line: discoverable help and a small end-to-end demo run."""

import json
import math
import subprocess
import sys

from pela.cli import build_parser, main


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "pela.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "data", "tokenizer", "pretrain", "eval", "generate"):
        assert command in out.stdout
    assert build_parser().parse_args(["tokenizer", "train", "--max-steps", "3"]).max_steps == 3


def test_small_demo_writes_results(tmp_path, capsys):
    argv = ["demo", "--output-dir", str(tmp_path), "--num-lab-clips", "60", "--num-wild-clips", "20",
            "--tokenizer-steps", "5", "--codebook-size", "64", "--num-workers", "0", "--num-dataset-clips", "30",
            "--pretrain-steps", "2", "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 0
    tok = json.loads((tmp_path / "tokenizer_metrics.json").read_text())
    assert tok["kinematics"] == "builtin"
    for split in ("lab", "wild"):
        for key in ("mpjpe", "pa_mpjpe", "mwte", "mde", "wrist_usage", "finger_usage"):
            assert math.isfinite(tok[split][key]) and tok[split][key] >= 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"pela", "pela_wo_align", "next_token"}  # the public contract's shape
    for splits in results.values():
        assert set(splits) >= {"lab", "wild"}
        for split in ("lab", "wild"):
            assert all(math.isfinite(splits[split][k]) and splits[split][k] > 0 for k in ("mpjpe", "mwte", "mde"))
    assert (tmp_path / "motion_tokenizer" / "config.json").exists()
    assert (tmp_path / "models" / "pela" / "model.safetensors").exists()
    for name in ("preview_lab.png", "preview_wild.png", "loss_curves.png", "generated_pela.png", "run_info.json"):
        assert (tmp_path / name).exists(), name
    printed = capsys.readouterr().out
    assert "MPJPE" in printed and "pela_wo_align" in printed and "next_token" in printed
