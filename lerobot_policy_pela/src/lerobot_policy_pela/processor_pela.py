"""Pre- and post-processing pipelines of the PELA policy.

Pre-processor: rename -> add batch dimension -> instruction tokenisation -> device -> image preprocessing ->
normalisation (state and action: mean/std from the dataset statistics; images: identity, since the image step does
the backbone's own normalisation). Post-processor: action un-normalisation -> CPU.

The two PELA steps are registered with ``ProcessorStepRegistry`` so that saved pipelines
(``policy_preprocessor.json``) reload with ``PolicyProcessorPipeline.from_pretrained`` in a fresh process, as long as
this package is imported (LeRobot's scripts import it through ``register_third_party_plugins``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from lerobot.configs import FeatureType, PipelineFeatureType, PolicyFeature
from lerobot.lerobot_types import PolicyAction, RobotObservation
from lerobot.processor import (
    PolicyProcessorPipeline,
    ProcessorStepRegistry,
    TokenizerProcessorStep,
    make_default_policy_processor_steps,
    make_policy_processor_pipelines,
)
from lerobot.processor.pipeline import ObservationProcessorStep
from tokenizers import Tokenizer
from transformers import ByT5Tokenizer, PreTrainedTokenizerFast

from .backbone import IMAGENET_MEAN, IMAGENET_STD, resolve_backbone_config
from .configuration_pela import PelaConfig


@dataclass
@ProcessorStepRegistry.register(name="pela_image_processor")
class PelaImageProcessorStep(ObservationProcessorStep):
    """Resize every camera image to the backbone's square resolution and normalise it.

    Input images are (B, 3, H, W) floats in [0, 1] (LeRobot's convention); outputs are (B, 3, S, S) with
    ``(x - mean) / std``. The resize is antialiased bilinear, the same as the MetaWorld recorder's.

    Attributes:
        image_keys: observation keys of the cameras.
        image_size: ``S``, side of the backbone's input images.
        mean / std: per-channel normalisation statistics.
    """

    image_keys: list[str] = field(default_factory=list)
    image_size: int = 448
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def observation(self, observation: RobotObservation) -> RobotObservation:
        observation = dict(observation)
        for key in self.image_keys:
            if key not in observation:
                raise KeyError(f"camera {key!r} missing from the observation (keys: {sorted(observation)})")
            image = observation[key]
            if image.ndim != 4 or image.shape[1] != 3:
                raise ValueError(f"{key} must be (B, 3, H, W) in [0, 1], got shape {tuple(image.shape)}")
            image = image.float()
            if image.shape[-2:] != (self.image_size, self.image_size):
                image = F.interpolate(
                    image, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
                )
            mean = torch.tensor(self.mean, device=image.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=image.device).view(1, 3, 1, 1)
            observation[key] = (image - mean) / std
        return observation

    def get_config(self) -> dict[str, Any]:
        return {"image_keys": list(self.image_keys), "image_size": self.image_size, "mean": self.mean, "std": self.std}

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        observation = features.get(PipelineFeatureType.OBSERVATION, {})
        for key in self.image_keys:
            if key in observation:
                observation[key] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, self.image_size, self.image_size))
        return features


@dataclass
@ProcessorStepRegistry.register(name="pela_instruction_tokenizer")
class PelaInstructionTokenizerStep(TokenizerProcessorStep):
    """LeRobot's tokenizer step (task -> ``observation.language.tokens`` / ``.attention_mask``) without special tokens
    (as ``PELAProcessor`` encodes instructions) and with a byte-level fallback: without ``tokenizer_name``,
    instructions are UTF-8 bytes shifted by 3 (``ByT5Tokenizer``; 0 = padding), so every id is below 248 and fits a
    randomly initialised backbone's text vocabulary.

    A fast tokenizer travels *inside* the saved pipeline: :meth:`state_dict` holds its ``tokenizer.json`` and special
    tokens as byte tensors (written next to ``policy_preprocessor.json``), so a saved or pushed policy loads where
    the backbone folder named by ``tokenizer_name`` does not exist."""

    embedded: bool = False

    def __post_init__(self) -> None:
        if self.embedded:  # the tokenizer arrives with load_state_dict; a placeholder until then
            self.tokenizer_name, self.tokenizer = None, None
        if self.tokenizer is None and self.tokenizer_name is None:
            self.tokenizer = ByT5Tokenizer(extra_ids=0)
        super().__post_init__()

    def _is_embeddable(self) -> bool:
        return isinstance(self.input_tokenizer, PreTrainedTokenizerFast)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self._is_embeddable():
            config.pop("tokenizer_name", None)
            config["embedded"] = True
        return config

    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self._is_embeddable():
            return {}
        special = json.dumps(
            {k: str(v) for k, v in self.input_tokenizer.special_tokens_map.items() if isinstance(v, str)}
        )
        return {
            "tokenizer_json": _bytes_tensor(self.input_tokenizer.backend_tokenizer.to_str()),
            "special_tokens": _bytes_tensor(special),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not state:
            return
        backend = Tokenizer.from_str(_tensor_text(state["tokenizer_json"]))
        self.tokenizer = self.input_tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, **json.loads(_tensor_text(state["special_tokens"]))
        )

    def _tokenize_text(self, text: str | list[str]) -> dict[str, torch.Tensor]:
        return self.input_tokenizer(
            text,
            max_length=self.max_length,
            truncation=self.truncation,
            padding=self.padding,
            padding_side=self.padding_side,
            add_special_tokens=False,
            return_tensors="pt",
        )


def _bytes_tensor(text: str) -> torch.Tensor:
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


def _tensor_text(values: torch.Tensor) -> str:
    return bytes(values.tolist()).decode("utf-8")


def instruction_tokenizer_name(config: PelaConfig) -> str | None:
    """The tokenizer of the instructions: ``config.tokenizer_name``, else the pretrained backbone checkpoint's when it
    ships one, else ``None`` (byte-level)."""
    if config.tokenizer_name:
        return config.tokenizer_name
    return config.pretrained_backbone if config.backbone_inputs["has_tokenizer"] else None


def make_pela_pre_post_processors(
    config: PelaConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Build the PELA policy's pre-processor and post-processor (see the module docstring for the steps).

    Args:
        config: the policy configuration (its features must be set: LeRobot's factory does it from the dataset).
        dataset_stats: per-feature statistics (``mean``/``std``) for the state and action normalisation.
    """
    steps = make_default_policy_processor_steps(config, dataset_stats)
    resolve_backbone_config(config)
    inputs = config.backbone_inputs
    input_steps = [
        steps.rename_observations,
        steps.add_batch_dim,
        PelaInstructionTokenizerStep(
            tokenizer_name=instruction_tokenizer_name(config),
            max_length=config.tokenizer_max_length,
            padding="max_length",
            padding_side="left",  # the instruction starts the backbone's prompt
        ),
        steps.to_device,
        PelaImageProcessorStep(
            image_keys=list(config.image_features),
            image_size=inputs["image_size"],
            mean=tuple(inputs["image_mean"]),
            std=tuple(inputs["image_std"]),
        ),
        steps.normalize,
    ]
    output_steps = [steps.unnormalize, steps.to_cpu]
    return make_policy_processor_pipelines(input_steps=input_steps, output_steps=output_steps)
