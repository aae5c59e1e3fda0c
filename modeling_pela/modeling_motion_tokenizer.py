"""PELA's GRQ-VAE hand-motion tokenizer as a Hugging Face model (paper appendix A.1, Being-H0 design).

A 15-frame chunk of ONE hand (MANO parameters, see :mod:`hand_motion` for the conventions) becomes K discrete tokens
(``config.tokens_per_chunk``, 128 with the paper's defaults) and back. The chunk is split into two parts, each with its
own T2M-GPT-style 1-D conv encoder, grouped residual VQ (``vector_quantize_pytorch.GroupedResidualVQ``: 2 groups x 8
quantizers by default, EMA codebooks of ``C`` codes) and decoder:

* wrist: 6D global rotation + wrist translation = 9 features per frame;
* finger: 15 x 6D joint rotations = 90 features per frame (+ 60 with ``config.finger_use_joint_positions``).

Features are z-score normalised with per-feature statistics stored as buffers (saved with the weights; fit them with
:meth:`MotionTokenizerModel.fit_normalization`). The chunk is padded to 16 frames by repeating its last frame, encoded
to 16 / 2**down_t = 4 latent steps, quantized, decoded and cropped back to 15 frames. Left hands are mirrored into the
right-hand convention before encoding and mirrored back after decoding (``config.mirror_left_hand``).

Token layout of one chunk (K = ``config.tokens_per_chunk`` ids; the numbers are the defaults)::

    [ wrist: 64 ids | finger: 64 ids ]
    inside a part, position = (group * latent_steps + step) * num_quantizers + depth   (2 x 4 x 8)
    wrist ids in [0, C), finger ids in [C, 2C)  (C = config.codebook_size; config.vocab_size = 2C)

Every group and depth has its own codebook, so the same id at two positions names two different codes; the position
inside the chunk disambiguates it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput
from vector_quantize_pytorch import GroupedResidualVQ, ResidualVQ, VectorQuantize

from .configuration_motion_tokenizer import MotionTokenizerConfig
from .hand_motion import HAND_SIDES, HandMotion
from .mano import BuiltinHandKinematics, chain_forward_kinematics
from .rotations import axis_angle_to_rotation_6d, rotation_6d_to_axis_angle

_MIN_STD = 1e-4  # floor of the normalisation std (constant features, e.g. MCP joints fixed in the wrist frame)
_ROT_FLIP = (1.0, -1.0, -1.0)  # axis-angle under the x -> -x reflection (HandMotion.mirrored)
_POS_FLIP = (-1.0, 1.0, 1.0)
PARTS = ("wrist", "finger")


# ----------------------------------------------------------------------------------------------------------------
# Convolutional encoder / decoder (T2M-GPT)
# ----------------------------------------------------------------------------------------------------------------


class ResConv1DBlock(nn.Module):
    """x + Conv1x1(ReLU(DilatedConv3(ReLU(x)))) on (B, C, T)."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Resnet1D(nn.Sequential):
    """``depth`` dilated residual blocks, dilations ``growth**k`` in decreasing order."""

    def __init__(self, width: int, depth: int, growth: int) -> None:
        super().__init__(*[ResConv1DBlock(width, growth**k) for k in reversed(range(depth))])


class MotionEncoder(nn.Sequential):
    """(B, input_dim, T) -> (B, latent_dim, T / 2**down_t): conv, then down_t x [strided conv k4 s2, Resnet1D]."""

    def __init__(self, input_dim: int, config: MotionTokenizerConfig) -> None:
        width = config.encoder_width
        layers: list[nn.Module] = [nn.Conv1d(input_dim, width, 3, padding=1), nn.ReLU()]
        for _ in range(config.down_t):
            layers += [
                nn.Conv1d(width, width, 4, stride=2, padding=1),
                Resnet1D(width, config.res_depth, config.dilation_growth_rate),
            ]
        layers.append(nn.Conv1d(width, config.latent_dim, 3, padding=1))
        super().__init__(*layers)


class MotionDecoder(nn.Sequential):
    """(B, latent_dim, T / 2**down_t) -> (B, output_dim, T): down_t x [Resnet1D, nearest x2, conv], conv-ReLU-conv."""

    def __init__(self, output_dim: int, config: MotionTokenizerConfig) -> None:
        width = config.decoder_width
        layers: list[nn.Module] = [nn.Conv1d(config.latent_dim, width, 3, padding=1), nn.ReLU()]
        for _ in range(config.down_t):
            layers += [
                Resnet1D(width, config.res_depth, config.dilation_growth_rate),
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv1d(width, width, 3, padding=1),
            ]
        layers += [nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, output_dim, 3, padding=1)]
        super().__init__(*layers)


class MotionPartVQVAE(nn.Module):
    """Encoder, grouped residual VQ and decoder of one part (wrist or finger)."""

    def __init__(self, feature_dim: int, config: MotionTokenizerConfig) -> None:
        super().__init__()
        self.encoder = MotionEncoder(feature_dim, config)
        self.quantizer = GroupedResidualVQ(
            dim=config.latent_dim,
            groups=config.num_groups,
            num_quantizers=config.num_quantizers,
            codebook_size=config.codebook_size,
            decay=config.ema_decay,
            kmeans_init=config.kmeans_init,
            threshold_ema_dead_code=config.dead_code_threshold,
            commitment_weight=0.0,  # the commitment loss is computed by the model, in train and eval mode alike
        )
        self.decoder = MotionDecoder(feature_dim, config)

    def quantize(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T_pad, F) normalised features -> latent z_e (B, n, D), quantized z_q (B, n, D), indices (G, B, n, Q)."""
        latent = self.encoder(features.transpose(1, 2)).transpose(1, 2)
        quantized, indices, _ = self.quantizer(latent)
        return latent, quantized, indices

    @property
    def codebooks_initialized(self) -> bool:
        """False until k-means has initialised every codebook (the first training batch, or ``init_codebooks``)."""
        return all(bool(buffer) for name, buffer in self.quantizer.named_buffers() if name.endswith("initted"))

    def decode_latent(self, quantized: torch.Tensor) -> torch.Tensor:
        """(B, n, D) -> (B, T_pad, F) normalised features."""
        return self.decoder(quantized.transpose(1, 2)).transpose(1, 2)


# ----------------------------------------------------------------------------------------------------------------
# Token layout and codebook statistics
# ----------------------------------------------------------------------------------------------------------------


def codebook_histograms(token_ids: torch.Tensor, config: MotionTokenizerConfig) -> torch.Tensor:
    """(B, K) token ids -> (2, G, Q, C) assignment counts of every code of every codebook (part, group, depth)."""
    groups, steps, depths, size = config.num_groups, config.latent_length, config.num_quantizers, config.codebook_size
    ids = token_ids.reshape(-1, 2, groups, steps, depths) % size  # finger ids are offset by C
    codebook = torch.arange(2 * groups * depths, device=ids.device).reshape(1, 2, groups, 1, depths)
    flat = (codebook * size + ids).reshape(-1)
    return torch.bincount(flat, minlength=2 * groups * depths * size).reshape(2, groups, depths, size)


def codebook_statistics(histograms: torch.Tensor) -> dict[str, torch.Tensor]:
    """(2, G, Q, C) counts -> per part: ``{part}_usage`` (fraction of the C codes used, averaged over the G x Q
    codebooks) and ``{part}_perplexity`` (exp of the code-assignment entropy, averaged over the codebooks)."""
    counts = histograms.flatten(1, 2).double()  # (2, G*Q, C)
    usage = (counts > 0).double().mean(-1).mean(-1)
    probs = counts / counts.sum(-1, keepdim=True).clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum(-1)
    perplexity = entropy.exp().mean(-1)
    stats = {}
    for index, part in enumerate(PARTS):
        stats[f"{part}_usage"] = usage[index].float()
        stats[f"{part}_perplexity"] = perplexity[index].float()
    return stats


@dataclass
class MotionTokenizerOutput(ModelOutput):
    """Output of :meth:`MotionTokenizerModel.forward` (B chunks of T = 15 frames).

    Args:
        loss: ``recon_loss + commitment_weight * commit_loss`` (scalar).
        recon_loss: ``wrist_recon_loss + finger_recon_loss``: MSE in normalised feature space over the T frames.
        commit_loss: sum over parts of ``mean ||z_e - sg(z_q)||^2`` (encoder latent vs. its quantization).
        wrist_recon_loss / finger_recon_loss: the per-part terms of ``recon_loss``.
        wrist_features / finger_features: reconstructed normalised features, (B, T, 9) and (B, T, 90 or 150).
        hand_pose / global_orient / transl: reconstructed MANO parameters (B, T, 15, 3), (B, T, 3), (B, T, 3) in
            each sample's own side convention.
        token_ids: (B, K) int64 ids (see the module docstring for the layout).
        wrist_usage / finger_usage / wrist_perplexity / finger_perplexity: codebook statistics of the batch (see
            :func:`codebook_statistics`).
    """

    loss: torch.Tensor | None = None
    recon_loss: torch.Tensor | None = None
    commit_loss: torch.Tensor | None = None
    wrist_recon_loss: torch.Tensor | None = None
    finger_recon_loss: torch.Tensor | None = None
    wrist_features: torch.Tensor | None = None
    finger_features: torch.Tensor | None = None
    hand_pose: torch.Tensor | None = None
    global_orient: torch.Tensor | None = None
    transl: torch.Tensor | None = None
    token_ids: torch.Tensor | None = None
    wrist_usage: torch.Tensor | None = None
    finger_usage: torch.Tensor | None = None
    wrist_perplexity: torch.Tensor | None = None
    finger_perplexity: torch.Tensor | None = None


@contextmanager
def _eval_mode(module: nn.Module):
    """Temporarily put ``module`` in eval mode (no EMA / dead-code updates of the codebooks)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


class MotionTokenizerModel(PreTrainedModel):
    """GRQ-VAE tokenizer of 15-frame single-hand MANO chunks into K = ``config.tokens_per_chunk`` ids (layout in the module docstring).

    Inputs of :meth:`forward`, :meth:`encode` (B chunks of T = ``config.chunk_length`` frames, float):
        hand_pose: (B, T, 15, 3) or (B, T, 45) flat-MANO finger axis-angles.
        global_orient: (B, T, 3) wrist axis-angle; transl: (B, T, 3) wrist-joint position in metres.
        is_left: (B,) bool tensor, or a list of B sides ("left" / "right"), or one side for the whole batch.
    """

    config_class = MotionTokenizerConfig
    base_model_prefix = "motion_tokenizer"
    main_input_name = "hand_pose"

    def __init__(self, config: MotionTokenizerConfig) -> None:
        config.check_consistency()
        super().__init__(config)
        self.wrist = MotionPartVQVAE(config.wrist_dim, config)
        self.finger = MotionPartVQVAE(config.finger_dim, config)
        self.register_buffer("wrist_mean", torch.zeros(config.wrist_dim))
        self.register_buffer("wrist_std", torch.ones(config.wrist_dim))
        self.register_buffer("finger_mean", torch.zeros(config.finger_dim))
        self.register_buffer("finger_std", torch.ones(config.finger_dim))
        self.register_buffer("normalization_fitted", torch.tensor(False))
        self.kinematics = BuiltinHandKinematics()
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv1d):  # PyTorch's default conv init (suits ReLU conv nets better than N(0, 0.02))
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(module.in_channels * module.kernel_size[0])
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, VectorQuantize):  # non-persistent buffers are not in the checkpoint
            init.zeros_(module.zero)
        elif isinstance(module, ResidualVQ):
            init.ones_(module.beam_score_weights)
        elif isinstance(module, MotionTokenizerModel):
            for part in PARTS:
                init.zeros_(getattr(module, f"{part}_mean"))
                init.ones_(getattr(module, f"{part}_std"))
            init.zeros_(module.normalization_fitted)

    # -- input handling ------------------------------------------------------------------------------------------

    def _is_left(self, is_left: torch.Tensor | Sequence[str] | str, batch: int) -> torch.Tensor:
        """Any accepted side specification -> (B,) bool tensor on the model's device."""
        if isinstance(is_left, str):
            is_left = [is_left] * batch
        if isinstance(is_left, torch.Tensor):
            if is_left.shape != (batch,):
                raise ValueError(f"is_left must have shape ({batch},) (one flag per chunk), got {tuple(is_left.shape)}")
            if is_left.is_floating_point() or not bool(((is_left == 0) | (is_left == 1)).all()):
                raise ValueError("is_left must be a bool (or 0/1 integer) tensor")
            return is_left.to(self.device, torch.bool)
        sides = list(is_left)
        if len(sides) != batch or any(side not in HAND_SIDES for side in sides):
            raise ValueError(f"side must be a list of {batch} values in {HAND_SIDES}, got {sides!r}")
        return torch.tensor([side == "left" for side in sides], device=self.device)

    def _check_motion(
        self, hand_pose: torch.Tensor, global_orient: torch.Tensor, transl: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validate shapes and finiteness; returns float tensors on the model's device, hand_pose as (B, T, 15, 3)."""
        tensors = {"hand_pose": hand_pose, "global_orient": global_orient, "transl": transl}
        for name, tensor in tensors.items():
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor, got {type(tensor).__name__}")
        length = self.config.chunk_length
        batch = global_orient.shape[0] if global_orient.dim() == 3 else -1
        if hand_pose.dim() == 3 and hand_pose.shape[-1] == 45:
            hand_pose = hand_pose.reshape(hand_pose.shape[0], hand_pose.shape[1], 15, 3)
        expected = {
            "hand_pose": (batch, length, 15, 3),
            "global_orient": (batch, length, 3),
            "transl": (batch, length, 3),
        }
        actual = {"hand_pose": hand_pose.shape, "global_orient": global_orient.shape, "transl": transl.shape}
        if batch < 1 or any(tuple(actual[k]) != v for k, v in expected.items()):
            raise ValueError(
                f"expected hand_pose (B, {length}, 15, 3) or (B, {length}, 45), global_orient (B, {length}, 3) and "
                f"transl (B, {length}, 3) with the same B >= 1 (chunks of {length} frames); got "
                + ", ".join(f"{k} {tuple(v)}" for k, v in actual.items())
            )
        tensors = {"hand_pose": hand_pose, "global_orient": global_orient, "transl": transl}
        for name, tensor in tensors.items():
            finite = torch.isfinite(tensor).reshape(batch, -1).all(-1)
            if not bool(finite.all()):
                sample = int((~finite).nonzero()[0, 0])
                raise ValueError(f"{name} contains NaN or inf (first in chunk {sample} of the batch)")
        return tuple(t.to(self.device, torch.float32) for t in tensors.values())

    def _mirror(
        self, is_left: torch.Tensor, hand_pose: torch.Tensor, global_orient: torch.Tensor, transl: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reflect the chunks flagged in ``is_left`` (B,) through x -> -x (its own inverse); no-op if disabled."""
        if not self.config.mirror_left_hand:
            return hand_pose, global_orient, transl
        rot = torch.where(is_left[:, None, None], global_orient.new_tensor(_ROT_FLIP), 1.0)  # (B, 1, 3)
        pos = torch.where(is_left[:, None, None], transl.new_tensor(_POS_FLIP), 1.0)
        return hand_pose * rot[:, :, None], global_orient * rot, transl * pos

    def _raw_features(
        self, hand_pose: torch.Tensor, global_orient: torch.Tensor, transl: torch.Tensor, is_left: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised features of (possibly mirrored) chunks: wrist (B, T, 9), finger (B, T, 90 or 150)."""
        hand_pose, global_orient, transl = self._mirror(is_left, hand_pose, global_orient, transl)
        wrist = torch.cat([axis_angle_to_rotation_6d(global_orient), transl], dim=-1)
        finger = axis_angle_to_rotation_6d(hand_pose).flatten(-2)
        if self.config.finger_use_joint_positions:
            # Keypoints with an identity wrist at the origin = positions relative to the wrist in the wrist frame.
            zeros = torch.zeros_like(global_orient)
            encoded_left = is_left & (not self.config.mirror_left_hand)
            joints = {
                side: chain_forward_kinematics(*self.kinematics.rest[side], hand_pose, zeros, zeros)[..., 1:, :]
                for side in HAND_SIDES
            }
            positions = torch.where(encoded_left[:, None, None, None], joints["left"], joints["right"])
            finger = torch.cat([finger, positions.flatten(-2)], dim=-1)
        return wrist, finger

    def _normalized_features(
        self, hand_pose: torch.Tensor, global_orient: torch.Tensor, transl: torch.Tensor, is_left: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if not bool(self.normalization_fitted):
            raise ValueError(
                "the normalisation statistics of this MotionTokenizerModel are not set: call "
                "model.fit_normalization(motions) on training data (or load a trained checkpoint) before encoding"
            )
        wrist, finger = self._raw_features(hand_pose, global_orient, transl, is_left)
        return {
            "wrist": (wrist - self.wrist_mean) / self.wrist_std,
            "finger": (finger - self.finger_mean) / self.finger_std,
        }

    def _to_mano(self, features: dict[str, torch.Tensor], is_left: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised features (B, T, F) per part -> MANO parameters in each sample's side convention."""
        wrist = features["wrist"] * self.wrist_std + self.wrist_mean
        finger = features["finger"] * self.finger_std + self.finger_mean
        global_orient = rotation_6d_to_axis_angle(wrist[..., :6])
        transl = wrist[..., 6:9]
        hand_pose = rotation_6d_to_axis_angle(finger[..., :90].unflatten(-1, (15, 6)))
        hand_pose, global_orient, transl = self._mirror(is_left, hand_pose, global_orient, transl)
        return {"hand_pose": hand_pose, "global_orient": global_orient, "transl": transl}

    def _pad(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, padded_length, F) by repeating the last frame."""
        extra = self.config.padded_length - features.shape[1]
        return torch.cat([features, features[:, -1:].expand(-1, extra, -1)], dim=1)

    # -- normalisation -------------------------------------------------------------------------------------------

    @property
    def codebooks_initialized(self) -> bool:
        """Whether every codebook is initialised (a trained or loaded tokenizer; see :meth:`init_codebooks`)."""
        return all(getattr(self, part).codebooks_initialized for part in PARTS)

    def _require_codebooks(self) -> None:
        if not self.codebooks_initialized:
            raise ValueError(
                "this MotionTokenizerModel's codebooks are not initialised (an untrained tokenizer): load a trained "
                "one (MotionTokenizerModel.from_pretrained, `pela tokenizer train`) or call "
                "model.init_codebooks(motions) once, in a single process"
            )

    @torch.no_grad()
    def init_codebooks(self, motions: Iterable[HandMotion]) -> None:
        """k-means-initialise the codebooks from every full chunk of ``motions`` (what the first training batch does;
        needs :meth:`fit_normalization` first). For tests and for starting training from chosen data."""
        chunks = [chunk for motion in motions for chunk in motion.chunks(self.config.chunk_length)]
        if not chunks:
            raise ValueError(f"init_codebooks needs at least one motion of {self.config.chunk_length} frames")
        hand_pose, global_orient, transl = self._check_motion(
            torch.stack([c.hand_pose for c in chunks]),
            torch.stack([c.global_orient for c in chunks]),
            torch.stack([c.transl for c in chunks]),
        )
        is_left = self._is_left([c.side for c in chunks], len(chunks))
        features = self._normalized_features(hand_pose, global_orient, transl, is_left)
        with _eval_mode(self):
            for part in PARTS:
                getattr(self, part).quantize(self._pad(features[part]))

    @torch.no_grad()
    def fit_normalization(self, motions: Iterable[HandMotion]) -> None:
        """Set the per-feature z-score statistics from every frame of ``motions`` (chunks or whole clips, any
        length, both sides; left hands are mirrored first when ``config.mirror_left_hand``)."""
        sums = {part: 0.0 for part in PARTS}
        squares = {part: 0.0 for part in PARTS}
        count = 0
        for motion in motions:
            is_left = torch.tensor([motion.side == "left"], device=self.device)
            wrist, finger = self._raw_features(
                motion.hand_pose[None].to(self.device, torch.float32),
                motion.global_orient[None].to(self.device, torch.float32),
                motion.transl[None].to(self.device, torch.float32),
                is_left,
            )
            for part, values in (("wrist", wrist), ("finger", finger)):
                values = values.reshape(-1, values.shape[-1]).double()
                sums[part] = sums[part] + values.sum(0)
                squares[part] = squares[part] + (values * values).sum(0)
            count += motion.num_frames
        if count == 0:
            raise ValueError("fit_normalization needs at least one motion frame")
        for part in PARTS:
            mean = sums[part] / count
            std = (squares[part] / count - mean * mean).clamp_min(0.0).sqrt().clamp_min(_MIN_STD)
            getattr(self, f"{part}_mean").copy_(mean)
            getattr(self, f"{part}_std").copy_(std)
        self.normalization_fitted.fill_(True)

    # -- forward / encode / decode -------------------------------------------------------------------------------

    def forward(
        self,
        hand_pose: torch.Tensor,
        global_orient: torch.Tensor,
        transl: torch.Tensor,
        is_left: torch.Tensor | Sequence[str] | str,
    ) -> MotionTokenizerOutput:
        """Reconstruct B chunks through the quantized bottleneck (shapes in the class docstring).

        In training mode the codebooks are updated (EMA, dead-code re-seeding, k-means init on the first batch).
        """
        hand_pose, global_orient, transl = self._check_motion(hand_pose, global_orient, transl)
        is_left = self._is_left(is_left, hand_pose.shape[0])
        targets = self._normalized_features(hand_pose, global_orient, transl, is_left)
        length = self.config.chunk_length
        recon, recon_losses, commit_losses, token_ids = {}, {}, {}, []
        for offset, part in enumerate(PARTS):
            module: MotionPartVQVAE = getattr(self, part)
            latent, quantized, indices = module.quantize(self._pad(targets[part]))
            recon[part] = module.decode_latent(quantized)[:, :length]
            recon_losses[part] = F.mse_loss(recon[part], targets[part])
            commit_losses[part] = F.mse_loss(latent, quantized.detach())
            token_ids.append(self._indices_to_ids(indices, offset * self.config.codebook_size))
        token_ids = torch.cat(token_ids, dim=1)
        recon_loss = recon_losses["wrist"] + recon_losses["finger"]
        commit_loss = commit_losses["wrist"] + commit_losses["finger"]
        with torch.no_grad():
            stats = codebook_statistics(codebook_histograms(token_ids, self.config))
        return MotionTokenizerOutput(
            loss=recon_loss + self.config.commitment_weight * commit_loss,
            recon_loss=recon_loss,
            commit_loss=commit_loss,
            wrist_recon_loss=recon_losses["wrist"],
            finger_recon_loss=recon_losses["finger"],
            wrist_features=recon["wrist"],
            finger_features=recon["finger"],
            token_ids=token_ids,
            **self._to_mano(recon, is_left),
            **stats,
        )

    @torch.no_grad()
    def encode(
        self,
        hand_pose: torch.Tensor,
        global_orient: torch.Tensor,
        transl: torch.Tensor,
        is_left: torch.Tensor | Sequence[str] | str,
    ) -> torch.Tensor:
        """B chunks (shapes in the class docstring) -> (B, K) int64 token ids. Runs in eval mode (no codebook
        updates). Raises ``ValueError`` for an untrained tokenizer whose codebooks were never initialised (encoding
        would silently initialise them from this batch, differently on every data-loading process or rank)."""
        hand_pose, global_orient, transl = self._check_motion(hand_pose, global_orient, transl)
        is_left = self._is_left(is_left, hand_pose.shape[0])
        features = self._normalized_features(hand_pose, global_orient, transl, is_left)
        self._require_codebooks()
        ids = []
        with _eval_mode(self):
            for offset, part in enumerate(PARTS):
                _, _, indices = getattr(self, part).quantize(self._pad(features[part]))
                ids.append(self._indices_to_ids(indices, offset * self.config.codebook_size))
        return torch.cat(ids, dim=1)

    @torch.no_grad()
    def decode(self, token_ids: torch.Tensor, is_left: torch.Tensor | Sequence[str] | str) -> dict[str, torch.Tensor]:
        """(B, K) token ids -> dict of MANO parameters ``hand_pose`` (B, T, 15, 3), ``global_orient`` (B, T, 3),
        ``transl`` (B, T, 3) in each chunk's side convention. Raises ``ValueError`` for ids outside their part's range."""
        self._require_codebooks()
        token_ids = self._check_token_ids(token_ids)
        is_left = self._is_left(is_left, token_ids.shape[0])
        per_part = self.config.tokens_per_part
        features = {}
        with _eval_mode(self):
            for offset, part in enumerate(PARTS):
                module: MotionPartVQVAE = getattr(self, part)
                part_ids = token_ids[:, offset * per_part : (offset + 1) * per_part]
                indices = self._ids_to_indices(part_ids, offset * self.config.codebook_size)
                quantized = module.quantizer.get_output_from_indices(indices)
                features[part] = module.decode_latent(quantized)[:, : self.config.chunk_length]
        return self._to_mano(features, is_left)

    def _indices_to_ids(self, indices: torch.Tensor, offset: int) -> torch.Tensor:
        """(G, B, n, Q) VQ indices -> (B, G*n*Q) ids ordered group, step, depth, shifted by ``offset``."""
        return indices.permute(1, 0, 2, 3).reshape(indices.shape[1], -1).long() + offset

    def _ids_to_indices(self, ids: torch.Tensor, offset: int) -> torch.Tensor:
        """Inverse of :meth:`_indices_to_ids`: (B, 64) ids -> (G, B, n, Q) indices."""
        config = self.config
        shape = (ids.shape[0], config.num_groups, config.latent_length, config.num_quantizers)
        return (ids - offset).reshape(shape).permute(1, 0, 2, 3)

    def _check_token_ids(self, token_ids: torch.Tensor) -> torch.Tensor:
        config = self.config
        if not isinstance(token_ids, torch.Tensor) or token_ids.is_floating_point() or token_ids.dtype == torch.bool:
            raise ValueError(f"token_ids must be an integer tensor of shape (B, {config.tokens_per_chunk})")
        if token_ids.dim() != 2 or token_ids.shape[1] != config.tokens_per_chunk or token_ids.shape[0] < 1:
            raise ValueError(f"token_ids must have shape (B, {config.tokens_per_chunk}), got {tuple(token_ids.shape)}")
        size, per_part = config.codebook_size, config.tokens_per_part
        for offset, part in enumerate(PARTS):
            ids = token_ids[:, offset * per_part : (offset + 1) * per_part]
            low, high = offset * size, (offset + 1) * size
            bad = ((ids < low) | (ids >= high)).nonzero()
            if len(bad):
                row, col = int(bad[0, 0]), int(bad[0, 1]) + offset * per_part
                raise ValueError(
                    f"token_ids[{row}, {col}] = {int(token_ids[row, col])} is not a {part} id: {part} tokens "
                    f"(positions {offset * per_part}-{(offset + 1) * per_part - 1}) must lie in [{low}, {high})"
                )
        return token_ids.to(self.device, torch.long)

    def fingerprint(self) -> str:
        """A 16-hex-digit digest of the weights, codebooks and normalisation statistics: two tokenizers with the same
        fingerprint turn the same motion into the same ids. Stored next to precomputed motion tokens
        (``motion_tokens_model`` of UniHand-Mix rows) so that tokens are never used with another tokenizer."""
        state = self.state_dict()
        versions = tuple((name, tensor.data_ptr(), tensor._version) for name, tensor in state.items())
        cached = getattr(self, "_fingerprint", None)
        if cached is None or cached[0] != versions:
            digest = hashlib.sha256(self.config.model_type.encode())
            for name in sorted(state):
                tensor = state[name].detach().cpu().contiguous()
                digest.update(name.encode())
                digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
                digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
            cached = self._fingerprint = (versions, digest.hexdigest()[:16])
        return cached[1]

    # -- HandMotion convenience ------------------------------------------------------------------------------------

    def encode_motion(self, motion: HandMotion) -> torch.Tensor:
        """All full ``chunk_length``-frame chunks of ``motion`` (a trailing partial chunk is dropped) ->
        (num_chunks, K) token ids."""
        chunks = motion.chunks(self.config.chunk_length)
        if not chunks:
            raise ValueError(
                f"the motion has {motion.num_frames} frames, fewer than one chunk ({self.config.chunk_length})"
            )
        return self.encode(
            torch.stack([c.hand_pose for c in chunks]),
            torch.stack([c.global_orient for c in chunks]),
            torch.stack([c.transl for c in chunks]),
            motion.side,
        )

    def decode_motion(self, token_ids: torch.Tensor, side: str, fps: float = 15.0) -> HandMotion:
        """(num_chunks, K) ids of consecutive chunks of one hand -> a HandMotion of num_chunks * T frames."""
        mano = self.decode(token_ids, side)
        return HandMotion(
            side=side,
            hand_pose=mano["hand_pose"].flatten(0, 1).cpu(),
            global_orient=mano["global_orient"].flatten(0, 1).cpu(),
            transl=mano["transl"].flatten(0, 1).cpu(),
            fps=fps,
        )


AutoConfig.register(MotionTokenizerConfig.model_type, MotionTokenizerConfig, exist_ok=True)
AutoModel.register(MotionTokenizerConfig, MotionTokenizerModel, exist_ok=True)
MotionTokenizerConfig.register_for_auto_class()
MotionTokenizerModel.register_for_auto_class("AutoModel")

__all__ = [
    "MotionTokenizerConfig",
    "MotionTokenizerModel",
    "MotionTokenizerOutput",
    "codebook_histograms",
    "codebook_statistics",
]
