"""Fast PIL/numpy rendering of procedural clips (:mod:`datasets_unihand_mix.procedural`).

A frame is drawn at ``appearance.supersample`` times the output size and box-filtered down:

1. background: every pixel's ray is intersected with the table plane (uniform table for lab clips; a textured,
   cluttered table and a wall for wild clips), then object and hand shadows are cast along the light direction;
2. objects (shaded cuboids, cylinders, balls) and hand parts (forearm, palm, 15 finger bones drawn as thick
   skin-coloured capsules) are painted far to near (painter's algorithm on each part's mean depth);
3. wild clips get random occluders, colour gain, a brightness gradient, flicker and sensor noise.

Everything random derives from ``clip.appearance.seed`` (and the frame index), so a frame is a deterministic
function of the clip.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .procedural.scene import SHOULDERS

if TYPE_CHECKING:
    from .procedural.generator import ProceduralClip
    from .procedural.scene import SceneObject

TABLE_EXTENT = ((-0.7, 0.7), (-0.5, 0.9))  # X and Y range of the table top (table frame, metres)
_TEXTURE_SIZE = 384
# Capsule radii (m) of the finger bones, base to tip, and of the forearm (wrist end, elbow end).
_FINGER_RADII = (0.0108, 0.0098, 0.009)
_THUMB_RADII = (0.0125, 0.0115, 0.0102)
_FOREARM_RADII = (0.022, 0.032)
_CHAINS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
_NEAR = 0.03
_STATIC_BACKGROUNDS: dict[tuple, np.ndarray] = {}

RGB = tuple[int, int, int]
_Item = tuple[float, Callable[[ImageDraw.ImageDraw], None]]


def _shade(rgb: Sequence[float], factor: float) -> RGB:
    return tuple(int(min(255.0, max(0.0, c * factor))) for c in rgb)  # type: ignore[return-value]


def _convex_hull(points: np.ndarray) -> list[tuple[float, float]]:
    """Convex hull (monotone chain) of (N, 2) points, as a PIL polygon."""
    pts = sorted(map(tuple, np.round(points, 2).tolist()))
    if len(pts) < 3:
        return pts

    def half(seq: list) -> list:
        out: list = []
        for p in seq:
            while (
                len(out) >= 2
                and (out[-1][0] - out[-2][0]) * (p[1] - out[-2][1]) - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])
                <= 0
            ):
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return lower[:-1] + upper[:-1]


class _View:
    """The camera of one frame at the drawing resolution: canonical points -> frame camera -> pixels."""

    def __init__(self, clip: ProceduralClip, t: int) -> None:
        cam = clip.camera
        s = clip.appearance.supersample
        self.scale = s
        self.width, self.height = cam.width * s, cam.height * s
        self.rot, self.tau = cam.frame_pose(t)
        k = cam.intrinsics.astype(np.float64).copy()
        k[:2] *= s
        k[:2, 2] += (s - 1) / 2
        self.k = k
        self.focal = float(k[0, 0])
        # table frame -> this frame's camera
        self.table_rot = self.rot @ cam.table_to_camera[:3, :3]
        self.table_t = self.rot @ cam.table_to_camera[:3, 3] + self.tau
        self.canon_to_table_rot = cam.table_to_camera[:3, :3].T
        self.canon_to_table_t = -self.canon_to_table_rot @ cam.table_to_camera[:3, 3]

    def cam(self, canonical: np.ndarray) -> np.ndarray:
        return canonical @ self.rot.T + self.tau

    def px(self, cam_points: np.ndarray) -> np.ndarray:
        z = np.maximum(cam_points[..., 2:], _NEAR)
        return (cam_points[..., :2] / z) * [self.k[0, 0], self.k[1, 1]] + self.k[:2, 2]

    def table_to_cam(self, table_points: np.ndarray) -> np.ndarray:
        return table_points @ self.table_rot.T + self.table_t

    def to_table(self, canonical: np.ndarray) -> np.ndarray:
        return canonical @ self.canon_to_table_rot.T + self.canon_to_table_t

    def radius(self, metres: float, depth: float) -> float:
        return self.focal * metres / max(depth, _NEAR)


# ----------------------------------------------------------------------------------------------------------------
# Background


@functools.lru_cache(maxsize=8)
def _table_texture(seed: int, table_rgb: RGB, clutter: int) -> np.ndarray:
    """(N, N, 3) uint8 texture of a wild table top: colour variation, grain and clutter shapes."""
    n = _TEXTURE_SIZE
    base = np.array(table_rgb, dtype=np.float32)
    rng = np.random.default_rng([seed, 1])
    low = np.asarray(Image.fromarray(rng.uniform(0, 255, (6, 6)).astype(np.uint8)).resize((n, n), Image.BILINEAR))
    yy, xx = np.mgrid[0:n, 0:n] / n
    angle = rng.uniform(0, np.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    grain = np.sin(2 * np.pi * (rng.uniform(20, 60) * along + 0.8 * low / 255.0))
    tex = base * (0.85 + 0.3 * low[..., None] / 255.0 + 0.07 * grain[..., None])
    img = Image.fromarray(np.clip(tex, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    px_per_m = n / (TABLE_EXTENT[0][1] - TABLE_EXTENT[0][0])
    for _ in range(clutter):
        hsv = (int(rng.integers(256)), int(rng.integers(0, 110)), int(rng.integers(40, 250)))
        colour = Image.new("HSV", (1, 1), hsv).convert("RGB").getpixel((0, 0))
        cx, cy = rng.uniform(0, n, 2)
        size = rng.uniform(0.02, 0.15) * px_per_m
        kind = rng.integers(3)
        if kind == 0:  # rotated rectangle (paper, book, tool)
            a = rng.uniform(0, np.pi)
            w, h = size, size * rng.uniform(0.2, 1.0)
            corners = [(-w, -h), (w, -h), (w, h), (-w, h)]
            draw.polygon(
                [(cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)) for x, y in corners],
                fill=colour,
            )
        elif kind == 1:  # ellipse (stain, lid, coaster)
            draw.ellipse([cx - size, cy - size * rng.uniform(0.5, 1.0), cx + size, cy + size], fill=colour)
        else:  # cable
            pts = [(cx, cy)]
            for _ in range(4):
                pts.append((pts[-1][0] + rng.normal(0, size), pts[-1][1] + rng.normal(0, size)))
            draw.line(pts, fill=colour, width=int(rng.integers(2, 6)), joint="curve")
    return np.asarray(img)


def _wall_colour(clip: ProceduralClip) -> np.ndarray:
    if clip.style == "lab":
        return np.array([222.0, 224.0, 228.0], dtype=np.float32)
    rng = np.random.default_rng([clip.appearance.seed, 2])
    return rng.uniform(90, 230, 3).astype(np.float32)


def _background(clip: ProceduralClip, view: _View) -> np.ndarray:
    """(H, W, 3) float32 background: table top where the pixel ray hits it, wall elsewhere."""
    u, v = np.meshgrid(np.arange(view.width, dtype=np.float64), np.arange(view.height, dtype=np.float64))
    rays_cam = np.stack([(u - view.k[0, 2]) / view.k[0, 0], (v - view.k[1, 2]) / view.k[1, 1], np.ones_like(u)], -1)
    rays = rays_cam @ view.table_rot  # camera -> table directions (R^T applied on the right)
    centre = -view.table_rot.T @ view.table_t
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = -centre[2] / rays[..., 2]
    hit = centre[:2] + lam[..., None] * rays[..., :2]
    (x0, x1), (y0, y1) = TABLE_EXTENT
    on_table = (lam > 0) & (hit[..., 0] > x0) & (hit[..., 0] < x1) & (hit[..., 1] > y0) & (hit[..., 1] < y1)
    app = clip.appearance
    if clip.style == "lab":
        table = np.broadcast_to(np.array(app.table_rgb, dtype=np.float32), on_table.shape + (3,))
    else:
        tex = _table_texture(app.seed, tuple(app.table_rgb), app.clutter)
        n = tex.shape[0]
        ix = np.clip(np.nan_to_num((hit[..., 0] - x0) / (x1 - x0) * n), 0, n - 1).astype(np.int64)
        iy = np.clip(np.nan_to_num((y1 - hit[..., 1]) / (y1 - y0) * n), 0, n - 1).astype(np.int64)
        table = tex[iy, ix].astype(np.float32)
    wall = _wall_colour(clip) * (0.8 + 0.2 * (v / view.height))[..., None]
    return np.where(on_table[..., None], table, wall).astype(np.float32)


def _static_background(clip: ProceduralClip, view: _View) -> np.ndarray:
    """Background of a clip whose camera does not move (lab), shared by all clips with the same camera."""
    cam = clip.camera
    key = (cam.intrinsics.tobytes(), cam.table_to_camera.tobytes(), tuple(clip.appearance.table_rgb), view.scale)
    if key not in _STATIC_BACKGROUNDS:
        if len(_STATIC_BACKGROUNDS) >= 8:
            _STATIC_BACKGROUNDS.clear()
        _STATIC_BACKGROUNDS[key] = _background(clip, view)
    return _STATIC_BACKGROUNDS[key]


def _shadow_mask(clip: ProceduralClip, view: _View, t: int) -> Image.Image:
    """Soft 'L' mask of object and hand shadows on the table (cast along the light direction)."""
    light = clip.appearance.light
    mask = Image.new("L", (view.width, view.height), 0)
    draw = ImageDraw.Draw(mask)

    def on_table(canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        table = view.to_table(canonical)
        height = np.maximum(table[..., 2:], 0.0)
        return view.px(view.table_to_cam(table - light * height / light[2])), height[..., 0]

    for obj in clip.objects:
        pts, height = on_table(_object_points(obj, t))
        strength = 1.0 - min(0.8, float(height.min()) * 4)
        draw.polygon(_convex_hull(pts), fill=int(200 * strength))
    for joints in clip.joints().values():
        pts, height = on_table(joints[t])
        strength = 1.0 - min(0.85, float(height[0]) * 3.5)
        fill = int(200 * strength)
        width = max(1, int(view.radius(0.018, 0.5)))
        draw.polygon([tuple(pts[k]) for k in (0, 5, 9, 13, 17)], fill=fill)
        for chain in _CHAINS:
            draw.line([tuple(pts[0])] + [tuple(pts[k]) for k in chain], fill=fill, width=width, joint="curve")
    return mask.filter(ImageFilter.GaussianBlur(1.5 * view.scale))


# ----------------------------------------------------------------------------------------------------------------
# Objects


def _ring(radius: float, z: float, count: int = 20) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, count, endpoint=False)
    return np.stack([radius * np.cos(a), radius * np.sin(a), np.full(count, z)], -1)


_CUBE_SIGNS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
_CUBE_FACES = (  # (outward normal in the object frame, corner indices in order)
    ((-1, 0, 0), (0, 1, 3, 2)),
    ((1, 0, 0), (4, 6, 7, 5)),
    ((0, -1, 0), (0, 4, 5, 1)),
    ((0, 1, 0), (2, 3, 7, 6)),
    ((0, 0, -1), (0, 2, 6, 4)),
    ((0, 0, 1), (1, 5, 7, 3)),
)


def _object_local_points(obj: SceneObject) -> np.ndarray:
    """Silhouette sample points in the object frame (for shadows)."""
    sx, sy, sz = (float(v) for v in obj.size)
    if obj.shape in ("cube", "box"):
        return _CUBE_SIGNS * [sx / 2, sy / 2, sz / 2]
    if obj.shape == "ball":
        return np.concatenate([_ring(sx / 2, 0.0, 12), _ring(sx / 3, -sx / 3, 8), _ring(sx / 3, sx / 3, 8)])
    return np.concatenate([_ring(sx / 2, -sz / 2, 12), _ring(sx / 2, sz / 2, 12)])


def _object_points(obj: SceneObject, t: int) -> np.ndarray:
    return _object_local_points(obj) @ obj.rotations[t].T.astype(np.float64) + obj.positions[t]


def _object_item(obj: SceneObject, t: int, view: _View, light_cam: np.ndarray) -> _Item:
    rot = view.rot @ obj.rotations[t].astype(np.float64)
    centre = view.cam(obj.positions[t].astype(np.float64))
    rgb = obj.rgb
    sx, sy, sz = (float(v) for v in obj.size)

    def lit(normal: np.ndarray) -> float:
        return 0.5 + 0.55 * max(0.0, float(normal @ light_cam))

    def to_px(local: np.ndarray) -> np.ndarray:
        return view.px(local @ rot.T + centre)

    def facing(normal: np.ndarray, point: np.ndarray) -> bool:
        return float(normal @ point) < 0

    def draw_cuboid(draw: ImageDraw.ImageDraw) -> None:
        corners = _CUBE_SIGNS * [sx / 2, sy / 2, sz / 2]
        pix = to_px(corners)
        faces = []
        for normal, idx in _CUBE_FACES:
            n = rot @ np.array(normal, dtype=np.float64)
            mid = centre + rot @ corners[list(idx)].mean(0)
            if facing(n, mid):
                faces.append((float(mid[2]), n, idx))
        for _, n, idx in sorted(faces, key=lambda f: -f[0]):
            colour = _shade(rgb, lit(n))
            draw.polygon([tuple(pix[i]) for i in idx], fill=colour, outline=_shade(colour, 0.7))

    def draw_cylinder(draw: ImageDraw.ImageDraw) -> None:
        radius, half = sx / 2, sz / 2
        count = 20
        bottom, top = _ring(radius, -half, count), _ring(radius, half, count)
        pb, pt = to_px(bottom), to_px(top)
        side_normals = (bottom * [1, 1, 0] / radius) @ rot.T
        for i in sorted(range(count), key=lambda i: -float((centre + rot @ bottom[i])[2])):
            j = (i + 1) % count
            n = (side_normals[i] + side_normals[j]) / 2
            if facing(n, centre + rot @ ((bottom[i] + bottom[j]) / 2)):
                colour = _shade(rgb, 0.85 * lit(n))
                draw.polygon([tuple(pb[i]), tuple(pb[j]), tuple(pt[j]), tuple(pt[i])], fill=colour, outline=colour)
        up = rot[:, 2]
        cap_visible = facing(up, centre + up * half)
        cap, cap_px = (top, pt) if cap_visible else (bottom, pb)
        cap_rgb = {"can": (190, 192, 198), "jar": (232, 230, 222)}.get(obj.shape, rgb)
        colour = _shade(cap_rgb, lit(up if cap_visible else -up))
        if obj.shape == "jar":  # lid band
            lid = to_px(_ring(radius * 1.02, half * 0.5, count))
            draw.polygon(_convex_hull(np.concatenate([lid, pt])), fill=_shade(cap_rgb, 0.8))
        draw.polygon([tuple(p) for p in cap_px], fill=colour, outline=_shade(colour, 0.75))
        if cap_visible and obj.shape != "jar":
            inner = to_px(cap * [0.7, 0.7, 1.0])
            draw.polygon([tuple(p) for p in inner], outline=_shade(colour, 0.8))
        if cap_visible and obj.shape in ("jar", "can"):  # a mark on the lid shows rotation
            mark = to_px(np.array([[0.0, 0.0, half], [radius * 0.8, 0.0, half]]))
            draw.line([tuple(mark[0]), tuple(mark[1])], fill=_shade(colour, 0.55), width=max(1, view.scale))

    def draw_ball(draw: ImageDraw.ImageDraw) -> None:
        c = view.px(centre)
        r = view.radius(sx / 2, float(centre[2]))
        toward = np.array([light_cam[0], light_cam[1]])
        toward = toward / (np.linalg.norm(toward) + 1e-9)
        for offset, rad, colour in (
            (0.0, 1.0, _shade(rgb, 0.55)),
            (0.22, 0.75, _shade(rgb, 0.85)),
            (0.42, 0.4, _shade(rgb, 1.05)),
            (0.55, 0.14, _shade([(c_ + 255) / 2 for c_ in rgb], 1.0)),
        ):
            x, y = c + toward * offset * r
            draw.ellipse([x - rad * r, y - rad * r, x + rad * r, y + rad * r], fill=colour)

    drawer = draw_cuboid if obj.shape in ("cube", "box") else draw_ball if obj.shape == "ball" else draw_cylinder
    return float(centre[2]), drawer


# ----------------------------------------------------------------------------------------------------------------
# Hands


def _capsule(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, width: float, fill: RGB, edge: RGB) -> None:
    w_out, w_in = max(1, int(round(width + 2))), max(1, int(round(width)))
    for colour, w in ((edge, w_out), (fill, w_in)):
        draw.line([tuple(a), tuple(b)], fill=colour, width=w)
        for p in (a, b):
            draw.ellipse([p[0] - w / 2, p[1] - w / 2, p[0] + w / 2, p[1] + w / 2], fill=colour)


def _hand_items(clip: ProceduralClip, side: str, t: int, view: _View) -> list[_Item]:
    joints = view.cam(clip.joints()[side][t])
    pix = view.px(joints)
    depth = joints[:, 2]
    skin = clip.appearance.skin_rgb[side]
    edge = _shade(skin, 0.72)
    items: list[_Item] = []

    # forearm towards the shoulder: a skin part, then the sleeve (the wrist end is left open: the palm joins there)
    shoulder = view.cam(clip.camera.table_to_canonical(SHOULDERS[side]))
    axis = shoulder - joints[0]
    axis /= np.linalg.norm(axis)
    grow = (_FOREARM_RADII[1] - _FOREARM_RADII[0]) / 0.3
    for (d0, d1), colour in (((0.01, 0.09), skin), ((0.09, 0.3), tuple(clip.appearance.sleeve_rgb))):
        p0, p1 = joints[0] + axis * d0, joints[0] + axis * d1
        if p1[2] < _NEAR + 0.02:  # clip at the near plane
            p1 = p0 + (p1 - p0) * max(0.0, (p0[2] - _NEAR - 0.02) / max(p0[2] - p1[2], 1e-6))
        a, b = view.px(p0), view.px(p1)
        ra, rb = view.radius(_FOREARM_RADII[0] + d0 * grow, p0[2]), view.radius(_FOREARM_RADII[0] + d1 * grow, p1[2])
        normal = np.array([-(b - a)[1], (b - a)[0]])
        normal /= np.linalg.norm(normal) + 1e-9
        quad = [tuple(a + normal * ra), tuple(b + normal * rb), tuple(b - normal * rb), tuple(a - normal * ra)]

        def draw_forearm(draw: ImageDraw.ImageDraw, quad=quad, colour=colour) -> None:
            draw.polygon(quad, fill=colour, outline=_shade(colour, 0.72))

        items.append((float((p0[2] + p1[2]) / 2), draw_forearm))

    # palm: its facing side is lighter than the back of the hand
    across = joints[5] - joints[17]
    across /= np.linalg.norm(across)
    palm3d = np.stack(
        [joints[0] + across * 0.022, joints[5], joints[9], joints[13], joints[17], joints[0] - across * 0.02]
    )
    normal = np.cross(joints[5] - joints[0], joints[17] - joints[0]) * (1.0 if side == "right" else -1.0)
    palm_visible = float(normal @ -palm3d.mean(0)) > 0
    palm_colour = _shade(skin, 1.07) if palm_visible else _shade(skin, 0.93)
    palm_px = [tuple(p) for p in view.px(palm3d)]
    thenar_px = [tuple(view.px(palm3d[0])), tuple(pix[1]), tuple(pix[2]), tuple(pix[5])]

    def draw_palm(draw: ImageDraw.ImageDraw) -> None:
        draw.polygon(thenar_px, fill=palm_colour, outline=edge)
        draw.polygon(palm_px, fill=palm_colour, outline=edge)

    items.append((float(palm3d[:, 2].mean()), draw_palm))

    for f, chain in enumerate(_CHAINS):
        radii = _THUMB_RADII if f == 0 else _FINGER_RADII
        for bone, (i, j) in enumerate(zip(chain[:-1], chain[1:], strict=True)):
            d = float((depth[i] + depth[j]) / 2)
            width = 2 * view.radius(radii[bone], d)
            a, b = pix[i], pix[j]
            items.append((d, lambda draw, a=a, b=b, w=width: _capsule(draw, a, b, w, skin, edge)))
    return items


# ----------------------------------------------------------------------------------------------------------------
# Frames


def _occluder_shapes(clip: ProceduralClip, view: _View, t: int) -> list[tuple[list[tuple[float, float]], RGB]]:
    """Random foreground shapes entering from the image border (wild clips): (polygon in drawing pixels, colour)."""
    rng = np.random.default_rng([clip.appearance.seed, 3])
    size = np.array([view.width, view.height], dtype=np.float64)
    shift = view.rot[:2, 2] * view.focal  # camera shake moves the foreground too
    shapes = []
    for _ in range(clip.appearance.occluders):
        edge = rng.integers(4)
        anchor = rng.uniform(0, 1, 2)
        anchor[edge % 2] = float(edge // 2)
        radius = rng.uniform(0.12, 0.28) * size[0]
        drift = rng.normal(0, 0.08, 2) * size[0] * t / clip.num_frames
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        radii = radius * rng.uniform(0.6, 1.0, 7)
        centre = anchor * size + drift + shift
        poly = [tuple(centre + r * np.array([math.cos(a), math.sin(a)])) for a, r in zip(angles, radii, strict=True)]
        shapes.append((poly, tuple(int(c) for c in rng.integers(10, 140, 3))))
    return shapes


def occluder_mask(clip: ProceduralClip, t: int) -> np.ndarray:
    """(H, W) bool mask of the occluders drawn over frame ``t`` (all False for lab clips)."""
    view = _View(clip, t)
    mask = Image.new("1", (view.width, view.height), 0)
    if clip.style == "wild":
        draw = ImageDraw.Draw(mask)
        for poly, _ in _occluder_shapes(clip, view, t):
            draw.polygon(poly, fill=1)
    return np.asarray(mask.resize((clip.camera.width, clip.camera.height), Image.NEAREST), dtype=bool)


def render_frame(clip: ProceduralClip, t: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB image of frame ``t`` (use :meth:`ProceduralClip.render_frame`, which caches)."""
    view = _View(clip, t)
    wild = clip.style == "wild"
    background = _background(clip, view) if wild else _static_background(clip, view)
    shadow = np.asarray(_shadow_mask(clip, view, t), dtype=np.float32)[..., None] / 255.0
    image = Image.fromarray(np.clip(background * (1 - 0.45 * shadow), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)

    light_cam = view.rot @ clip.camera.table_to_camera[:3, :3] @ clip.appearance.light
    items: list[_Item] = [_object_item(obj, t, view, light_cam) for obj in clip.objects]
    for side in clip.hands:
        items.extend(_hand_items(clip, side, t, view))
    for _, paint in sorted(items, key=lambda item: -item[0]):
        paint(draw)
    if wild:
        for poly, colour in _occluder_shapes(clip, view, t):
            draw.polygon(poly, fill=colour)
    image = image.reduce(view.scale) if view.scale > 1 else image
    if not wild:
        return np.asarray(image)
    rng = np.random.default_rng([clip.appearance.seed, 4, t])
    pixels = np.asarray(image, dtype=np.float32)
    h, w = pixels.shape[:2]
    g = np.random.default_rng([clip.appearance.seed, 5]).uniform(-0.25, 0.25, 2)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w) - 0.5
    brightness = (1 + g[0] * xx + g[1] * yy) * (1 + rng.normal(0, 0.03))
    pixels = pixels * np.asarray(clip.appearance.gain, dtype=np.float32) * brightness[..., None]
    pixels += rng.normal(0, clip.appearance.noise_std, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def preview_grid(clips: Sequence[ProceduralClip], border: int = 2) -> np.ndarray:
    """(rows * H, 3 * W, 3) uint8 grid: one row per clip with its first, middle and last frame."""
    rows = []
    for clip in clips:
        frames = clip.render_frames([0, clip.num_frames // 2, clip.num_frames - 1])
        frames = np.pad(frames, ((0, 0), (border, border), (border, border), (0, 0)), constant_values=255)
        rows.append(np.concatenate(list(frames), axis=1))
    return np.concatenate(rows, axis=0)
