"""The predictive-embedding backbone of the PELA policy: a PELA model (``modeling_pela.PELAForPretraining``) that maps
camera images and an instruction to the hidden states of one LLM layer at the motion positions.

For an observation, the backbone reads the pretraining layout (see ``modeling_pela.modeling_pela``) with all-``[MASK]``
motion chunks::

    instruction (left-padded) | image block per camera | <state_h> x K per hand | <mot> [MASK] x K </mot> per hand

and returns ``{h_{i,k}}``, the ``align_layer`` outputs at the ``N x K`` motion positions, as (B, N * K, D). The Latent
State Perceiver reads the first camera's image through the frozen frame encoder (``frame_pixel_values``, frame 0).

Layers after ``align_layer`` cannot influence these embeddings, so they are dropped from the policy's copy of the
model (28 -> 19 LLM layers for the 2B model at the paper's layer). The vision modules (vision tower, projector,
frame encoder, perceivers) are frozen; the language model is trained, adapted with LoRA or frozen.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import file_exists
from torch import nn
from transformers import AutoConfig, AutoModel

from modeling_pela import PELAConfig, PELAForPretraining, PELAProcessor  # registers "pela" with the Auto classes

from .configuration_pela import PelaConfig

HAND_SIDES = ("left", "right")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LORA_TARGETS = r"self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj"


def resolve_backbone_config(config: PelaConfig) -> PELAConfig:
    """The backbone's ``PELAConfig`` for a policy config, with the policy's ``align_layer`` applied.

    On first use, the configuration comes from ``config.pretrained_backbone`` (``AutoConfig.from_pretrained``) or the
    ``config.backbone_preset`` and is stored in ``config.backbone_config``, and the input settings of the backbone
    (see :func:`resolve_input_settings`) in ``config.backbone_inputs``, so that a saved policy is self-contained.
    """
    if config.backbone_config is None:
        if config.pretrained_backbone:
            backbone = AutoConfig.from_pretrained(config.pretrained_backbone, trust_remote_code=True)
            if getattr(backbone, "model_type", None) != PELAConfig.model_type:
                raise ValueError(
                    f"pretrained_backbone={config.pretrained_backbone!r} is a {type(backbone).__name__} "
                    f"(model_type {getattr(backbone, 'model_type', None)!r}), not a PELA checkpoint (model_type 'pela')"
                )
        else:
            backbone = PELAConfig.from_preset(config.backbone_preset)
        config.backbone_config = backbone.to_dict()
    backbone = PELAConfig.from_dict(config.backbone_config)
    if config.backbone_inputs is None:
        config.backbone_inputs = resolve_input_settings(backbone, config.pretrained_backbone)
    if config.align_layer is not None:
        depth = backbone.text_config.num_hidden_layers
        if config.align_layer > depth:
            raise ValueError(f"align_layer={config.align_layer} but the backbone's language model has {depth} layers")
        backbone.align_layer = config.align_layer
    return backbone


def resolve_input_settings(backbone: PELAConfig, checkpoint: str | None) -> dict[str, Any]:
    """How the backbone reads its inputs: image size and normalisation of the VLM and of the frame encoder, the ids
    wrapping an image block and whether the checkpoint ships a tokenizer.

    Taken from the checkpoint's saved ``PELAProcessor`` (``processor_config.json``) when it has one; otherwise the
    model configuration's image sizes with ImageNet statistics (InternVL, DINOv3 and V-JEPA2 all use them), no
    wrapper ids and no tokenizer.
    """
    settings = {
        "image_size": _square(backbone.vlm_config.vision_config.image_size),
        "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD),
        "frame_size": None,
        "frame_mean": list(IMAGENET_MEAN),
        "frame_std": list(IMAGENET_STD),
        "image_start_token_id": None,
        "image_end_token_id": None,
        "has_tokenizer": False,
    }
    if backbone.frame_encoder_config is not None:
        settings["frame_size"] = _square(backbone.frame_encoder_config.image_size)
    if checkpoint is None or not _has_processor(checkpoint):
        return settings
    processor = PELAProcessor.from_pretrained(checkpoint)
    settings["image_size"], settings["image_mean"], settings["image_std"] = _image_processor_settings(
        processor.image_processor
    )
    if processor.frame_processor is not None:
        settings["frame_size"], settings["frame_mean"], settings["frame_std"] = _image_processor_settings(
            processor.frame_processor
        )
    settings["image_start_token_id"] = processor.image_start_token_id
    settings["image_end_token_id"] = processor.image_end_token_id
    settings["has_tokenizer"] = True
    return settings


class PelaBackbone(nn.Module):
    """PELA model -> predictive embeddings for the flow-matching head.

    Args:
        model: a PELA model; its ``config.align_layer`` is the layer read (set by :func:`resolve_backbone_config`).
        inputs: the input settings of :func:`resolve_input_settings`.
        hands: ``"left"``, ``"right"`` or ``"both"``: the hands whose latent-state block and all-``[MASK]`` motion
            chunk the prompt holds (left before right, as in pretraining).
        tuning: ``"full"``, ``"lora"`` or ``"frozen"`` (the language model; everything else is always frozen).
        lora_rank / lora_alpha / lora_dropout: LoRA hyper-parameters for ``tuning="lora"``.
    """

    def __init__(
        self,
        model: PELAForPretraining,
        inputs: dict[str, Any],
        hands: str = "right",
        tuning: str = "full",
        lora_rank: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        config = model.config
        if config.frame_encoder_config is None and config.use_latent_state:
            raise ValueError(
                "this PELA checkpoint reads precomputed frame features: the policy needs a model with its frame encoder"
            )
        if hands not in (*HAND_SIDES, "both"):
            raise ValueError(f"hands must be 'left', 'right' or 'both', got {hands!r}")
        self.model = model
        self.hands = HAND_SIDES if hands == "both" else (hands,)
        self.image_start_token_id = inputs["image_start_token_id"]
        self.image_end_token_id = inputs["image_end_token_id"]
        self.frame_size = inputs["frame_size"]
        # VLM-normalised images -> frame-encoder-normalised: x_f = x_v * scale + shift (per channel)
        image_mean, image_std = torch.tensor(inputs["image_mean"]), torch.tensor(inputs["image_std"])
        frame_mean, frame_std = torch.tensor(inputs["frame_mean"]), torch.tensor(inputs["frame_std"])
        self.register_buffer("frame_scale", (image_std / frame_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("frame_shift", ((image_mean - frame_mean) / frame_std).view(1, 3, 1, 1), persistent=False)
        _drop_layers_after(model, config.align_layer)
        model.requires_grad_(False)
        if tuning == "full":
            model.get_decoder().requires_grad_(True)
        elif tuning == "lora":
            _inject_lora(model, lora_rank, lora_alpha, lora_dropout)
        elif tuning != "frozen":
            raise ValueError(f"tuning must be 'full', 'lora' or 'frozen', got {tuning!r}")
        self.tuning = tuning
        self.train()

    def train(self, mode: bool = True) -> PelaBackbone:
        """``mode`` for the language model being tuned; everything frozen (vision tower, projector, frame encoder,
        perceivers with their latent standardisation, a ``"frozen"`` language model) stays in eval mode, so dropout
        and batch statistics never change what the pretrained parts compute."""
        super().train(False)
        if self.tuning != "frozen":
            self.model.get_decoder().train(mode)
        return self

    @property
    def hidden_size(self) -> int:
        """``D``, width of the predictive embeddings."""
        return self.model.config.hidden_size

    @property
    def num_tokens(self) -> int:
        """``N * K``, predictive embeddings per observation (N = one chunk per hand)."""
        return len(self.hands) * self.model.config.tokens_per_chunk

    def prompt_suffix(self, num_cameras: int, device: torch.device) -> torch.Tensor:
        """(L_s,) ids following the instruction: image blocks, latent-state blocks, all-``[MASK]`` chunks (the layout
        of ``PELAProcessor`` for a prompt whose chunks are all masked)."""
        config = self.model.config
        K = config.tokens_per_chunk
        image_block = [config.image_token_id] * config.vlm_config.image_seq_length
        if self.image_start_token_id is not None:
            image_block = [self.image_start_token_id, *image_block]
        if self.image_end_token_id is not None:
            image_block = [*image_block, self.image_end_token_id]
        state_ids = {"left": config.state_left_token_id, "right": config.state_right_token_id}
        states = [state_ids[hand] for hand in self.hands for _ in range(K)] if config.use_latent_state else []
        chunk = [config.mot_start_token_id] + [config.mask_token_id] * K + [config.mot_end_token_id]
        ids = image_block * num_cameras + states + chunk * len(self.hands)
        return torch.tensor(ids, dtype=torch.long, device=device)

    def forward(
        self, images: list[torch.Tensor], instruction_ids: torch.Tensor, instruction_mask: torch.Tensor
    ) -> torch.Tensor:
        """Predictive embeddings of a batch of observations.

        Args:
            images: one (B, 3, S, S) tensor per camera, resized and normalised for the VLM (``PelaImageProcessorStep``).
            instruction_ids: (B, L) int64 instruction tokens, left-padded; instruction_mask: (B, L), 1 = real token.

        Returns:
            (B, N * K, D) hidden states of ``align_layer`` at the motion positions (N = number of hands).
        """
        config = self.model.config
        if not images:
            raise ValueError("the backbone needs at least one camera image")
        batch = instruction_ids.shape[0]
        if bool((instruction_ids[instruction_mask.bool()] >= config.motion_token_offset).any()):
            raise ValueError(
                f"instruction token ids must lie in the backbone's text vocabulary [0, {config.motion_token_offset}): "
                "is the tokenizer the backbone's?"
            )
        suffix = self.prompt_suffix(len(images), instruction_ids.device).expand(batch, -1)
        input_ids = torch.cat([instruction_ids.long(), suffix], dim=1)
        attention_mask = torch.cat([instruction_mask.long(), torch.ones_like(suffix)], dim=1)
        dtype = self.model.dtype
        pixel_values = torch.stack(images, dim=1).flatten(0, 1).to(dtype)  # (B * cameras, 3, S, S), sample order
        frame_pixel_values = None
        if config.use_latent_state:
            frame = images[0] * self.frame_scale + self.frame_shift
            if frame.shape[-1] != self.frame_size or frame.shape[-2] != self.frame_size:
                frame = F.interpolate(frame, size=(self.frame_size,) * 2, mode="bilinear", antialias=True)
            frame_pixel_values = frame[:, None].to(dtype)  # (B, 1, 3, H', W'): frame 0 feeds the LSP
        output = self.model.get_predictive_embeddings(
            input_ids, attention_mask, pixel_values=pixel_values, frame_pixel_values=frame_pixel_values
        )
        return output.predictive_embeddings.flatten(1, 2)  # (B, N, K, D) -> (B, N * K, D)


def load_backbone_model(config: PelaConfig, load_weights: bool) -> PELAForPretraining:
    """The policy's PELA model: pretrained weights from ``config.pretrained_backbone`` when ``load_weights`` (a new
    fine-tune), else randomly initialised from the resolved configuration (a new from-scratch policy, or a saved
    policy whose weights come from its own ``model.safetensors``)."""
    backbone_config = resolve_backbone_config(config)
    if load_weights and config.pretrained_backbone:
        model = AutoModel.from_pretrained(config.pretrained_backbone, trust_remote_code=True)
        if not isinstance(model, PELAForPretraining):
            raise ValueError(f"{config.pretrained_backbone!r} did not load as a PELAForPretraining model")
        model.config.align_layer = backbone_config.align_layer
        model.config.check_consistency()
        return model
    return PELAForPretraining(backbone_config)


def _drop_layers_after(model: PELAForPretraining, layer: int) -> None:
    """Keep the first ``layer`` decoder layers: later ones do not influence the layer's hidden states."""
    decoder = model.get_decoder()
    decoder.layers = decoder.layers[:layer]
    text_config = decoder.config
    text_config.num_hidden_layers = layer
    if getattr(text_config, "layer_types", None) is not None:
        text_config.layer_types = text_config.layer_types[:layer]


def _inject_lora(model: PELAForPretraining, rank: int, alpha: int, dropout: float) -> None:
    """LoRA adapters on the decoder layers' attention and MLP projections; only they are trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    decoder = model.get_decoder()
    prefix = next(name for name, module in model.named_modules() if module is decoder)
    targets = rf"{re.escape(prefix)}\.layers\.\d+\.({LORA_TARGETS})"
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets), model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)


def _square(size: int | list[int] | tuple[int, int]) -> int:
    """An ``image_size`` (an int or a square (H, W) pair) as one int."""
    if isinstance(size, int):
        return size
    height, width = size
    if height != width:
        raise ValueError(f"the policy feeds square images, but the backbone expects {height}x{width}")
    return int(height)


def _image_processor_settings(processor: Any) -> tuple[int, list[float], list[float]]:
    """(size, mean, std) of a transformers image processor that rescales to [0, 1] and normalises."""
    if not (processor.do_rescale and abs(processor.rescale_factor - 1 / 255) < 1e-9 and processor.do_normalize):
        raise ValueError(f"{type(processor).__name__} must rescale by 1/255 and normalise, as the policy's images do")
    size = processor.size
    return _square((size["height"], size["width"])), list(processor.image_mean), list(processor.image_std)


def _has_processor(checkpoint: str) -> bool:
    """Whether a PELA checkpoint (local folder or Hub id) holds a saved ``PELAProcessor``."""
    if Path(checkpoint).is_dir():
        return (Path(checkpoint) / "processor_config.json").exists()
    return file_exists(checkpoint, "processor_config.json")
