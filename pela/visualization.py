"""Pictures and animations of hand motion: 21-joint skeletons projected over the first frame, next to a fixed 3-D view.

Keypoints are in the camera frame of the image (OpenCV: x right, y down, z forward; metres), the convention of
UniHand-Mix's MANO fields. They are projected with a pinhole camera of focal length ``focal_factor * width`` at the
image centre (0.9 is the built-in procedural camera's; pass the real one when you know it).

    hand_keypoints(mano, kinematics)                {hand: MANO fields} -> {hand: (T, 21, 3) keypoints}
    hand_meshes(mano, kinematics)                   {hand: MANO fields} -> {hand: (T, 778, 3) vertices, faces} with
                                                    the smplx back end (``--mano-dir``), None with the built-in one
    motion_frames(image, generated, truth=None)     T frames: one panel per motion (generated | truth), the skeletons
                                                    drawn over the image with the wrist's path so far, and an inset
                                                    3-D view from a fixed oblique viewpoint: the MANO mesh when given
                                                    for every motion shown, else the same skeletons
    write_animation(frames, path, fps)              ``.mp4`` (H.264 through PyAV) or ``.gif`` (Pillow)
    render_motion(image, generated, path, ...)      the above in one call; ``.png`` gives a strip of 3 frames
    render_row(row, path, ...)                      a UniHand-Mix row (``pela data view``, ``pela eval --render``):
                                                    its frames, true hands, generated hands if given, and a caption

Output size is bounded whatever the input resolution: a panel is at most the input image's size and at most
:data:`MAX_PANEL_SIZE` pixels on its longer side, unless ``panel_size`` asks for another size (e.g. to enlarge the
demo's 64-pixel frames).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from modeling_pela.mano import KEYPOINT_PARENTS, HandKinematics
from trainers.generation_eval import mano_inputs, mano_keypoints

HAND_COLOURS = {"left": (40, 120, 255), "right": (255, 60, 40)}
DEFAULT_FOCAL_FACTOR = 0.9  # datasets_unihand_mix.procedural's camera
MAX_PANEL_SIZE = 720
ROW_PANEL_SIZE = 256  # render_row's smallest default panel: a dataset's small frames are enlarged to read the caption
INSET_BACKGROUND = (235, 235, 235)
ANIMATION_SUFFIXES = (".mp4", ".gif")
# The inset's viewpoint: turned 50 degrees about the camera's vertical axis, then tilted 35 degrees down.
_YAW, _PITCH = math.radians(50.0), math.radians(-35.0)
VIEW_ROTATION = np.array(
    [[1.0, 0.0, 0.0], [0.0, math.cos(_PITCH), -math.sin(_PITCH)], [0.0, math.sin(_PITCH), math.cos(_PITCH)]]
) @ np.array([[math.cos(_YAW), 0.0, math.sin(_YAW)], [0.0, 1.0, 0.0], [-math.sin(_YAW), 0.0, math.cos(_YAW)]])

Keypoints = Mapping[str, np.ndarray]  # {"left"|"right": (T, 21, 3) camera-frame keypoints in metres}
Meshes = Mapping[str, tuple[np.ndarray, np.ndarray]]  # {"left"|"right": ((T, V, 3) vertices in metres, (F, 3) faces)}


def project(points: np.ndarray, width: int, height: int, focal_factor: float = DEFAULT_FOCAL_FACTOR) -> np.ndarray:
    """(..., 3) camera-frame points (metres) -> (..., 2) pixel coordinates of a ``width`` x ``height`` image."""
    focal = focal_factor * width
    depth = np.maximum(points[..., 2:], 1e-3)
    return points[..., :2] / depth * focal + np.array([width / 2, height / 2])


def hand_keypoints(mano: Mapping[str, Mapping[str, np.ndarray]], kinematics: HandKinematics) -> dict[str, np.ndarray]:
    """``{hand: {"hand_pose" (T, 45) or (T, 15, 3), "global_orient" (T, 3), "transl" (T, 3)}}`` -> ``{hand: (T, 21,
    3)}`` keypoints (metres, same frame as ``transl``; :func:`trainers.generation_eval.mano_keypoints`)."""
    return {hand: mano_keypoints(m, hand, len(m["transl"]), kinematics).numpy() for hand, m in mano.items()}


def hand_meshes(
    mano: Mapping[str, Mapping[str, Any]],
    kinematics: HandKinematics,
    shapes: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """``{hand: MANO fields}`` -> ``{hand: ((T, 778, 3) mesh vertices in metres, (1538, 3) faces)}`` through a back end
    with a mesh (:class:`~modeling_pela.mano.SmplxHandKinematics`); ``None`` for one without (the built-in skeleton).
    ``shapes``: ``{hand: MANO value}`` whose ``betas`` / ``shape_convention`` to use (default: the fields' own; a
    generated motion takes the true hand's)."""
    if not hasattr(kinematics, "mesh"):
        return None
    meshes = {}
    for hand, fields in mano.items():
        pose, orient, transl, betas, convention = mano_inputs(fields, len(fields["transl"]), (shapes or {}).get(hand))
        vertices = kinematics.mesh(pose, orient, transl, hand, betas, convention)
        meshes[hand] = (vertices.numpy(), kinematics.faces(hand).numpy())
    return meshes


def panel_dimensions(width: int, height: int, panel_size: int | None = None) -> tuple[int, int]:
    """(width, height) of one panel for a ``width`` x ``height`` image: its longer side ``panel_size``, or by default
    the image's longer side clipped to [16, :data:`MAX_PANEL_SIZE`], rounded down to even numbers (H.264 needs
    them)."""
    longest = max(width, height)
    target = min(max(longest, 16), MAX_PANEL_SIZE) if panel_size is None else panel_size
    if target < 16:
        raise ValueError(f"panel_size must be at least 16 pixels, got {target}")
    scale = target / longest
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def motion_frames(
    image: Image.Image | Sequence[Image.Image],
    generated: Keypoints,
    truth: Keypoints | None = None,
    *,
    focal_factor: float = DEFAULT_FOCAL_FACTOR,
    panel_size: int | None = None,
    labels: tuple[str, str] = ("generated", "truth"),
    caption: str | None = None,
    generated_mesh: Meshes | None = None,
    truth_mesh: Meshes | None = None,
) -> list[Image.Image]:
    """One RGB frame per time step of ``generated`` (and ``truth``, drawn in a second panel to the right; both need
    the same number of frames). Each panel is the image (one for all frames, or one per frame, all of one size)
    resized to :func:`panel_dimensions`, with the skeletons (left blue, right red), the wrist's path up to that frame
    and, in the lower right corner, the 3-D view (same scale and centre in every panel and frame, so the two motions
    compare directly): the MANO meshes (:func:`hand_meshes`) when given for every motion shown, else the skeletons.
    ``caption`` is written in a bar under the panels."""
    motions = [(labels[0], generated)] + ([(labels[1], truth)] if truth is not None else [])
    lengths = {name: _num_frames(motion, name) for name, motion in motions}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"generated and true motion need the same number of frames, got {lengths}")
    frames = lengths[labels[0]]
    meshes = [generated_mesh] + ([truth_mesh] if truth is not None else [])
    if any(mesh is None for mesh in meshes):
        meshes = [None] * len(meshes)  # one kind of 3-D view for every motion shown
    images = [image] * frames if isinstance(image, Image.Image) else list(image)
    if len(images) != frames or len({im.size for im in images}) != 1:
        raise ValueError(f"give one image or {frames} images of one size, got {[im.size for im in images]}")
    image = images[0]
    width, height = panel_dimensions(*image.size, panel_size)
    bases = {id(im): im.convert("RGB").resize((width, height), Image.Resampling.BILINEAR) for im in images}
    pixels = [
        {hand: project(points, *image.size, focal_factor) * (width / image.size[0], height / image.size[1])
         for hand, points in motion.items()}
        for _, motion in motions
    ]  # fmt: skip
    everything = np.concatenate([points.reshape(-1, 3) for _, motion in motions for points in motion.values()])
    inset = max(16, min(width, height) // 3)
    view = _View3D(everything, inset)
    line = max(1, round(min(width, height) / 160))
    caption_lines = _wrap(caption, width * len(motions)) if caption else []
    out = []
    for t in range(frames):
        frame = _captioned_canvas(width * len(motions), height, caption_lines)
        for index, (name, motion) in enumerate(motions):
            panel = bases[id(images[t])].copy()
            draw = ImageDraw.Draw(panel)
            for hand, points in pixels[index].items():
                _draw_skeleton(draw, points[t], HAND_COLOURS[hand], line)
                radius = line + 1
                for u, v in points[: t + 1, 0]:
                    draw.ellipse([u - radius, v - radius, u + radius, v + radius], fill=HAND_COLOURS[hand])
            panel.paste(view.render(motion, t, line, meshes[index]), (width - inset, height - inset))
            draw.text((3, 2), f"{name} {t + 1}/{frames}", fill=(255, 255, 255))
            frame.paste(panel, (index * width, 0))
        out.append(frame)
    return out


def write_animation(frames: Sequence[Image.Image], path: str | Path, fps: float = 15.0) -> Path:
    """Write ``frames`` (same size) as an MP4 (H.264, yuv420p, through PyAV) or a looping GIF, by ``path``'s suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ValueError(f"{path}: an animation must end in one of {ANIMATION_SUFFIXES}, not {suffix!r}")
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        frames[0].save(
            path, save_all=True, append_images=list(frames[1:]), duration=round(1000 / fps), loop=0, optimize=False
        )
        return path
    import av

    width, height = frames[0].size
    if width % 2 or height % 2:
        raise ValueError(f"{path}: H.264 needs even frame sizes, got {width}x{height}")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))))
        container.mux(stream.encode(None))
    return path


def render_motion(
    image: Image.Image,
    generated: Keypoints,
    path: str | Path,
    *,
    truth: Keypoints | None = None,
    fps: float = 15.0,
    focal_factor: float = DEFAULT_FOCAL_FACTOR,
    panel_size: int | None = None,
    generated_mesh: Meshes | None = None,
    truth_mesh: Meshes | None = None,
) -> Path:
    """:func:`motion_frames` written to ``path``: ``.mp4`` / ``.gif`` animate every frame, ``.png`` puts the first,
    middle and last frames side by side."""
    frames = motion_frames(
        image, generated, truth, focal_factor=focal_factor, panel_size=panel_size, generated_mesh=generated_mesh,
        truth_mesh=truth_mesh,
    )  # fmt: skip
    return _save(frames, Path(path), fps)


def _save(frames: Sequence[Image.Image], path: Path, fps: float) -> Path:
    """``frames`` as an animation, or for ``.png`` a strip of the first, middle and last."""
    if path.suffix.lower() != ".png":
        return write_animation(frames, path, fps)
    chosen = [frames[i] for i in sorted({0, len(frames) // 2, len(frames) - 1})]
    strip = Image.new("RGB", (sum(f.size[0] for f in chosen), chosen[0].size[1]), "white")
    for index, frame in enumerate(chosen):
        strip.paste(frame, (index * frame.size[0], 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path


def _captioned_canvas(width: int, height: int, lines: Sequence[str]) -> Image.Image:
    """A black ``width`` x (``height`` + caption bar) frame with ``lines`` written in the bar (an even height)."""
    frame = Image.new("RGB", (width, height + (12 * len(lines) + 4 if lines else 0)))
    draw = ImageDraw.Draw(frame)
    for index, text in enumerate(lines):
        draw.text((3, height + 2 + 12 * index), text, fill=(255, 255, 255))
    return frame


def _wrap(text: str, width: int) -> list[str]:
    """``text`` broken into lines of at most ~``width`` pixels of Pillow's default 6-pixel-wide font."""
    return textwrap.wrap(text, max(8, width // 6)) or [""]


def _num_frames(motion: Keypoints, name: str) -> int:
    if not motion:
        raise ValueError(f"the {name} motion has no hand")
    shapes = {hand: np.shape(points) for hand, points in motion.items()}
    bad = {hand: shape for hand, shape in shapes.items() if len(shape) != 3 or shape[1:] != (21, 3) or not shape[0]}
    if bad or set(shapes) - set(HAND_COLOURS):
        raise ValueError(f"the {name} motion must map 'left'/'right' to (T, 21, 3) keypoints, got {shapes}")
    lengths = {shape[0] for shape in shapes.values()}
    if len(lengths) != 1:
        raise ValueError(f"the {name} motion's hands have different numbers of frames: {shapes}")
    return lengths.pop()


def _draw_skeleton(draw: ImageDraw.ImageDraw, joints: np.ndarray, colour: tuple[int, int, int], width: int) -> None:
    for k, parent in enumerate(KEYPOINT_PARENTS):
        if parent >= 0:
            draw.line([tuple(joints[parent]), tuple(joints[k])], fill=colour, width=width)


class _View3D:
    """Orthographic view of camera-frame points from :data:`VIEW_ROTATION`, centred on and scaled to fit ``points``
    (all the motions it will draw) in a ``size`` x ``size`` square."""

    def __init__(self, points: np.ndarray, size: int) -> None:
        rotated = points @ VIEW_ROTATION.T
        low, high = rotated.min(0), rotated.max(0)
        self.centre = (low + high) / 2
        self.scale = 0.85 * size / max(float((high - low)[:2].max()), 0.05)
        self.size = size

    def pixels(self, points: np.ndarray) -> np.ndarray:
        return ((points @ VIEW_ROTATION.T - self.centre)[..., :2]) * self.scale + self.size / 2

    def render(self, motion: Keypoints, t: int, line: int, mesh: Meshes | None = None) -> Image.Image:
        inset = Image.new("RGB", (self.size, self.size), INSET_BACKGROUND)
        draw = ImageDraw.Draw(inset)
        draw.rectangle([0, 0, self.size - 1, self.size - 1], outline=(120, 120, 120))
        if mesh is not None:
            self._draw_meshes(draw, {hand: (vertices[t], faces) for hand, (vertices, faces) in mesh.items()})
        for hand, points in motion.items():
            pixels = self.pixels(points)
            if mesh is None:
                _draw_skeleton(draw, pixels[t], HAND_COLOURS[hand], line)
            draw.line([tuple(p) for p in pixels[: t + 1, 0]], fill=HAND_COLOURS[hand], width=1)
        return inset

    def _draw_meshes(self, draw: ImageDraw.ImageDraw, meshes: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Triangles of every hand's (V, 3) mesh, far ones first (painter's algorithm), shaded by how much each
        faces the viewer."""
        triangles, depths, colours = [], [], []
        for hand, (vertices, faces) in meshes.items():
            rotated = (vertices @ VIEW_ROTATION.T)[faces]  # (F, 3 corners, 3)
            normals = np.cross(rotated[:, 1] - rotated[:, 0], rotated[:, 2] - rotated[:, 0])
            facing = np.abs(normals[:, 2]) / np.maximum(np.linalg.norm(normals, axis=-1), 1e-12)
            lit = (0.35 + 0.65 * facing)[:, None]
            shade = lit * np.array(HAND_COLOURS[hand]) + (1.0 - lit) * 120  # grey where a triangle turns away
            triangles.append(self.pixels(vertices)[faces])
            depths.append(rotated[..., 2].mean(-1))
            colours.append(shade.clip(0, 255).astype(int))
        triangles, depths, colours = np.concatenate(triangles), np.concatenate(depths), np.concatenate(colours)
        for index in np.argsort(-depths):  # larger view-z is farther from the viewer
            draw.polygon([tuple(p) for p in triangles[index]], fill=tuple(colours[index]))


def row_caption(row: Mapping[str, Any]) -> str:
    """One line about a UniHand-Mix row: id, subset/split, task type, instruction, labels and curation fields."""
    labels = "no hand labels"
    if row.get("has_motion_labels"):
        labels = "estimated labels" if row.get("labels_are_estimates") else "ground-truth labels"
    curation = f" | curation: {row['curation']}" if row.get("curation") else ""
    confidences = ", ".join(
        f"{name} confidence {row[key]:.2f}"
        for name, key in (("pose", "pose_confidence"), ("detection", "detection_confidence"))
        if row.get(key) is not None
    )
    return (
        f"{row.get('id', '?')} | {row.get('subset', '?')}/{row.get('split', '?')} | {row.get('task_type', '?')} | "
        f"{row.get('instruction', '')!r} | {', '.join(filter(None, (labels, confidences)))}{curation}"
    )


def by_row(rows: Sequence[Mapping[str, Any]], values: Sequence[Any]) -> list[dict[str, Any]]:
    """Per-hand values in row order, as :func:`trainers.generation_eval.evaluate_generation` collects them (its
    ``keypoints`` pairs, its generated ``motions``), regrouped as one ``{hand: value}`` per row of ``rows`` (the scored
    rows, e.g. :func:`pela.training_data.evaluation_rows`)."""
    needed = sum(len(row["hands"]) for row in rows)
    if needed != len(values):
        raise ValueError(f"{len(rows)} rows hold {needed} hands but {len(values)} per-hand values were given")
    out, start = [], 0
    for row in rows:
        out.append({hand: values[start + k] for k, hand in enumerate(row["hands"])})
        start += len(row["hands"])
    return out


def render_row(
    row: Mapping[str, Any],
    path: str | Path,
    kinematics: HandKinematics,
    *,
    generated: Keypoints | None = None,
    generated_mano: Mapping[str, Mapping[str, Any]] | None = None,
    fps: float | None = None,
    focal_factor: float = DEFAULT_FOCAL_FACTOR,
    panel_size: int | None = None,
    caption: str | None = None,
) -> Path:
    """Render a UniHand-Mix row to ``path`` (``.mp4``, ``.gif`` or ``.png``, see :func:`render_motion`).

    Without ``generated``: the row's frames (the first frame and each chunk-boundary frame, each shown for its chunk)
    with the true hands drawn over them when the row is labelled, at the row's fps. With ``generated`` (``{hand: (T,
    21, 3)}``, T frames from the first): generated next to true hands over the first frame, the generation condition.
    With a kinematics back end that has a mesh (``--mano-dir``), the 3-D view shows MANO meshes: the true hands', and
    the generated ones' when their MANO fields ``generated_mano`` (``{hand: fields}``) are given (else skeletons for
    both); generated hands take the true hands' shape.
    ``caption`` defaults to :func:`row_caption`; ``panel_size`` to the frame's longer side, at least
    :data:`ROW_PANEL_SIZE` (small dataset frames are enlarged so that the caption stays readable)."""
    caption = row_caption(row) if caption is None else caption
    if panel_size is None:
        panel_size = min(max(*row["first_frame"].size, ROW_PANEL_SIZE), MAX_PANEL_SIZE)
    fps = float(row.get("fps") or 15.0) if fps is None else fps
    boundary = list(row.get("boundary_frames") or [row["first_frame"]])
    chunk_length = int(row.get("chunk_length") or 15)
    labelled = bool(row.get("has_motion_labels"))
    truth = truth_mesh = None
    if labelled:
        mano = {hand: row[f"mano_{hand}"] for hand in row["hands"]}
        truth, truth_mesh = hand_keypoints(mano, kinematics), hand_meshes(mano, kinematics)
    if generated is not None:
        if truth is None:
            raise ValueError(f"row {row.get('id')!r} has no hand labels to show next to the generated motion")
        frames = _num_frames(generated, "generated")
        truth = {hand: points[:frames] for hand, points in truth.items()}
        generated_mesh = None
        if truth_mesh is not None:
            truth_mesh = {hand: (vertices[:frames], faces) for hand, (vertices, faces) in truth_mesh.items()}
            if generated_mano is not None:
                generated_mesh = hand_meshes(generated_mano, kinematics, shapes=mano)
        animation = motion_frames(
            row["first_frame"], generated, truth, focal_factor=focal_factor, panel_size=panel_size, caption=caption,
            generated_mesh=generated_mesh, truth_mesh=truth_mesh,
        )  # fmt: skip
    elif truth is not None:
        frames = _num_frames(truth, "true")
        images = [boundary[min(t // chunk_length, len(boundary) - 1)] for t in range(frames)]
        animation = motion_frames(
            images, truth, focal_factor=focal_factor, panel_size=panel_size, labels=("truth", ""), caption=caption,
            generated_mesh=truth_mesh,
        )  # fmt: skip
    else:  # video-only row: its frames and caption
        width, height = panel_dimensions(*boundary[0].size, panel_size)
        lines = _wrap(caption, width)
        animation = []
        for image in boundary:
            frame = _captioned_canvas(width, height, lines)
            frame.paste(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
            animation.extend([frame] * chunk_length)
    return _save(animation, Path(path), fps)
