"""Instruction-tuning task generation (appendix B.1 step 3 and B.2).

Every clip becomes one sample of one task type, chosen deterministically from the clip id:

* ``motion_generation``: instruction + first frame -> all motion chunks.
* ``motion_continuation``: instruction + first frame + the first ``context_chunks`` chunks -> the remaining chunks.
* ``motion_description``: first frame + motion -> text (``response``).
* ``video_only``: clips without usable hand labels (in-the-wild training data): instruction + frames, motion fully
  masked, alignment loss only.

Each type has 20 base templates; the template is also chosen deterministically from the clip id, so rebuilding the
data set gives the same samples. The default mix is the paper's (42.4% generation, 15.5% continuation, 12.9%
description, 29.1% video-only); labelled clips draw among the three labelled types in proportion, unlabelled clips
are always ``video_only``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DEFAULT_TASK_MIX = {
    "motion_generation": 0.424,
    "motion_continuation": 0.155,
    "motion_description": 0.129,
    "video_only": 0.291,
}

GENERATION_TEMPLATES = (
    "{task}",
    "Generate the hand motion to {task}.",
    "Show how the hands move to {task}.",
    "Predict the hand motion needed to {task}.",
    "What hand motion would {task}? Output the motion.",
    "Produce a hand trajectory that will {task}.",
    "Using the scene in the image, {task}.",
    "Plan the hand movement: {task}.",
    "Move your hands to {task}.",
    "Demonstrate with your hands how to {task}.",
    "Given this view, generate hand motion to {task}.",
    "Output the MANO hand motion for: {task}.",
    "Your task: {task}. Generate the hand motion.",
    "How would a person {task}? Show the hand motion.",
    "Animate the hands so that they {task}.",
    "Create the motion of the hands to {task}.",
    "Instruction: {task}. Respond with hand motion.",
    "Look at the image and {task}.",
    "Perform the following with your hands: {task}.",
    "Synthesize the hand motion that would {task}.",
)
CONTINUATION_TEMPLATES = (
    "Continue the hand motion to {task}.",
    "The hands have started to {task}. Continue the motion.",
    "Given the motion so far, predict how the hands continue to {task}.",
    "Complete the hand motion: {task}.",
    "Predict the next hand motion while the person tries to {task}.",
    "Finish the movement to {task}.",
    "Extend this hand trajectory to {task}.",
    "What comes next in this motion to {task}? Continue it.",
    "Carry on the hand motion so that the hands {task}.",
    "Continue the motion sequence; the goal is to {task}.",
    "The person is about to {task}. Predict the rest of the motion.",
    "Forecast the remaining hand motion to {task}.",
    "Keep moving the hands to {task}.",
    "Continue from the given chunks to {task}.",
    "Predict the future hand poses for: {task}.",
    "Resume the hand motion and {task}.",
    "Based on the observed motion, continue to {task}.",
    "Generate the rest of the motion to {task}.",
    "Proceed with the hand motion: {task}.",
    "Follow up the partial motion so that it will {task}.",
)
DESCRIPTION_TEMPLATES = (
    "Describe the hand motion.",
    "What are the hands doing?",
    "Explain the motion of the hands in this clip.",
    "Summarize the hand movement.",
    "What task does this hand motion perform?",
    "Give an instruction that matches this hand motion.",
    "Describe what the person does with their hands.",
    "Caption the hand motion.",
    "What is the goal of this motion?",
    "In one sentence, what do the hands do?",
    "Translate the hand motion into words.",
    "What action is shown by the motion?",
    "Name the manipulation performed by the hands.",
    "Describe the movement of each hand.",
    "Which task is being carried out?",
    "Tell me what this hand motion accomplishes.",
    "Write a short description of the hand motion.",
    "What does the motion reveal about the task?",
    "Interpret the hand trajectory.",
    "Describe the manipulation in the scene.",
)
TEMPLATES = {
    "motion_generation": GENERATION_TEMPLATES,
    "motion_continuation": CONTINUATION_TEMPLATES,
    "motion_description": DESCRIPTION_TEMPLATES,
    "video_only": GENERATION_TEMPLATES,
}


def stable_uniform(*keys: object) -> float:
    """A deterministic number in [0, 1) from ``keys`` (independent of Python's hash seed)."""
    digest = hashlib.sha256("\x1f".join(map(str, keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class TaskSample:
    task_type: str
    instruction: str
    response: str
    context_chunks: int


def _as_task_phrase(instruction: str) -> str:
    """'Pick up the red cube.' -> 'pick up the red cube' (to slot into a template)."""
    phrase = instruction.strip().rstrip(".!")
    return phrase[:1].lower() + phrase[1:] if phrase else phrase


def make_task(
    clip_id: str,
    instruction: str,
    num_chunks: int,
    labelled: bool,
    task_mix: dict[str, float] | None = None,
    description: str | None = None,
) -> TaskSample:
    """Choose the task type and template for one clip, deterministically from ``clip_id``.

    ``task_mix`` weights the labelled task types (its ``video_only`` entry is ignored here: which clips are
    video-only is decided by whether they have labels, and the mix of a data set by how many wild clips it holds).
    Continuation needs at least two chunks; a one-chunk clip drawn for it becomes generation.
    """
    mix = dict(DEFAULT_TASK_MIX if task_mix is None else task_mix)
    unknown = set(mix) - set(DEFAULT_TASK_MIX)
    if unknown:
        raise ValueError(f"unknown task types in task_mix: {sorted(unknown)}; known: {list(DEFAULT_TASK_MIX)}")
    task = "video_only"
    if labelled:
        weights = {k: v for k, v in mix.items() if k != "video_only" and v > 0}
        if not weights:
            raise ValueError("task_mix gives no weight to any labelled task type")
        u = stable_uniform(clip_id, "task") * sum(weights.values())
        for name, weight in weights.items():
            task = name
            if u < weight:
                break
            u -= weight
        if task == "motion_continuation" and num_chunks < 2:
            task = "motion_generation"
    templates = TEMPLATES[task]
    template = templates[int(stable_uniform(clip_id, "template") * len(templates))]
    phrase = _as_task_phrase(instruction)
    context = 0
    if task == "motion_continuation":
        context = 1 + int(stable_uniform(clip_id, "context") * (num_chunks - 1))
    response = (description or instruction).strip() if task == "motion_description" else ""
    return TaskSample(task, template.format(task=phrase), response, context)
