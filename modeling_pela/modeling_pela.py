"""PELA: Predictive Embedding as Latent Action (paper section 4, appendix A) as a Hugging Face model.

A VLM backbone (default InternVL3-2B) reads ``[instruction, first frame, latent state, <mot> A_1 </mot>, ...]``. The
hidden states of layer ``config.align_layer`` at the motion positions are the *predictive embeddings*; they are
trained by Masked Chunk Prediction (MCP) on labelled samples and aligned (L1) with the *latent actions* of the Latent
Action Perceiver (LAP), which reads the frozen frame encoder's features of each chunk's boundary frames. The Latent
State Perceiver (LSP, shared structure) reads the first frame and is injected into the VLM input. LAP and LSP are
linked by a decoupled EMA (:meth:`PELAForPretraining.ema_update`, eqs. 6-7).

Sequence layout (ids in the extended vocabulary, see :mod:`configuration_pela`; ``K = config.tokens_per_chunk``)::

    instruction text | image block (backbone image tokens) | <state_left> x K | <state_right> x K |
    <mot> m_1 ... m_K </mot> | <mot> ... </mot> | ... | (response text, eos)

Hand-chunks are interleaved in time (left then right at each step, appendix A.1); a state block and chunks exist
only for the hands present. ``m_1..m_{K/2}`` are wrist codes, ``m_{K/2+1}..m_K`` finger codes, each a motion id or
``[MASK]``. Chunk ``n`` of a sample is the ``n``-th ``<mot> ... </mot>`` group; attention is causal except inside a
chunk, where it is bidirectional (``objective="masked_chunk"``). Every motion position also receives a learned
*slot embedding* of its in-chunk index ``k`` (``motion_slot_embedding``, (K, D)): the ``[MASK]`` tokens of a chunk are
otherwise identical, and a small model cannot recover from rotary positions alone which of the K residual-quantiser
slots it predicts (it then predicts the marginal pooled over all slots).

Input contract of :meth:`PELAForPretraining.forward` (B samples, L tokens, N chunks, F boundary frames):

* ``input_ids`` (B, L) int64: already masked by the data collator (``[MASK]`` replaces the predicted motion tokens).
* ``attention_mask`` (B, L) int/bool, 1 for real tokens (right or left padding).
* ``pixel_values`` (num_images, 3, H, W) float: the backbone image processor's output, images in sample order.
* ``frame_pixel_values`` (B, F, 3, H', W') float for the frame encoder, or ``frame_features`` (B, F, D_f) / (B, F,
  P, D_f) float precomputed (``frame_encoder_config=None``). Frame 0 is the first frame (LSP input).
* ``chunk_hands`` (B, N) int64: 0 left, 1 right, -1 padding; ``chunk_frames`` (B, N) int64: index ``t`` of a chunk's
  start boundary frame (its end frame is ``t + 1``), -1 padding. Needed for the alignment loss.
* ``labels`` (B, L) int64, -100 where nothing is predicted. At motion positions: the original motion id, predicted
  in place (MCP) or from the previous position (``next_token``). Elsewhere (response text, ``</mot>``): next-token
  targets, predicted from the previous position (the usual shift).
* ``is_labeled`` (B,) bool: MCP is applied only to labelled samples (video-only samples: False).
* optional ``align_chunk_mask`` (B, N) bool restricting the alignment loss to some chunks, and ``chunk_ids``
  (B, L) int64 (derived from ``input_ids`` when absent; checked when given).

Packed batches (``trainers.packing``): with ``position_ids`` (R, L) int64 restarting at 0 at every sample, the R rows
of ``input_ids``, ``attention_mask`` (0 for the padding after a row's last sample), ``labels`` and ``chunk_ids``
(numbered per sample) hold S samples end to end (:mod:`modeling_pela.packed_sequences`); every per-sample input above
(``pixel_values``, frames, ``chunk_hands``, ``chunk_frames``, ``is_labeled``, ``align_chunk_mask``) then has one
entry per sample, in row-major order, and B reads S. Attention never crosses a sample boundary and the outputs and
losses are those of the same S samples unpacked.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, DynamicCache, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_masks_for_generate
from transformers.utils import ModelOutput, logging

from .configuration_pela import PELAConfig
from .frame_feature_cache import FrameFeatureCache
from .packed_sequences import SampleLayout, same_sample_function
from .perceiver import HANDS, FrameTokenGrid, LatentPerceivers, LatentQueries, LatentStandardization
from .rotations import axis_angle_to_rotation_6d, rotation_6d_to_axis_angle

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100
ENSEMBLE_METHODS = ("vote", "mean")


def chunk_attention_function(chunk_ids: torch.Tensor) -> Callable:
    """Mask function ``(batch, head, q, kv) -> bool``, true when query and key lie in the same motion chunk
    (``chunk_ids`` (B, L_total): chunk index per absolute position, -1 outside chunks). OR-ed with the causal mask by
    ``transformers.masking_utils`` it gives MCP attention: causal everywhere, bidirectional inside a chunk."""
    length = chunk_ids.shape[-1]

    def same_chunk(batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor):
        q_chunk = chunk_ids[batch_idx, q_idx.clamp(max=length - 1)]
        kv_chunk = chunk_ids[batch_idx, kv_idx.clamp(max=length - 1)]
        q_chunk = torch.where(q_idx < length, q_chunk, -1)
        kv_chunk = torch.where(kv_idx < length, kv_chunk, -1)
        return (q_chunk == kv_chunk) & (q_chunk >= 0)

    return same_chunk


@contextmanager
def _capture_output(module: nn.Module, store: list[torch.Tensor]):
    """Append ``module``'s output hidden states to ``store`` while the context is open."""

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        store.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PELAPretrainingOutput(ModelOutput):
    """Output of :meth:`PELAForPretraining.forward` (B samples, the S samples of a packed batch; N chunks, K tokens
    per chunk, D LLM width).

    Args:
        loss: ``mean_b(1[labeled_b] * mcp_b + text_b + lambda_align * align_b)`` (scalar), where each term is the
            sample's mean over its predicted tokens / aligned chunks (0 when it has none).
        mcp_loss: mean MCP cross-entropy of the labelled samples with motion targets (restricted to the wrist or
            finger codes of each slot).
        align_loss: mean L1 (per element) between predictive embeddings and latent actions over aligned samples.
        text_loss: mean next-token cross-entropy of the text targets (motion description answers).
        logits: (B, N, K, 2C) motion logits of every chunk slot; index ``c`` is tokenizer id ``c`` (model id
            ``motion_token_offset + c``); codes of the other part are ``finfo.min``.
        predictive_embeddings: (B, N, K, D) ``align_layer`` hidden states at the motion positions.
        latent_actions: (B, N, K, D) LAP outputs of the aligned chunks (zeros elsewhere).
        chunk_mask: (B, N) bool, real chunks (False for padding).
        latent_action_std: spread of the latent actions (std over aligned tokens, averaged over channels); a value
            falling towards 0 signals a collapse.
    """

    loss: torch.Tensor | None = None
    mcp_loss: torch.Tensor | None = None
    align_loss: torch.Tensor | None = None
    text_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    predictive_embeddings: torch.Tensor | None = None
    latent_actions: torch.Tensor | None = None
    chunk_mask: torch.Tensor | None = None
    latent_action_std: torch.Tensor | None = None


@dataclass
class PELAPredictiveEmbeddingOutput(ModelOutput):
    """Output of :meth:`PELAForPretraining.get_predictive_embeddings`.

    Args:
        predictive_embeddings: (B, N, K, D) ``align_layer`` hidden states at the motion positions (zeros for padding
            chunks).
        chunk_mask: (B, N) bool, real chunks.
    """

    predictive_embeddings: torch.Tensor | None = None
    chunk_mask: torch.Tensor | None = None


@dataclass
class PELAMotionGenerationOutput(ModelOutput):
    """Output of :meth:`PELAForPretraining.generate_motion` (B prompts, S time steps, H hands).

    Args:
        motion_tokens: (B, S, H, K) int64 motion-tokenizer ids in ``[0, 2C)`` (wrist slots then finger slots).
        hands: the H hands in interleaving order (``"left"`` before ``"right"``).
        sequences: (B, L_prompt + S * H * (K + 2)) int64 model ids: the prompt followed by the generated chunks.
        mano: with a motion tokenizer, ``{hand: {"hand_pose": (B, S*T, 15, 3), "global_orient": (B, S*T, 3),
            "transl": (B, S*T, 3)}}`` (T = chunk length), else ``None``. With ``ensemble_method="mean"`` it is the
            mean motion of the E ensemble members (rotations averaged in the 6-D representation).
        ensemble_motion_tokens: (B, E, S, H, K) ids of every ensemble member (``ensemble_method="mean"``), else
            ``None``; ``motion_tokens`` is member 0 (greedy).
    """

    motion_tokens: torch.Tensor | None = None
    hands: tuple[str, ...] | None = None
    sequences: torch.Tensor | None = None
    mano: dict[str, dict[str, torch.Tensor]] | None = None
    ensemble_motion_tokens: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


class PELAPreTrainedModel(PreTrainedModel):
    """Weight initialisation and capabilities shared by PELA models."""

    config_class = PELAConfig
    base_model_prefix = "pela"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["LatentPerceivers"]
    _keep_in_fp32_modules_strict = ["state_norm", "action_norm"]  # running statistics: bf16 rounds updates away
    _skip_keys_device_placement = "past_key_values"
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = True  # next_token objective only: flash kernels cannot express the MCP chunk mask

    # Checkpoint keys. transformers 5.x rewrites keys with the patterns registered for each sub-model's model_type
    # (to read/write the sub-models' original checkpoints), but applies them to the whole composite key: DINOv3's
    # unanchored `(?<!model\.)layer.` -> `model.layer.` also rewrites `...input_layernorm` of the LLM. PELA checkpoints
    # store this module tree's own keys, so both directions are disabled for PELA models.

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args: Any, save_original_format: bool = False, **kwargs: Any
    ) -> None:
        """``PreTrainedModel.save_pretrained`` writing PELA's own key layout (``save_original_format=False``)."""
        super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)

    @staticmethod
    def _load_pretrained_model(
        model: PreTrainedModel,
        state_dict: dict | None,
        checkpoint_files: list[str] | None,
        load_config: Any,
        expected_keys: list[str] | None = None,
    ) -> Any:
        """Load a PELA checkpoint without the sub-models' key renamings (see :meth:`save_pretrained`), then re-freeze
        what PELA never optimises (loading creates fresh parameters, which require grad)."""
        load_config = dataclasses.replace(load_config, weight_mapping=None)
        result = PreTrainedModel._load_pretrained_model(model, state_dict, checkpoint_files, load_config, expected_keys)
        model.freeze_untrained_parameters()
        return result

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, LatentQueries):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, LatentStandardization):
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)


class PELAForPretraining(PELAPreTrainedModel):
    """PELA pretraining model: backbone + frozen frame encoder + LAP/LSP (input contract in the module docstring).

    Submodules: ``vlm`` (``AutoModelForImageTextToText`` with the extended vocabulary), ``frame_encoder`` (frozen,
    ``None`` for precomputed features), ``perceiver`` (:class:`LatentPerceivers`, ``None`` for the Being-H0
    baseline). Start from pretrained weights with :meth:`from_pretrained_components` (or
    :meth:`load_backbone_weights` into an existing model).

    LoRA with peft: target the backbone's projections (e.g. ``r".*language_model.*[.](q_proj|v_proj)"``), train the new
    rows with ``trainable_token_indices={"embed_tokens": ids, "lm_head": ids}`` (ids ``motion_token_offset ..
    vocab_size - 1``; both modules, since PELA's config does not expose the backbone's embedding tie to peft) and the
    perceivers with ``modules_to_save=["perceiver"]``; :meth:`ema_update` also updates the adapter's copy.
    """

    def __init__(self, config: PELAConfig) -> None:
        config.check_consistency()
        super().__init__(config)
        self.vlm = AutoModelForImageTextToText.from_config(config.vlm_config)
        self.frame_encoder = None
        if config.frame_encoder_config is not None:
            encoder_config = config.frame_encoder_config
            encoder_class = AutoModel._model_mapping[type(encoder_config)]
            if (encoder_config._attn_implementation or "").startswith("flex") and not encoder_class._supports_flex_attn:
                encoder_config._attn_implementation = "sdpa"
            self.frame_encoder = AutoModel.from_config(encoder_config)
        self._frame_feature_cache: FrameFeatureCache | None = None
        self.perceiver = LatentPerceivers(config) if config.uses_perceiver else None
        self.motion_slot_embedding = nn.Embedding(config.tokens_per_chunk, config.hidden_size)
        self.post_init()
        self.freeze_untrained_parameters()
        if self.perceiver is not None:
            self.perceiver.synchronize()

    # -- plumbing ------------------------------------------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.vlm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.vlm.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.vlm.get_output_embeddings()

    def get_decoder(self) -> nn.Module:
        """The backbone's text decoder (its ``layers`` hold the align layer)."""
        return self.vlm.get_decoder()

    def freeze_untrained_parameters(self) -> None:
        """``requires_grad=False`` on the frozen frame encoder (kept in eval mode) and on the EMA copies (LAP trunk,
        LSP queries), so that optimisers never hold them."""
        if self.frame_encoder is not None:
            self.frame_encoder.requires_grad_(False)
            self.frame_encoder.eval()
        if self.perceiver is not None:
            self.perceiver.freeze_ema_copies()

    def train(self, mode: bool = True) -> PELAForPretraining:
        """Like ``nn.Module.train``, but the frozen frame encoder always stays in eval mode."""
        super().train(mode)
        if self.frame_encoder is not None:
            self.frame_encoder.eval()
        return self

    @torch.no_grad()
    def ema_update(self) -> None:
        """The updates after an optimiser step that no gradient makes. Decoupled EMA (eqs. 6-7 with ``alpha =
        config.ema_alpha``): LAP trunk <- EMA of the LSP trunk, LSP queries <- EMA of the LAP queries, for every
        perceiver pair in the module tree (an adapter library's trainable copy included; a no-op without alignment);
        and, with ``config.standardize_latents``, the running statistics of the latent standardisation from the
        samples of the step (:meth:`LatentStandardization.update_statistics`, collective under torch.distributed).
        ``PELATrainer`` calls it; a custom training loop must call it after every optimiser step, on every process."""
        for module in self.modules():
            if isinstance(module, LatentPerceivers):
                module.ema_update(self.config.ema_alpha)
            elif isinstance(module, LatentStandardization):
                module.update_statistics()

    @classmethod
    def from_pretrained_components(
        cls,
        vlm_name_or_path: str | os.PathLike | None = None,
        frame_encoder_name_or_path: str | os.PathLike | None = None,
        *,
        preset: str | None = None,
        output_loading_info: bool = False,
        **config_overrides: Any,
    ) -> PELAForPretraining | tuple[PELAForPretraining, dict[str, dict[str, list[str]]]]:
        """A PELA model around pretrained components, e.g. InternVL3-2B (``OpenGVLab/InternVL3-2B-hf``) and DINOv3
        (``facebook/dinov3-vitl16-pretrain-lvd1689m``) or V-JEPA2, or local folders saved with ``save_pretrained``.

        The configuration follows the loaded components (:meth:`PELAConfig.from_components`): without ``preset``,
        ``align_layer`` is the paper's 19/28 of the backbone's depth and the perceiver takes the frame encoder's width
        and heads; with ``preset`` (``"2b"`` or ``"tiny"``) the preset's fields are kept. ``config_overrides`` set any
        ``PELAConfig`` field and win over both. The motion vocabulary extends the backbone's text vocabulary (new rows
        start at the mean of the text rows, see :meth:`load_backbone_weights`); the frame encoder is loaded frozen;
        the perceivers start from scratch. Without ``vlm_name_or_path`` the backbone is built from the preset's
        (default: the paper's) configuration with random weights; without ``frame_encoder_name_or_path`` the model
        takes precomputed frame features of width ``frame_feature_dim`` (required then).

        Weights a component's folder lacks (or holds with another shape) are logged as a warning naming them, and
        returned per component (``{"vlm": ..., "frame_encoder": ...}``, each with ``missing_keys``,
        ``unexpected_keys``, ``mismatched_keys``) with ``output_loading_info=True``. A frame encoder with missing
        weights raises ``ValueError``: it is frozen, so they would stay random."""
        if frame_encoder_name_or_path is None and config_overrides.get("frame_feature_dim") is None:
            raise ValueError(
                "frame_encoder_name_or_path=None means precomputed frame features: give their width as "
                "frame_feature_dim=, or a frame encoder (frame_encoder_name_or_path=, `pela pretrain --frame_encoder`)"
            )
        loading_info, vlm, frame_encoder = {}, None, None
        if vlm_name_or_path is not None:
            vlm, loading_info["vlm"] = AutoModelForImageTextToText.from_pretrained(
                vlm_name_or_path, output_loading_info=True
            )
        if frame_encoder_name_or_path is not None:
            frame_encoder, loading_info["frame_encoder"] = AutoModel.from_pretrained(
                frame_encoder_name_or_path, output_loading_info=True
            )
        loading_info = {name: _loading_report(info) for name, info in loading_info.items()}
        for name, info in loading_info.items():
            path = vlm_name_or_path if name == "vlm" else frame_encoder_name_or_path
            problems = [f"lacks weights {info['missing_keys']}"] if info["missing_keys"] else []
            problems += [f"holds weights of another shape {info['mismatched_keys']}"] if info["mismatched_keys"] else []
            if problems:
                message = f"{path} ({name}) {' and '.join(problems)}: they are randomly initialised"
                if name == "frame_encoder":
                    raise ValueError(f"{message}, but the frame encoder is frozen: use a complete checkpoint")
                logger.warning(message)
        config = PELAConfig.from_components(
            vlm.config if vlm is not None else None,
            frame_encoder.config if frame_encoder is not None else None,
            preset=preset,
            **config_overrides,
        )
        model = cls(config)
        model.load_backbone_weights(vlm, frame_encoder)
        return (model, loading_info) if output_loading_info else model

    @torch.no_grad()
    def load_backbone_weights(
        self, vlm: PreTrainedModel | None = None, frame_encoder: PreTrainedModel | None = None
    ) -> None:
        """Copy pretrained weights of the backbone (with its original text vocabulary of ``motion_token_offset``
        rows) and/or of the frame encoder into this model. Rows of the new motion/special tokens in the
        embeddings and the LM head are set to the mean of the text rows."""
        if vlm is not None:
            self._load_vlm_weights(vlm)
        if frame_encoder is not None:
            if self.frame_encoder is None:
                raise ValueError("this PELA model uses precomputed frame features: it has no frame encoder")
            self.frame_encoder.load_state_dict(frame_encoder.state_dict())

    def _load_vlm_weights(self, vlm: PreTrainedModel) -> None:
        source = vlm.state_dict()
        target = self.vlm.state_dict()
        offset = self.config.motion_token_offset
        for name, value in target.items():
            if name not in source:
                raise ValueError(f"the backbone has no weight {name!r}: is it the model described by vlm_config?")
            incoming = source[name]
            if incoming.shape == value.shape:
                value.copy_(incoming)
            elif incoming.shape[0] == offset and incoming.shape[1:] == value.shape[1:]:
                value[:offset].copy_(incoming)
                value[offset:].copy_(incoming.float().mean(0).to(value.dtype))
            else:
                raise ValueError(f"{name}: backbone shape {tuple(incoming.shape)} vs PELA {tuple(value.shape)}")

    # -- token layout --------------------------------------------------------------------------------------------

    def is_motion_token(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of motion positions: a motion id or ``[MASK]``."""
        config = self.config
        start = config.motion_token_offset
        return ((input_ids >= start) & (input_ids < start + config.motion_vocab_size)) | (
            input_ids == config.mask_token_id
        )

    def chunk_ids_from_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L) int64 chunk index of every motion position (motion id or ``[MASK]``), -1 elsewhere.
        The n-th ``<mot>`` of a sample opens chunk n."""
        chunk_index = (input_ids == self.config.mot_start_token_id).long().cumsum(-1) - 1
        return torch.where(self.is_motion_token(input_ids), chunk_index, -1)

    def motion_slots_from_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L) int64 in-chunk slot ``k`` (0..K-1) of every motion position, -1 elsewhere (counted
        from the chunk's ``<mot>``)."""
        is_motion = self.is_motion_token(input_ids)
        seen = is_motion.long().cumsum(-1)
        at_start = torch.where(input_ids == self.config.mot_start_token_id, seen, 0).cummax(-1).values
        return torch.where(is_motion, seen - at_start - 1, -1)

    def embed_tokens(self, input_ids: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, L, D) of ``input_ids`` plus the slot embedding where ``slots`` (broadcastable to
        ``input_ids``; in-chunk index, -1 outside chunks) is >= 0."""
        embeds = self.get_input_embeddings()(input_ids)
        slots = slots.to(input_ids.device).expand_as(input_ids)
        slot_embeds = self.motion_slot_embedding(slots.clamp_min(0)).to(embeds.dtype)
        return embeds + slot_embeds * (slots >= 0)[..., None].to(embeds.dtype)

    def _chunk_positions(self, input_ids: torch.Tensor, chunk_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Check the chunk layout; return positions (B, N, K) int64 of each chunk's motion tokens and the (B, N) bool
        mask of real chunks (N = the largest chunk count of the batch)."""
        config, K = self.config, self.config.tokens_per_chunk
        batch, length = input_ids.shape
        motion_counts = self.is_motion_token(input_ids).sum(-1).tolist()
        per_sample = []
        for b in range(batch):
            positions = (chunk_ids[b] >= 0).nonzero().flatten()
            starts = int((input_ids[b] == config.mot_start_token_id).sum())
            ends = int((input_ids[b] == config.mot_end_token_id).sum())
            if positions.numel() != starts * K or starts != ends or motion_counts[b] != positions.numel():
                raise ValueError(
                    f"sample {b}: malformed motion chunks ({starts} <mot>, {ends} </mot>, {positions.numel()} motion "
                    f"tokens); every chunk must be <mot> + {K} motion/[MASK] tokens + </mot>"
                )
            positions = positions.view(starts, K)
            first, last = positions[:, 0], positions[:, -1]
            closed = (last + 1 < length) & (input_ids[b, (last + 1).clamp(max=length - 1)] == config.mot_end_token_id)
            if bool(((last - first) != K - 1).any() or (input_ids[b, first - 1] != config.mot_start_token_id).any()):
                raise ValueError(f"sample {b}: a chunk's {K} motion tokens must directly follow its <mot>")
            if not bool(closed.all()):
                raise ValueError(f"sample {b}: a chunk's {K} motion tokens must be directly followed by </mot>")
            per_sample.append(positions)
        num_chunks = max(p.shape[0] for p in per_sample)
        out = torch.zeros(batch, num_chunks, K, dtype=torch.long, device=input_ids.device)
        mask = torch.zeros(batch, num_chunks, dtype=torch.bool, device=input_ids.device)
        for b, positions in enumerate(per_sample):
            out[b, : positions.shape[0]] = positions
            mask[b, : positions.shape[0]] = True
        return out, mask

    def _slot_is_finger(self, slots: torch.Tensor) -> torch.Tensor:
        return slots >= self.config.tokens_per_chunk // 2

    def motion_logits(self, hidden_states: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., D) of motion slots ``slots`` (broadcastable to ``hidden_states.shape[:-1]``,
        in-chunk index 0..K-1) -> (..., 2C) logits over tokenizer ids; the other part's codes are ``finfo.min``
        (wrist slots predict wrist codes, finger slots finger codes)."""
        config = self.config
        start, end = config.motion_token_offset, config.motion_token_offset + config.motion_vocab_size
        head = self.get_output_embeddings()
        if type(head) is nn.Linear:  # only the 2C motion rows (wrapped heads, e.g. adapters, run their own forward)
            bias = None if head.bias is None else head.bias[start:end]
            logits = F.linear(hidden_states, head.weight[start:end], bias).float()
        else:
            logits = head(hidden_states)[..., start:end].float()
        code_is_finger = torch.arange(config.motion_vocab_size, device=logits.device) >= config.codebook_size
        wrong_part = self._slot_is_finger(slots.to(logits.device))[..., None] != code_is_finger
        return logits.masked_fill(wrong_part, torch.finfo(logits.dtype).min)

    # -- inputs --------------------------------------------------------------------------------------------------

    def _check_inputs(self, input_ids: torch.Tensor, **tensors: torch.Tensor | None) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be an integer tensor of shape (B, L), got {shape}")
        batch, length = input_ids.shape
        vocab = self.config.text_config.vocab_size
        if bool(((input_ids < 0) | (input_ids >= vocab)).any()):
            raise ValueError(f"input_ids must lie in [0, {vocab}) (text + motion vocabulary)")
        expected = {
            "attention_mask": (batch, length),
            "labels": (batch, length),
            "chunk_ids": (batch, length),
            "position_ids": (batch, length),
            "is_labeled": (batch,),
        }
        for name, shape in expected.items():
            value = tensors.get(name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} like input_ids, got {tuple(value.shape)}")
        for name in ("chunk_hands", "chunk_frames", "align_chunk_mask"):
            value = tensors.get(name)
            if value is not None and (value.dim() != 2 or value.shape[0] != batch):
                raise ValueError(f"{name} must have shape (B={batch}, N), got {tuple(value.shape)}")
        pixel_values = tensors.get("pixel_values")
        if pixel_values is not None and (pixel_values.dim() != 4 or pixel_values.shape[1] != 3):
            raise ValueError(f"pixel_values must be (num_images, 3, H, W), got {tuple(pixel_values.shape)}")
        self._check_frames(batch, tensors.get("frame_pixel_values"), tensors.get("frame_features"))

    def _check_frames(self, batch: int, frame_pixel_values: torch.Tensor | None, frame_features: torch.Tensor | None):
        if frame_pixel_values is not None:
            if self.frame_encoder is None:
                raise ValueError(
                    "this model reads precomputed frame_features (no frame encoder), not frame_pixel_values"
                )
            if (
                frame_pixel_values.dim() != 5
                or frame_pixel_values.shape[0] != batch
                or frame_pixel_values.shape[2] != 3
            ):
                raise ValueError(
                    f"frame_pixel_values must be (B={batch}, F, 3, H, W), got {tuple(frame_pixel_values.shape)}"
                )
        if frame_features is not None:
            if self.frame_encoder is not None:
                raise ValueError("this model has a frame encoder: pass frame_pixel_values, not frame_features")
            dim = self.config.frame_feature_dim
            if (
                frame_features.dim() not in (3, 4)
                or frame_features.shape[0] != batch
                or frame_features.shape[-1] != dim
            ):
                raise ValueError(
                    f"frame_features must be (B={batch}, F, {dim}) or (B, F, P, {dim}), got {tuple(frame_features.shape)}"
                )

    def _frame_pair_features(
        self,
        frame_pixel_values: torch.Tensor | None,
        frame_features: torch.Tensor | None,
        sample: torch.Tensor,
        start: torch.Tensor,
        end: torch.Tensor,
    ) -> tuple[torch.Tensor, FrameTokenGrid | None]:
        """Features of M frame pairs ``(sample[m], frame start[m], frame end[m])`` -> (M, S, P, F_dim), S = 2 slots
        (one per frame) or 1 (V-JEPA2 encodes the pair as one 2-frame clip), and the layout of the P tokens (None for
        precomputed features). The frame encoder runs without grad."""
        if frame_pixel_values is None and frame_features is None:
            raise ValueError(
                "the latent perceivers need frame_pixel_values (or frame_features for precomputed features)"
            )
        frames = frame_pixel_values if frame_pixel_values is not None else frame_features
        num_frames = frames.shape[1]
        if bool((start < 0).any() or (end >= num_frames).any()):
            raise ValueError(f"a chunk's boundary frames lie outside the {num_frames} frames given")
        if self.frame_encoder is None:
            features = frame_features if frame_features.dim() == 4 else frame_features[:, :, None]
            return torch.stack([features[sample, start], features[sample, end]], dim=1), None
        encoder = self.frame_encoder
        dtype = next(encoder.parameters()).dtype
        patch = encoder.config.patch_size
        height, width = frames.shape[-2] // patch, frames.shape[-1] // patch
        with torch.no_grad():
            if self.config.frame_encoder_type == "vjepa2":
                clips = torch.stack([frames[sample, start], frames[sample, end]], dim=1).to(dtype)
                tokens = self._encode_frame_units(clips, self._vjepa2_tokens)
                return tokens[:, None], FrameTokenGrid(0, height, width, repeats=2 // encoder.config.tubelet_size)
            flat = torch.cat([sample * num_frames + start, sample * num_frames + end])
            unique, inverse = torch.unique(flat, return_inverse=True)
            tokens = self._encode_frame_units(frames.flatten(0, 1)[unique].to(dtype), self._dinov3_tokens)
            return tokens[inverse].unflatten(0, (2, -1)).transpose(0, 1), FrameTokenGrid(1, height, width)

    def _dinov3_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """DINOv3 tokens of frames (M, 3, H, W) -> (M, 1 + P, D): CLS then patches (the register tokens dropped)."""
        hidden = self.frame_encoder(pixel_values=frames).last_hidden_state
        registers = self.frame_encoder.config.num_register_tokens
        return torch.cat([hidden[:, :1], hidden[:, 1 + registers :]], dim=1)

    def _vjepa2_tokens(self, clips: torch.Tensor) -> torch.Tensor:
        """V-JEPA2 encoder tokens of 2-frame clips (M, 2, 3, H, W) -> (M, P, D)."""
        return self.frame_encoder(pixel_values_videos=clips, skip_predictor=True).last_hidden_state

    def _encode_frame_units(self, units: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``encode(units)``, through the frame-feature cache in training mode when it is on (not in a
        ``nn.DataParallel`` replica, whose weights are new copies at every step)."""
        cache = self._frame_feature_cache
        if cache is None or not self.training or getattr(self, "_is_replica", False):
            return encode(units)
        return cache.encode(self.frame_encoder, units, encode)

    def use_frame_feature_cache(self, max_frames: int | None) -> FrameFeatureCache | None:
        """Keep the frozen frame encoder's features of up to ``max_frames`` encoder inputs (frames for DINOv3, frame
        pairs for V-JEPA2) seen in training mode and reuse them whenever the same pixels come again
        (:mod:`.frame_feature_cache`: keyed by the pixels, emptied when the encoder's weights change, and by
        ``.to()``); ``None`` or 0 turns the cache off. For training on a small dataset for many epochs
        (``PELATrainingArguments.frame_feature_cache``); evaluation and generation (eval mode) never use it. Memory:
        ``max_frames`` x tokens x width of the encoder's output. Returns the cache (``None`` when off).

        Raises ``ValueError`` for a model without a frame encoder (precomputed ``frame_features``: nothing to cache;
        pass ``None``)."""
        if max_frames and self.frame_encoder is None:
            raise ValueError(
                "this model reads precomputed frame_features: it has no frame encoder to cache (pass max_frames=None)"
            )
        self._frame_feature_cache = FrameFeatureCache(max_frames) if max_frames else None
        return self._frame_feature_cache

    def _apply(self, fn: Callable, recurse: bool = True) -> PELAForPretraining:
        """``nn.Module._apply`` (``.to()``, ``.half()``, ...), emptying the frame-feature cache: a round trip of dtypes
        or devices can give back weights at the same addresses with other values."""
        cache = getattr(self, "_frame_feature_cache", None)
        if cache is not None:
            cache.clear()
        return super()._apply(fn, recurse)

    def _embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        frame_pixel_values: torch.Tensor | None,
        frame_features: torch.Tensor | None,
    ) -> torch.Tensor:
        """Token embeddings (with the motion slot embeddings), the backbone's image features and the LSP latent state
        scattered in: (B, L, D)."""
        config = self.config
        embeds = self.embed_tokens(input_ids, self.motion_slots_from_input_ids(input_ids))
        image_mask = input_ids == config.image_token_id
        if pixel_values is not None:
            features = self.vlm.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
            features = features.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
            if features.shape[0] != int(image_mask.sum()):
                raise ValueError(
                    f"pixel_values give {features.shape[0]} image features but input_ids hold {int(image_mask.sum())} "
                    f"image tokens (id {config.image_token_id})"
                )
            embeds = embeds.masked_scatter(image_mask[..., None], features)
        elif bool(image_mask.any()):
            raise ValueError("input_ids hold image tokens but no pixel_values were given")
        is_right = input_ids == config.state_right_token_id
        is_state = (input_ids == config.state_left_token_id) | is_right
        if not bool(is_state.any()):
            return embeds
        if self.perceiver is None:
            raise ValueError("input_ids hold latent-state tokens but this model has no perceiver (use_latent_state)")
        K = config.tokens_per_chunk
        for hand, mask in enumerate(((is_state & ~is_right), is_right)):
            counts = mask.sum(-1)
            if bool(((counts != 0) & (counts != K)).any()):
                raise ValueError(f"each sample needs 0 or {K} <state_{HANDS[hand]}> tokens, got {counts.tolist()}")
        samples = is_state.any(-1).nonzero().flatten()
        zeros = torch.zeros_like(samples)
        features, grid = self._frame_pair_features(frame_pixel_values, frame_features, samples, zeros, zeros)
        latents = self.perceiver.latent_state(features.to(self.dtype), grid)  # (M, K, 2, D)
        row = torch.full((input_ids.shape[0],), -1, dtype=torch.long, device=input_ids.device)
        row[samples] = torch.arange(samples.numel(), device=input_ids.device)
        slot = torch.where(is_right, is_right.long().cumsum(-1), (is_state & ~is_right).long().cumsum(-1)) - 1
        batch_idx, pos_idx = is_state.nonzero(as_tuple=True)
        values = latents[row[batch_idx], slot[batch_idx, pos_idx], is_right[batch_idx, pos_idx].long()]
        return embeds.index_put((batch_idx, pos_idx), values.to(embeds.dtype))

    # -- backbone pass -------------------------------------------------------------------------------------------

    def _decode(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        chunk_ids: torch.Tensor,
        past_key_values: DynamicCache | None = None,
        position_ids: torch.Tensor | None = None,
        sample_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the text decoder on (B, q, D) embeddings. ``attention_mask`` (B, past + q) and ``chunk_ids``
        (B, past + q) cover the cached positions too; ``sample_index`` (B, q), packed rows only, confines attention
        to each sample (chunk ids must then be unique within a row). Returns the final (post-norm) hidden states and
        the output of ``align_layer``, both (B, q, D)."""
        decoder = self.get_decoder()
        implementation = decoder.config._attn_implementation or ""
        masked_chunk = self.config.objective == "masked_chunk"
        if masked_chunk and implementation.startswith(("flash", "paged")):
            raise ValueError(
                f"attn_implementation {implementation!r} cannot express the masked-chunk attention (causal prefix + "
                "bidirectional chunks); use 'sdpa', 'eager' or 'flex_attention', or objective='next_token'"
            )
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, -inputs_embeds.shape[1] :]
        masks = create_masks_for_generate(
            config=decoder.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask.bool(),
            past_key_values=past_key_values,
            position_ids=position_ids,
            or_mask_function=chunk_attention_function(chunk_ids) if masked_chunk else None,
            and_mask_function=None if sample_index is None else same_sample_function(sample_index),
        )
        captured: list[torch.Tensor] = []
        with _capture_output(decoder.layers[self.config.align_layer - 1], captured):
            output = decoder(
                inputs_embeds=inputs_embeds,
                attention_mask=masks,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=past_key_values is not None,
            )
        return output.last_hidden_state, captured[0]

    # -- pretraining forward -------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        frame_pixel_values: torch.FloatTensor | None = None,
        frame_features: torch.FloatTensor | None = None,
        chunk_hands: torch.LongTensor | None = None,
        chunk_frames: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        is_labeled: torch.BoolTensor | None = None,
        align_chunk_mask: torch.BoolTensor | None = None,
        chunk_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
    ) -> PELAPretrainingOutput:
        """Pretraining forward pass (inputs in the module docstring; outputs in :class:`PELAPretrainingOutput`).

        The alignment loss is computed when ``config.align`` and ``chunk_frames`` are given; MCP / text losses when
        ``labels`` are given. With ``position_ids`` the rows are packed samples (module docstring): the outputs have
        one entry per sample."""
        config = self.config
        layout, rows = None, input_ids
        if position_ids is not None:
            layout, input_ids, attention_mask, labels, chunk_ids = self._unpack_samples(
                input_ids, position_ids, attention_mask, labels, chunk_ids
            )
        self._check_inputs(
            input_ids, attention_mask=attention_mask, labels=labels, chunk_ids=chunk_ids, is_labeled=is_labeled,
            chunk_hands=chunk_hands, chunk_frames=chunk_frames, align_chunk_mask=align_chunk_mask,
            pixel_values=pixel_values, frame_pixel_values=frame_pixel_values, frame_features=frame_features,
        )  # fmt: skip
        derived = self.chunk_ids_from_input_ids(input_ids)
        if chunk_ids is not None and not torch.equal(chunk_ids.to(derived.device), derived):
            raise ValueError("chunk_ids disagree with the <mot> ... </mot> chunks of input_ids")
        chunk_ids = derived
        positions, chunk_mask = self._chunk_positions(input_ids, chunk_ids)
        batch, num_chunks, K = positions.shape
        for name, table in (
            ("chunk_hands", chunk_hands),
            ("chunk_frames", chunk_frames),
            ("align_chunk_mask", align_chunk_mask),
        ):
            if table is not None and table.shape[1] < num_chunks:
                raise ValueError(f"{name} has {table.shape[1]} columns but input_ids hold up to {num_chunks} chunks")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds = self._embed(input_ids, pixel_values, frame_pixel_values, frame_features)
        if layout is None:
            hidden, align_hidden = self._decode(embeds, attention_mask, chunk_ids)
        else:
            hidden, align_hidden = self._decode(
                layout.pack(embeds), torch.ones_like(rows), self.chunk_ids_from_input_ids(rows),
                position_ids=position_ids.to(rows.device), sample_index=layout.sample_index,
            )  # fmt: skip
            hidden, align_hidden = layout.unpack(hidden), layout.unpack(align_hidden)
        flat = positions.flatten(1)
        gather = flat[..., None].expand(-1, -1, hidden.shape[-1])
        predictive = align_hidden.gather(1, gather).view(batch, num_chunks, K, -1)
        predictive = predictive * chunk_mask[:, :, None, None].to(predictive.dtype)
        source = flat if config.objective == "masked_chunk" else (flat - 1).clamp_min(0)
        slot_hidden = hidden.gather(1, source[..., None].expand(-1, -1, hidden.shape[-1]))
        slots = torch.arange(K, device=hidden.device)
        logits = self.motion_logits(slot_hidden.view(batch, num_chunks, K, -1), slots)

        per_sample = hidden.new_zeros(batch, dtype=torch.float32)
        has_loss = False
        mcp_loss = text_loss = align_loss = latent_actions = latent_std = None
        if labels is not None:
            labels = labels.to(hidden.device)
            motion_labels = labels.gather(1, flat).view(batch, num_chunks, K)
            motion_labels = torch.where(chunk_mask[..., None], motion_labels, IGNORE_INDEX)
            mcp_b, mcp_count = self._mcp_per_sample(logits, motion_labels)
            if config.objective == "masked_chunk":
                self._check_targets_masked(input_ids.gather(1, flat).view(batch, num_chunks, K), motion_labels)
            if is_labeled is None:
                is_labeled = mcp_count > 0
            labeled = is_labeled.to(hidden.device).bool() & (mcp_count > 0)
            per_sample = per_sample + labeled.float() * mcp_b
            mcp_loss = mcp_b[labeled].mean() if bool(labeled.any()) else None
            text_b, text_count = self._text_per_sample(hidden, labels, chunk_ids)
            per_sample = per_sample + text_b
            text_loss = text_b[text_count > 0].mean() if bool((text_count > 0).any()) else None
            has_loss = True
        if config.align and chunk_frames is not None:
            aligned = chunk_mask & (chunk_frames[:, :num_chunks].to(hidden.device) >= 0)
            if align_chunk_mask is not None:
                aligned &= align_chunk_mask[:, :num_chunks].to(hidden.device).bool()
            if chunk_hands is None:
                raise ValueError("the alignment loss needs chunk_hands (0 left, 1 right) with chunk_frames")
            align_b, aligned_any, latent_actions, latent_std = self._align_per_sample(
                predictive, aligned, chunk_hands[:, :num_chunks].to(hidden.device),
                chunk_frames[:, :num_chunks].to(hidden.device), frame_pixel_values, frame_features,
            )  # fmt: skip
            per_sample = per_sample + config.lambda_align * align_b
            align_loss = align_b[aligned_any].mean() if bool(aligned_any.any()) else None
            has_loss = True
        return PELAPretrainingOutput(
            loss=per_sample.mean() if has_loss else None,
            mcp_loss=mcp_loss,
            align_loss=align_loss,
            text_loss=text_loss,
            logits=logits,
            predictive_embeddings=predictive,
            latent_actions=latent_actions,
            chunk_mask=chunk_mask,
            latent_action_std=latent_std,
        )

    def _unpack_samples(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        chunk_ids: torch.Tensor | None,
    ) -> tuple[SampleLayout, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Packed rows (R, L) -> their :class:`SampleLayout` and the per-sample (S, L_s) ``input_ids``,
        ``attention_mask``, ``labels`` and ``chunk_ids`` (right-padded)."""
        self._check_inputs(
            input_ids, attention_mask=attention_mask, labels=labels, chunk_ids=chunk_ids, position_ids=position_ids
        )
        layout = SampleLayout.from_position_ids(position_ids.to(input_ids.device), attention_mask)
        return (
            layout,
            layout.unpack(input_ids),
            layout.valid.long(),
            None if labels is None else layout.unpack(labels.to(input_ids.device), IGNORE_INDEX),
            None if chunk_ids is None else layout.unpack(chunk_ids.to(input_ids.device), -1),
        )

    def _check_targets_masked(self, motion_ids: torch.Tensor, motion_labels: torch.Tensor) -> None:
        """MCP predicts ``[MASK]``ed tokens: a label at a visible motion token would be learnt by copying it."""
        visible = (motion_labels != IGNORE_INDEX) & (motion_ids != self.config.mask_token_id)
        if bool(visible.any()):
            b, n, k = (int(v) for v in visible.nonzero()[0])
            raise ValueError(
                f"sample {b}, chunk {n}, slot {k}: a motion label at a token that is not [MASK] (the masked_chunk "
                "objective would learn to copy it); build inputs with PELAProcessor.__call__ or PELADataCollator, "
                "which replace the targets by [MASK]"
            )

    def _mcp_per_sample(self, logits: torch.Tensor, motion_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, K, 2C) logits, (B, N, K) model-id labels (-100 ignored) -> per-sample mean CE (B,), counts (B,)."""
        config = self.config
        target = motion_labels - config.motion_token_offset
        valid = motion_labels != IGNORE_INDEX
        slots = torch.arange(config.tokens_per_chunk, device=logits.device).expand_as(target)
        finger_code = target >= config.codebook_size
        in_range = (target >= 0) & (target < config.motion_vocab_size) & (finger_code == self._slot_is_finger(slots))
        bad = (valid & ~in_range).nonzero()
        if len(bad):
            b, n, k = (int(v) for v in bad[0])
            part = "finger" if k >= config.tokens_per_chunk // 2 else "wrist"
            low, high = config.finger_token_range if part == "finger" else config.wrist_token_range
            raise ValueError(
                f"labels of sample {b}, chunk {n}, slot {k} = {int(motion_labels[b, n, k])} is not a {part} motion id "
                f"(expected [{low}, {high}) or -100)"
            )
        losses = F.cross_entropy(logits[valid], target[valid], reduction="none")
        sums = logits.new_zeros(logits.shape[0]).index_add(0, valid.nonzero()[:, 0], losses)
        counts = valid.flatten(1).sum(-1)
        return sums / counts.clamp_min(1), counts

    def _text_per_sample(
        self, hidden: torch.Tensor, labels: torch.Tensor, chunk_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token CE of the non-motion targets (full vocabulary) -> per-sample mean (B,), counts (B,)."""
        targets = labels[:, 1:]
        valid = (targets != IGNORE_INDEX) & (chunk_ids[:, 1:] < 0)
        sums = hidden.new_zeros(hidden.shape[0], dtype=torch.float32)
        counts = valid.sum(-1)
        if bool(valid.any()):
            logits = self.get_output_embeddings()(hidden[:, :-1][valid]).float()
            losses = F.cross_entropy(logits, targets[valid], reduction="none")
            sums = sums.index_add(0, valid.nonzero()[:, 0], losses)
        return sums / counts.clamp_min(1), counts

    def _align_per_sample(
        self,
        predictive: torch.Tensor,
        aligned: torch.Tensor,
        chunk_hands: torch.Tensor,
        chunk_frames: torch.Tensor,
        frame_pixel_values: torch.Tensor | None,
        frame_features: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """L1 alignment of predictive embeddings (B, N, K, D) with LAP latent actions on the ``aligned`` (B, N)
        chunks -> per-sample mean (B,), samples with aligned chunks (B,), latent actions (B, N, K, D), their std."""
        batch = predictive.shape[0]
        sample, chunk = aligned.nonzero(as_tuple=True)
        latent_actions = torch.zeros_like(predictive)
        sums = predictive.new_zeros(batch, dtype=torch.float32)
        counts = aligned.sum(-1)
        if sample.numel() == 0:
            return sums, counts > 0, latent_actions, None
        hands = chunk_hands[sample, chunk]
        if bool(((hands != 0) & (hands != 1)).any()):
            raise ValueError("chunk_hands of aligned chunks must be 0 (left) or 1 (right)")
        start = chunk_frames[sample, chunk]
        features, grid = self._frame_pair_features(frame_pixel_values, frame_features, sample, start, start + 1)
        latents = self.perceiver.latent_actions(features.to(self.dtype), hands, grid)  # (M, K, D)
        errors = (predictive[sample, chunk].float() - latents.float()).abs().mean(dim=(-1, -2))
        sums = sums.index_add(0, sample, errors)
        latent_actions = latent_actions.index_put((sample, chunk), latents.to(latent_actions.dtype))
        spread = (
            latents.detach().float().flatten(0, 1).std(0).mean() if latents.shape[0] * latents.shape[1] > 1 else None
        )
        return sums / counts.clamp_min(1), counts > 0, latent_actions, spread

    # -- predictive embeddings -----------------------------------------------------------------------------------

    def get_predictive_embeddings(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        frame_pixel_values: torch.FloatTensor | None = None,
        frame_features: torch.FloatTensor | None = None,
        hands: str | Sequence[str] | None = None,
    ) -> PELAPredictiveEmbeddingOutput:
        """One forward pass returning the ``align_layer`` hidden states at the motion positions (for a robot head).

        A prompt without chunks (``processor(images=, text=)``, as for ``generate_motion``) is followed by one
        all-``[MASK]`` chunk per hand, left then right (the LeRobot policy's layout): ``hands`` (``"left"``,
        ``"right"``, ``"both"`` or a list), default the hands whose latent-state block the prompt holds. Inputs that
        hold chunks (a training batch) are used as given. No LM head is evaluated; gradients flow (wrap in
        ``torch.no_grad()`` for inference)."""
        self._check_inputs(
            input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
            frame_pixel_values=frame_pixel_values, frame_features=frame_features,
        )  # fmt: skip
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if not bool((input_ids == self.config.mot_start_token_id).any()):
            hands = self._normalize_hands(self._prompt_hands(input_ids) if hands is None else hands)
            input_ids, attention_mask = self._with_masked_chunks(input_ids, attention_mask, len(hands))
        elif hands is not None:
            raise ValueError("hands= is for a prompt without chunks; these inputs already hold their motion chunks")
        chunk_ids = self.chunk_ids_from_input_ids(input_ids)
        positions, chunk_mask = self._chunk_positions(input_ids, chunk_ids)
        embeds = self._embed(input_ids, pixel_values, frame_pixel_values, frame_features)
        _, align_hidden = self._decode(embeds, attention_mask, chunk_ids)
        batch, num_chunks, K = positions.shape
        index = positions.flatten(1)[..., None].expand(-1, -1, align_hidden.shape[-1])
        predictive = align_hidden.gather(1, index).view(batch, num_chunks, K, -1)
        predictive = predictive * chunk_mask[:, :, None, None].to(predictive.dtype)
        return PELAPredictiveEmbeddingOutput(predictive_embeddings=predictive, chunk_mask=chunk_mask)

    def _with_masked_chunks(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_chunks: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` (B, L) followed by ``num_chunks`` chunks ``<mot> [MASK] x K </mot>``."""
        config = self.config
        chunk = [config.mot_start_token_id] + [config.mask_token_id] * config.tokens_per_chunk
        chunks = torch.tensor((chunk + [config.mot_end_token_id]) * num_chunks, device=input_ids.device)
        chunks = chunks.expand(input_ids.shape[0], -1).to(input_ids.dtype)
        return torch.cat([input_ids, chunks], 1), torch.cat([attention_mask, attention_mask.new_ones(chunks.shape)], 1)

    # -- generation ----------------------------------------------------------------------------------------------

    def _extend(
        self,
        token_ids: torch.Tensor,
        slots: torch.Tensor,
        cache: DynamicCache,
        attention_mask: torch.Tensor,
        next_position: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Append (R, q) token ids to the cache; ``slots`` (q,) int64 is the in-chunk slot of each appended motion
        token (-1 for other tokens); the motion tokens form one chunk (bidirectional among themselves). Returns final
        hidden states (R, q, D), the extended attention mask and the next position ids (R,)."""
        rows, length = token_ids.shape
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(rows, length)], dim=1)
        chunk_ids = torch.full_like(attention_mask, -1, dtype=torch.long)
        chunk_ids[:, -length:] = torch.where(slots >= 0, 0, -1)
        position_ids = next_position[:, None] + torch.arange(length, device=token_ids.device)
        embeds = self.embed_tokens(token_ids, slots)
        hidden, _ = self._decode(embeds, attention_mask, chunk_ids, cache, position_ids)
        return hidden, attention_mask, next_position + length

    def _decode_chunk_masked(
        self,
        cache: DynamicCache,
        attention_mask: torch.Tensor,
        next_position: torch.Tensor,
        num_ensembles: int,
        decode_ratio: float,
        ensemble_noise: float,
        temperature: float | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Masked decoding of one chunk (appendix A.3): start from K ``[MASK]``, fix the most confident
        ``round(decode_ratio * K)`` tokens per pass (the cache keeps the prefix; each pass re-reads the chunk). The
        R = B * E rows are E ensemble members per prompt: member 0 orders greedily, the others by confidence plus
        Gumbel noise (scale ``ensemble_noise``). With ``temperature`` None the members vote per slot, weighted by
        confidence (every row gets the winner); otherwise members 1.. sample their tokens at ``temperature`` and every
        row keeps its own chunk. -> (R, K) ids."""
        config, K = self.config, self.config.tokens_per_chunk
        rows, device = attention_mask.shape[0], attention_mask.device
        chunk = torch.full((rows, K), config.mask_token_id, dtype=torch.long, device=device)
        decoded = torch.zeros(rows, K, dtype=torch.bool, device=device)
        confidence = torch.zeros(rows, K, device=device)
        slots = torch.arange(K, device=device)
        per_pass = max(1, round(decode_ratio * K))
        noisy = (torch.arange(rows, device=device) % num_ensembles != 0)[:, None]
        past = cache.get_seq_length()
        while not bool(decoded.all()):
            hidden, _, _ = self._extend(chunk, slots, cache, attention_mask, next_position)
            cache.crop(past)
            logits = self.motion_logits(hidden, slots)
            probs = logits.softmax(-1)
            best, token = probs.max(-1)
            if temperature is not None and num_ensembles > 1:
                sampled = (logits / temperature + _gumbel(logits.shape, generator, device)).argmax(-1)
                token = torch.where(noisy, sampled, token)
                best = probs.gather(-1, token[..., None]).squeeze(-1)
            score = best.clamp_min(1e-30).log()
            if num_ensembles > 1 and ensemble_noise > 0:
                score = torch.where(noisy, score + ensemble_noise * _gumbel((rows, K), generator, device), score)
            score = score.masked_fill(decoded, -math.inf)
            pick = score.topk(min(per_pass, K - int(decoded[0].sum())), dim=-1).indices
            chunk.scatter_(1, pick, token.gather(1, pick) + config.motion_token_offset)
            confidence.scatter_(1, pick, best.gather(1, pick))
            decoded.scatter_(1, pick, True)
        if num_ensembles == 1 or temperature is not None:
            return chunk
        codes = (chunk - config.motion_token_offset).view(-1, num_ensembles, K)
        votes = torch.zeros(codes.shape[0], K, config.motion_vocab_size, device=device)
        votes.scatter_add_(2, codes.transpose(1, 2), confidence.view(-1, num_ensembles, K).transpose(1, 2))
        winner = votes.argmax(-1) + config.motion_token_offset
        return winner.repeat_interleave(num_ensembles, dim=0)

    def _decode_chunk_next_token(
        self,
        last_hidden: torch.Tensor,
        cache: DynamicCache,
        attention_mask: torch.Tensor,
        next_position: torch.Tensor,
        num_ensembles: int,
        temperature: float | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Autoregressive decoding of one chunk with the KV cache, starting from the final hidden state (R, D) of its
        ``<mot>``: greedy, except that ensemble members 1.. of the R = B * E rows sample at ``temperature`` (when
        given). Returns (R, K) ids and the cache state after the first K-1 tokens (the last one is fed by the caller
        together with ``</mot>``)."""
        config, K = self.config, self.config.tokens_per_chunk
        rows, device = last_hidden.shape[0], last_hidden.device
        chunk = torch.empty(rows, K, dtype=torch.long, device=device)
        noisy = torch.arange(rows, device=device) % num_ensembles != 0
        for slot in range(K):
            logits = self.motion_logits(last_hidden, torch.tensor(slot, device=device))
            token = logits.argmax(-1)
            if temperature is not None and num_ensembles > 1:
                sampled = (logits / temperature + _gumbel(logits.shape, generator, device)).argmax(-1)
                token = torch.where(noisy, sampled, token)
            chunk[:, slot] = token + config.motion_token_offset
            if slot < K - 1:
                hidden, attention_mask, next_position = self._extend(
                    chunk[:, slot : slot + 1], torch.tensor([slot], device=device), cache, attention_mask, next_position
                )
                last_hidden = hidden[:, -1]
        return chunk, attention_mask, next_position

    @torch.no_grad()
    def generate_motion(
        self,
        input_ids: torch.LongTensor,
        hands: str | Sequence[str] | None = None,
        num_chunks: int = 1,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        frame_pixel_values: torch.FloatTensor | None = None,
        frame_features: torch.FloatTensor | None = None,
        decode_ratio: float = 0.05,
        num_ensembles: int = 1,
        ensemble_method: str = "vote",
        ensemble_noise: float = 1.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        motion_tokenizer: nn.Module | None = None,
    ) -> PELAMotionGenerationOutput:
        """Generate ``num_chunks`` time steps of motion for ``hands`` after a prompt.

        Args:
            input_ids: (B, L) prompt: instruction, image block, state blocks and optional complete context chunks
                (motion continuation), left-padded if the lengths differ (with ``attention_mask``).
            hands: ``"left"``, ``"right"``, ``"both"`` or a list of sides; chunks are interleaved left then right.
                Default: the hands whose latent-state block the prompt holds (the processor writes one per hand).
            decode_ratio: fraction of a chunk fixed per masked-decoding pass (about 5% in the paper).
            num_ensembles: decoding runs per prompt (E); member 0 is greedy.
            ensemble_method: ``"vote"`` (masked decoding: members 1.. decode in a Gumbel-perturbed order and the
                members vote per slot, weighted by confidence: one token sequence) or ``"mean"`` (members 1.. sample
                their tokens at ``temperature``; ``mano`` is the members' mean motion, the estimate that minimises
                the expected squared joint error under the model's distribution).
            ensemble_noise: Gumbel noise scale of the masked decoding order of members 1..
            temperature: sampling temperature of members 1.. with ``ensemble_method="mean"``.
            generator: random source of the noise and the samples.
            motion_tokenizer: a ``MotionTokenizerModel`` (``decode(token_ids (M, K), sides)``) to return MANO.

        With ``objective="next_token"`` the chunk is decoded token by token with the KV cache (greedy; ensembles
        only with ``ensemble_method="mean"``). Inputs other than ``input_ids`` follow the module docstring.
        """
        config = self.config
        hands = self._normalize_hands(self._prompt_hands(input_ids) if hands is None else hands)
        self._check_inputs(
            input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
            frame_pixel_values=frame_pixel_values, frame_features=frame_features,
        )  # fmt: skip
        if not isinstance(num_chunks, int) or num_chunks < 1:
            raise ValueError(f"num_chunks must be a positive int, got {num_chunks!r}")
        if not 0.0 < decode_ratio <= 1.0:
            raise ValueError(f"decode_ratio must be in (0, 1], got {decode_ratio}")
        if not isinstance(num_ensembles, int) or num_ensembles < 1:
            raise ValueError(f"num_ensembles must be a positive int, got {num_ensembles!r}")
        if ensemble_method not in ENSEMBLE_METHODS:
            raise ValueError(f"ensemble_method must be one of {ENSEMBLE_METHODS}, got {ensemble_method!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        masked = config.objective == "masked_chunk"
        if not masked and num_ensembles != 1 and ensemble_method == "vote":
            raise ValueError(
                "ensemble_method='vote' applies to masked decoding; the next_token objective ensembles with 'mean'"
            )
        sample_temperature = temperature if ensemble_method == "mean" else None
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        self._chunk_positions(input_ids, self.chunk_ids_from_input_ids(input_ids))  # context chunks well formed
        batch, device = input_ids.shape[0], input_ids.device
        ensembles = num_ensembles
        embeds = self._embed(input_ids, pixel_values, frame_pixel_values, frame_features)
        mot_start = torch.full((batch, 1), config.mot_start_token_id, dtype=torch.long, device=device)
        embeds = torch.cat([embeds, self.get_input_embeddings()(mot_start)], dim=1).repeat_interleave(ensembles, 0)
        attention = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], 1).repeat_interleave(ensembles, 0)
        chunk_ids = torch.cat([self.chunk_ids_from_input_ids(input_ids), mot_start.new_full((batch, 1), -1)], 1)
        cache = DynamicCache(config=self.get_decoder().config)
        hidden, _ = self._decode(embeds, attention, chunk_ids.repeat_interleave(ensembles, 0), cache)
        last_hidden = hidden[:, -1]
        next_position = attention.long().sum(-1)
        K = config.tokens_per_chunk
        steps = [hand for _ in range(num_chunks) for hand in hands]
        generated = []
        for index in range(len(steps)):
            if masked:
                chunk = self._decode_chunk_masked(
                    cache, attention, next_position, ensembles, decode_ratio, ensemble_noise, sample_temperature,
                    generator,
                )  # fmt: skip
                tail = chunk
            else:
                chunk, attention, next_position = self._decode_chunk_next_token(
                    last_hidden, cache, attention, next_position, ensembles, sample_temperature, generator
                )
                tail = chunk[:, -1:]
            generated.append(chunk)
            if index + 1 == len(steps):
                break  # nothing reads the last chunk's hidden states
            closing = torch.tensor([config.mot_end_token_id, config.mot_start_token_id], device=device)
            closing = closing.expand(chunk.shape[0], -1)
            slots = torch.cat([torch.arange(K - tail.shape[1], K, device=device), torch.full_like(closing[0], -1)])
            hidden, attention, next_position = self._extend(
                torch.cat([tail, closing], 1), slots, cache, attention, next_position
            )
            last_hidden = hidden[:, -1]
        members = torch.stack(generated, 1).view(batch, ensembles, num_chunks, len(hands), K)
        members = members - config.motion_token_offset
        sequences = [input_ids]
        for chunk in generated:
            sequences += [mot_start, chunk[::ensembles], mot_start.new_full((batch, 1), config.mot_end_token_id)]
        averaged = ensemble_method == "mean"
        mano = None
        if motion_tokenizer is not None:
            mano = self._decode_mano(motion_tokenizer, members if averaged else members[:, :1], hands)
        return PELAMotionGenerationOutput(
            motion_tokens=members[:, 0], hands=hands, sequences=torch.cat(sequences, 1), mano=mano,
            ensemble_motion_tokens=members if averaged else None,
        )  # fmt: skip

    def _prompt_hands(self, input_ids: torch.Tensor) -> tuple[str, ...]:
        """The hands whose ``<state_*>`` block every prompt of the batch holds."""
        present = torch.stack([(input_ids == self.config.state_token_id(hand)).any(-1) for hand in HANDS], -1)
        if not bool(present[0].any()) or not bool((present == present[0]).all()):
            raise ValueError(
                "cannot tell the hands from the prompts (no latent-state block, or prompts with different hands): "
                "pass hands='left' | 'right' | 'both'"
            )
        return tuple(hand for hand, here in zip(HANDS, present[0].tolist(), strict=True) if here)

    @staticmethod
    def _normalize_hands(hands: str | Sequence[str]) -> tuple[str, ...]:
        chosen = HANDS if hands == "both" else ((hands,) if isinstance(hands, str) else tuple(hands))
        if not chosen or any(hand not in HANDS for hand in chosen) or len(set(chosen)) != len(chosen):
            raise ValueError(f"hands must be 'left', 'right', 'both' or a list of distinct sides, got {hands!r}")
        return tuple(hand for hand in HANDS if hand in chosen)

    def _decode_mano(
        self, motion_tokenizer: nn.Module, motion_tokens: torch.Tensor, hands: tuple[str, ...]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """(B, E, S, H, K) tokenizer ids of E ensemble members -> per hand MANO parameters over the S * chunk_length
        frames, the mean over the members (rotations averaged as 6-D representations, then re-orthonormalised)."""
        tokenizer_config = motion_tokenizer.config
        if tokenizer_config.vocab_size != self.config.motion_vocab_size or (
            tokenizer_config.tokens_per_chunk != self.config.tokens_per_chunk
        ):
            raise ValueError(
                f"vocab/codebook mismatch: the motion tokenizer has {tokenizer_config.vocab_size} ids and "
                f"{tokenizer_config.tokens_per_chunk} tokens per chunk, PELA {self.config.motion_vocab_size} and "
                f"{self.config.tokens_per_chunk}"
            )
        batch, members, steps = motion_tokens.shape[:3]
        mano = {}
        for index, hand in enumerate(hands):
            decoded = motion_tokenizer.decode(motion_tokens[:, :, :, index].flatten(0, 2), hand)
            mano[hand] = {}
            for key, value in decoded.items():
                value = value.unflatten(0, (batch, members, steps)).flatten(2, 3)  # (B, E, S*T, ...)
                if key == "transl":
                    mano[hand][key] = value.mean(1)
                else:
                    mano[hand][key] = rotation_6d_to_axis_angle(axis_angle_to_rotation_6d(value).mean(1))
        return mano


def _gumbel(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise of ``shape`` drawn on the CPU from ``generator`` (reproducible on any device)."""
    uniform = torch.rand(tuple(shape), generator=generator, device="cpu").clamp(1e-9, 1 - 1e-9)
    return -torch.log(-torch.log(uniform)).to(device)


AutoConfig.register(PELAConfig.model_type, PELAConfig, exist_ok=True)
AutoModel.register(PELAConfig, PELAForPretraining, exist_ok=True)


def _loading_report(info: dict[str, Any]) -> dict[str, list[str]]:
    """transformers' ``output_loading_info`` -> sorted ``missing_keys``, ``unexpected_keys`` and
    ``mismatched_keys`` (names only)."""
    return {
        key: sorted(item[0] if isinstance(item, tuple) else item for item in info.get(key, ()))
        for key in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }


PELAConfig.register_for_auto_class()
PELAForPretraining.register_for_auto_class("AutoModel")

__all__ = [
    "PELAForPretraining",
    "PELAMotionGenerationOutput",
    "PELAPreTrainedModel",
    "PELAPredictiveEmbeddingOutput",
    "PELAPretrainingOutput",
    "chunk_attention_function",
]
