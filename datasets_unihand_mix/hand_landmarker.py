"""Per-frame hand keypoints from video frames: the :class:`HandKeypointModel` protocol and MediaPipe's hand landmarker.

A keypoint model maps frames ``(N, H, W, 3)`` ``uint8`` RGB to :class:`HandKeypoints`, at most one hand per side and
frame, in the 21-keypoint order of :mod:`modeling_pela.mano` (0 wrist, 1-4 thumb, 5-8 index, 9-12 middle, 13-16 ring,
17-20 pinky; MediaPipe uses the same order):

* ``image``: (N, 2, 21, 2) float32 pixel coordinates (x right, y down), side axis ``(left, right)``;
* ``world``: (N, 2, 21, 3) float32 metric coordinates in metres, origin at the hand's centre, axes parallel to the
  camera's (x right, y down, z forward);
* ``scores``: (N, 2) float32 confidence of each side's hand in each frame (0 where none was found).

:class:`MediaPipeHandLandmarker` (the default) runs MediaPipe's hand landmarker (a palm detector plus a 21-keypoint
regressor, ~25 ms per 640x360 frame on one CPU core) fully offline from a ``.task`` bundle built at set-up
(``scripts/hand_landmarker_model.sh``). Its score is MediaPipe's handedness score. Its handedness labels are taken as
the hand's true side (checked on the test fixture video: a person's right hand, labelled right, and the kinematic fit
of a right hand is the closer one); for mirrored (selfie) video pass ``mirrored=True`` to swap them. MediaPipe gives
one score per hand, so the curation's detection and pose confidences of a MediaPipe hand are the same number; a
plugged-in model with its own pose score makes them independent. Plug in another model (HaMeR, WiLoR, ...) by writing
a class with ``name``, ``__call__`` and ``close`` that returns :class:`HandKeypoints`.

MediaPipe's native INFO/warning lines (LiteRT set-up, ``W0000`` alignment notes) are kept off the console: its C++
logging cannot be configured from Python, so :func:`quiet_native_logs` holds file descriptor 2 while MediaPipe runs
and passes on only other lines (errors). Set ``PELA_MEDIAPIPE_LOGS=1`` to see everything.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from modeling_pela.hand_motion import HAND_SIDES

NUM_KEYPOINTS = 21
MODEL_ENV = "PELA_HAND_LANDMARKER"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / ".models" / "hand_landmarker.task"
LOGS_ENV = "PELA_MEDIAPIPE_LOGS"
NATIVE_NOISE = re.compile(r"^(INFO: |WARNING: |[IW]\d{4} )")


@dataclass
class HandKeypoints:
    """Keypoints of both sides over N frames (shapes, units and axes in the module docstring)."""

    image: np.ndarray
    world: np.ndarray
    scores: np.ndarray
    width: int
    height: int
    model: str

    def __post_init__(self) -> None:
        n = len(self.scores)
        expected = {"image": (n, 2, NUM_KEYPOINTS, 2), "world": (n, 2, NUM_KEYPOINTS, 3), "scores": (n, 2)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value.shape != shape:
                raise ValueError(
                    f"{self.model}: HandKeypoints field '{name}' has shape {value.shape}, expected {shape}"
                )

    @property
    def num_frames(self) -> int:
        return len(self.scores)

    def present(self) -> np.ndarray:
        """(N, 2) bool: a hand of that side was found in that frame."""
        return self.scores > 0


class HandKeypointModel(Protocol):
    name: str

    def __call__(self, frames: np.ndarray) -> HandKeypoints: ...

    def close(self) -> None: ...


def default_model_path() -> Path:
    """``$PELA_HAND_LANDMARKER`` if set, else ``<project>/.models/hand_landmarker.task`` (built by ``make env``)."""
    return Path(os.environ.get(MODEL_ENV) or DEFAULT_MODEL)


def check_model_file(path: str | os.PathLike) -> Path:
    """``path`` if it is a readable ``.task`` bundle (a zip archive).

    Raises:
        FileNotFoundError: it does not exist; ValueError: it is not a zip archive (both name the file and the fix).
    """
    path = Path(path)
    fix = (
        f"run `make env` (scripts/hand_landmarker_model.sh builds it from the mediapipe 0.10.14 wheel) or set "
        f"{MODEL_ENV} to a hand_landmarker.task file"
    )
    if not path.is_file():
        raise FileNotFoundError(f"hand landmarker model {path} not found: {fix}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"hand landmarker model {path} is not a .task bundle (not a zip archive; corrupt?): {fix}")
    return path


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Holds what native code writes to file descriptor 2 and passes on the lines that are not INFO/warnings
    (module docstring); does nothing when ``$PELA_MEDIAPIPE_LOGS`` is set."""
    if os.environ.get(LOGS_ENV):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines() if not NATIVE_NOISE.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


class MediaPipeHandLandmarker:
    """MediaPipe's hand landmarker in image mode (every frame on its own, so results do not depend on batching).

    Args:
        model_path: the ``.task`` bundle (default :func:`default_model_path`).
        num_hands: hands looked for per frame.
        min_detection_confidence / min_presence_confidence: MediaPipe's own thresholds (its defaults, 0.5).
        mirrored: the frames are mirrored (selfie camera): swap MediaPipe's handedness labels.

    Use as a context manager or call :meth:`close` (MediaPipe 1.2 raises at interpreter exit otherwise).
    """

    name = "mediapipe-hand-landmarker"

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        num_hands: int = 2,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        mirrored: bool = False,
    ) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        path = check_model_file(model_path if model_path is not None else default_model_path())
        options = vision.HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.IMAGE,
            num_hands=num_hands,
            min_hand_detection_confidence=min_detection_confidence,
            min_hand_presence_confidence=min_presence_confidence,
        )
        try:
            with quiet_native_logs():
                self.landmarker = vision.HandLandmarker.create_from_options(options)
        except RuntimeError as err:
            raise ValueError(
                f"hand landmarker model {path} cannot be loaded ({err}): rebuild it with `make env` or set {MODEL_ENV} "
                "to a hand_landmarker.task file"
            ) from err
        self.mirrored = mirrored

    def __enter__(self) -> MediaPipeHandLandmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.landmarker is not None:
            with quiet_native_logs():
                self.landmarker.close()
            self.landmarker = None

    def __call__(self, frames: np.ndarray) -> HandKeypoints:
        import mediapipe as mp

        if self.landmarker is None:
            raise RuntimeError(f"{self.name}: the landmarker is closed")
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"{self.name}: frames must be (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
        n, height, width = frames.shape[:3]
        image = np.zeros((n, 2, NUM_KEYPOINTS, 2), np.float32)
        world = np.zeros((n, 2, NUM_KEYPOINTS, 3), np.float32)
        scores = np.zeros((n, 2), np.float32)
        with quiet_native_logs():
            results = [
                self.landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
                for frame in frames
            ]
        for t, result in enumerate(results):
            for landmarks, world_landmarks, handedness in zip(
                result.hand_landmarks, result.hand_world_landmarks, result.handedness, strict=True
            ):
                label, score = handedness[0].category_name.lower(), float(handedness[0].score)
                if self.mirrored:
                    label = "left" if label == "right" else "right"
                s = HAND_SIDES.index(label)
                if score <= scores[t, s]:  # two hands with the same label: keep the surer one
                    continue
                scores[t, s] = score
                image[t, s] = [(p.x * width, p.y * height) for p in landmarks]
                world[t, s] = [(p.x, p.y, p.z) for p in world_landmarks]
        return HandKeypoints(image, world, scores, width, height, self.name)
