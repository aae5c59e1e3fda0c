"""The UniHand-Mix sample schema: one ``datasets.Features`` for every source (lab, wild, procedural).

One row is one instruction-tuning sample built from one clip (1-10 s, a whole number of 15-frame chunks):

| field | type | meaning |
| --- | --- | --- |
| ``id`` | string | unique sample id (``<source>/<clip>/<task>``) |
| ``clip_id`` | string | the clip the sample was built from (several task samples may share a clip) |
| ``source`` | string | source data set (``procedural-lab``, ``arctic``, ``ego4d``, ...) |
| ``subset`` | string | ``lab`` (precise labels) or ``wild`` (no labels for training) |
| ``license`` / ``attribution`` | string | the source's license and citation |
| ``split`` | string | ``train`` or ``test`` |
| ``task_type`` | string | ``motion_generation`` / ``motion_description`` / ``motion_continuation`` / ``video_only`` |
| ``instruction`` | string | the prompt (for description: the question; for video-only: the clip's instruction) |
| ``response`` | string | text answer of ``motion_description`` samples, else empty |
| ``context_chunks`` | int32 | chunks given as context (``motion_continuation``), else 0 |
| ``hands`` | list[string] | hands present, from ``left``/``right`` |
| ``fps`` / ``num_frames`` / ``chunk_length`` / ``num_chunks`` | | ``num_frames == chunk_length * num_chunks`` |
| ``first_frame`` | Image | frame 0 |
| ``boundary_frames`` | list[Image] | frames 0, 15, 30, ..., ``num_frames - 1``: each chunk's start and end (``num_chunks + 1``) |
| ``mano_left`` / ``mano_right`` | struct or null | ``hand_pose`` (T, 45), ``global_orient`` (T, 3), ``transl`` (T, 3) in :mod:`modeling_pela.hand_motion` conventions, ``betas`` (10,) or null, ``shape_convention`` (``left_fixed`` / ``released``: the left-hand MANO shape space of the betas, from the source's tool chain; null in rows written before it existed, allowed only without betas); null when the hand is absent, and for ``video_only`` training samples |
| ``motion_tokens_left`` / ``motion_tokens_right`` | list[list[int32]] or null | optional precomputed GRQ-VAE ids, (num_chunks, tokens per chunk: 128 with the paper's tokenizer) (``pela data tokenize``) |
| ``motion_tokens_model`` | string | fingerprint of the motion tokenizer that produced ``motion_tokens_*`` (``MotionTokenizerModel.fingerprint()``; empty if none) |
| ``frame_features`` | list[list[float32]] or null | optional precomputed frame-encoder features of the boundary frames |
| ``frame_feature_model`` | string | which encoder produced ``frame_features`` (empty if none) |
| ``has_motion_labels`` | bool | MANO labels present (lab capture; wild test: pose estimates); False for ``video_only`` |
| ``labels_are_estimates`` | bool | MANO comes from a pose estimator (wild test split), not from lab capture |
| ``pose_confidence`` / ``detection_confidence`` | float32 | per-clip estimator / detector confidence (1.0 for lab capture) |
| ``curation`` | string | JSON record of the curation stages applied (models, thresholds, slow-down) |

Video is not stored as ``datasets.Video`` (it needs torchcodec + FFmpeg at read time); the frames PELA needs are
stored as ``Image``.
"""

from __future__ import annotations

import datasets

TASK_TYPES = ("motion_generation", "motion_description", "motion_continuation", "video_only")
SUBSETS = ("lab", "wild")
SPLITS = ("train", "test")
CHUNK_LENGTH = 15


def mano_features() -> dict:
    return {
        "hand_pose": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=45)),
        "global_orient": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=3)),
        "transl": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=3)),
        "betas": datasets.Sequence(datasets.Value("float32")),
        "shape_convention": datasets.Value("string"),
    }


def unihand_features() -> datasets.Features:
    """The ``datasets.Features`` of a UniHand-Mix sample (see the module docstring)."""
    tokens = datasets.Sequence(datasets.Sequence(datasets.Value("int32")))
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "clip_id": datasets.Value("string"),
            "source": datasets.Value("string"),
            "subset": datasets.Value("string"),
            "license": datasets.Value("string"),
            "attribution": datasets.Value("string"),
            "split": datasets.Value("string"),
            "task_type": datasets.Value("string"),
            "instruction": datasets.Value("string"),
            "response": datasets.Value("string"),
            "context_chunks": datasets.Value("int32"),
            "hands": datasets.Sequence(datasets.Value("string")),
            "fps": datasets.Value("float32"),
            "num_frames": datasets.Value("int32"),
            "chunk_length": datasets.Value("int32"),
            "num_chunks": datasets.Value("int32"),
            "first_frame": datasets.Image(),
            "boundary_frames": datasets.Sequence(datasets.Image()),
            "mano_left": mano_features(),
            "mano_right": mano_features(),
            "motion_tokens_left": tokens,
            "motion_tokens_right": tokens,
            "motion_tokens_model": datasets.Value("string"),
            "frame_features": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
            "frame_feature_model": datasets.Value("string"),
            "has_motion_labels": datasets.Value("bool"),
            "labels_are_estimates": datasets.Value("bool"),
            "pose_confidence": datasets.Value("float32"),
            "detection_confidence": datasets.Value("float32"),
            "curation": datasets.Value("string"),
        }
    )
