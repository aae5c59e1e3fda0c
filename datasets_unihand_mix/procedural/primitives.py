"""Motion primitives: the instruction templates, the planner of one clip's hand tracks and object attachments (table
frame), the primitives (reach, grasp, lift, place, rotate, push, pinch, wave, lift_both, handover), the draw of a
clip's task and instruction (:func:`_plan`), and the object trajectories that follow the hands."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .geometry import UP, _horizontal, _rot_about, rotvec_to_matrix
from .hand_pose import (
    FLAT,
    OPEN,
    PALM_LOCAL,
    RELAXED,
    SIDES,
    _mirror,
    finger_pose,
    hand_orientation,
    pinch_closure,
    pinch_pose,
)
from .scene import REST_SPREAD, REST_WRIST, SHOULDERS, _build_scene, _Obj
from .trajectories import _Track

if TYPE_CHECKING:
    from .generator import ProceduralConfig

PRIMITIVES = ("reach", "grasp", "lift", "place", "rotate", "push", "pinch", "wave", "lift_both", "handover")
BIMANUAL_PRIMITIVES = ("lift_both", "handover")
# Paraphrase templates per primitive ({obj} = "the <colour> <shape>").
TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach": ("reach for {obj}", "move your hand to {obj}", "touch {obj}"),
    "grasp": ("grasp {obj}", "grab {obj}", "take hold of {obj}"),
    "lift": ("pick up {obj}", "lift {obj}", "raise {obj} off the table"),
    "place": ("put {obj} {dest}", "place {obj} {dest}", "move {obj} {dest}"),
    "rotate": ("rotate {obj} {turn}", "turn {obj} {turn}"),
    "open": ("open {obj}", "unscrew the lid of {obj}", "twist open {obj}"),
    "push": ("push {obj} {dir}", "slide {obj} {dir}", "shove {obj} {dir}"),
    "pinch": ("pinch {obj}", "pick up {obj} with two fingers", "pinch {obj} between thumb and index finger"),
    "wave": ("wave with your {hand} hand", "wave hello with your {hand} hand", "give a wave with the {hand} hand"),
    "lift_both": ("lift {obj} with both hands", "pick up {obj} using both hands", "raise {obj} with two hands"),
    "handover": (
        "pass {obj} from your {src} hand to your {dst} hand",
        "hand {obj} over to your {dst} hand",
        "transfer {obj} from the {src} hand to the {dst} hand",
    ),
}
DIRECTIONS: dict[str, tuple[float, float]] = {
    "to the left": (-1.0, 0.0),
    "to the right": (1.0, 0.0),
    "away from you": (0.0, 1.0),
    "towards you": (0.0, -1.0),
}


@dataclass
class _Attachment:
    obj: int
    side: str
    start: float
    end: float | None
    mode: str  # "rigid" (follows the hand) or "planar" (follows its horizontal motion and yaw, stays on the table)
    surface: float | None = None  # height of the surface the object is put down on (None: held or left as is)


class _Planner:
    """Plans one clip's hand tracks and object attachments in the table frame."""

    def __init__(self, rng: np.random.Generator, tempo: float, objects: list[_Obj]) -> None:
        self.rng = rng
        self.tempo = tempo
        self.speed = rng.uniform(0.9, 1.1)
        self.objects = objects
        self.attachments: list[_Attachment] = []
        self.tracks: dict[str, _Track] = {}
        self.rest: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for side in SIDES:
            pos = REST_WRIST[side] + rng.uniform(-1.0, 1.0, 3) * REST_SPREAD
            aim = np.array([0.0, 0.15, 0.0]) + rng.normal(0.0, 0.03, 3)
            rot = hand_orientation(side, aim - SHOULDERS[side], rng.uniform(0.1, 0.3), rng.uniform(0.15, 0.4))
            self.rest[side] = (pos, rot)
            self.tracks[side] = _Track(pos, rot, RELAXED)

    def dur(self, seconds: float) -> float:
        """A phase of nominal length ``seconds`` at this clip's speed and style tempo, jittered by +-6%."""
        return seconds * self.rng.uniform(0.94, 1.06) * self.speed / self.tempo

    def reach_time(self, side: str, wrist: np.ndarray) -> float:
        """Duration of a reach from the hand's current wrist position to ``wrist`` (grows with the distance)."""
        return self.dur(0.4 + 1.2 * float(np.linalg.norm(wrist - self.tracks[side].last.pos)))

    def approach(self, side: str, point: np.ndarray) -> np.ndarray:
        return _horizontal(point - SHOULDERS[side])

    def attach(self, obj: int, side: str, start: float, mode: str = "rigid") -> None:
        self.release(obj, start)
        self.attachments.append(_Attachment(obj, side, start, None, mode))

    def release(self, obj: int, time: float, surface: float | None = None) -> None:
        for att in self.attachments:
            if att.obj == obj and att.end is None:
                att.end = time
                if surface is not None:
                    att.surface = surface

    def wrist_for(self, side: str, rot: np.ndarray, point: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Wrist position that puts the right-hand local point ``local`` (mirrored for the left) at ``point``."""
        return point - rot @ (local * _mirror(side))

    def grasp_pose(self, side: str, obj: _Obj) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(wrist, rotation, closed fingers) of a one-hand grasp: cans from the side, the rest from the top."""
        a = self.approach(side, obj.centre)
        if obj.shape == "can":
            rot = hand_orientation(side, a, self.rng.uniform(0.05, 0.25), math.pi / 2)
            point = (
                obj.base
                + UP * obj.height * self.rng.uniform(0.45, 0.6)
                + rot @ np.array([0, 1.0, 0]) * (obj.radius + 0.006)
            )
            return self.wrist_for(side, rot, point, PALM_LOCAL), rot, finger_pose(0.72, 0.05, 0.8)
        rot = hand_orientation(side, a, self.rng.uniform(0.35, 0.6), self.rng.uniform(0.1, 0.3))
        closure = {"cube": 0.55, "ball": 0.62, "jar": 0.45}[obj.shape]
        point = obj.top + UP * 0.006 + a * 0.01
        return self.wrist_for(side, rot, point, PALM_LOCAL), rot, finger_pose(closure, 0.2, 0.7)

    def reach_and_grasp(self, side: str, index: int) -> np.ndarray:
        """Append reach, approach and grasp phases; attach the object. Returns the grasp wrist position."""
        obj, tr = self.objects[index], self.tracks[side]
        pos, rot, grip = self.grasp_pose(side, obj)
        palm_normal = -rot[:, 1]
        pre = pos - palm_normal * 0.05 + UP * 0.03 - self.approach(side, obj.centre) * 0.02
        tr.move(self.reach_time(side, pre), "reach", pre, rot, OPEN, arc=0.03)
        tr.move(self.dur(0.4), "approach", pos)
        tr.move(self.dur(0.4), "grasp", fingers=grip)
        self.attach(index, side, tr.end)
        return pos


def _primitive_reach(p: _Planner, side: str, target: int, touch: bool) -> None:
    obj, tr = p.objects[target], p.tracks[side]
    a = p.approach(side, obj.centre)
    rot = hand_orientation(side, a, p.rng.uniform(0.3, 0.5), p.rng.uniform(0.1, 0.3))
    point = obj.top + UP * 0.012 + a * 0.01
    wrist = p.wrist_for(side, rot, point, PALM_LOCAL)
    tr.move(p.reach_time(side, wrist), "reach", wrist, rot, FLAT, arc=0.03)
    tr.move(p.dur(0.45), "touch" if touch else "hold")
    if touch:
        tr.move(p.dur(1.05), "retract", *p.rest[side], RELAXED, arc=0.02)


def _primitive_lift(p: _Planner, side: str, target: int, height: float) -> None:
    """Grasp, then lift by ``height`` (no lift when 0) and hold."""
    pos = p.reach_and_grasp(side, target)
    tr = p.tracks[side]
    if height > 0:
        tr.move(p.dur(0.85), "lift", pos + UP * height - p.approach(side, pos) * 0.02)
    tr.move(p.dur(0.6), "hold")


def _primitive_place(p: _Planner, side: str, target: int, dest_xy: np.ndarray, surface: float) -> None:
    obj, tr = p.objects[target], p.tracks[side]
    pos = p.reach_and_grasp(side, target)
    shift = np.array([dest_xy[0] - obj.base[0], dest_xy[1] - obj.base[1], surface])
    height = p.rng.uniform(0.05, 0.08) + surface
    tr.move(p.dur(0.6), "lift", pos + UP * height)
    tr.move(p.dur(0.95), "transport", pos + shift + UP * (height - surface), arc=0.02)
    tr.move(p.dur(0.5), "lower", pos + shift)
    tr.move(p.dur(0.3), "release", fingers=OPEN)
    p.release(target, tr.end, surface)
    tr.move(p.dur(0.55), "retreat", pos + shift + UP * 0.07 - p.approach(side, pos) * 0.04, fingers=RELAXED)


def _primitive_rotate(p: _Planner, side: str, target: int, angle: float) -> None:
    obj, tr = p.objects[target], p.tracks[side]
    pos, rot, grip = p.grasp_pose(side, obj)
    pre_turn = _rot_about(UP, -angle / 2)
    axis = obj.base.copy()
    pos, rot = axis + pre_turn @ (pos - axis), pre_turn @ rot
    tr.move(p.reach_time(side, pos + UP * 0.05), "reach", pos + UP * 0.05, rot, OPEN, arc=0.03)
    tr.move(p.dur(0.4), "approach", pos)
    tr.move(p.dur(0.35), "grasp", fingers=grip)
    p.attach(target, side, tr.end, "planar")
    tr.turn(p.dur(1.1), "turn", axis, angle)
    tr.move(p.dur(0.3), "release", fingers=OPEN)
    p.release(target, tr.end)
    tr.move(p.dur(0.5), "retreat", tr.last.pos + UP * 0.06, fingers=RELAXED)


def _push_pose(p: _Planner, side: str, obj: _Obj, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(contact wrist, rotation, pre-contact wrist) for pushing ``obj`` along the horizontal unit ``d``."""
    extent = abs(d[0]) * obj.size[0] / 2 + abs(d[1]) * obj.size[1] / 2 if obj.shape == "box" else obj.radius
    point = obj.base + UP * max(0.03, min(obj.height / 2, 0.05)) - d * (extent + 0.014)
    if abs(d[0]) > 0.5:  # sideways: edge of the hand, palm facing the midline, thumb up
        rot = hand_orientation(side, p.approach(side, obj.centre), p.rng.uniform(0.1, 0.3), math.pi / 2)
        pre = point - d * 0.04 + UP * 0.05
    elif d[1] > 0:  # away: palm facing forward, fingers up
        rot = hand_orientation(side, d, -p.rng.uniform(0.9, 1.1))
        pre = point - d * 0.04 + UP * 0.04
    else:  # towards the body: hand reaches over the object, palm facing the viewer, fingers down
        rot = hand_orientation(side, -d, p.rng.uniform(1.1, 1.3))
        pre = point + UP * 0.1
    return p.wrist_for(side, rot, point, PALM_LOCAL), rot, p.wrist_for(side, rot, pre, PALM_LOCAL)


def _primitive_push(p: _Planner, side: str, target: int, d: np.ndarray, distance: float) -> None:
    obj, tr = p.objects[target], p.tracks[side]
    pos, rot, pre = _push_pose(p, side, obj, d)
    tr.move(p.reach_time(side, pre), "reach", pre, rot, FLAT, arc=0.03)
    tr.move(p.dur(0.4), "approach", pos)
    p.attach(target, side, tr.end, "planar")
    tr.move(p.dur(1.1), "push", pos + d * distance)
    p.release(target, tr.end)
    tr.move(p.dur(0.5), "retract", pos + d * (distance - 0.04) + UP * 0.05, fingers=RELAXED)


def _primitive_pinch(p: _Planner, side: str, target: int) -> None:
    obj, tr = p.objects[target], p.tracks[side]
    a = p.approach(side, obj.centre)
    rot = hand_orientation(side, a, p.rng.uniform(0.75, 0.95), p.rng.uniform(0.2, 0.45))
    closure, mid = pinch_closure(obj.size[0] + 0.004)
    point = obj.centre + UP * obj.height * 0.15
    pos = p.wrist_for(side, rot, point, mid)
    pre = pos + UP * 0.05 - a * 0.03
    tr.move(p.reach_time(side, pre), "reach", pre, rot, pinch_pose(0.0), arc=0.03)
    tr.move(p.dur(0.4), "approach", pos)
    tr.move(p.dur(0.4), "pinch", fingers=pinch_pose(closure))
    p.attach(target, side, tr.end)
    tr.move(p.dur(0.7), "lift", pos + UP * p.rng.uniform(0.05, 0.08))
    tr.move(p.dur(0.45), "hold")


def _primitive_wave(p: _Planner, side: str) -> None:
    tr = p.tracks[side]
    sign = 1.0 if side == "right" else -1.0
    pos = np.array([sign * p.rng.uniform(0.08, 0.14), p.rng.uniform(-0.1, -0.04), p.rng.uniform(0.14, 0.19)])
    rot = hand_orientation(side, np.array([-0.25 * sign, 1.0, 0.0]), -p.rng.uniform(0.7, 0.95))
    tr.move(p.dur(0.95), "raise", pos, rot, finger_pose(0.05, 0.7, 0.05))
    frequency = p.rng.uniform(1.5, 2.2) * p.tempo
    cycles = int(p.rng.integers(2, 4))
    duration = cycles / frequency
    tr.wave(tr.end, duration, -rot[:, 1], p.rng.uniform(0.4, 0.6), frequency)
    tr.move(duration)
    tr.move(p.dur(0.9), "lower", *p.rest[side], RELAXED)


def _primitive_lift_both(p: _Planner, target: int, height: float) -> None:
    obj = p.objects[target]
    start = p.dur(0.2)
    grasped = 0.0
    poses = {}
    for side in SIDES:
        tr = p.tracks[side]
        sign = 1.0 if side == "right" else -1.0
        rot = hand_orientation(side, np.array([0.0, 1.0, 0.0]), p.rng.uniform(0.1, 0.3), math.pi / 2)
        box_x = _rot_about(UP, obj.yaw) @ np.array([1.0, 0.0, 0.0])
        point = obj.base + UP * obj.height * p.rng.uniform(0.45, 0.6) + sign * box_x * (obj.size[0] / 2 + 0.01)
        pos = p.wrist_for(side, rot, point, PALM_LOCAL)
        poses[side] = pos
        tr.move(start + p.dur(0.05))
        pre = pos + sign * box_x * 0.06 + UP * 0.04
        tr.move(p.reach_time(side, pre), "reach", pre, rot, OPEN, arc=0.03)
        tr.move(p.dur(0.4), "approach", pos)
        tr.move(p.dur(0.3), "grasp", fingers=finger_pose(0.25, 0.1, 0.3))
        grasped = max(grasped, tr.end)
    p.attach(target, "right", grasped)
    lift = p.dur(0.95)
    back = np.array([0.0, -p.rng.uniform(0.0, 0.04), 0.0])
    for side in SIDES:
        tr = p.tracks[side]
        tr.wait_until(grasped)
        tr.move(lift, "lift", poses[side] + UP * height + back)
        tr.move(p.dur(0.55), "hold")


def _primitive_handover(p: _Planner, src: str, target: int) -> None:
    obj = p.objects[target]
    dst = "left" if src == "right" else "right"
    src_tr, dst_tr = p.tracks[src], p.tracks[dst]
    pos = p.reach_and_grasp(src, target)
    meet = np.array([p.rng.uniform(-0.02, 0.02), p.rng.uniform(-0.09, -0.05), p.rng.uniform(0.14, 0.18)])
    carry = meet - obj.centre
    src_tr.move(p.dur(0.6), "lift", pos + UP * 0.08)
    src_tr.move(p.dur(0.9), "carry", pos + carry, arc=0.02)
    dst_sign = 1.0 if dst == "right" else -1.0
    dst_rot = hand_orientation(dst, np.array([0.0, 1.0, 0.0]), p.rng.uniform(0.1, 0.3), math.pi / 2)
    point = meet + np.array([dst_sign * (obj.radius + 0.01), 0.0, 0.0])
    dst_pos = p.wrist_for(dst, dst_rot, point, PALM_LOCAL)
    dst_tr.wait_until(src_tr.end - p.dur(1.0))
    dst_tr.move(src_tr.end + p.dur(0.2) - dst_tr.end, "reach", dst_pos, dst_rot, OPEN, arc=0.02)
    dst_tr.move(p.dur(0.35), "grasp", fingers=finger_pose(0.6, 0.1, 0.7))
    p.attach(target, dst, dst_tr.end)
    src_tr.wait_until(dst_tr.end)
    src_tr.move(p.dur(0.3), "release", fingers=OPEN)
    src_tr.move(p.dur(0.9), "retract", *p.rest[src], RELAXED, arc=0.02)
    dst_tr.wait_until(src_tr.keys[-2].time)
    away = np.array([dst_sign * p.rng.uniform(0.06, 0.1), p.rng.uniform(-0.1, -0.05), 0.0]) - meet * [1, 1, 0]
    dst_tr.move(p.dur(0.9), "carry", dst_pos + away - UP * 0.03)
    dst_tr.move(p.dur(0.3), "hold")


def _choose_hand(rng: np.random.Generator, obj: _Obj) -> tuple[str, bool]:
    """The acting hand: the one on the object's side, unless the instruction names a hand (25%)."""
    if rng.random() < 0.25:
        return str(rng.choice(SIDES)), True
    return ("right" if obj.base[0] >= 0 else "left"), False


def _plan(rng: np.random.Generator, config: ProceduralConfig, tempo: float) -> tuple[_Planner, str, str, dict]:
    """Draw a primitive and a scene, plan the motion; returns (planner, primitive, instruction, task metadata)."""
    primitive = str(rng.choice(PRIMITIVES))
    objects, target = _build_scene(rng, config, primitive)
    p = _Planner(rng, tempo, objects)
    obj = objects[target] if target is not None else None
    task: dict[str, Any] = {"target": target, "hand_named": False, "direction": None, "destination": None}
    phrase = f"the {obj.colour} {obj.shape}" if obj is not None else ""
    for tr in p.tracks.values():
        tr.move(p.dur(0.1))  # reaction time
    if primitive in BIMANUAL_PRIMITIVES:
        if primitive == "lift_both":
            _primitive_lift_both(p, target, rng.uniform(0.1, 0.16))
            instruction = str(rng.choice(TEMPLATES["lift_both"])).format(obj=phrase)
        else:
            src = "right" if obj.base[0] >= 0 else "left"
            dst = "left" if src == "right" else "right"
            _primitive_handover(p, src, target)
            instruction = str(rng.choice(TEMPLATES["handover"])).format(obj=phrase, src=src, dst=dst)
        task["hands_active"] = list(SIDES)
    else:
        if primitive == "wave":
            side, named = str(rng.choice(SIDES)), True
        else:
            side, named = _choose_hand(rng, obj)
        task["hand_named"] = named
        template = str(rng.choice(TEMPLATES["open" if primitive == "rotate" and obj.shape == "jar" else primitive]))
        fields: dict[str, str] = {"obj": phrase, "hand": side}
        if primitive == "reach":
            _primitive_reach(p, side, target, touch=template.startswith("touch"))
        elif primitive in ("grasp", "lift"):
            _primitive_lift(p, side, target, 0.0 if primitive == "grasp" else rng.uniform(0.08, 0.14))
        elif primitive == "place":
            fields["dest"], dest_xy, surface = _choose_destination(rng, objects, target)
            task["destination"] = fields["dest"]
            _primitive_place(p, side, target, dest_xy, surface)
        elif primitive == "rotate":
            if obj.shape == "jar":
                angle = rng.uniform(1.2, 1.9)  # counterclockwise seen from above unscrews
            else:
                clockwise = bool(rng.random() < 0.5)
                fields["turn"] = "clockwise" if clockwise else "counterclockwise"
                angle = rng.uniform(1.35, 1.75) * (-1 if clockwise else 1)
            task["turn"] = float(angle)
            _primitive_rotate(p, side, target, angle)
        elif primitive == "push":
            name, d = _choose_push(rng, obj)
            fields["dir"] = name
            task["direction"] = name
            _primitive_push(p, side, target, d, rng.uniform(0.09, 0.14))
        elif primitive == "pinch":
            _primitive_pinch(p, side, target)
        else:
            _primitive_wave(p, side)
        instruction = template.format(**fields)
        if named and primitive != "wave":
            instruction += f" with your {side} hand"
        task["hands_active"] = [side]
    return p, primitive, instruction[0].upper() + instruction[1:] + ".", task


def _choose_destination(rng: np.random.Generator, objects: list[_Obj], target: int) -> tuple[str, np.ndarray, float]:
    """(phrase, destination base xy, surface height) of a place task: onto a plate/box if any, else a direction."""
    obj = objects[target]
    holders = [o for i, o in enumerate(objects) if i != target and o.shape in ("plate", "box")]
    if holders and rng.random() < 0.7:
        holder = holders[int(rng.integers(len(holders)))]
        return f"on the {holder.colour} {holder.shape}", holder.base[:2].copy(), holder.height
    options = []
    for name, d in DIRECTIONS.items():
        xy = obj.base[:2] + np.array(d) * 0.14
        if abs(xy[0]) < 0.22 and -0.08 < xy[1] < 0.2:
            options.append((name.replace("away from you", "further away").replace("towards you", "closer to you"), xy))
    name, xy = options[int(rng.integers(len(options)))]
    return name, xy, 0.0


def _choose_push(rng: np.random.Generator, obj: _Obj) -> tuple[str, np.ndarray]:
    names = [n for n, d in DIRECTIONS.items() if abs(obj.base[0] + 0.12 * d[0]) < 0.24]
    name = names[int(rng.integers(len(names)))]
    return name, np.array([*DIRECTIONS[name], 0.0])


def _object_trajectories(
    objects: list[_Obj], attachments: list[_Attachment], wrists: dict[str, tuple[np.ndarray, np.ndarray]], fps: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per object, (T, 3) centres and (T, 3, 3) rotations in the table frame, following the hands that hold it."""
    num_frames = len(next(iter(wrists.values()))[0])
    out = []
    for i, obj in enumerate(objects):
        pos = np.tile(obj.centre, (num_frames, 1))
        rot = np.tile(_rot_about(UP, obj.yaw), (num_frames, 1, 1))
        for att in sorted((a for a in attachments if a.obj == i), key=lambda a: a.start):
            f0 = min(int(round(att.start * fps)), num_frames - 1)
            f1 = num_frames if att.end is None else min(int(round(att.end * fps)), num_frames)
            hand_pos, hand_rot = wrists[att.side]
            if att.mode == "rigid":
                rel_pos = hand_rot[f0].T @ (pos[f0] - hand_pos[f0])
                rel_rot = hand_rot[f0].T @ rot[f0]
                pos[f0:f1] = hand_pos[f0:f1] + np.einsum("tij,j->ti", hand_rot[f0:f1], rel_pos)
                rot[f0:f1] = hand_rot[f0:f1] @ rel_rot
            else:
                delta = hand_rot[f0:f1] @ hand_rot[f0].T
                yaw = np.arctan2(delta[:, 1, 0], delta[:, 0, 0])
                offset = (pos[f0] - hand_pos[f0])[:2]
                c, s = np.cos(yaw), np.sin(yaw)
                pos[f0:f1, 0] = hand_pos[f0:f1, 0] + c * offset[0] - s * offset[1]
                pos[f0:f1, 1] = hand_pos[f0:f1, 1] + s * offset[0] + c * offset[1]
                rot[f0:f1] = rotvec_to_matrix(UP * yaw[:, None]) @ rot[f0]
            if f1 < num_frames:
                pos[f1:], rot[f1:] = pos[f1 - 1], rot[f1 - 1]
                if att.surface is not None:  # put down: rest level on the surface
                    pos[f1:, 2] = att.surface + obj.height / 2
                    rot[f1:] = _rot_about(UP, math.atan2(rot[f1 - 1, 1, 0], rot[f1 - 1, 0, 0]))
        out.append((pos, rot))
    return out
