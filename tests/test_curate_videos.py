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
