"""``pela data curate-videos``: decoding, the MediaPipe hand landmarker, the MANO fit to keypoints, the curation of a
real hand video and of a hand-free one, and the Ray engine against the local one."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from datasets_unihand_mix.hand_keypoint_fit import camera_keypoints, fit_hand_motion
from datasets_unihand_mix.hand_landmarker import HandKeypoints, MediaPipeHandLandmarker
from datasets_unihand_mix.samples import assign_split
from datasets_unihand_mix.video_curation import REPORT_FILE, VideoCurationConfig, collect, curate_videos, run_local
from datasets_unihand_mix.video_decoding import iter_video_windows
from modeling_pela.mano import BuiltinHandKinematics
from pela.cli import COMMANDS, main, parse_command_args

VIDEO = Path(__file__).parent / "fixtures_real_hands" / "hand_video_202f.mp4"  # 202 frames, 640x360, 25 fps


def write_hand_free_video(path: Path, seconds: float = 2.0, fps: int = 25, size: tuple[int, int] = (320, 240)) -> Path:
    """An H.264 video of moving coloured bars over noise: no hands."""
    rng = np.random.default_rng(0)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(round(seconds * fps)):
            image = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
            x = (5 * t) % width
            image[:, x : x + 30] = (200, 60, 30)
            image[40:80, :] = (30, 90, 200)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_decoding_keeps_a_regular_grid_in_windows():
    windows = list(iter_video_windows(VIDEO))
    assert [w.num_frames for w in windows] == [125, 77] and [w.start for w in windows] == [0.0, 5.0]
    assert windows[0].frames.shape == (125, 360, 640, 3) and windows[0].frames.dtype == np.uint8
    small = list(iter_video_windows(VIDEO, sample_fps=10, window_seconds=2, max_side=320))
    assert all(w.fps == 10.0 for w in small) and small[0].frames.shape == (20, 180, 320, 3)
    # 8.08 s on a 10 fps grid is 81 frames: four 2 s windows and a 0.1 s tail, shorter than min_seconds (dropped)
    assert [w.num_frames for w in small] == [20, 20, 20, 20]


def test_landmarker_finds_the_right_hand_in_every_frame():
    frames = next(iter_video_windows(VIDEO, sample_fps=5)).frames
    with MediaPipeHandLandmarker() as model:
        keypoints = model(frames)
    assert keypoints.present()[:, 1].all() and not keypoints.present()[:, 0].any()  # a person's right hand
    assert keypoints.scores[:, 1].mean() >= 0.65
    inside = (keypoints.image[:, 1] >= 0) & (keypoints.image[:, 1] <= [640, 360])
    assert inside.all()
    spread = np.linalg.norm(keypoints.world[:, 1, 12] - keypoints.world[:, 1, 0], axis=-1)  # wrist -> middle tip
    assert ((spread > 0.08) & (spread < 0.3)).all()  # metres


def test_keypoint_fit_recovers_a_known_hand():
    kinematics = BuiltinHandKinematics()
    generator = torch.Generator().manual_seed(0)
    n = 6
    hand_pose = 0.3 * torch.rand(n, 15, 3, generator=generator) * torch.tensor([0.2, 0.2, 1.0])
    global_orient = torch.tensor([[0.4, -1.2, 0.3]]).repeat(n, 1) + 0.1 * torch.randn(n, 3, generator=generator)
    transl = torch.tensor([0.05, -0.02, 0.5]).repeat(n, 1)
    truth = kinematics.joints(hand_pose, global_orient, transl, "right")
    motion, error = fit_hand_motion(truth.numpy(), "right", 15.0, steps=300)
    fitted = kinematics(motion)
    assert error < 0.004 and float((fitted - truth).norm(dim=-1).mean()) == pytest.approx(error, abs=1e-5)
    assert torch.equal(motion.transl, transl)


def test_camera_keypoints_recover_depth_by_weak_perspective():
    rng = np.random.default_rng(0)
    hand = rng.normal(0.0, 0.04, (3, 21, 3))  # metres around the hand's centre
    centre = np.array([[0.1, -0.05, 0.6], [0.0, 0.0, 0.4], [-0.2, 0.1, 1.0]])
    width, height, focal = 640, 360, 0.5 * 640 / np.tan(np.radians(30))
    points = hand + centre[:, None]
    image = points[..., :2] / points[..., 2:] * focal + [width / 2, height / 2]
    lifted = camera_keypoints(image, hand, width, height, fov_degrees=60)
    assert np.abs(lifted.mean(axis=1) - centre).max() < 0.03 * centre[:, 2].max()


def _load_with_datasets_only(folder: Path, split: str) -> list[dict]:
    """Rows of the wild config read back in a fresh process that imports only ``datasets``."""
    code = textwrap.dedent(
        f"""
        import json, sys
        import datasets
        rows = datasets.load_dataset({str(folder)!r}, "wild", split={split!r}, streaming=True)
        out = [{{k: v for k, v in r.items() if k in ("id", "detection_confidence", "pose_confidence", "curation",
                "hands", "num_frames", "labels_are_estimates", "mano_right", "subset")}} for r in rows]
        loaded = sorted(m.split(".")[0] for m in sys.modules if m.startswith(("pela", "datasets_unihand_mix",
                        "modeling_pela", "mediapipe", "ray")))
        print(json.dumps({{"rows": out, "loaded": loaded}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=folder)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    return result["rows"]


def test_cli_curates_the_real_video_into_a_loadable_wild_row(tmp_path):
    output = tmp_path / "curated"
    assert main(["data", "curate-videos", str(VIDEO), "--output", str(output)]) == 0
    split = assign_split("wild-video/hand_video_202f", 0.1)
    rows = _load_with_datasets_only(output, split)
    assert len(rows) >= 1
    for row in rows:
        assert row["subset"] == "wild" and row["hands"] == ["right"] and row["num_frames"] % 15 == 0
        assert row["detection_confidence"] >= 0.65 and row["pose_confidence"] >= 0.65
        curation = json.loads(row["curation"])
        assert curation["visual_filter"]["detector"] == "mediapipe-hand-landmarker"
        assert curation["temporal_slowdown"]["factor"] == 0.5
    report = json.loads((output / REPORT_FILE).read_text())
    assert report["candidates"] == 2 and report["kept"] == len(rows)
    assert report["stages"]["visual_filter"]["kept"] == 2
    card = (output / "README.md").read_text()
    assert "visual_filter" in card and "configs:" in card


def test_test_split_rows_carry_the_fitted_hand_as_estimated_labels(tmp_path):
    config = VideoCurationConfig(split="test", window_seconds=2.0, sample_fps=15)
    summary = curate_videos([VIDEO], tmp_path / "out", config)
    assert summary.written == {"test": len(summary.rows)} and summary.rows
    for row in summary.rows:
        assert row["labels_are_estimates"] and row["mano_left"] is None
        pose = np.asarray(row["mano_right"]["hand_pose"])
        transl = np.asarray(row["mano_right"]["transl"])
        assert pose.shape == (row["num_frames"], 45) and np.isfinite(pose).all()
        assert (transl[:, 2] > 0.1).all() and (transl[:, 2] < 3.0).all()  # in front of the camera, metres


def test_hand_free_video_yields_no_rows_and_says_why(tmp_path):
    video = write_hand_free_video(tmp_path / "no_hands.mp4")
    output = tmp_path / "curated"
    summary = curate_videos([video], output)
    assert summary.rows == [] and summary.written == {}
    assert not (output / "data").exists()
    report = json.loads((output / REPORT_FILE).read_text())
    assert report["candidates"] == 1 and report["kept"] == 0
    assert report["stages"]["visual_filter"]["dropped"] == {"low_detection_confidence": 1}
    assert "low_detection_confidence" in str(summary.report)


class _OneRightHand:
    """A plugged-in keypoint model: the built-in skeleton's right hand waving in front of the camera."""

    name = "fake-keypoints"

    def __call__(self, frames: np.ndarray) -> HandKeypoints:
        n, height, width = frames.shape[:3]
        t = torch.arange(n, dtype=torch.float32)
        pose = torch.zeros(n, 15, 3)
        pose[:, :, 2] = 0.6 * torch.sin(t / 5)[:, None]
        orient = torch.tensor([1.5, 0.0, 0.0]).repeat(n, 1)
        world = BuiltinHandKinematics().joints(pose, orient, torch.zeros(n, 3), "right").numpy()
        centred = world - world.mean(axis=1, keepdims=True)
        image = centred[..., :2] * 1000 + [width / 2, height / 2] + (np.arange(n)[:, None, None] * [2.0, 0.0])
        sides = np.zeros((n, 2, 21, 3), np.float32)
        sides[:, 1] = centred
        pixels = np.zeros((n, 2, 21, 2), np.float32)
        pixels[:, 1] = image
        scores = np.tile(np.array([0.0, 0.9], np.float32), (n, 1))
        return HandKeypoints(pixels, sides, scores, width, height, self.name)

    def close(self) -> None:
        pass


def test_a_plugged_keypoint_model_drives_the_curation(tmp_path):
    video = write_hand_free_video(tmp_path / "clip.mp4", seconds=1.2)
    config = VideoCurationConfig(keypoint_model=_OneRightHand, narration="#C C waves the hand", split="test")
    rows, report, describe = collect(run_local([video], config))
    assert report.kept == 1 and len(rows) == 1 and "fake-keypoints" in describe + rows[0]["curation"]
    assert rows[0]["instruction"] or rows[0]["task_type"]
    assert json.loads(rows[0]["curation"])["narration"] == {"narration_source": "video metadata"}
    assert rows[0]["detection_confidence"] == pytest.approx(0.9) and rows[0]["pose_confidence"] == pytest.approx(0.9)


def test_cli_takes_several_videos():
    args, positionals = parse_command_args(COMMANDS["data curate-videos"], ["a.mp4", "b", "--output", "o"])
    assert positionals.videos == ["a.mp4", "b"] and args.output == "o" and args.engine == "local"


def test_ray_engine_gives_the_same_rows_as_the_local_run(tmp_path):
    """Ray Data (local mode, 2 CPUs) and the sequential engine write the same rows, report and card."""
    hand_free = write_hand_free_video(tmp_path / "no_hands.mp4")
    config = VideoCurationConfig(split="test")
    local = curate_videos([VIDEO, hand_free], tmp_path / "local", config)
    engine = curate_videos([VIDEO, hand_free], tmp_path / "ray", config, engine="ray", num_cpus=2)
    assert local.rows and engine.rows == local.rows
    assert engine.report.as_dict() == local.report.as_dict() and engine.report.candidates == 3
    for name in ("README.md", REPORT_FILE):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text().replace(
            str(tmp_path / "local"), str(tmp_path / "ray")
        )


def _unreadable(path: Path) -> Path:
    path.write_text("not a video, only text\n")
    return path


def _curate_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["data", "curate-videos", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_an_unreadable_video_stops_either_engine_with_one_line_before_it_starts(tmp_path, capsys, monkeypatch, engine):
    import datasets_unihand_mix.video_curation as video_curation
    import datasets_unihand_mix.video_curation_ray as video_curation_ray

    def no_engine(*args, **kwargs):
        raise AssertionError("an engine started although an input cannot be read")

    monkeypatch.setattr(video_curation, "run_local", no_engine)
    monkeypatch.setattr(video_curation_ray, "run_ray", no_engine)
    bad = _unreadable(tmp_path / "bad13.mp4")
    status, out, err = _curate_cli(capsys, str(VIDEO), str(bad), "--output", str(tmp_path / "o"), "--engine", engine)
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert f"{bad}: cannot open video" in err and "re-encode it or remove it from the input" in err
    assert "--skip-bad-videos" in err


def test_ray_errors_of_the_project_are_unwrapped():
    from ray.exceptions import RayTaskError, UserCodeException

    from datasets_unihand_mix.sources import SourceDataError
    from datasets_unihand_mix.video_curation_ray import project_error

    cause = SourceDataError("/tmp/clip.json: cannot read the video's metadata")
    try:
        raise UserCodeException("UDF failed to process a data block.") from cause
    except UserCodeException as err:
        wrapped = RayTaskError("MapBatches(decode_stage)", "traceback", err).as_instanceof_cause()
    assert project_error(wrapped) is cause
    assert project_error(RayTaskError("f", "traceback", RuntimeError("other")).as_instanceof_cause()) is None


def _bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    sidecar = write_hand_free_video(folder / "bad_sidecar.mp4", seconds=1.0)
    sidecar.with_suffix(".json").write_text("{not json")
    return {
        "unreadable": _unreadable(folder / "a_text.mp4"),
        "bad_sidecar": sidecar,
        "hand_free": write_hand_free_video(folder / "no_hands.mp4", seconds=1.0),
        "short": write_hand_free_video(folder / "short.mp4", seconds=0.3),
    }


def test_skip_bad_videos_reports_every_video_the_same_on_both_engines(tmp_path):
    from datasets_unihand_mix.sources import SourceDataError

    inputs = _bad_inputs(tmp_path / "in")
    with pytest.raises(SourceDataError, match="bad_sidecar.json: cannot read the video's metadata"):
        curate_videos([inputs["bad_sidecar"]], tmp_path / "stop", VideoCurationConfig(split="test"), engine="ray",
                      num_cpus=2)  # fmt: skip
    config = VideoCurationConfig(split="test", skip_bad_videos=True)
    local = curate_videos([tmp_path / "in"], tmp_path / "local", config)
    engine = curate_videos([tmp_path / "in"], tmp_path / "ray", config, engine="ray", num_cpus=2)
    assert engine.videos == local.videos and not local.rows
    outcome = {Path(v["video"]).name: v for v in local.videos}
    assert [Path(v["video"]).name for v in local.videos] == sorted(p.name for p in inputs.values())
    assert outcome["a_text.mp4"]["status"] == "skipped" and "cannot open video" in outcome["a_text.mp4"]["reason"]
    assert "--skip-bad-videos" not in outcome["a_text.mp4"]["reason"]
    assert outcome["bad_sidecar.mp4"]["status"] == "skipped"
    assert "bad_sidecar.json: cannot read" in outcome["bad_sidecar.mp4"]["reason"]
    assert outcome["short.mp4"] == {
        "video": str(inputs["short"]), "status": "no window", "windows": 0, "kept": 0,
        "reason": "0.32 s long, shorter than the minimum clip length 0.5 s: no window",
    }  # fmt: skip
    assert outcome["no_hands.mp4"] == {
        "video": str(inputs["hand_free"]), "status": "curated", "windows": 1, "kept": 0,
        "reason": "dropped visual_filter: low_detection_confidence 1",
    }  # fmt: skip
    report = json.loads((tmp_path / "ray" / REPORT_FILE).read_text())
    assert report["videos"] == engine.videos and report["candidates"] == 1


def test_a_too_short_video_says_why_once_and_writes_only_the_report(tmp_path, capsys):
    video = write_hand_free_video(tmp_path / "short.mp4", seconds=0.3)
    output = tmp_path / "o"
    status, out, err = _curate_cli(capsys, str(video), "--output", str(output))
    assert status == 0
    assert f"{video}: no window: 0.32 s long, shorter than the minimum clip length 0.5 s: no window" in out
    assert (out + err).count("curation: kept 0/0 candidates") == 1
    assert "wrote only" in out and "no 'wild' config for load_dataset" in out
    assert sorted(p.name for p in output.iterdir()) == [REPORT_FILE]
    report = json.loads((output / REPORT_FILE).read_text())
    assert report["videos"][0]["status"] == "no window" and "minimum clip length" in report["videos"][0]["reason"]


def test_a_corrupt_landmarker_model_gets_a_clean_error(tmp_path, capsys, monkeypatch):
    model = tmp_path / "hand_landmarker.task"
    model.write_text("not a zip archive")
    monkeypatch.setenv("PELA_HAND_LANDMARKER", str(model))
    with pytest.raises(ValueError, match="not a .task bundle"):
        MediaPipeHandLandmarker()
    status, _, err = _curate_cli(capsys, str(VIDEO), "--output", str(tmp_path / "o"), "--engine", "ray")
    assert status == 1 and str(model) in err and "make env" in err and "PELA_HAND_LANDMARKER" in err


@pytest.mark.parametrize(
    ("flag", "value", "refused"),
    [
        ("--test-fraction", "2", "must be in [0, 1], got 2.0"), ("--detection-threshold", "-1", "must be in [0, 1], got -1.0"),
        ("--pose-threshold", "1.5", "must be in [0, 1], got 1.5"), ("--window-seconds", "0", "must be > 0, got 0.0"),
        ("--sample-fps", "0", "must be > 0, got 0.0"), ("--max-side", "0", "must be > 0, got 0"),
        ("--fov-degrees", "0", "must be in (0, 180) degrees, got 0.0"),
    ],
)  # fmt: skip
def test_each_out_of_range_flag_is_named_with_its_value(tmp_path, capsys, flag, value, refused):
    status, _, err = _curate_cli(capsys, str(VIDEO), "--output", str(tmp_path / "o"), flag, value)
    assert status == 1 and f"({flag}) {refused} " in err and len(err.splitlines()) == 1


def test_an_output_that_is_a_file_is_refused_with_the_fix(tmp_path, capsys):
    output = tmp_path / "out.txt"
    output.write_text("x")
    status, _, err = _curate_cli(capsys, str(VIDEO), "--output", str(output))
    assert status == 1 and f"{output} (--output) is a file: pass a folder" in err


def test_mediapipe_native_info_lines_stay_off_the_console(capfd):
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    with MediaPipeHandLandmarker() as model:
        model(frames)
    err = capfd.readouterr().err
    assert "INFO: " not in err and "W0000" not in err


def test_thresholds_have_help_and_a_shown_default():
    from pela.cli import command_parser

    text = " ".join(command_parser(COMMANDS["data curate-videos"]).format_help().split())
    assert "minimum hand-detection confidence, in [0, 1] (paper: 0.65) (default: 0.65)" in text
    assert "it equals the detection confidence) (default: 0.65)" in text
    assert "--skip-bad-videos" in text
