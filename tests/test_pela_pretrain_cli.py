"""`pela pretrain` (YAML + flags through HfArgumentParser), `pela eval` and `pela generate` on a tiny exported toy
UniHand-Mix, run the way a user runs them."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from pela_testing import (
    save_tiny_vlm_and_frame_encoder,
    single_thread,  # noqa: F401  (module fixture: one intra-op thread)
)
from PIL import Image

from datasets_unihand_mix import generate_clips
from datasets_unihand_mix.builder import UniHandMix
from datasets_unihand_mix.export import export_hub_folder
from datasets_unihand_mix.streaming import stream_unihand_mix
from modeling_pela import MotionTokenizerConfig, MotionTokenizerModel
from pela.cli import main, parse_pretrain_args
from pela.pretraining import run_pretraining
from trainers.pela_trainer import pela_training_arguments

ROOT = Path(__file__).resolve().parents[1]
REAL_IMAGE = ROOT / "tests" / "fixtures_real_hands" / "hand_image.jpg"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_cli")
    export_hub_folder(UniHandMix(config_name="toy", num_clips=24, image_size=48, seed=3), root / "data")
    torch.manual_seed(0)
    tokenizer = MotionTokenizerModel(MotionTokenizerConfig(codebook_size=64)).eval()
    motions = [m for clip in generate_clips(8) for m in clip.hands.values()]
    tokenizer.fit_normalization(motions)
    tokenizer.init_codebooks(motions)
    tokenizer.save_pretrained(root / "tokenizer")
    return root


def _config(workspace: Path, output_dir: Path, **extra) -> Path:
    values = {
        "data": str(workspace / "data"), "motion_tokenizer": str(workspace / "tokenizer"), "output_dir": str(output_dir),
        "max_steps": 2, "per_device_train_batch_size": 2, "logging_steps": 1, "max_train_chunks": 2,
        "use_cpu": True, "save_strategy": "no", **extra,
    }  # fmt: skip
    path = output_dir.parent / f"{output_dir.name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_yaml_then_flags_with_paper_defaults(workspace, tmp_path, capsys):
    config = _config(workspace, tmp_path / "run", variant="next_token", learning_rate=1e-3)
    pretrain_args, training_args = parse_pretrain_args(
        [str(config), "--learning_rate", "2e-3", "--wild_fraction", "0.5"]
    )
    assert pretrain_args.variant == "next_token" and pretrain_args.wild_fraction == 0.5
    assert training_args.learning_rate == 2e-3  # the flag wins over the file
    assert training_args.max_steps == 2 and training_args.output_dir == str(tmp_path / "run")
    # what the file does not set keeps the paper's optimisation defaults
    assert (training_args.weight_decay, training_args.adam_beta2, training_args.max_grad_norm) == (0.05, 0.95, 1.0)
    assert training_args.lr_scheduler_type == "cosine" and not training_args.remove_unused_columns
    defaults = pela_training_arguments(str(tmp_path))  # a short run is not silent: logs from step 1, every 10 steps
    assert defaults.logging_steps == 10 and defaults.logging_first_step
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": "x", "motion_tokenizer": "y", "output_dir": "z", "lerning_rate": 1}))
    with pytest.raises(SystemExit):
        parse_pretrain_args([str(bad)])
    assert "lerning_rate (did you mean learning_rate?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # required fields missing without a file
        parse_pretrain_args(["--output_dir", str(tmp_path)])


@pytest.mark.parametrize("name", ["pretrain_tiny.yaml", "pretrain_2b.yaml"])
def test_shipped_configs_parse(name, tmp_path):
    argv = [str(ROOT / "configs" / name), "--data", "d", "--motion_tokenizer", "t", "--output_dir", str(tmp_path)]
    pretrain_args, training_args = parse_pretrain_args([*argv, "--bf16", "false"])  # the 2b file asks for bf16 (GPU)
    assert pretrain_args.variant == "pela" and training_args.max_steps > 0
    if name == "pretrain_2b.yaml":
        assert pretrain_args.model_preset == "2b" and training_args.learning_rate == 3e-5
        assert training_args.packing and training_args.packing_length == 8192 and training_args.gradient_checkpointing


def test_pretrain_packs_the_streamed_samples_with_a_flag(workspace, tmp_path, capsys):
    config = _config(workspace, tmp_path / "run", packing=True, packing_length=2048, packing_buffer_size=8)
    model = run_pretraining(*parse_pretrain_args([str(config), "--attn_implementation", "eager"]))
    assert model.get_decoder().config._attn_implementation == "eager"
    logs = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{'loss'")]
    assert len(logs) == 2 and all("'mcp_accuracy'" in line and "nan" not in line for line in logs)
    assert "2 steps x 2 packed rows of 2048 tokens" in (tmp_path / "run" / "README.md").read_text()


def test_pretrain_help_lists_both_argument_groups(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "--motion_tokenizer" in printed and "--wild_fraction" in printed and "--learning_rate" in printed


def test_pretrain_eval_generate_from_the_command_line(workspace, tmp_path, capsys, monkeypatch):
    run = tmp_path / "pela"
    flags = [f"--{key}={value}" for key, value in yaml.safe_load(_config(workspace, run).read_text()).items()]
    assert main(["pretrain", *flags, "--hub_model_id=me/pela-tiny"]) == 0  # flags only, no YAML file
    for name in ("model.safetensors", "config.json", "processor_config.json", "motion_tokenizer/config.json"):
        assert (run / name).exists(), name
    assert "mcp_loss" in capsys.readouterr().out  # the trainer's per-term logging reached the console

    metrics_path = tmp_path / "metrics.json"
    assert ModelCard.load(run / "README.md").data.model_name == "me/pela-tiny"
    argv = ["eval", str(run), "--data", str(workspace / "data"), "--max-rows", "2", "--output", str(metrics_path)]
    assert main([*argv, "--update-card"]) == 0
    metrics = json.loads(metrics_path.read_text())
    for split in ("lab", "wild"):
        assert metrics[split]["num_hand_chunks"] >= 1 and metrics[split]["kinematics"] == "builtin"
        assert all(math.isfinite(metrics[split][k]) and metrics[split][k] > 0 for k in ("mpjpe", "mwte", "mde"))
    card = ModelCard.load(run / "README.md")  # the metrics reached the card's table and its model-index
    assert f"| lab | {metrics['lab']['mpjpe']:.2f} |" in card.text and 'from_pretrained("me/pela-tiny"' in card.text
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("UniHand-Mix wild", "mpjpe")] == pytest.approx(metrics["wild"]["mpjpe"], abs=1e-3)
    assert "sequences (x 1 accumulation)" in card.text  # the training line survives the update

    row = next(r for r in stream_unihand_mix(str(workspace / "data"), "lab", "test") if r["has_motion_labels"])
    image_path = tmp_path / "frame.png"
    row["first_frame"].save(image_path)
    out, mano_path = tmp_path / "generated.png", tmp_path / "mano.json"
    argv = ["generate", str(run), "--image", str(image_path), "--instruction", row["instruction"], "--hands", "right",
            "--output", str(out), "--save-mano", str(mano_path)]  # fmt: skip
    assert main(argv) == 0
    assert Image.open(out).size == (3 * 48, 48)  # first, middle and last frame, each at most the frame's size
    mano = json.loads(mano_path.read_text())
    assert set(mano) == {"right"} and np.asarray(mano["right"]["hand_pose"]).shape == (15, 15, 3)
    assert np.isfinite(np.asarray(mano["right"]["transl"])).all()
    # the same seed gives the same motion
    assert main([*argv[:-2], "--save-mano", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text()) == mano
    # a real photograph (640x427): a playable MP4 of every generated frame, no larger than the photograph
    video = tmp_path / "generated.mp4"
    argv = ["generate", str(run), "--image", str(REAL_IMAGE), "--instruction", "pick up the cup", "--video", str(video)]
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    assert not (tmp_path / "outputs").exists()  # --video alone writes only the video
    with av.open(str(video)) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    assert len(frames) == 15 and frames[0].size[0] <= 640 and frames[0].size[1] <= 427
    # pela eval --render: the first test rows of each split, generated next to true hands
    renders = tmp_path / "renders"
    argv = ["eval", str(run), "--data", str(workspace / "data"), "--max-rows", "1", "--render", "1", "--render-dir",
            str(renders)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    assert "generating" in capsys.readouterr().err  # a progress bar while the clips are generated
    assert sorted(path.name for path in renders.iterdir()) == ["lab_000.mp4", "wild_000.mp4"]
    with av.open(str(renders / "lab_000.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 15
    # a folder without its motion tokenizer: the error names the flag, and the flag supplies it
    shutil.rmtree(run / "motion_tokenizer")
    argv = ["eval", str(run), "--data", str(workspace / "data"), "--max-rows", "1", "--splits", "lab"]
    capsys.readouterr()
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith("pela eval: error: ") and "--motion-tokenizer" in error and len(error.splitlines()) == 1
    with pytest.raises(FileNotFoundError, match="--motion-tokenizer"):
        main([*argv, "--traceback"])  # the traceback, on request
    assert main([*argv, "--motion-tokenizer", str(workspace / "tokenizer")]) == 0


def test_pretrain_from_a_pretrained_vlm_and_frame_encoder(workspace, tmp_path):
    """`pela pretrain --vlm DIR --frame_encoder DIR`: backbone weights and processor from the VLM folder."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from modeling_pela import PELAConfig, PELAForPretraining

    save_tiny_vlm_and_frame_encoder(tmp_path / "vlm", tmp_path / "dino")
    run = tmp_path / "pela"
    config = _config(workspace, run, vlm=str(tmp_path / "vlm"), frame_encoder=str(tmp_path / "dino"), max_steps=1)
    assert main(["pretrain", str(config), "--learning_rate", "0"]) == 0  # lr 0: the loaded weights stay as they are
    model = PELAForPretraining.from_pretrained(run)
    components = [AutoConfig.from_pretrained(tmp_path / name) for name in ("vlm", "dino")]
    expected = PELAConfig.from_components(*components)  # no --model_preset: the sizes follow the loaded components
    for name in ("align_layer", "perceiver_hidden_size", "perceiver_num_heads", "perceiver_head_hidden_size"):
        assert getattr(model.config, name) == getattr(expected, name), name
    trained = model.vlm.state_dict()
    source = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").state_dict()
    for key in ("model.language_model.layers.0.self_attn.q_proj.weight", "model.vision_tower.embeddings.cls_token"):
        assert torch.equal(trained[key], source[key]), key
    processor_config = json.loads((run / "processor_config.json").read_text())
    assert processor_config["image_start_token_id"] is not None and processor_config["image_seq_length"] == 4


def test_pretrain_under_accelerate_launch_with_two_processes(workspace, tmp_path):
    config = _config(workspace, tmp_path / "ddp", per_device_train_batch_size=1)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*launcher, "-m", "pela.cli", "pretrain", str(config)], check=True, env=env, cwd=ROOT, timeout=600)
    assert (tmp_path / "ddp" / "model.safetensors").exists()
    assert (tmp_path / "ddp" / "motion_tokenizer" / "config.json").exists()


def test_pretrain_refuses_a_truncated_shard_naming_it(workspace, tmp_path, capsys):
    """Corrupt data are not skipped silently: training stops, naming the file (a budget must be asked for)."""
    data = tmp_path / "data"
    shutil.copytree(workspace / "data", data)
    shard = sorted((data / "data" / "lab").glob("train-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    config = _config(workspace, tmp_path / "run", data=str(data))
    assert main(["pretrain", str(config)]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1].split("\r")[-1]  # after the tokenizer's loading bar
    assert error.startswith("pela pretrain: error: shard ") and shard.name in error and "ArrowInvalid" in error
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert main(["pretrain", str(config), "--max_skip_fraction", "0.5"]) == 1  # its only lab shard: the subset is gone
    assert "subset 'lab': none of its 1 shards has a row" in capsys.readouterr().err


def test_pretrain_within_a_budget_counts_the_skipped_rows_in_the_logs_and_card(workspace, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(workspace / "data", data)
    shard = sorted((data / "data" / "lab").glob("train-*.parquet"))[0]
    table = pq.read_table(shard)
    rows = table.to_pylist()
    broken = next(row for row in rows if row["has_motion_labels"])
    side = broken["hands"][0]
    broken[f"mano_{side}"]["transl"][3][1] = math.nan
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    config = _config(workspace, tmp_path / "run", data=str(data), max_steps=3)
    assert main(["pretrain", str(config)]) == 1
    assert f"sample '{broken['id']}' field 'mano_{side}.transl': contains NaN" in capsys.readouterr().err
    assert main(["pretrain", str(config), "--max_skip_fraction", "0.2"]) == 0
    logs = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{'loss'")]
    assert logs and all("'data_skipped': 1, 'data_skipped_nan_pose': 1" in line for line in logs)
    card = (tmp_path / "run" / "README.md").read_text()
    assert "Training rows skipped as unusable | 1 nan_pose (`--max_skip_fraction`)" in card


def test_an_output_dir_holding_another_run_is_refused_unless_asked(workspace, tmp_path, capsys):
    run = tmp_path / "run"
    old = run / "checkpoint-99"  # what an earlier, longer run left behind
    old.mkdir(parents=True)
    (old / "trainer_state.json").write_text("{}")
    (run / "eval_results.json").write_text("{}")
    config = _config(workspace, run, save_strategy="steps", save_steps=1, save_total_limit=1)
    assert main(["pretrain", str(config)]) == 1
    error = capsys.readouterr().err
    assert str(run) in error and "--resume_from_checkpoint last" in error and "--overwrite_output_dir" in error
    assert old.exists() and not (run / "model.safetensors").exists()
    assert main(["pretrain", str(config), "--overwrite_output_dir", "true"]) == 0
    # the old run is gone (so rotation kept this run's checkpoint and "last" resumes this run)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (run / "eval_results.json").exists()
    other = tmp_path / "notes"  # a folder that is not a run is never overwritten
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    config = _config(workspace, other)
    assert main(["pretrain", str(config), "--overwrite_output_dir", "true"]) == 1
    assert "not a training run's folder" in capsys.readouterr().err and (other / "todo.txt").exists()


def test_load_and_argument_errors_name_the_problem(workspace, tmp_path, capsys):
    folder = tmp_path / "checkpoint"  # a checkpoint that lost its config.json: refused before any model is built
    (folder / "motion_tokenizer").mkdir(parents=True)
    for name in ("processor_config.json", "tokenizer.json", "model.safetensors"):
        (folder / name).write_text("{}")
    capsys.readouterr()
    assert main(["eval", str(folder), "--data", str(workspace / "data")]) == 1
    assert "lacks config.json (config.json: the model configuration)" in capsys.readouterr().err
    image = ["--image", str(REAL_IMAGE), "--instruction", "pick up the cup"]
    assert main(["generate", str(tmp_path / "missing"), *image]) == 1
    assert f"{tmp_path / 'missing'} is not a folder" in capsys.readouterr().err
    flags = ["--data", "/no/such/export", "--motion_tokenizer", str(workspace / "tokenizer"), "--output_dir",
             str(tmp_path / "run")]  # fmt: skip
    for extra, message in (
        (["--variant", "pelaa"], "--variant 'pelaa' is not one of"),  # named before the data path is touched
        (["--model_preset", "7b"], "--model_preset '7b' is not one of ['2b', 'tiny']"),
        ([], "--data /no/such/export: no such file or folder"),
    ):
        assert main(["pretrain", *flags, *extra]) == 1
        assert message in capsys.readouterr().err


def test_pretrain_from_a_vlm_folder_without_processor_says_how_to_get_one(workspace, tmp_path, capsys):
    """A weights-and-config-only VLM folder: one line naming the folder and the fix, no traceback."""
    from transformers import AutoModelForImageTextToText, DINOv3ViTModel

    from modeling_pela import PELAConfig

    tiny = PELAConfig.tiny()
    AutoModelForImageTextToText.from_config(tiny.vlm_config).save_pretrained(tmp_path / "vlm")
    DINOv3ViTModel(tiny.frame_encoder_config).save_pretrained(tmp_path / "dino")
    config = _config(workspace, tmp_path / "run", vlm=str(tmp_path / "vlm"), frame_encoder=str(tmp_path / "dino"))
    assert main(["pretrain", str(config)]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"pela pretrain: error: {tmp_path / 'vlm'} holds no processor of the VLM")
    assert "--processor DIR" in error and "Traceback" not in error


def test_tokenizer_train_on_an_export_streams_the_mano_columns_of_a_config(workspace, tmp_path, monkeypatch):
    """`pela tokenizer train --data DIR --config lab`: labelled rows of that config, MANO columns only (no frame)."""
    import pela.jobs

    seen = []

    def recording(rows):
        rows = list(rows)
        seen.extend(set(row) for row in rows)
        return hand_motions_of_rows(rows)

    hand_motions_of_rows = pela.jobs.hand_motions_of_rows
    monkeypatch.setattr(pela.jobs, "hand_motions_of_rows", recording)
    out = tmp_path / "tokenizer"
    argv = ["tokenizer", "train", "--data", str(workspace / "data"), "--output_dir", str(out), "--max_steps", "1",
            "--batch_size", "4", "--codebook_size", "16", "--num_quantizers", "1"]  # fmt: skip
    assert main([*argv, "--config", "lab"]) == 0
    assert (out / "config.json").exists() and json.loads((out / "reconstruction_metrics.json").read_text())["lab"]
    assert seen and all(keys == set(pela.jobs.MANO_COLUMNS) for keys in seen)
    assert main([*argv, "--config", "wild"]) == 1  # the toy export's wild rows carry no MANO labels
