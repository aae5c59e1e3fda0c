"""The PELA LeRobot policy: predictive embeddings of a PELA backbone condition a flow-matching DiT action head.

Per observation (B samples), the backbone turns the camera images and the tokenised instruction into the predictive
embeddings ``cond`` (B, N * K, D) (:class:`~lerobot_policy_pela.backbone.PelaBackbone`); the head
(:class:`~modeling_pela.flow_matching_head.FlowMatchingActionHead`) is trained with the flow-matching loss of the
paper (eq. 5) on normalised action chunks (B, T, D_action) and, at inference, integrates 4 forward Euler steps from
Gaussian noise. The backbone prefix runs once per observation: its embeddings are projected to the head's
cross-attention keys/values once and reused by every Euler step.
"""

from __future__ import annotations

from collections import deque
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import torch
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import EntryNotFoundError
from lerobot.policies.pretrained import ActionSelectKwargs, PreTrainedPolicy
from lerobot.processor import (
    PolicyProcessorPipeline,
    batch_to_transition,
    policy_action_to_transition,
    transition_to_batch,
    transition_to_policy_action,
)
from lerobot.utils.constants import (
    ACTION,
    OBS_LANGUAGE_ATTENTION_MASK,
    OBS_LANGUAGE_TOKENS,
    OBS_STATE,
    POLICY_POSTPROCESSOR_DEFAULT_NAME,
    POLICY_PREPROCESSOR_DEFAULT_NAME,
)
from torch import Tensor

from modeling_pela.flow_matching_head import FlowMatchingActionHead

from .backbone import PelaBackbone, load_backbone_model
from .configuration_pela import PelaConfig

if TYPE_CHECKING:
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

CARD_TAGS = ("lerobot", "robotics", "vla", "pela", "flow-matching")


class PelaPolicy(PreTrainedPolicy):
    """PELA policy (see the module docstring). Built by LeRobot's factory from a :class:`PelaConfig`.

    A new policy loads the pretrained backbone from ``config.pretrained_backbone`` (or initialises the
    ``backbone_preset`` randomly); :meth:`from_pretrained` rebuilds the architecture from the saved
    ``config.backbone_config`` and loads every weight from the policy's own ``model.safetensors``.

    ``preprocessor`` / ``postprocessor``: the processor pipelines saved with the policy (set by
    :meth:`from_pretrained` when the folder holds them, or by the user); :meth:`save_pretrained` and ``push_to_hub``
    write them next to the weights, with a model card rendered from ``hub_cards/pela_policy_card.md``.
    """

    config_class = PelaConfig
    name = "pela"

    def __init__(self, config: PelaConfig, *, load_backbone_weights: bool = True, **kwargs: Any) -> None:
        """Build the backbone (frozen vision, tuned language model) and the head.

        Args:
            config: the policy configuration, with its input/output features set.
            load_backbone_weights: load ``config.pretrained_backbone``'s weights (False when the policy's own
                weights are loaded next, see :meth:`from_pretrained`).
            kwargs: LeRobot factory arguments: ``dataset_meta`` (its ``repo_id`` is recorded in
                ``config.dataset_repo_id`` for the model card); ``dataset_stats`` is ignored (the processors
                normalise).
        """
        super().__init__(config)
        config.validate_features()
        dataset_meta = kwargs.get("dataset_meta")
        if config.dataset_repo_id is None and getattr(dataset_meta, "repo_id", None):
            config.dataset_repo_id = dataset_meta.repo_id
        self.config = config
        model = load_backbone_model(config, load_weights=load_backbone_weights)
        self.backbone = PelaBackbone(
            model,
            config.backbone_inputs,
            hands=config.motion_hands,
            tuning=config.backbone_tuning,
            lora_rank=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
        )
        self.head = FlowMatchingActionHead(config.head_config(cond_dim=self.backbone.hidden_size))
        self._action_queue: deque[Tensor] = deque(maxlen=config.n_action_steps)
        self.preprocessor: PolicyProcessorPipeline | None = None
        self.postprocessor: PolicyProcessorPipeline | None = None

    # -- saving and loading ----------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path: str | Path, **kwargs: Any) -> PelaPolicy:
        """Load a saved PELA policy (local folder or Hub id) and, when the folder holds them, its processors.

        The backbone checkpoint it was fine-tuned from is not needed: the architecture comes from the saved
        ``config.backbone_config`` and every weight from ``model.safetensors``."""
        kwargs.setdefault("load_backbone_weights", False)
        policy = super().from_pretrained(pretrained_name_or_path, **kwargs)
        policy.preprocessor, policy.postprocessor = _load_processors(pretrained_name_or_path)
        return policy

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        state_dict: dict[str, Tensor] | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write ``config.json``, ``model.safetensors``, the attached processors and ``README.md`` (model card; its
        template arguments, e.g. ``dataset_repo_id`` and ``metrics``, in ``card_kwargs``), then optionally push the
        folder to the Hub (``repo_id`` defaults to the folder name)."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        self._save_pretrained(save_directory, state_dict=state_dict)
        for processor in (self.preprocessor, self.postprocessor):
            if processor is not None:
                processor.save_pretrained(save_directory)
        self.model_card(**(card_kwargs or {})).save(str(save_directory / "README.md"))
        if push_to_hub:
            return self.push_to_hub(repo_id or save_directory.name, card_kwargs=card_kwargs, **push_to_hub_kwargs)
        return None

    def generate_model_card(
        self,
        dataset_repo_id: str,
        model_type: str,
        license: str | None,
        tags: list[str] | None,
        cfg: TrainPipelineConfig | None = None,
        dataset_meta: LeRobotDatasetMetadata | None = None,
    ) -> ModelCard:
        """The PELA model card for LeRobot's ``push_model_to_hub`` (``lerobot-train --policy.push_to_hub=true``);
        license and tags come from the policy config, as LeRobot passes them."""
        training = None
        if cfg is not None:
            training = f"{cfg.steps} steps, batch size {cfg.batch_size}, seed {cfg.seed}"
        return self.model_card(dataset_repo_id=dataset_repo_id, dataset_meta=dataset_meta, training=training)

    def model_card(
        self,
        dataset_repo_id: str | None = None,
        metrics: dict[str, Any] | None = None,
        metrics_note: str | None = None,
        dataset_meta: LeRobotDatasetMetadata | None = None,
        training: str | None = None,
        env_type: str = "metaworld",
    ) -> ModelCard:
        """Render ``hub_cards/pela_policy_card.md``: base model, dataset, metrics (e.g. closed-loop success rates),
        license and the tags ``lerobot``, ``robotics``, ``vla``."""
        config = self.config
        dataset_repo_id = dataset_repo_id or config.dataset_repo_id
        backbone = self.backbone.model.config
        base_model = config.pretrained_backbone
        hub_base_model = base_model if base_model and not Path(base_model).exists() else None
        card_data = ModelCardData(
            license=config.license or "apache-2.0",
            library_name="lerobot",
            pipeline_tag="robotics",
            tags=sorted(set(CARD_TAGS) | set(config.tags or [])),
            datasets=[dataset_repo_id] if dataset_repo_id else None,
            base_model=hub_base_model,
            model_name=config.repo_id or "PELA policy",
        )
        if dataset_meta is not None:
            dataset_text = (
                f"`{dataset_meta.repo_id}` ({dataset_meta.total_episodes} episodes, {dataset_meta.total_frames} frames)"
            )
        else:
            dataset_text = f"`{dataset_repo_id}`" if dataset_repo_id else "not recorded"
        if base_model:
            base_model_text = f"`{base_model}` (PELA checkpoint)"
        else:
            base_model_text = f"none: backbone trained from a random initialisation (`{config.backbone_preset}` preset)"
        head = self.head.config
        template = files("hub_cards").joinpath("pela_policy_card.md").read_text(encoding="utf-8")
        return ModelCard.from_template(
            card_data,
            template_str=template,
            model_name=config.repo_id or "PELA policy",
            repo_id=config.repo_id or "<user>/<repo>",
            base_model_text=base_model_text,
            backbone_tuning=config.backbone_tuning,
            dataset_text=dataset_text,
            cameras=", ".join(f"`{key}`" for key in config.image_features),
            state_dim=config.robot_state_feature.shape[0],
            action_dim=config.action_feature.shape[0],
            license=card_data.license,
            training=training,
            metrics=metrics or {},
            metrics_note=metrics_note,
            align_layer=backbone.align_layer,
            num_embeddings=self.backbone.num_tokens,
            embedding_dim=self.backbone.hidden_size,
            head_layers=head.num_layers,
            head_heads=head.num_heads,
            head_hidden=head.hidden_size,
            chunk_size=head.chunk_size,
            num_inference_steps=head.num_inference_steps,
            env_type=env_type,
            example_task="Reach a goal position",
        )

    # -- LeRobot interface -------------------------------------------------------------------------------------------

    def get_optim_params(self) -> list[torch.nn.Parameter]:
        """The trainable parameters: the head, plus the language model or its LoRA adapters."""
        return [parameter for parameter in self.parameters() if parameter.requires_grad]

    def reset(self) -> None:
        """Clear the queue of pending actions (called at every environment reset)."""
        self._action_queue.clear()

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict[str, float]]:
        """Flow-matching loss of a pre-processed training batch.

        Args:
            batch: camera images (B, 3, S, S), ``observation.state`` (B, D_state), the instruction tokens and mask
                (B, L), ``action`` (B, T, D_action) and ``action_is_pad`` (B, T), all normalised by the pre-processor.
            reduction: ``"mean"`` (scalar) or ``"none"`` ((B,) per-sample losses, for LeRobot's sample weighting).
        """
        cond = self.predictive_embeddings(batch)
        output = self.head(
            cond, batch[OBS_STATE], batch[ACTION], action_is_pad=batch.get("action_is_pad"), reduction=reduction
        )
        return output.loss, {"flow_matching_loss": output.loss.detach().mean().item()}

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs: Unpack[ActionSelectKwargs]) -> Tensor:
        """(B, T, D_action) normalised action chunk: backbone once, then ``num_inference_steps`` Euler steps of the
        head from ``noise`` (optional (B, T, D_action); default standard Gaussian from the global torch RNG)."""
        self.eval()
        condition = self.head.encode_condition(self.predictive_embeddings(batch))
        return self.head.sample_from_condition(condition, batch[OBS_STATE], noise=kwargs.get("noise"))

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs: Unpack[ActionSelectKwargs]) -> Tensor:
        """(B, D_action) the next action: predicts a chunk when the queue is empty and executes its first
        ``n_action_steps`` actions one per call."""
        self.eval()
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch, **kwargs)[:, : self.config.n_action_steps]
            self._action_queue.extend(chunk.transpose(0, 1))  # n_action_steps x (B, D_action)
        return self._action_queue.popleft()

    # -- PELA ------------------------------------------------------------------------------------------------------

    def predictive_embeddings(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, N * K, D) backbone embeddings of a pre-processed batch (no gradient with a frozen backbone)."""
        images = [batch[key] for key in self.config.image_features]
        tokens, mask = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.backbone_tuning != "frozen"):
            return self.backbone(images, tokens, mask)


def _load_processors(
    pretrained_name_or_path: str | Path,
) -> tuple[PolicyProcessorPipeline | None, PolicyProcessorPipeline | None]:
    """The pre/post-processors saved in a policy folder or Hub repository, or ``(None, None)`` if it has none."""
    path = Path(pretrained_name_or_path)
    if path.is_dir() and not (path / f"{POLICY_PREPROCESSOR_DEFAULT_NAME}.json").exists():
        return None, None
    try:
        preprocessor = PolicyProcessorPipeline.from_pretrained(
            str(pretrained_name_or_path),
            config_filename=f"{POLICY_PREPROCESSOR_DEFAULT_NAME}.json",
            to_transition=batch_to_transition,
            to_output=transition_to_batch,
        )
    except (EntryNotFoundError, FileNotFoundError):
        return None, None
    postprocessor = PolicyProcessorPipeline.from_pretrained(
        str(pretrained_name_or_path),
        config_filename=f"{POLICY_POSTPROCESSOR_DEFAULT_NAME}.json",
        to_transition=policy_action_to_transition,
        to_output=transition_to_policy_action,
    )
    return preprocessor, postprocessor
