"""Hub-native export of UniHand-Mix: parquet layout, dataset card, plain `datasets` loading, upload helper."""

import json
import subprocess
import sys
import textwrap

import pytest
from huggingface_hub import DatasetCard
from PIL import Image

from datasets_unihand_mix.builder import UniHandMix
from datasets_unihand_mix.export import STATS_JSON, STATS_PLOT, export_hub_folder, push_to_hub
from pela.cli import COMMANDS, parse_command_args


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "unihand"
    builder = UniHandMix(config_name="toy", num_clips=30, image_size=64)
    return export_hub_folder(builder, folder, max_shard_size="60KB", repo_id="me/unihand-mix")


def test_layout_and_shard_names(export):
    out = export.output_dir
    assert export.rows == {
        "lab": {"train": 19, "test": 2},
        "wild": {"train": 8, "test": 1},
        "mix": {"train": 27, "test": 3},
    }
    assert len(export.files["lab"]["train"]) > 1  # sharded by size
    for subset, per_split in export.files.items():
        for split, files in per_split.items():
            n = len(files)
            assert files == [f"data/{subset}/{split}-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert not list(out.rglob("*.partial"))
    assert sorted(p.name for p in out.iterdir()) == sorted(["README.md", "data", STATS_PLOT, STATS_JSON])
    with pytest.raises(FileExistsError, match="overwrite"):
        export_hub_folder(UniHandMix(config_name="toy", num_clips=2), out)


def test_card_declares_configs_and_reports_statistics(export):
    card = DatasetCard.load(export.output_dir / "README.md")
    data = card.data.to_dict()
    configs = {c["config_name"]: c for c in data["configs"]}
    assert set(configs) == {"lab", "wild", "mix"} and configs["mix"].get("default") is True
    assert configs["wild"]["data_files"] == [
        {"split": "train", "path": "data/wild/train-*"},
        {"split": "test", "path": "data/wild/test-*"},
    ]
    assert configs["mix"]["data_files"][0]["path"] == ["data/lab/train-*", "data/wild/train-*"]
    infos = {info["config_name"]: info for info in data["dataset_info"]}
    assert {s["name"]: s["num_examples"] for s in infos["mix"]["splits"]} == {"train": 27, "test": 3}
    assert data["license"] == "apache-2.0" and "robotics" in data["task_categories"]

    stats = json.loads((export.output_dir / STATS_JSON).read_text())
    assert stats["total_rows"] == 30 and sum(stats["task_types"].values()) == 30
    assert sum(stats["clip_seconds_histogram"]["counts"]) == 30
    assert stats["sources"]["procedural-wild"]["rows"] == 9
    curation = stats["curation"]
    assert curation["kept"] == 9 and set(curation["stages"]) == {
        "visual_filter",
        "instruction_validation",
        "temporal_slowdown",
    }
    text = card.text
    assert f"![UniHand-Mix statistics: sources, task types, clip lengths]({STATS_PLOT})" in text
    assert 'load_dataset("me/unihand-mix", "mix"' in text
    keep = curation["stages"]["visual_filter"]["keep_rate"]
    assert f"| visual_filter | {curation['stages']['visual_filter']['seen']} |" in text and f"{100 * keep:.1f}%" in text
    assert "| video_only |" in text and "29.1%" in text  # target mix of appendix B.2
    assert "| ``boundary_frames`` | list[Image] |" in text  # the schema table
    with Image.open(export.output_dir / STATS_PLOT) as plot:
        assert plot.format == "PNG" and plot.width > 600


def test_cli_export_then_plain_datasets_in_a_fresh_process(tmp_path):
    """The public contract: `pela data export` output streams with only `datasets` imported."""
    out = tmp_path / "x"
    command = [
        sys.executable,
        "-m",
        "pela.cli",
        "data",
        "export",
        "--config",
        "toy",
        "--num-clips",
        "12",
        "--image-size",
        "64",
        "--num-workers",
        "0",
        "--output",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "mix   train: 10 rows  test: 2 rows" in result.stdout
    check = textwrap.dedent(
        f"""
        import sys, datasets
        for name in ("lab", "wild", "mix"):
            for split in ("train", "test"):
                ds = datasets.load_dataset({str(out)!r}, name, split=split, streaming=True)
                rows = list(ds)
                row = rows[0]
                assert row["split"] == split and row["first_frame"].size == (64, 64), row["id"]
                assert len(row["boundary_frames"]) == row["num_chunks"] + 1
                print(name, split, len(rows), row["subset"], row["task_type"])
        assert not any(m.split(".")[0] in ("datasets_unihand_mix", "pela", "modeling_pela") for m in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert "lab train 8 lab" in lines[0] and lines[3].startswith("wild test 1 wild")
    assert lines[4].startswith("mix train 10") and lines[5].startswith("mix test 2")


def test_cli_parses_export_and_push():
    (args,) = parse_command_args(COMMANDS["data export"], ["--output", "o", "--config", "mix", "--data-dir", "raw"])
    assert args.config == "mix" and args.data_dir == "raw" and args.max_shard_size == "256MB"
    args, positionals = parse_command_args(COMMANDS["data push"], ["o", "--repo-id", "me/x", "--private"])
    assert args.private and args.repo_id == "me/x" and positionals.folder == "o" and not hasattr(args, "token")


class FakeHfApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return type("Commit", (), {"commit_url": f"https://hf.co/datasets/{kwargs['repo_id']}/commit/1"})()


def test_push_to_hub_uploads_the_folder_and_never_writes_the_token(export, tmp_path):
    token = "hf_" + "A1b2C3" * 6
    api = FakeHfApi()
    url = push_to_hub(export.output_dir, "me/unihand-mix", token=token, private=True, api=api)
    assert url == "https://hf.co/datasets/me/unihand-mix/commit/1"
    (create, repo, create_kwargs), (upload, _, upload_kwargs) = api.calls
    assert create == "create_repo" and repo == "me/unihand-mix"
    assert create_kwargs == {"repo_type": "dataset", "private": True, "exist_ok": True}
    assert upload == "upload_folder" and upload_kwargs["repo_type"] == "dataset"
    assert upload_kwargs["folder_path"] == str(export.output_dir)
    for path in export.output_dir.rglob("*"):
        assert not path.is_file() or token.encode() not in path.read_bytes()

    leaked = tmp_path / "leaked"
    (leaked / "data").mkdir(parents=True)
    (leaked / "README.md").write_text(f"token: {token}\n")
    with pytest.raises(ValueError, match="contains an access token"):
        push_to_hub(leaked, "me/unihand-mix", api=FakeHfApi())
    with pytest.raises(FileNotFoundError, match="not an exported UniHand-Mix folder"):
        push_to_hub(tmp_path, "me/unihand-mix", api=FakeHfApi())
