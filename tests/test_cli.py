"""The `pela` command line: discoverable help and a small end-to-end demo run."""

import json
import math
import subprocess
import sys

from pela.cli import build_parser, main


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "pela.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "data", "tokenizer"):
        assert command in out.stdout
    assert build_parser().parse_args(["tokenizer", "train", "--max-steps", "3"]).max_steps == 3


def test_small_demo_writes_results(tmp_path, capsys):
    argv = ["demo", "--output-dir", str(tmp_path), "--num-lab-clips", "60", "--num-wild-clips", "20",
            "--tokenizer-steps", "5", "--codebook-size", "64", "--num-workers", "0"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    tok = results["motion_tokenizer"]
    assert tok["kinematics"] == "builtin"
    for split in ("lab", "wild"):
        for key in ("mpjpe", "pa_mpjpe", "mwte", "mde", "wrist_usage", "finger_usage"):
            assert math.isfinite(tok[split][key]) and tok[split][key] >= 0
    assert (tmp_path / "motion_tokenizer" / "config.json").exists()
    assert (tmp_path / "preview_lab.png").exists() and (tmp_path / "preview_wild.png").exists()
    assert "MPJPE" in capsys.readouterr().out
