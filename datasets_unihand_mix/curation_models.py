"""Pluggable models of the wild curation pipeline (:mod:`datasets_unihand_mix.curation`) and their offline defaults.

The paper runs a neural hand detector (Potamias et al., 2025), HaWoR for poses and Gemini-2.5-flash-lite as judge.
None of those can run offline here, so the defaults are:

* procedural (toy) clips: :class:`ProceduralOracleDetector` and :class:`ProceduralOracleEstimator`, oracle-plus-noise
  models computed from the render metadata. The detector scores each evaluated frame by the fraction of the hand's
  21 keypoints that project inside the image and are not under an occluder, times an image-quality factor (sensor
  noise) plus Gaussian noise. The estimator returns the true MANO motion plus temporally smooth noise whose size
  grows as its confidence drops; the confidence falls with the hand's detection scores and with its speed (motion
  blur), so it is calibrated: lower confidence, larger pose error.
* real videos (the ``wild`` builder config): :class:`PrecomputedHandDetector` and :class:`PrecomputedPoseEstimator`
  read the outputs of a detector / estimator run done beforehand (``detections.json`` and ``hands.npz`` in each clip
  folder); a clip without them is dropped with reason ``no_detections`` / ``no_pose_estimates``.
* judge: :class:`RuleBasedJudge` (hand presence, motion energy of the estimated poses, and a narration that names a
  hand action of the camera wearer), which also rewrites narrations into imperative instructions.
  :class:`TransformersJudge` asks any ``transformers`` text-generation or image-text-to-text pipeline instead.

Every model is a small callable with a ``name``; write your own with the same signature to plug in a real one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeling_pela.hand_motion import DEFAULT_SHAPE_CONVENTION, HAND_SIDES, HandMotion

from .curation import CurationItem, Detection, PoseEstimate, Verdict, WildCandidate
from .procedural import ProceduralClip, smooth_noise
from .sources import SourceDataError, read_array
from .tasks import stable_uniform


def _rng(*keys: object) -> np.random.Generator:
    """A generator seeded deterministically by ``keys`` (independent of Python's hash seed)."""
    return np.random.default_rng(int(stable_uniform(*keys) * 2**63))


def _procedural(candidate: WildCandidate, model: str) -> ProceduralClip:
    if candidate.procedural is None:
        raise ValueError(
            f"{model} needs procedural render metadata, but candidate '{candidate.source}/{candidate.clip_id}' is a "
            "real video: use PrecomputedHandDetector / PrecomputedPoseEstimator or plug in your own models"
        )
    return candidate.procedural


def hand_visibility(clip: ProceduralClip, frames: np.ndarray) -> np.ndarray:
    """(N, 2) fraction of each hand's (left, right) 21 keypoints inside the image and not under an occluder."""
    from .render import occluder_mask

    joints = clip.joints()
    width, height = clip.camera.width, clip.camera.height
    out = np.zeros((len(frames), 2))
    for i, t in enumerate(frames):
        mask = occluder_mask(clip, int(t)) if clip.appearance.occluders else None
        for s, side in enumerate(HAND_SIDES):
            if side not in joints:
                continue
            uv, depth = clip.camera.project(joints[side][t], int(t))
            inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height) & (depth > 0.03)
            if mask is not None and inside.any():
                u, v = uv[inside].astype(int).T
                inside[inside] = ~mask[v, u]
            out[i, s] = inside.mean()
    return out


@dataclass
class ProceduralOracleDetector:
    """Oracle-plus-noise hand detector for procedural clips (see the module docstring).

    Args:
        frame_stride: evaluate every ``frame_stride``-th frame.
        noise: std of the Gaussian noise added to each frame's score.
        noise_penalty: score lost per unit of the clip's sensor-noise std (``appearance.noise_std``, 0-7).
    """

    frame_stride: int = 3
    noise: float = 0.05
    noise_penalty: float = 0.03
    name: str = "procedural-oracle-detector"

    def __call__(self, candidate: WildCandidate) -> Detection:
        clip = _procedural(candidate, self.name)
        frames = np.arange(0, clip.num_frames, self.frame_stride)
        quality = 1.0 - self.noise_penalty * clip.appearance.noise_std
        rng = _rng(candidate.source, candidate.clip_id, self.name)
        scores = hand_visibility(clip, frames) * quality + rng.normal(0.0, self.noise, (len(frames), 2))
        return Detection(frames, np.clip(scores, 0.0, 1.0), self.name)


@dataclass
class ProceduralOracleEstimator:
    """Oracle-plus-noise hand-pose estimator for procedural clips (see the module docstring).

    A detected hand's confidence is ``mean detection score / (1 + blur * mean wrist speed [m/s])`` plus Gaussian noise
    (std ``noise``). Its poses are the truth plus smooth noise of std ``k * (0.08 rad finger angles, 0.05 rad
    orientation, 1 cm wrist)`` with ``k = error * (0.3 + 2 * (1 - confidence))``.
    """

    blur: float = 1.0
    noise: float = 0.03
    error: float = 1.0
    name: str = "procedural-oracle-estimator"

    def __call__(self, candidate: WildCandidate, detection: Detection) -> PoseEstimate:
        clip = _procedural(candidate, self.name)
        rng = _rng(candidate.source, candidate.clip_id, self.name)
        hands, per_hand = {}, {}
        for s, side in enumerate(HAND_SIDES):
            if side not in detection.hands or side not in clip.hands:
                continue
            truth = clip.hands[side]
            speed = float(truth.transl.diff(dim=0).norm(dim=-1).mean()) * truth.fps
            score = float(detection.scores[:, s].mean()) / (1.0 + self.blur * speed)
            confidence = float(np.clip(score + rng.normal(0.0, self.noise), 0.0, 1.0))
            scale = self.error * (0.3 + 2.0 * (1.0 - confidence))
            n = truth.num_frames

            def noise(dims: int, size: float, n: int = n, scale: float = scale) -> torch.Tensor:
                return torch.as_tensor(smooth_noise(rng, n, dims, 2.0) * size * scale, dtype=torch.float32)

            hands[side] = HandMotion(
                side=side,
                hand_pose=truth.hand_pose + noise(45, 0.08).reshape(n, 15, 3),
                global_orient=truth.global_orient + noise(3, 0.05),
                transl=truth.transl + noise(3, 0.01),
                fps=truth.fps,
                sample_id=f"{candidate.source}/{candidate.clip_id}",
            )
            per_hand[side] = confidence
        return PoseEstimate(hands, per_hand, self.name)


def _clip_dir(candidate: WildCandidate, model: str) -> Path:
    folder = candidate.metadata.get("dir")
    if folder is None:
        raise ValueError(
            f"{model} reads precomputed outputs from the clip folder, but candidate "
            f"'{candidate.source}/{candidate.clip_id}' has no metadata['dir']"
        )
    return Path(folder)


@dataclass
class PrecomputedHandDetector:
    """Reads ``<clip dir>/detections.json`` written by a hand-detector run: ``{"left": [score or null per raw
    frame], "right": [...]}`` (a missing side means no detection). Without the file the clip has no detections."""

    filename: str = "detections.json"
    name: str = "precomputed-detections"

    def __call__(self, candidate: WildCandidate) -> Detection:
        path = _clip_dir(candidate, self.name) / self.filename
        if not path.exists():
            return Detection(np.zeros(0, dtype=int), np.zeros((0, 2)), self.name)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SourceDataError(f"{path}: cannot read detections ({err})") from err
        if not isinstance(data, dict):
            raise SourceDataError(f"{path}: expected an object with 'left'/'right' score lists")
        n = candidate.num_frames
        scores = np.zeros((n, 2))
        for s, side in enumerate(HAND_SIDES):
            values = data.get(side)
            if values is not None:
                cleaned = {side: [0.0 if v is None else v for v in values]}
                scores[:, s] = read_array(cleaned, side, (None,), str(path), n)
        return Detection(np.arange(n), np.clip(scores, 0.0, 1.0), self.name)


@dataclass
class PrecomputedPoseEstimator:
    """Reads ``<clip dir>/hands.npz`` written by a pose-estimator run (e.g. HaWoR), per side ``<side>_hand_pose``
    (T, 45), ``<side>_global_orient`` (T, 3), ``<side>_transl`` (T, 3) in PELA's MANO convention
    (:mod:`modeling_pela.hand_motion`), ``<side>_confidence`` (T,) and optionally ``<side>_betas`` (10,), T = the
    clip's raw frames. Without the file the clip has no estimates. ``shape_convention``: the left-hand MANO shape
    space the estimator fits betas in (:data:`modeling_pela.hand_motion.SHAPE_CONVENTIONS`; ``"released"`` for plain
    ``smplx.MANO`` / manopth); it is stored with every estimated hand."""

    filename: str = "hands.npz"
    name: str = "precomputed-poses"
    shape_convention: str = DEFAULT_SHAPE_CONVENTION

    def __call__(self, candidate: WildCandidate, detection: Detection) -> PoseEstimate:
        path = _clip_dir(candidate, self.name) / self.filename
        if not path.exists():
            return PoseEstimate({}, {}, self.name)
        try:
            with np.load(path) as npz:
                data = dict(npz)
        except (OSError, ValueError) as err:
            raise SourceDataError(f"{path}: cannot read pose estimates ({err})") from err
        n, where = candidate.num_frames, str(path)
        hands, per_hand = {}, {}
        for side in HAND_SIDES:
            if f"{side}_transl" not in data:
                continue
            betas = data.get(f"{side}_betas")
            hands[side] = HandMotion(
                side=side,
                hand_pose=read_array(data, f"{side}_hand_pose", (None, 45), where, n),
                global_orient=read_array(data, f"{side}_global_orient", (None, 3), where, n),
                transl=read_array(data, f"{side}_transl", (None, 3), where, n),
                fps=candidate.fps,
                betas=None if betas is None else read_array(data, f"{side}_betas", (10,), where, per_frame=False),
                sample_id=f"{candidate.source}/{candidate.clip_id}",
                shape_convention=self.shape_convention,
            )
            per_hand[side] = float(read_array(data, f"{side}_confidence", (None,), where, n).mean())
        return PoseEstimate(hands, per_hand, self.name)


# Hand actions (base forms) that make a narration hand-centric.
HAND_VERBS = frozenset(
    """pick grab grasp take lift raise put place set move push pull slide shove rotate turn twist open close unscrew
    screw pour stir cut chop slice wipe wash rinse scrub fold hold hand pass transfer give reach touch pinch press tap
    wave throw catch drop insert remove plug unplug knit pluck write type peel squeeze shake carry tie button zip
    flip stack pack unpack fill empty hang sew paint draw mix knead roll spread scoop dip tear""".split()
)
_CAMERA_WEARER = re.compile(r"^\s*#?C\s+(?:C\s+)?")  # Ego4D narrations: "#C C picks up a cup"
_OTHER_PERSON = re.compile(r"^\s*#O\b")  # Ego4D: an action of someone else (distractor hands)


def _base_form(word: str) -> str:
    """'picks' -> 'pick', 'washes' -> 'wash', 'carries' -> 'carry', 'taking' -> 'take' (rough, for matching)."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes", "oes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _names_hand_action(text: str) -> bool:
    for word in re.findall(r"[a-z]+", text.lower()):
        stems = {word, _base_form(word)}
        if word.endswith("ing") and len(word) > 5:
            stems |= {word[:-3], word[:-3] + "e", word[:-4]}
        if stems & HAND_VERBS:
            return True
    return False


def narration_to_instruction(narration: str) -> str:
    """An imperative instruction from a narration: Ego4D's "#C C picks up the cup" -> "Pick up the cup."; other
    text is kept, capitalised, with a final period."""
    text = narration.strip()
    match = _CAMERA_WEARER.match(text)
    if match:
        text = text[match.end() :]
        first, _, rest = text.partition(" ")
        text = f"{_base_form(first.lower())} {rest}".strip()
    text = text.rstrip(" .!")
    return (text[:1].upper() + text[1:] + ".") if text else ""


def motion_extent(estimate: PoseEstimate) -> tuple[float, float]:
    """(wrist excursion in m, finger articulation range in rad) of the most active estimated hand.

    Excursion: 95th percentile of the wrist's distance from its median position; articulation: 95th percentile over
    the 45 finger angles of their (5th-95th percentile) range. Both ignore small estimator jitter.
    """
    excursion, articulation = 0.0, 0.0
    for motion in estimate.hands.values():
        transl = motion.transl.double().numpy()
        distance = np.linalg.norm(transl - np.median(transl, axis=0), axis=-1)
        excursion = max(excursion, float(np.percentile(distance, 95)))
        pose = motion.hand_pose.reshape(motion.num_frames, -1).double().numpy()
        spread = np.percentile(pose, 95, axis=0) - np.percentile(pose, 5, axis=0)
        articulation = max(articulation, float(np.percentile(spread, 95)))
    return excursion, articulation


@dataclass
class RuleBasedJudge:
    """Offline default judge. Drops, in this order:

    * ``absent``: some hand is detected in fewer than ``min_presence`` of the evaluated frames;
    * ``idle``: the estimated wrists move less than ``min_excursion`` metres and the fingers less than
      ``min_articulation`` rad (see :func:`motion_extent`);
    * ``distractor``: the narration is missing, describes someone else's action (Ego4D ``#O``) or names no hand
      action (:data:`HAND_VERBS`).

    Kept clips get :func:`narration_to_instruction` of their narration.
    """

    min_presence: float = 0.5
    min_excursion: float = 0.03
    min_articulation: float = 0.3
    name: str = "rule-based"

    def __call__(self, item: CurationItem) -> Verdict:
        if item.detection is not None and item.detection.presence < self.min_presence:
            return Verdict(False, "absent")
        if item.estimate is not None:
            excursion, articulation = motion_extent(item.estimate)
            if excursion < self.min_excursion and articulation < self.min_articulation:
                return Verdict(False, "idle")
        narration = item.candidate.narration or ""
        if _OTHER_PERSON.match(narration) or not _names_hand_action(narration):
            return Verdict(False, "distractor")
        return Verdict(True, "ok", narration_to_instruction(narration))


JUDGE_PROMPT = """You curate egocentric video clips for learning hand manipulation.
Narration of the clip: "{narration}"
Hand detector: a hand is visible in {presence:.0%} of the frames. Pose estimator confidence: {confidence:.2f}.
The wrist moves up to {excursion:.1f} cm; the fingers move up to {articulation:.2f} rad.
Keep the clip only if the camera wearer's hands actively do what is narrated. Drop it if the hands are absent,
idle, or not doing a hand-centric activity (distractor).
Answer with one JSON object and nothing else:
{{"keep": true or false, "reason": "ok" or "absent" or "idle" or "distractor", "instruction": "<an imperative
instruction describing what the hands do>"}}
"""


@dataclass
class TransformersJudge:
    """A judge backed by a ``transformers`` pipeline (a VLM or an LLM), e.g.
    ``TransformersJudge(pipeline("image-text-to-text", model="Qwen/Qwen2.5-VL-3B-Instruct"))``.

    The prompt (:data:`JUDGE_PROMPT`) gives the narration and the visual-filter statistics; an
    ``image-text-to-text`` pipeline also gets the clip's middle frame. The answer must contain a JSON object
    ``{"keep": ..., "reason": ..., "instruction": ...}``; an answer without one (or kept without an instruction) is
    judged by ``fallback`` if given, else dropped with reason ``judge_unparseable``.

    Args:
        pipe: a ``transformers`` pipeline, or any callable with the same call convention and a ``task`` attribute.
        max_new_tokens: generation budget of the answer.
        fallback: judge used when the answer cannot be parsed.
    """

    pipe: Callable[..., Any]
    max_new_tokens: int = 96
    fallback: Callable[[CurationItem], Verdict] | None = None
    name: str = "transformers"

    def __post_init__(self) -> None:
        model = getattr(getattr(self.pipe, "model", None), "name_or_path", None)
        if model and self.name == "transformers":
            self.name = f"transformers:{model}"

    def prompt(self, item: CurationItem) -> str:
        excursion, articulation = motion_extent(item.estimate) if item.estimate else (0.0, 0.0)
        return JUDGE_PROMPT.format(
            narration=item.candidate.narration or "(none)",
            presence=item.detection.presence if item.detection else 0.0,
            confidence=item.estimate.confidence if item.estimate else 0.0,
            excursion=100 * excursion,
            articulation=articulation,
        )

    def __call__(self, item: CurationItem) -> Verdict:
        prompt = self.prompt(item)
        options = {"max_new_tokens": self.max_new_tokens, "return_full_text": False}
        if getattr(self.pipe, "task", None) == "image-text-to-text":
            frame = item.candidate.frames([item.candidate.num_frames // 2])[0]
            messages = [
                {"role": "user", "content": [{"type": "image", "image": frame}, {"type": "text", "text": prompt}]}
            ]
            output = self.pipe(text=messages, **options)
        else:
            output = self.pipe(prompt, do_sample=False, **options)
        verdict = parse_verdict(output[0]["generated_text"] if output else "")
        if verdict is None:
            return self.fallback(item) if self.fallback else Verdict(False, "judge_unparseable")
        return verdict


def parse_verdict(text: Any) -> Verdict | None:
    """The first JSON object of a judge's answer as a :class:`Verdict`, or None if there is no usable one."""
    if isinstance(text, list):  # chat pipelines return the message list
        text = text[-1].get("content", "") if text and isinstance(text[-1], dict) else ""
    for match in re.finditer(r"\{.*?\}", str(text), flags=re.DOTALL):
        try:
            data = json.loads(match.group(0))
        except ValueError:
            continue
        if not isinstance(data, dict) or "keep" not in data:
            continue
        keep = data["keep"] if isinstance(data["keep"], bool) else str(data["keep"]).strip().lower() in ("true", "yes")
        instruction = str(data.get("instruction") or "").strip()
        if keep and not instruction:
            return None
        return Verdict(keep, "ok" if keep else str(data.get("reason") or "rejected"), instruction)
    return None
