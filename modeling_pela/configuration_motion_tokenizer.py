"""Configuration of PELA's GRQ-VAE hand-motion tokenizer (paper appendix A.1, Being-H0 design).

One 15-frame chunk of one hand becomes ``tokens_per_chunk`` discrete tokens, half for the wrist (global rotation +
translation), half for the fingers. Each part has its own T2M-GPT-style 1-D convolutional auto-encoder and grouped
residual VQ; the token count of a part is ``num_groups * (padded_length // 2**down_t) * num_quantizers``: 64 with the
paper's defaults (2 groups x 4 latent steps x 8 quantizers, 128 per chunk). Smaller layouts (fewer residual
quantizers) suit CPU-sized models: the sequence the VLM reads grows with the token count.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

WRIST_FEATURES = 9  # 6D global rotation + wrist translation
FINGER_ROTATION_FEATURES = 15 * 6  # 15 finger joints x 6D
FINGER_POSITION_FEATURES = 20 * 3  # 20 non-wrist keypoints relative to the wrist, in the wrist frame


class MotionTokenizerConfig(PretrainedConfig):
    r"""Hyper-parameters of :class:`MotionTokenizerModel`. Inconsistent values raise ``ValueError`` at construction.

    Args:
        chunk_length: frames per chunk (15 = 1 s at 15 fps).
        padded_length: frames after replicate-padding the chunk; divisible by ``2**down_t``.
        codebook_size: ``C``, codes per codebook. Wrist ids lie in ``[0, C)``, finger ids in ``[C, 2C)``.
        num_groups: groups of the grouped residual VQ (the latent channels are split between them).
        num_quantizers: residual depth of each group.
        down_t: number of stride-2 convolutions (temporal downsampling by ``2**down_t``).
        encoder_width / decoder_width: channels of the convolutional encoder / decoder.
        res_depth: dilated residual blocks per resolution level.
        dilation_growth_rate: dilation of residual block ``k`` is ``dilation_growth_rate**k``.
        latent_dim: channels of the quantized latent (divisible by ``num_groups``).
        commitment_weight: weight of the commitment loss ``||z_e - sg(z_q)||^2``.
        ema_decay: decay of the EMA codebook updates.
        kmeans_init: initialise every codebook by k-means on its first training batch.
        dead_code_threshold: a code whose EMA assignment count per training batch falls below this is re-seeded
            from the batch (0 disables). The expected count of a code is ``batch * latent steps / codebook_size``:
            scale the threshold with the batch size.
        finger_use_joint_positions: append the 20 non-wrist keypoints of the built-in skeleton (relative to the
            wrist, in the wrist frame; 60 features) to the finger features. They are reconstructed but not decoded.
        mirror_left_hand: encode left hands mirrored into the right-hand convention (one model for both hands) and
            mirror them back on decode.
    """

    model_type = "pela_motion_tokenizer"

    chunk_length: int = 15
    padded_length: int = 16
    codebook_size: int = 4096
    num_groups: int = 2
    num_quantizers: int = 8
    down_t: int = 2
    encoder_width: int = 512
    decoder_width: int = 512
    res_depth: int = 3
    dilation_growth_rate: int = 3
    latent_dim: int = 512
    commitment_weight: float = 0.02
    ema_decay: float = 0.99
    kmeans_init: bool = True
    dead_code_threshold: float = 0.1
    finger_use_joint_positions: bool = False
    mirror_left_hand: bool = True

    def __post_init__(self, **kwargs) -> None:
        self.check_consistency()
        super().__post_init__(**kwargs)

    @property
    def latent_length(self) -> int:
        """Latent time steps per chunk: ``padded_length // 2**down_t``."""
        return self.padded_length // 2**self.down_t

    @property
    def tokens_per_part(self) -> int:
        """``num_groups * latent_length * num_quantizers`` (64 with the defaults, the paper's)."""
        return self.num_groups * self.latent_length * self.num_quantizers

    @property
    def tokens_per_chunk(self) -> int:
        """Wrist + finger tokens of one chunk (128 with the defaults)."""
        return 2 * self.tokens_per_part

    @property
    def vocab_size(self) -> int:
        """Size of the joint id space: wrist ids ``[0, C)`` + finger ids ``[C, 2C)``."""
        return 2 * self.codebook_size

    @property
    def wrist_dim(self) -> int:
        """Per-frame wrist features (9)."""
        return WRIST_FEATURES

    @property
    def finger_dim(self) -> int:
        """Per-frame finger features (90, or 150 with joint positions)."""
        return FINGER_ROTATION_FEATURES + (FINGER_POSITION_FEATURES if self.finger_use_joint_positions else 0)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if output.get("auto_map"):
            # transformers' custom_object_save takes every class whose name contains "Tokenizer" for a text tokenizer
            # and stores a (slow, fast) pair; AutoConfig / AutoModel entries must be plain "module.Class" strings.
            output["auto_map"] = {
                key: value[0] if key != "AutoTokenizer" and isinstance(value, (list, tuple)) else value
                for key, value in output["auto_map"].items()
            }
        return output

    def check_consistency(self) -> None:
        """Raise ``ValueError`` naming the offending field(s) if the configuration cannot build a tokenizer."""
        positive = (
            "chunk_length", "padded_length", "codebook_size", "num_groups", "num_quantizers", "encoder_width",
            "decoder_width", "latent_dim", "dilation_growth_rate",
        )  # fmt: skip
        for name in positive + ("down_t", "res_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"MotionTokenizerConfig.{name} must be an int, got {value!r}")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"MotionTokenizerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.down_t < 0 or self.res_depth < 0:
            raise ValueError(f"down_t and res_depth must be >= 0, got {self.down_t} and {self.res_depth}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.padded_length < self.chunk_length:
            raise ValueError(
                f"padded_length ({self.padded_length}) must be >= chunk_length ({self.chunk_length}): the chunk is "
                "padded by repeating its last frame"
            )
        if self.padded_length % 2**self.down_t:
            raise ValueError(
                f"padded_length ({self.padded_length}) must be divisible by 2**down_t ({2**self.down_t}) so that the "
                "strided encoder and the x2 upsampling decoder return the same length"
            )
        if self.latent_dim % self.num_groups:
            raise ValueError(
                f"latent_dim ({self.latent_dim}) must be divisible by num_groups ({self.num_groups}): the grouped "
                "residual VQ splits the latent channels between groups"
            )
        if not 0.0 < float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if float(self.commitment_weight) < 0.0:
            raise ValueError(f"commitment_weight must be >= 0, got {self.commitment_weight}")
        if float(self.dead_code_threshold) < 0.0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {self.dead_code_threshold}")


__all__ = ["MotionTokenizerConfig"]
