"""Pictures and videos of hand motion (pela.visualization): skeletons land where the camera projects them, videos have
one frame per motion frame, and their size is bounded by the input image whatever its resolution."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from modeling_pela import BuiltinHandKinematics
from pela.visualization import (
    HAND_COLOURS,
    MAX_PANEL_SIZE,
    hand_keypoints,
    motion_frames,
    project,
    render_motion,
    render_row,
    write_animation,
)

FRAMES = 15
REAL_IMAGE = Path(__file__).parent / "fixtures_real_hands" / "hand_image.jpg"


def _still_right_hand(transl=(0.05, -0.02, 0.5), frames=FRAMES):
    return {"right": {"hand_pose": np.zeros((frames, 45)), "global_orient": np.zeros((frames, 3)),
                      "transl": np.tile(transl, (frames, 1))}}  # fmt: skip


def _decoded(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]


def test_projection_is_a_pinhole_camera_at_the_image_centre():
    # a point 0.5 m ahead on the optical axis lands in the image centre; 0.1 m right shifts it by f * 0.2
    pixels = project(np.array([[0.0, 0.0, 0.5], [0.1, 0.0, 0.5]]), 100, 80, focal_factor=0.9)
    np.testing.assert_allclose(pixels, [[50.0, 40.0], [50.0 + 90 * 0.2, 40.0]])


@pytest.mark.parametrize("size", [(100, 80), (1920, 1080)])
def test_the_wrist_is_drawn_where_the_camera_projects_it(size):
    keypoints = hand_keypoints(_still_right_hand(), BuiltinHandKinematics())
    assert keypoints["right"].shape == (FRAMES, 21, 3)
    np.testing.assert_allclose(keypoints["right"][:, 0], np.tile([0.05, -0.02, 0.5], (FRAMES, 1)), atol=1e-6)
    frames = motion_frames(Image.new("RGB", size), keypoints)
    assert len(frames) == FRAMES
    width, height = frames[0].size
    assert width <= size[0] and height <= size[1] and max(width, height) <= MAX_PANEL_SIZE
    u, v = project(np.array([0.05, -0.02, 0.5]), *size) * (width / size[0], height / size[1])
    for frame in (frames[0], frames[-1]):
        assert frame.getpixel((round(u), round(v))) == HAND_COLOURS["right"]
        assert frame.getpixel((2, height // 2)) == (0, 0, 0)  # far from the hand the image is untouched


def test_generated_and_true_motion_side_by_side_must_match_in_length():
    kinematics = BuiltinHandKinematics()
    generated = hand_keypoints(_still_right_hand(), kinematics)
    truth = hand_keypoints(_still_right_hand((-0.05, 0.0, 0.5)), kinematics)
    frames = motion_frames(Image.new("RGB", (64, 48)), generated, truth)
    assert len(frames) == FRAMES and frames[0].size == (2 * 64, 48)
    short = {"right": truth["right"][:5]}
    with pytest.raises(ValueError, match="same number of frames"):
        motion_frames(Image.new("RGB", (64, 48)), generated, short)
    with pytest.raises(ValueError, match=r"\(T, 21, 3\)"):
        motion_frames(Image.new("RGB", (64, 48)), {"right": np.zeros((FRAMES, 16, 3))})


def test_mp4_and_gif_have_one_frame_per_motion_frame(tmp_path):
    image = Image.open(REAL_IMAGE)  # a real 640x427 photograph: odd height, rounded down for H.264
    keypoints = hand_keypoints(_still_right_hand(), BuiltinHandKinematics())
    video = render_motion(image, keypoints, tmp_path / "motion.mp4")
    decoded = _decoded(video)
    assert len(decoded) == FRAMES
    assert decoded[0].size[0] <= image.size[0] and decoded[0].size[1] <= image.size[1]
    gif = Image.open(render_motion(image, keypoints, tmp_path / "motion.gif", panel_size=128))
    assert gif.n_frames == FRAMES and max(gif.size) == 128
    strip = Image.open(render_motion(image, keypoints, tmp_path / "motion.png"))
    assert strip.size == (3 * decoded[0].size[0], decoded[0].size[1])
    with pytest.raises(ValueError, match=".avi"):
        write_animation([image], tmp_path / "motion.avi")


def test_render_row_shows_labelled_and_video_only_rows(tmp_path):
    kinematics = BuiltinHandKinematics()
    chunks, frame = 2, Image.new("RGB", (48, 48), (30, 30, 30))
    labelled = {
        "id": "lab/clip-0/motion_generation", "subset": "lab", "split": "test", "task_type": "motion_generation",
        "instruction": "Pick up the cup.", "hands": ["right"], "has_motion_labels": True, "fps": 15.0,
        "chunk_length": FRAMES, "num_chunks": chunks, "first_frame": frame, "boundary_frames": [frame] * (chunks + 1),
        "mano_right": _still_right_hand(frames=chunks * FRAMES)["right"], "pose_confidence": 1.0,
        "detection_confidence": 1.0, "curation": '{"labels": "procedural ground truth"}',
    }  # fmt: skip
    whole = _decoded(render_row(labelled, tmp_path / "row.mp4", kinematics))  # 48 px frames enlarged to 256
    assert len(whole) == chunks * FRAMES and whole[0].size[0] == 256 and 256 < whole[0].size[1] < 400  # + caption
    generated = hand_keypoints(_still_right_hand(), kinematics)
    compared = _decoded(render_row(labelled, tmp_path / "compared.mp4", kinematics, generated=generated, panel_size=48))
    assert len(compared) == FRAMES and compared[0].size[0] == 2 * 48
    video_only = {**labelled, "has_motion_labels": False, "hands": [], "mano_right": None}
    assert len(_decoded(render_row(video_only, tmp_path / "video_only.mp4", kinematics))) == (chunks + 1) * FRAMES
    with pytest.raises(ValueError, match="no hand labels"):
        render_row(video_only, tmp_path / "bad.mp4", kinematics, generated=generated)


def test_pela_data_view_renders_a_row_of_an_export(tmp_path, capsys):
    from datasets_unihand_mix.builder import UniHandMix
    from datasets_unihand_mix.export import export_hub_folder
    from datasets_unihand_mix.streaming import stream_unihand_mix
    from pela.cli import main

    export_hub_folder(UniHandMix(config_name="toy", num_clips=8, image_size=48, seed=1), tmp_path / "data")
    row = list(stream_unihand_mix(str(tmp_path / "data"), "lab", "train"))[1]
    out = tmp_path / "view.mp4"
    assert main(["data", "view", str(tmp_path / "data"), "--config", "lab", "--index", "1", "--output", str(out)]) == 0
    assert row["id"] in capsys.readouterr().out
    frames = _decoded(out)
    assert len(frames) == int(row["num_frames"]) and frames[0].size[0] == 256
    count = len(list(stream_unihand_mix(str(tmp_path / "data"), "lab", "train")))
    assert main(["data", "view", str(tmp_path / "data"), "--config", "lab", "--index", "1000"]) == 1
    error = capsys.readouterr().err
    assert f"has {count} lab/train rows, so --index must be below {count}" in error


def test_the_3d_view_shows_the_mano_mesh_with_mano_files(tmp_path):
    from synthetic_mano import write_synthetic_mano

    from modeling_pela.mano import SmplxHandKinematics
    from pela.visualization import INSET_BACKGROUND, hand_meshes

    mano = _still_right_hand()
    assert hand_meshes(mano, BuiltinHandKinematics()) is None  # the built-in skeleton has no mesh
    kinematics = SmplxHandKinematics(write_synthetic_mano(tmp_path / "mano"))
    meshes = hand_meshes(mano, kinematics)
    vertices, faces = meshes["right"]
    assert vertices.shape == (FRAMES, 778, 3) and faces.shape == (1538, 3) and faces.max() == 777
    keypoints = hand_keypoints(mano, kinematics)
    np.testing.assert_allclose(keypoints["right"][:, 0], mano["right"]["transl"], atol=1e-6)
    assert np.linalg.norm(vertices.mean(1) - keypoints["right"].mean(1), axis=-1).max() < 0.05  # one hand, one place

    def inset(frame: Image.Image) -> np.ndarray:
        size = max(16, 96 // 3)
        pixels = np.asarray(frame)[96 - size : 96, 96 - size : 96]
        return (pixels != INSET_BACKGROUND).any(-1)

    image = Image.new("RGB", (96, 96))
    skeleton = inset(motion_frames(image, keypoints)[0])
    mesh = inset(motion_frames(image, keypoints, generated_mesh=meshes)[0])
    assert mesh.sum() > 2 * skeleton.sum()  # filled triangles cover far more of the view than bones
    # a mesh only for one of two motions shown: both fall back to skeletons, one kind of view for both
    mixed = motion_frames(image, keypoints, keypoints, truth_mesh=meshes)[0]
    np.testing.assert_array_equal(np.asarray(mixed), np.asarray(motion_frames(image, keypoints, keypoints)[0]))


def test_eval_renders_show_generated_and_true_meshes_with_mano_files(tmp_path):
    from synthetic_mano import write_synthetic_mano

    from modeling_pela.mano import SmplxHandKinematics
    from pela.visualization import INSET_BACKGROUND, ROW_PANEL_SIZE

    kinematics = SmplxHandKinematics(write_synthetic_mano(tmp_path / "mano"))
    truth = {**_still_right_hand()["right"], "betas": np.linspace(-1, 1, 10), "shape_convention": "released"}
    frame = Image.new("RGB", (64, 64))
    row = {"id": "r/0", "hands": ["right"], "has_motion_labels": True, "mano_right": truth, "first_frame": frame,
           "boundary_frames": [frame, frame], "chunk_length": 15, "fps": 15.0, "instruction": "wave"}  # fmt: skip
    generated_mano = _still_right_hand((0.0, 0.0, 0.5))
    generated = hand_keypoints(generated_mano, kinematics)

    def covered(path: Path) -> list[int]:
        """Non-background pixels of the 3-D view of each panel (generated, truth) in the first frame of the strip."""
        pixels, size = np.asarray(Image.open(path)), ROW_PANEL_SIZE // 3
        views = [pixels[ROW_PANEL_SIZE - size : ROW_PANEL_SIZE, (k + 1) * ROW_PANEL_SIZE - size : (k + 1) * ROW_PANEL_SIZE]
                 for k in range(2)]  # fmt: skip
        return [int((view != INSET_BACKGROUND).any(-1).sum()) for view in views]

    meshes = covered(render_row(row, tmp_path / "mesh.png", kinematics, generated=generated,
                                generated_mano=generated_mano))  # fmt: skip
    skeletons = covered(render_row(row, tmp_path / "skeleton.png", kinematics, generated=generated))
    assert all(m > 2 * s for m, s in zip(meshes, skeletons, strict=True))
