"""The arguments of every ``pela`` command, one dataclass each: the single place their defaults and help live.

``pela COMMAND [CONFIG.yaml] [--flag value ...]`` parses them with ``transformers.HfArgumentParser`` (flags win over
the YAML file; ``--flag_name`` and ``--flag-name`` are the same flag): :class:`~pela.demo.DemoConfig` for ``pela
demo``, :class:`PretrainArguments` + :class:`~trainers.pela_trainer.PELATrainingArguments` for ``pela pretrain``, and
the classes below for the others. A command's inputs (a checkpoint, a folder) are positional arguments, not fields.
This module imports nothing heavy, so that ``pela --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .variants import VARIANTS

MANO_DIR_HELP = (
    "folder with your licensed MANO_RIGHT.pkl / MANO_LEFT.pkl for forward kinematics through smplx (default: the "
    "built-in MANO-free skeleton; every metric records which one was used)"
)
MOTION_TOKENIZER_HELP = "motion tokenizer folder (default: the checkpoint's motion_tokenizer/)"


def _help(text: str, **metadata: object) -> dict:
    return {"help": text, **metadata}


@dataclass(kw_only=True)
class KinematicsArguments:
    mano_dir: str | None = field(default=None, metadata=_help(MANO_DIR_HELP))


@dataclass(kw_only=True)
class PretrainArguments:
    """What ``pela pretrain`` trains on and which model it builds (the optimisation settings are
    :class:`~trainers.pela_trainer.PELATrainingArguments`)."""

    data: str = field(metadata=_help("exported UniHand-Mix folder (`pela data export`) or Hub dataset id"))
    motion_tokenizer: str = field(metadata=_help("trained GRQ-VAE folder (`pela tokenizer train`) or Hub id"))
    dataset_config: str = field(default="mix", metadata=_help("lab | wild | mix"))
    variant: str = field(default="pela", metadata=_help(" | ".join(VARIANTS)))
    model_preset: str | None = field(
        default=None,
        metadata=_help(
            "PELAConfig preset: tiny | 2b (default: with --vlm the sizes follow the loaded backbone and frame encoder, "
            "PELAConfig.from_components; without it, tiny)"
        ),
    )
    init_from: str | None = field(default=None, metadata=_help("start from this PELA checkpoint's weights"))
    attn_implementation: str = field(
        default="sdpa",
        metadata=_help(
            "backbone attention: sdpa (dense masks, any device) | flex_attention (block-sparse masks for GPUs: skips "
            "the blocks between packed samples) | eager; flash-attn kernels cannot express the MCP chunk mask"
        ),
    )
    vlm: str | None = field(
        default=None,
        metadata=_help(
            "pretrained VLM (e.g. OpenGVLab/InternVL3-2B-hf, or a folder): its weights start the backbone and, "
            "without --processor, its tokenizer and image processor build the PELAProcessor"
        ),
    )
    frame_encoder: str | None = field(
        default=None,
        metadata=_help(
            "pretrained frame encoder (DINOv3 / V-JEPA2 folder or Hub id), loaded frozen; its image processor is the "
            "processor's frame processor (default: the preset's randomly initialised one)"
        ),
    )
    processor: str | None = field(
        default=None,
        metadata=_help("a saved PELAProcessor (default for the tiny preset: a word-level tokenizer over the data)"),
    )
    wild_fraction: float = field(default=1.0, metadata=_help("share of the wild training clips used (Fig. 3)"))
    max_train_chunks: int | None = field(default=None, metadata=_help("crop training clips to this many chunks"))
    shuffle_buffer_size: int = field(default=256, metadata=_help("streaming shuffle buffer (0: file order)"))
    max_skip_fraction: float = field(
        default=0.0,
        metadata=_help(
            "data-error budget per subset: 0 stops at the first unreadable shard or malformed sample (naming it); "
            "above 0 such rows are skipped and counted until they exceed this fraction of a subset"
        ),
    )


@dataclass(kw_only=True)
class EvalArguments(KinematicsArguments):
    """``pela eval CHECKPOINT``: score a checkpoint's generated motion on UniHand-Mix test splits."""

    data: str = field(metadata=_help("exported UniHand-Mix folder or Hub dataset id"))
    splits: list[str] = field(default_factory=lambda: ["lab", "wild"], metadata=_help("", choices=["lab", "wild"]))
    num_chunks: int = field(default=1, metadata=_help("generated chunks per test clip"))
    num_ensembles: int = field(
        default=1, metadata=_help("decoding runs per clip (members 1.. sample); their mean motion is scored")
    )
    max_rows: int | None = field(default=None, metadata=_help("at most this many clips per split"))
    output: str | None = field(default=None, metadata=_help("also write the metrics to this JSON file"))
    update_card: bool = field(
        default=False, metadata=_help("write the metrics into the checkpoint's model card (README.md)")
    )
    motion_tokenizer: str | None = field(default=None, metadata=_help(MOTION_TOKENIZER_HELP))
    render: int = field(
        default=0,
        metadata=_help("write the first N test rows per split, generated next to true hands, as MP4 videos"),
    )
    render_dir: str = field(default="outputs/renders", metadata=_help("folder of the --render videos"))
    max_skip_fraction: float = field(
        default=0.0,
        metadata=_help(
            "data-error budget per split: 0 stops at the first unreadable shard or malformed sample; above 0 such rows "
            "are skipped (counted in the output's data_skipped) until they exceed this fraction"
        ),
    )


@dataclass(kw_only=True)
class GenerateArguments(KinematicsArguments):
    """``pela generate CHECKPOINT``: hand motion for an image + instruction, drawn over the image."""

    image: str = field(metadata=_help("first frame (any format PIL reads)"))
    instruction: str = field(metadata=_help("what the hands should do"))
    hands: list[str] = field(default_factory=lambda: ["left", "right"], metadata=_help("", choices=["left", "right"]))
    num_chunks: int = 1
    num_ensembles: int = field(default=1, metadata=_help("decoding runs averaged (members 1.. sample)"))
    seed: int = 0
    focal_factor: float = field(default=0.9, metadata=_help("focal length / image width"))
    output: str | None = field(
        default=None,
        metadata=_help(
            "picture of the motion: .png (first, middle, last frame), .mp4 or .gif (every frame); default "
            "outputs/generated.png unless --video is given"
        ),
    )
    video: str | None = field(default=None, metadata=_help("write the animated motion to this .mp4 or .gif"))
    panel_size: int | None = field(
        default=None, metadata=_help("longer side of the picture in pixels (default: the image's, at most 720)")
    )
    save_mano: str | None = field(default=None, metadata=_help("write the generated MANO parameters to this JSON file"))
    motion_tokenizer: str | None = field(default=None, metadata=_help(MOTION_TOKENIZER_HELP))


@dataclass(kw_only=True)
class DataPreviewArguments:
    """``pela data preview``: a grid of procedural clips (first, middle, last frame)."""

    output: str = "outputs/preview.png"
    style: Literal["lab", "wild"] = "lab"
    num_clips: int = 6
    image_size: int = 128
    seed: int = 0


@dataclass(kw_only=True)
class DataExportArguments:
    """``pela data export``: build UniHand-Mix and write its Hub-native folder."""

    config: Literal["toy", "lab", "wild", "mix"] = field(
        default="toy",
        metadata=_help("toy: procedural lab + curated wild clips (no downloads); lab/wild/mix: local raw data"),
    )
    output: str = field(metadata=_help("folder to write (empty or absent, unless --overwrite)"))
    num_clips: int | None = field(default=None, metadata=_help("toy: number of clips (default 200)"))
    seed: int = 0
    image_size: int = field(default=96, metadata=_help("toy: frame size in pixels"))
    num_workers: int = field(default=2, metadata=_help("toy: generator processes"))
    junk_probability: float = field(
        default=0.15, metadata=_help("toy: share of wild candidates that are idle/absent/distractor clips")
    )
    data_dir: str | None = field(
        default=None,
        metadata=_help("lab/wild/mix: raw data (DATA_DIR/arctic, /dexycb, /hot3d, /hot3d_sequences, /custom, /wild)"),
    )
    mano_dir: str | None = field(default=None, metadata=_help("lab/mix: folder with MANO_LEFT.pkl / MANO_RIGHT.pkl"))
    test_fraction: float = 0.1
    image_format: Literal["jpeg", "png"] = "jpeg"
    max_shard_size: str = field(default="256MB", metadata=_help("target parquet shard size, e.g. 256MB"))
    repo_id: str = field(default="<org>/unihand-mix", metadata=_help("repository named in the card's usage snippet"))
    overwrite: bool = field(default=False, metadata=_help("replace an existing export in --output"))


@dataclass(kw_only=True)
class DataCurateVideosArguments:
    """``pela data curate-videos VIDEO_OR_DIR...``: curate videos into wild UniHand-Mix rows."""

    output: str = field(metadata=_help("folder to write (empty or absent, unless --overwrite)"))
    engine: Literal["local", "ray"] = field(
        default="local", metadata=_help("local: this process; ray: a Ray Data pipeline (local Ray or --ray-address)")
    )
    ray_address: str | None = field(default=None, metadata=_help("Ray cluster to join (e.g. auto, ray://head:10001)"))
    num_cpus: int | None = field(default=None, metadata=_help("CPUs of a local Ray instance (default: all)"))
    sample_fps: float = field(default=30.0, metadata=_help("frames kept per second of video (lower rates: all)"))
    window_seconds: float = field(default=5.0, metadata=_help("candidate clip length (10 s after the 0.5x slow-down)"))
    max_side: int = field(default=640, metadata=_help("longer side of the decoded frames, pixels"))
    detection_threshold: float = field(
        default=0.65, metadata=_help("visual filter: minimum hand-detection confidence, in [0, 1] (paper: 0.65)")
    )
    pose_threshold: float = field(
        default=0.65,
        metadata=_help(
            "visual filter: minimum pose confidence, in [0, 1] (paper: 0.65; MediaPipe gives one score per hand, so "
            "it equals the detection confidence)"
        ),
    )
    slowdown: float = field(default=0.5, metadata=_help("playback speed factor of the curated clips (paper: 0.5)"))
    fov_degrees: float = field(default=60.0, metadata=_help("assumed horizontal field of view (wrist depth)"))
    narration: str | None = field(default=None, metadata=_help("narration of videos without a sidecar VIDEO.json"))
    source: str = "wild-video"
    license: str = field(default="unspecified (pass --license)", metadata=_help("license of the videos"))
    citation: str = ""
    split: Literal["train", "test"] | None = field(default=None, metadata=_help("default: by video, --test-fraction"))
    test_fraction: float = field(default=0.1, metadata=_help("share of the videos that go to test, in [0, 1]"))
    image_format: Literal["jpeg", "png"] = "jpeg"
    judge_model: str | None = field(
        default=None, metadata=_help("transformers text-generation model id for the judge (default: rule-based)")
    )
    mirrored: bool = field(default=False, metadata=_help("mirrored (selfie) videos: swap the handedness labels"))
    skip_bad_videos: bool = field(
        default=False,
        metadata=_help("skip unreadable videos and list them with the reason in curation_report.json (default: stop)"),
    )
    overwrite: bool = field(default=False, metadata=_help("replace an existing folder in --output"))


@dataclass(kw_only=True)
class DataViewArguments(KinematicsArguments):
    """``pela data view SOURCE``: render one UniHand-Mix row to a video."""

    config: Literal["lab", "wild", "mix"] = "mix"
    split: Literal["train", "test"] = "train"
    index: int = field(default=0, metadata=_help("row number in the streamed config/split"))
    output: str | None = field(
        default=None, metadata=_help(".mp4, .gif or .png (default outputs/view_<config>_<split>_<index>.mp4)")
    )
    panel_size: int | None = field(default=None, metadata=_help("longer side in pixels (default: the frame's)"))


@dataclass(kw_only=True)
class DataPushArguments:
    """``pela data push FOLDER``: upload an export to a Hub dataset repository."""

    repo_id: str = field(metadata=_help("e.g. my-org/unihand-mix"))
    private: bool = False
    revision: str | None = field(default=None, metadata=_help("branch to commit to (default: main)"))


@dataclass(kw_only=True)
class DataTokenizeArguments:
    """``pela data tokenize FOLDER``: precompute the motion tokens of an export in place."""

    motion_tokenizer: str = field(metadata=_help("a trained GRQ-VAE folder (`pela tokenizer train`)"))
    batch_size: int = field(default=256, metadata=_help("rows tokenized per tokenizer call"))


@dataclass(kw_only=True)
class TokenizerTrainArguments(KinematicsArguments):
    """``pela tokenizer train``: the GRQ-VAE on an export's lab train split or on built-in procedural motion."""

    output_dir: str = "outputs/motion_tokenizer"
    data: str | None = field(
        default=None,
        metadata=_help(
            "exported UniHand-Mix folder or Hub id: train on its --config train split (default: procedural clips)"
        ),
    )
    config: Literal["lab", "wild", "mix"] = field(
        default="lab",
        metadata=_help("UniHand-Mix config of --data whose labelled (MANO) train rows are used; lab: all are labelled"),
    )
    num_clips: int = field(default=1500, metadata=_help("built-in procedural clips (without --data)"))
    max_steps: int = 1500
    batch_size: int = 64
    codebook_size: int = 512
    num_quantizers: int = field(default=8, metadata=_help("residual quantizers per group (8: 128 tokens)"))
    seed: int = 0
    num_workers: int = 2


@dataclass(kw_only=True)
class TokenizerEvalArguments(KinematicsArguments):
    """``pela tokenizer eval MODEL``: reconstruction metrics of a saved tokenizer on procedural clips."""

    style: Literal["lab", "wild"] = "lab"
    num_clips: int = 200
    seed: int = 1
