"""The ``hand-motion-generation`` pipeline: a first frame and an instruction -> hand motion.

    from transformers import pipeline

    generate = pipeline("hand-motion-generation", model="org/pela-dino", trust_remote_code=True)
    motion = generate(image, "pick up the cup", hands="right", num_ensembles=8)
    motion["right"]["keypoints"]  # (T, 21, 3) metres, camera frame

Per hand the output holds the MANO parameters ``hand_pose`` (T, 15, 3) and ``global_orient`` (T, 3) (axis-angle,
radians) and ``transl`` (T, 3) (metres), and the 21 ``keypoints`` (T, 21, 3) (metres) of the hand skeleton, all in the
camera frame of the image (UniHand-Mix's convention), ``T = num_chunks * chunk_length`` frames. Keypoints use the
built-in skeleton unless the pipeline is given ``kinematics=`` (e.g. ``load_hand_kinematics(MANO_DIR)``).

The checkpoint folder must hold the processor (``processor_config.json`` and tokenizer files) and the motion
tokenizer in ``motion_tokenizer/`` (``pela pretrain`` writes both); ``motion_tokenizer=`` overrides the latter.
Generation: ``PELAForPretraining.generate_motion`` (masked decoding, paper appendix A.3), the mean motion of
``num_ensembles`` sampled runs seeded by ``seed``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoModel, Pipeline
from transformers.dynamic_module_utils import custom_object_save

# mano's own imports, named here because remote code copies one level of relative imports:
from .hand_motion import HAND_SIDES  # noqa: F401
from .mano import load_hand_kinematics
from .rotations import axis_angle_to_matrix  # noqa: F401

TASK = "hand-motion-generation"
MOTION_TOKENIZER_SUBFOLDER = "motion_tokenizer"
CUSTOM_PIPELINES = {
    TASK: {"impl": "pipeline_pela.HandMotionGenerationPipeline", "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
}


class HandMotionGenerationPipeline(Pipeline):
    """``pipeline(images, text, hands=None, num_chunks=1, num_ensembles=1, seed=0)``; see the module docstring.

    ``images``: a PIL image or (H, W, 3) uint8 array (the scene's first frame), or a list of them with a list of
    instructions (one result per pair). ``hands``: ``"left"``, ``"right"``, ``"both"`` (default) or a list."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, motion_tokenizer: Any = None, kinematics: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(
                f"{TASK}: the checkpoint has no processor; save the PELAProcessor next to the model "
                "(processor.save_pretrained(folder)) or pass processor="
            )
        self.motion_tokenizer = motion_tokenizer if motion_tokenizer is not None else self._load_motion_tokenizer()
        self.kinematics = kinematics if kinematics is not None else load_hand_kinematics(None)

    def _load_motion_tokenizer(self) -> Any:
        source = self.model.name_or_path
        try:  # a folder, not `subfolder=`: remote code is looked up at the repository root
            folder = os.path.join(source, MOTION_TOKENIZER_SUBFOLDER)
            if not os.path.isdir(folder):
                folder = os.path.join(
                    snapshot_download(source, allow_patterns=[f"{MOTION_TOKENIZER_SUBFOLDER}/*"]),
                    MOTION_TOKENIZER_SUBFOLDER,
                )
            tokenizer = AutoModel.from_pretrained(folder, trust_remote_code=True)
        except (OSError, ValueError, HfHubHTTPError) as err:
            raise ValueError(
                f"{TASK}: no motion tokenizer in {source!r}/{MOTION_TOKENIZER_SUBFOLDER} ({err}); save it there "
                "(motion_tokenizer.save_pretrained) or pass motion_tokenizer="
            ) from err
        return tokenizer.to(self.device).eval()

    def __call__(self, images: Any, text: str | list[str] | None = None, **kwargs: Any) -> Any:
        if text is None:
            raise ValueError(f"{TASK}: pass the instruction, e.g. pipe(image, 'pick up the cup')")
        if isinstance(text, str):
            return super().__call__({"images": images, "text": text}, **kwargs)
        if not isinstance(images, (list, tuple)) or len(images) != len(text):
            raise ValueError(f"{TASK}: give one image per instruction ({len(text)} instructions)")
        return super().__call__([{"images": i, "text": t} for i, t in zip(images, text, strict=True)], **kwargs)

    def _sanitize_parameters(
        self,
        hands: Any = None,
        num_chunks: int | None = None,
        num_ensembles: int | None = None,
        seed: int | None = None,
    ) -> tuple[dict, dict, dict]:
        forward = {
            key: value
            for key, value in (("num_chunks", num_chunks), ("num_ensembles", num_ensembles), ("seed", seed))
            if value is not None
        }
        return ({"hands": hands} if hands is not None else {}), forward, {}

    def preprocess(self, inputs: dict[str, Any], hands: Any = None) -> dict[str, torch.Tensor]:
        return dict(self.processor(images=inputs["images"], text=inputs["text"], hands=hands))

    def _forward(
        self, model_inputs: dict[str, torch.Tensor], num_chunks: int = 1, num_ensembles: int = 1, seed: int = 0
    ) -> dict[str, Any]:
        output = self.model.generate_motion(
            **model_inputs, num_chunks=num_chunks, num_ensembles=num_ensembles, ensemble_method="mean",
            generator=torch.Generator().manual_seed(seed), motion_tokenizer=self.motion_tokenizer,
        )  # fmt: skip
        return {"mano": output.mano}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
        result = {}
        for hand, fields in model_outputs["mano"].items():
            mano = {name: value[0].float().cpu() for name, value in fields.items()}
            keypoints = self.kinematics.joints(mano["hand_pose"], mano["global_orient"], mano["transl"], hand)
            result[hand] = {**{name: value.numpy() for name, value in mano.items()}, "keypoints": keypoints.numpy()}
        return result


def save_pipeline_code(folder: str | os.PathLike) -> None:
    """Copy this module and the files it imports into ``folder``, next to a model whose ``config.custom_pipelines``
    is :data:`CUSTOM_PIPELINES`, so that ``pipeline(TASK, model=folder, trust_remote_code=True)`` finds them."""
    custom_object_save(HandMotionGenerationPipeline, folder)
