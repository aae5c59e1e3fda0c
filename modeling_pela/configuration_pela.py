"""Configuration of the PELA model (paper section 4 and appendix A): VLM backbone, frame encoder, latent perceivers,
alignment, decoupled EMA and the motion vocabulary.

Token layout of the extended vocabulary (``T = motion_token_offset`` = the backbone's text vocabulary size, ``C`` =
``codebook_size``)::

    [0, T)              backbone text vocabulary (instruction, image placeholder tokens, ...)
    [T, T + C)          wrist motion codes   (tokenizer ids [0, C))
    [T + C, T + 2C)     finger motion codes  (tokenizer ids [C, 2C))
    T + 2C              <mot>          start of a motion chunk
    T + 2C + 1          </mot>         end of a motion chunk
    T + 2C + 2          [MASK]         masked motion token (MCP)
    T + 2C + 3          <state_left>   placeholder replaced by a left-hand Latent State Perceiver latent
    T + 2C + 4          <state_right>  placeholder replaced by a right-hand Latent State Perceiver latent

The backbone's text ``vocab_size`` is extended to ``T + 2C + 5`` when the configuration is built from a backbone
configuration (``motion_token_offset=None``); a saved configuration stores both numbers and is checked on load.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto import CONFIG_MAPPING

MOTION_SPECIAL_TOKENS = ("<mot>", "</mot>", "[MASK]", "<state_left>", "<state_right>")


def motion_special_token_ids(motion_token_offset: int, codebook_size: int) -> dict[str, int]:
    """Model ids of :data:`MOTION_SPECIAL_TOKENS`, right after the ``2C`` motion codes (shared with the processor)."""
    start = motion_token_offset + 2 * codebook_size
    return {token: start + i for i, token in enumerate(MOTION_SPECIAL_TOKENS)}


OBJECTIVES = ("masked_chunk", "next_token")
FRAME_ENCODER_TYPES = ("dinov3_vit", "vjepa2")


def _as_config(value: dict | PreTrainedConfig, default_type: str) -> PreTrainedConfig:
    """A sub-configuration given as a dict (``model_type`` defaults to ``default_type``) or a config (copied, so that
    the vocabulary extension never mutates the caller's object)."""
    if isinstance(value, PreTrainedConfig):
        return copy.deepcopy(value)
    values = dict(value)
    model_type = values.pop("model_type", default_type)
    return CONFIG_MAPPING[model_type](**values)


def _internvl3_2b() -> dict[str, Any]:
    """InternVL3-2B (converted ``-hf`` format): InternViT-300M vision tower, Qwen2.5-1.5B text model (28 layers)."""
    return {
        "model_type": "internvl",
        "vision_config": {
            "model_type": "internvl_vision", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
            "intermediate_size": 4096, "image_size": 448, "patch_size": 14,
        },
        "text_config": {
            "model_type": "qwen2", "vocab_size": 151674, "hidden_size": 1536, "intermediate_size": 8960,
            "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
            "max_position_embeddings": 32768, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        },
        "image_token_id": 151667,
        "image_seq_length": 256,
        "downsample_ratio": 0.5,
    }  # fmt: skip


def _dinov3_vitl16() -> dict[str, Any]:
    """DINOv3 ViT-L/16 sizes (the paper does not name the variant)."""
    return {
        "model_type": "dinov3_vit", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "num_attention_heads": 16, "patch_size": 16, "image_size": 224, "num_register_tokens": 4,
        "layerscale_value": 1e-5,
    }  # fmt: skip


class MotionSpecialTokensMixin:
    """Ids of the motion special tokens for any object with ``motion_token_offset`` and ``codebook_size`` (the
    config and the processor)."""

    motion_token_offset: int
    codebook_size: int

    @property
    def _special_ids(self) -> dict[str, int]:
        return motion_special_token_ids(self.motion_token_offset, self.codebook_size)

    @property
    def mot_start_token_id(self) -> int:
        return self._special_ids["<mot>"]

    @property
    def mot_end_token_id(self) -> int:
        return self._special_ids["</mot>"]

    @property
    def mask_token_id(self) -> int:
        return self._special_ids["[MASK]"]

    def state_token_id(self, hand: str) -> int:
        """Id of the Latent State Perceiver's placeholder token of ``hand`` (``"left"`` or ``"right"``)."""
        return self._special_ids[f"<state_{hand}>"]

    @property
    def state_left_token_id(self) -> int:
        return self.state_token_id("left")

    @property
    def state_right_token_id(self) -> int:
        return self.state_token_id("right")


def motion_vocabulary(tokenizer_config: Any) -> dict[str, int]:
    """The ``PELAConfig`` fields a motion tokenizer's config fixes: codebook size, tokens (and latent queries) per
    chunk, chunk length."""
    return {
        "codebook_size": tokenizer_config.codebook_size,
        "tokens_per_chunk": tokenizer_config.tokens_per_chunk,
        "num_latent_queries": tokenizer_config.tokens_per_chunk,
        "chunk_length": tokenizer_config.chunk_length,
    }


PAPER_ALIGN_LAYER, PAPER_TEXT_DEPTH = 19, 28  # predictive embeddings of layer 19 of InternVL3-2B's 28

PRESETS: dict[str, dict[str, Any]] = {
    "2b": {},  # the class defaults
    "tiny": {
        "vlm_config": {
            "model_type": "internvl",
            "vision_config": {
                "model_type": "internvl_vision",
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "image_size": 56,
                "patch_size": 14,
            },
            "text_config": {
                "model_type": "qwen2",
                "vocab_size": 256,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 4096,
            },
            "image_token_id": 255,
            "image_seq_length": 4,
        },
        "frame_encoder_config": {
            "model_type": "dinov3_vit",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": 14,
            "image_size": 56,
            "num_register_tokens": 1,
        },
        "perceiver_hidden_size": 32,
        "perceiver_num_heads": 2,
        "perceiver_head_hidden_size": 64,
        "standardize_latents": True,
        "align_layer": 3,
        "codebook_size": 128,
    },
}


def _preset_fields(name: str) -> dict[str, Any]:
    """A copy of preset ``name``'s fields; ``ValueError`` naming the presets for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown PELA preset {name!r}; choose from {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


class PELAConfig(MotionSpecialTokensMixin, PreTrainedConfig):
    r"""Hyper-parameters of :class:`~modeling_pela.modeling_pela.PELAForPretraining`. ``PELAConfig()`` is the paper's
    2B configuration; :meth:`tiny` is a CPU-test preset. Inconsistent values raise ``ValueError`` at construction.

    Args:
        vlm_config: configuration of the image-text-to-text backbone (built with ``AutoModelForImageTextToText``).
            Default: InternVL3-2B (InternViT-300M + Qwen2.5-1.5B, 28 layers). The backbone must scatter its image
            features at ``image_token_id`` placeholder tokens (InternVL, LLaVA-style models) and its text model must
            accept a per-layer-type attention-mask mapping (Qwen2, Llama, Gemma and most 5.x decoders do).
        frame_encoder_config: configuration of the frozen frame encoder feeding the perceivers: ``dinov3_vit``
            (``DINOv3ViTModel``, each boundary frame encoded separately) or ``vjepa2`` (``VJEPA2Model``, the boundary
            pair encoded as one 2-frame clip). ``None`` together with ``frame_feature_dim`` means precomputed
            features; ``None`` alone means the default DINOv3 ViT-L/16.
        frame_feature_dim: width of precomputed frame features (only without a frame encoder).
        perceiver_hidden_size / perceiver_num_heads: width and attention heads of the latent perceiver.
        perceiver_num_layers: perceiver layers, each a cross-attention block (queries over frame features) followed
            by a self-attention block over the latents (2 in the paper).
        perceiver_mlp_ratio: hidden width of the perceiver blocks' MLPs, as a multiple of ``perceiver_hidden_size``.
        perceiver_readout_rank: features per patch of the perceivers' spatial readout (a linear map of the pooled
            patch grid added to every latent, :class:`~modeling_pela.perceiver.SpatialReadout`); 0 turns it off.
            Only used with a frame encoder (its tokens form a known patch grid).
        perceiver_readout_grid: the readout pools the patch grid to this many cells per side.
        perceiver_head_hidden_size: hidden width of the 2-layer output MLP (``None``: the LLM width). Its output has
            ``2 x`` the LLM width and is split into the left-hand and right-hand heads.
        standardize_latents: standardise the LSP's latent state and the LAP's latent actions per feature with
            running statistics over the training samples (:class:`~modeling_pela.perceiver.LatentStandardization`).
            Not in the paper; the ``"tiny"`` preset (the demo's) turns it on: without it the demo's models hardly
            read the first frame (README "Latest result").
        num_latent_queries: ``K``, learnable queries = latent actions per chunk; must equal ``tokens_per_chunk``.
        align_layer: 1-based index of the LLM layer whose output gives the predictive embeddings (19 of 28).
        lambda_align: weight of the alignment loss (0.5).
        ema_alpha: EMA coefficient of the decoupled perceiver update, paper eqs. 6-7 (0.999).
        codebook_size: ``C``, codes per part of the motion tokenizer (wrist ids ``[0, C)``, finger ids ``[C, 2C)``).
        tokens_per_chunk: motion tokens per hand-chunk (128 = 64 wrist + 64 finger).
        chunk_length: frames per motion chunk (15).
        motion_token_offset: first motion id in the model vocabulary (``T`` in the module docstring). ``None``: the
            backbone's text vocabulary size, whose ``vocab_size`` is then extended by ``2C + 5``.
        objective: ``"masked_chunk"`` (MCP: bidirectional attention inside a chunk, masked tokens predicted in
            place) or ``"next_token"`` (causal, shifted prediction; the Being-H0 baseline).
        align: align predictive embeddings with Latent Action Perceiver outputs (False: the "w/o align" baseline,
            no LAP, the LSP queries train directly).
        use_latent_state: inject Latent State Perceiver latents of the first frame as context (False and
            ``align=False``: the plain Being-H0 baseline without frame features).
        initializer_range: std of the normal initialisation of the perceiver weights.
    """

    model_type = "pela"
    sub_configs: ClassVar[dict[str, type[PreTrainedConfig]]] = {
        "vlm_config": AutoConfig,
        "frame_encoder_config": AutoConfig,
    }

    vlm_config: dict | PreTrainedConfig | None = None
    frame_encoder_config: dict | PreTrainedConfig | None = None
    frame_feature_dim: int | None = None
    perceiver_hidden_size: int = 1024
    perceiver_num_layers: int = 2
    perceiver_num_heads: int = 16
    perceiver_mlp_ratio: float = 4.0
    perceiver_readout_rank: int = 16
    perceiver_readout_grid: int = 8
    perceiver_head_hidden_size: int | None = None
    standardize_latents: bool = False
    num_latent_queries: int = 128
    align_layer: int = 19
    lambda_align: float = 0.5
    ema_alpha: float = 0.999
    codebook_size: int = 4096
    tokens_per_chunk: int = 128
    chunk_length: int = 15
    motion_token_offset: int | None = None
    objective: str = "masked_chunk"
    align: bool = True
    use_latent_state: bool = True
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs) -> None:
        self.vlm_config = _as_config(_internvl3_2b() if self.vlm_config is None else self.vlm_config, "internvl")
        if self.frame_encoder_config is None and self.frame_feature_dim is None:
            self.frame_encoder_config = _dinov3_vitl16()
        if self.frame_encoder_config is not None:
            self.frame_encoder_config = _as_config(self.frame_encoder_config, "dinov3_vit")
        text_config = self.text_config
        if self.motion_token_offset is None:
            self.motion_token_offset = text_config.vocab_size
            text_config.vocab_size = self.motion_token_offset + self.num_new_tokens
        self.check_consistency()
        super().__post_init__(**kwargs)

    # -- presets -------------------------------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PELAConfig:
        """``"tiny"`` (CPU tests: hidden 64, 4 LLM layers, 56 px images, align layer 3, codebook 128) or ``"2b"``
        (the paper: InternVL3-2B, DINOv3, align layer 19 of 28, codebook 4096); ``overrides`` replace fields."""
        return cls(**{**_preset_fields(name), **overrides})

    @classmethod
    def from_components(
        cls,
        vlm_config: PreTrainedConfig | None = None,
        frame_encoder_config: PreTrainedConfig | None = None,
        *,
        preset: str | None = None,
        **overrides: Any,
    ) -> PELAConfig:
        """The configuration of a PELA model around a loaded backbone (``vlm_config``, its text vocabulary extended by
        the motion vocabulary) and frame encoder (``frame_encoder_config``; ``None``: the preset's, or precomputed
        features when ``frame_feature_dim`` is given).

        Without ``preset`` the other fields follow the components: ``align_layer`` is the paper's depth fraction
        (layer 19 of 28) of the backbone's text model, rounded; ``perceiver_hidden_size`` and ``perceiver_num_heads``
        are the frame encoder's width and heads (1024 and 16 for DINOv3 / V-JEPA2 ViT-L, as in the paper); the rest
        are the class defaults (the paper's). With ``preset`` (``"2b"`` or ``"tiny"``) the preset's fields are used and
        only the component configs replace it. ``overrides`` win over both."""
        fields = _preset_fields(preset) if preset is not None else {}
        if vlm_config is not None:
            fields.update(vlm_config=vlm_config, motion_token_offset=None)
            if preset is None:
                depth = vlm_config.get_text_config().num_hidden_layers
                fields["align_layer"] = max(1, round(depth * PAPER_ALIGN_LAYER / PAPER_TEXT_DEPTH))
        if frame_encoder_config is not None:
            fields.update(frame_encoder_config=frame_encoder_config, frame_feature_dim=None)
            if preset is None:
                fields["perceiver_hidden_size"] = frame_encoder_config.hidden_size
                fields["perceiver_num_heads"] = frame_encoder_config.num_attention_heads
        elif overrides.get("frame_feature_dim") is not None:
            fields.pop("frame_encoder_config", None)
        return cls(**{**fields, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> PELAConfig:
        """The CPU-test preset (see :meth:`from_preset`)."""
        return cls.from_preset("tiny", **overrides)

    # -- derived sizes and token ids -------------------------------------------------------------------------------

    @property
    def text_config(self) -> PreTrainedConfig:
        """The backbone's text (decoder) configuration."""
        return self.vlm_config.get_text_config()

    @property
    def hidden_size(self) -> int:
        """Width of the LLM (predictive embeddings and latent actions)."""
        return self.text_config.hidden_size

    @property
    def num_new_tokens(self) -> int:
        """Rows added to the backbone vocabulary: ``2C`` motion codes + 5 special tokens."""
        return 2 * self.codebook_size + len(MOTION_SPECIAL_TOKENS)

    @property
    def image_token_id(self) -> int:
        """Placeholder id of the backbone's image features."""
        return getattr(self.vlm_config, "image_token_id", getattr(self.vlm_config, "image_token_index", None))

    @property
    def motion_vocab_size(self) -> int:
        """``2C``: wrist + finger code ids."""
        return 2 * self.codebook_size

    @property
    def wrist_token_range(self) -> tuple[int, int]:
        """Model ids ``[start, end)`` of wrist codes (slots ``[0, tokens_per_chunk / 2)`` of a chunk)."""
        return self.motion_token_offset, self.motion_token_offset + self.codebook_size

    @property
    def finger_token_range(self) -> tuple[int, int]:
        """Model ids ``[start, end)`` of finger codes (slots ``[tokens_per_chunk / 2, tokens_per_chunk)``)."""
        return self.motion_token_offset + self.codebook_size, self.motion_token_offset + self.motion_vocab_size

    @property
    def frame_encoder_type(self) -> str | None:
        """``"dinov3_vit"``, ``"vjepa2"`` or ``None`` (precomputed features)."""
        return None if self.frame_encoder_config is None else self.frame_encoder_config.model_type

    @property
    def frame_dim(self) -> int:
        """Width of the frame features entering the perceiver."""
        if self.frame_encoder_config is None:
            return self.frame_feature_dim
        return self.frame_encoder_config.hidden_size

    @property
    def uses_perceiver(self) -> bool:
        """Whether the model has latent perceivers (and needs frame inputs)."""
        return self.align or self.use_latent_state

    # -- validation ----------------------------------------------------------------------------------------------

    def check_consistency(self) -> None:
        """Raise ``ValueError`` naming the offending field(s) if the configuration cannot build a PELA model."""
        positive = (
            "perceiver_hidden_size", "perceiver_num_layers", "perceiver_num_heads", "num_latent_queries",
            "perceiver_readout_grid",
            "align_layer", "codebook_size", "tokens_per_chunk", "chunk_length",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PELAConfig.{name} must be a positive int, got {value!r}")
        text_config = self.text_config
        for name in ("vocab_size", "hidden_size", "num_hidden_layers"):
            if not isinstance(getattr(text_config, name, None), int):
                raise ValueError(f"the backbone's text config ({type(text_config).__name__}) has no int {name}")
        if self.image_token_id is None:
            raise ValueError(
                f"the backbone config ({type(self.vlm_config).__name__}) has no image_token_id: PELA needs a backbone "
                "that scatters image features at placeholder tokens"
            )
        depth = text_config.num_hidden_layers
        if self.align_layer > depth:
            raise ValueError(
                f"align_layer ({self.align_layer}) is beyond the depth of the backbone's text model ({depth} layers); "
                f"choose 1 <= align_layer <= {depth}"
            )
        if self.tokens_per_chunk % 2:
            raise ValueError(f"tokens_per_chunk must be even (wrist half + finger half), got {self.tokens_per_chunk}")
        if self.num_latent_queries != self.tokens_per_chunk:
            raise ValueError(
                f"num_latent_queries ({self.num_latent_queries}) must equal tokens_per_chunk ({self.tokens_per_chunk}):"
                " latent action k is aligned with the predictive embedding of motion token k"
            )
        expected_vocab = self.motion_token_offset + self.num_new_tokens
        if text_config.vocab_size != expected_vocab:
            raise ValueError(
                f"vocab/codebook mismatch: the text vocab_size is {text_config.vocab_size}, but motion_token_offset "
                f"({self.motion_token_offset}) + 2 x codebook_size ({self.codebook_size}) + "
                f"{len(MOTION_SPECIAL_TOKENS)} special tokens = {expected_vocab}"
            )
        if not 0 <= self.image_token_id < self.motion_token_offset:
            raise ValueError(
                f"image_token_id ({self.image_token_id}) must lie in the text vocabulary [0, {self.motion_token_offset})"
            )
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.align and not self.use_latent_state:
            raise ValueError(
                "align=True needs use_latent_state=True: the Latent Action Perceiver's trunk is an EMA of the Latent "
                "State Perceiver's trunk, which only trains through the latent-state path"
            )
        if self.frame_encoder_config is not None:
            if self.frame_encoder_type not in FRAME_ENCODER_TYPES:
                raise ValueError(
                    f"frame_encoder_config must be one of {FRAME_ENCODER_TYPES}, got {self.frame_encoder_type!r}"
                )
            if self.frame_feature_dim is not None:
                raise ValueError("give either frame_encoder_config or frame_feature_dim (precomputed), not both")
        elif not isinstance(self.frame_feature_dim, int) or self.frame_feature_dim < 1:
            raise ValueError(f"frame_feature_dim must be a positive int, got {self.frame_feature_dim!r}")
        if self.perceiver_hidden_size % self.perceiver_num_heads:
            raise ValueError(
                f"perceiver_hidden_size ({self.perceiver_hidden_size}) must be divisible by perceiver_num_heads "
                f"({self.perceiver_num_heads})"
            )
        if self.perceiver_head_hidden_size is not None and self.perceiver_head_hidden_size < 1:
            raise ValueError(f"perceiver_head_hidden_size must be >= 1, got {self.perceiver_head_hidden_size}")
        rank = self.perceiver_readout_rank
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
            raise ValueError(f"perceiver_readout_rank must be an int >= 0 (0: no spatial readout), got {rank!r}")
        if float(self.perceiver_mlp_ratio) <= 0:
            raise ValueError(f"perceiver_mlp_ratio must be > 0, got {self.perceiver_mlp_ratio}")
        if float(self.lambda_align) < 0:
            raise ValueError(f"lambda_align must be >= 0, got {self.lambda_align}")
        if not 0.0 <= float(self.ema_alpha) <= 1.0:
            raise ValueError(f"ema_alpha must be in [0, 1], got {self.ema_alpha}")


__all__ = [
    "MOTION_SPECIAL_TOKENS",
    "OBJECTIVES",
    "PRESETS",
    "MotionSpecialTokensMixin",
    "PELAConfig",
    "motion_special_token_ids",
]
