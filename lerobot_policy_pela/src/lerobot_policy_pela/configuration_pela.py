"""Configuration of the PELA LeRobot policy: a PELA backbone's predictive embeddings feed a flow-matching DiT head.

Post-training as in the paper (section 4.3, appendix A.3-A.4): the predictive embeddings ``{h_{i,k}}`` (hidden states
of the backbone LLM's ``align_layer`` at the motion-token positions) condition a GR00T N1.5-style DiT trained with
flow matching; the vision modules stay frozen, the language model is trained (``backbone_tuning="full"``) or adapted
with LoRA (``"lora"``); AdamW, learning rate 1e-4, cosine decay with 5% warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lerobot.configs import FeatureType, NormalizationMode, PreTrainedConfig
from lerobot.optim import AdamWConfig, CosineDecayWithWarmupSchedulerConfig
from lerobot.utils.constants import ACTION, OBS_STATE

from modeling_pela.flow_matching_head import TAU_DISTRIBUTIONS, FlowMatchingActionHeadConfig

BACKBONE_TUNINGS = ("full", "lora", "frozen")
HEAD_PRESETS = ("tiny", "full")
BACKBONE_PRESETS = ("tiny", "2b")
MOTION_HANDS = ("left", "right", "both")


@PreTrainedConfig.register_subclass("pela")
@dataclass
class PelaConfig(PreTrainedConfig):
    """Hyper-parameters of :class:`~lerobot_policy_pela.modeling_pela.PelaPolicy`.

    Input / output:
        n_obs_steps: observation steps given to the policy (1: the current one).
        chunk_size: ``T``, actions predicted per chunk (the DiT's action horizon).
        n_action_steps: actions of a chunk executed before the next prediction (``<= chunk_size``).

    Backbone:
        pretrained_backbone: a local folder or Hub id of a pretrained PELA checkpoint (``PELAForPretraining``
            saved with ``save_pretrained``), loaded with ``AutoModel.from_pretrained(..., trust_remote_code=True)``.
            ``None``: a randomly initialised PELA model of ``backbone_preset`` (the "from scratch" baseline).
        backbone_preset: ``PELAConfig`` preset used without ``pretrained_backbone`` (``"tiny"`` or ``"2b"``).
        backbone_config: the backbone's ``PELAConfig.to_dict()``, filled in when the policy is first built so that a
            saved policy rebuilds its backbone without the original checkpoint (its weights are in the policy's
            ``model.safetensors``). Leave it unset.
        backbone_inputs: how the backbone reads its inputs (image sizes and normalisation of the VLM and of the frame
            encoder, image-block wrapper ids, whether the checkpoint ships a tokenizer), filled in from the
            checkpoint's ``PELAProcessor`` (or the model configuration) together with ``backbone_config``. Leave it
            unset.
        motion_hands: the hand(s) whose all-``[MASK]`` motion chunk (and latent-state block) the backbone reads:
            ``"right"`` (a single arm; N = 1 chunk of K tokens), ``"left"`` or ``"both"`` (bimanual; N = 2).
        align_layer: 1-based LLM layer whose hidden states at the motion positions feed the head (paper ablation:
            14, 19, 24, 28 of 28). ``None``: the backbone's own ``align_layer`` (19 for the 2B model).
        backbone_tuning: ``"full"``: the language model is trained; ``"lora"``: LoRA adapters on the language
            model's attention and MLP projections; ``"frozen"``: only the head trains. The vision modules are
            always frozen.
        lora_rank / lora_alpha / lora_dropout: LoRA hyper-parameters (``backbone_tuning="lora"``).
        tokenizer_name: tokenizer of the instructions (a folder or Hub id). ``None``: the ``pretrained_backbone``
            checkpoint's tokenizer when it ships one (saved with its ``PELAProcessor``), else a byte-level tokenizer
            whose ids fit any backbone text vocabulary of at least 248 ids (the tiny preset's included).
        tokenizer_max_length: instructions are padded / truncated to this many tokens.

    Head (:class:`~modeling_pela.flow_matching_head.FlowMatchingActionHeadConfig`):
        head_preset: ``"tiny"`` (CPU) or ``"full"`` (the paper: 16 layers, 32 heads, hidden size 2048).
        head_hidden_size / head_num_layers / head_num_heads: override the preset's sizes.
        head_dropout: dropout in the DiT.
        num_inference_steps: forward Euler steps from noise to actions (4 in the paper).
        tau_distribution: ``"beta"`` (GR00T N1.5, skewed to the noisy end) or ``"uniform"`` training timesteps.

    Training presets (appendix A.4, post-training): AdamW (lr 1e-4, betas (0.9, 0.95), weight decay 0.05, gradient
    clipping 1.0); cosine decay to ``scheduler_decay_lr`` over ``scheduler_decay_steps`` with a linear warm-up of
    ``scheduler_warmup_ratio`` (5%) of them. Runs shorter than ``scheduler_decay_steps`` compress the whole schedule
    into their steps (LeRobot's ``cosine_decay_with_warmup``), so the warm-up stays 5% of the run.
    """

    n_obs_steps: int = 1
    chunk_size: int = 16
    n_action_steps: int = 8

    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )

    # Backbone
    pretrained_backbone: str | None = None
    backbone_preset: str = "tiny"
    backbone_config: dict[str, Any] | None = None
    backbone_inputs: dict[str, Any] | None = None
    motion_hands: str = "right"
    align_layer: int | None = None
    backbone_tuning: str = "full"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    tokenizer_name: str | None = None
    tokenizer_max_length: int = 48
    # the LeRobot dataset the policy is trained on (set from the factory's dataset metadata; named by the model card)
    dataset_repo_id: str | None = None

    # Flow-matching head
    head_preset: str = "tiny"
    head_hidden_size: int | None = None
    head_num_layers: int | None = None
    head_num_heads: int | None = None
    head_dropout: float = 0.0
    num_inference_steps: int = 4
    tau_distribution: str = "beta"

    # Training presets
    optimizer_lr: float = 1e-4
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 0.05
    optimizer_grad_clip_norm: float = 1.0
    scheduler_warmup_ratio: float = 0.05
    scheduler_decay_steps: int = 30_000
    scheduler_decay_lr: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(
                f"n_action_steps ({self.n_action_steps}) must be between 1 and chunk_size ({self.chunk_size})"
            )
        if self.n_obs_steps != 1:
            raise ValueError(
                f"PELA conditions on the current observation only: n_obs_steps must be 1, got {self.n_obs_steps}"
            )
        choices = {
            "backbone_tuning": BACKBONE_TUNINGS, "head_preset": HEAD_PRESETS, "backbone_preset": BACKBONE_PRESETS,
            "tau_distribution": TAU_DISTRIBUTIONS, "motion_hands": MOTION_HANDS,
        }  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.align_layer is not None and self.align_layer < 1:
            raise ValueError(f"align_layer is 1-based and must be >= 1, got {self.align_layer}")
        if self.num_inference_steps < 1 or self.tokenizer_max_length < 1:
            raise ValueError("num_inference_steps and tokenizer_max_length must be >= 1")
        if not 0.0 <= self.scheduler_warmup_ratio < 1.0:
            raise ValueError(f"scheduler_warmup_ratio must be in [0, 1), got {self.scheduler_warmup_ratio}")

    # -- LeRobot interface -------------------------------------------------------------------------------------------

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None

    def validate_features(self) -> None:
        """Raise ``ValueError`` unless the features hold at least one camera, the state and the action."""
        if not self.image_features:
            raise ValueError("PELA needs at least one image feature (observation.image or observation.images.*)")
        if self.robot_state_feature is None:
            raise ValueError(f"PELA needs the proprioceptive state feature '{OBS_STATE}'")
        if self.action_feature is None:
            raise ValueError(f"PELA needs the output feature '{ACTION}'")
        for name, feature in self.input_features.items():
            if feature.type is FeatureType.STATE and len(feature.shape) != 1:
                raise ValueError(f"state feature {name} must be 1-D, got shape {feature.shape}")

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(
            lr=self.optimizer_lr,
            betas=self.optimizer_betas,
            eps=self.optimizer_eps,
            weight_decay=self.optimizer_weight_decay,
            grad_clip_norm=self.optimizer_grad_clip_norm,
        )

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(
            peak_lr=self.optimizer_lr,
            decay_lr=self.scheduler_decay_lr,
            num_warmup_steps=round(self.scheduler_warmup_ratio * self.scheduler_decay_steps),
            num_decay_steps=self.scheduler_decay_steps,
        )

    # -- PELA ------------------------------------------------------------------------------------------------------

    def head_config(self, cond_dim: int) -> FlowMatchingActionHeadConfig:
        """The head's configuration for conditioning embeddings of width ``cond_dim`` (the backbone's LLM width)."""
        overrides = {
            "hidden_size": self.head_hidden_size, "num_layers": self.head_num_layers, "num_heads": self.head_num_heads,
        }  # fmt: skip
        preset = FlowMatchingActionHeadConfig.full if self.head_preset == "full" else FlowMatchingActionHeadConfig.tiny
        return preset(
            action_dim=self.action_feature.shape[0],
            state_dim=self.robot_state_feature.shape[0],
            chunk_size=self.chunk_size,
            cond_dim=cond_dim,
            dropout=self.head_dropout,
            num_inference_steps=self.num_inference_steps,
            tau_distribution=self.tau_distribution,
            **{name: value for name, value in overrides.items() if value is not None},
        )
