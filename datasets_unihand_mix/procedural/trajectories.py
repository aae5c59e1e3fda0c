"""Trajectories: keyframed wrist and finger poses of one hand (table frame), minimum-jerk between keys, and the
smooth noise that jitters hands and the wild camera."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from modeling_pela.rotations import matrix_to_quaternion, quaternion_slerp, quaternion_to_matrix

from .geometry import UP, _rot_about, _unit, rotvec_to_matrix


def min_jerk(s: np.ndarray) -> np.ndarray:
    """Minimum-jerk time profile on [0, 1]."""
    s = np.clip(s, 0.0, 1.0)
    return s**3 * (10 - 15 * s + 6 * s**2)


@dataclass
class _Key:
    time: float
    pos: np.ndarray
    rot: np.ndarray
    fingers: np.ndarray
    arc: float = 0.0  # height of the vertical bump on the segment ending here
    pivot: np.ndarray | None = None  # the segment ending here turns about the vertical axis through pivot
    turn: float = 0.0


class _Track:
    """Keyframed wrist pose and finger pose of one hand, in the table frame; minimum-jerk between keys."""

    def __init__(self, pos: np.ndarray, rot: np.ndarray, fingers: np.ndarray) -> None:
        self.keys = [_Key(0.0, pos, rot, fingers)]
        self.phases: list[tuple[str, float, float]] = []
        self.waves: list[tuple[float, float, np.ndarray, float, float]] = []

    @property
    def end(self) -> float:
        return self.keys[-1].time

    @property
    def last(self) -> _Key:
        return self.keys[-1]

    def move(
        self,
        duration: float,
        phase: str | None = None,
        pos: np.ndarray | None = None,
        rot: np.ndarray | None = None,
        fingers: np.ndarray | None = None,
        arc: float = 0.0,
    ) -> None:
        k = self.last
        self.keys.append(
            _Key(
                k.time + duration,
                k.pos if pos is None else pos,
                k.rot if rot is None else rot,
                k.fingers if fingers is None else fingers,
                arc,
            )
        )
        if phase:
            self.phases.append((phase, k.time, k.time + duration))

    def wait_until(self, time: float) -> None:
        if time > self.end:
            self.move(time - self.end)

    def turn(self, duration: float, phase: str, pivot: np.ndarray, angle: float) -> None:
        """Rotate the hand by ``angle`` about the vertical axis through ``pivot``."""
        k = self.last
        rz = _rot_about(UP, angle)
        self.keys.append(
            _Key(k.time + duration, pivot + rz @ (k.pos - pivot), rz @ k.rot, k.fingers, 0.0, pivot, angle)
        )
        self.phases.append((phase, k.time, k.time + duration))

    def wave(self, start: float, duration: float, axis: np.ndarray, amplitude: float, frequency: float) -> None:
        """Oscillate the hand about ``axis`` (through the wrist) during ``[start, start + duration]``."""
        self.waves.append((start, duration, axis, amplitude, frequency))
        self.phases.append(("wave", start, start + duration))

    def sample(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Wrist positions (T, 3), rotations (T, 3, 3) and finger poses (T, 15, 3) at ``times`` (seconds)."""
        key_times = np.array([k.time for k in self.keys])
        seg = np.clip(np.searchsorted(key_times, times, side="right"), 1, len(self.keys) - 1)
        t0, t1 = key_times[seg - 1], key_times[seg]
        lin = np.where(t1 > t0, (times - t0) / np.maximum(t1 - t0, 1e-9), 1.0).clip(0.0, 1.0)
        s = min_jerk(lin)
        pos0 = np.stack([k.pos for k in self.keys])
        fing = np.stack([k.fingers for k in self.keys])
        pos = pos0[seg - 1] + s[:, None] * (pos0[seg] - pos0[seg - 1])
        pos += UP * (np.array([k.arc for k in self.keys])[seg] * np.sin(np.pi * lin))[:, None]
        fingers = fing[seg - 1] + s[:, None, None] * (fing[seg] - fing[seg - 1])
        quats = matrix_to_quaternion(torch.as_tensor(np.stack([k.rot for k in self.keys])))
        seg_t = torch.as_tensor(seg)
        rot = quaternion_to_matrix(quaternion_slerp(quats[seg_t - 1], quats[seg_t], torch.as_tensor(s))).numpy()
        for i, k in enumerate(self.keys):
            if k.pivot is not None:
                sel = seg == i
                turns = rotvec_to_matrix(UP * (k.turn * s[sel])[:, None])
                pos[sel] = k.pivot + turns @ (self.keys[i - 1].pos - k.pivot)
        for start, duration, axis, amplitude, frequency in self.waves:
            phase = np.clip((times - start) / duration, 0.0, 1.0)
            envelope = min_jerk(4 * np.minimum(phase, 1 - phase))
            angles = amplitude * envelope * np.sin(2 * np.pi * frequency * (times - start))
            rot = rotvec_to_matrix(_unit(axis) * angles[:, None]) @ rot
        return pos, rot, fingers


def smooth_noise(rng: np.random.Generator, num_frames: int, dims: int, sigma_frames: float) -> np.ndarray:
    """(num_frames, dims) zero-mean, unit-variance Gaussian noise low-passed with a Gaussian of ``sigma_frames``."""
    radius = int(3 * sigma_frames) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    kernel /= np.sqrt((kernel**2).sum())
    white = rng.standard_normal((num_frames + 2 * radius, dims))
    return np.stack([np.convolve(white[:, d], kernel, mode="valid") for d in range(dims)], axis=1)
