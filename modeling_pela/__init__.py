"""PELA modeling: hand motion, rotations, forward kinematics, the GRQ-VAE motion tokenizer and the PELA model.

Importing this package registers the tokenizer and PELA with ``AutoConfig``/``AutoModel``.
"""

from .configuration_motion_tokenizer import MotionTokenizerConfig
from .configuration_pela import PELAConfig
from .hand_motion import HAND_SIDES, HandMotion, HandMotionError
from .mano import BuiltinHandKinematics, SmplxHandKinematics, load_hand_kinematics
from .modeling_motion_tokenizer import MotionTokenizerModel, MotionTokenizerOutput
from .modeling_pela import (
    PELAForPretraining,
    PELAMotionGenerationOutput,
    PELAPredictiveEmbeddingOutput,
    PELAPretrainingOutput,
)
from .processing_pela import PELAProcessor

__all__ = [
    "HAND_SIDES",
    "BuiltinHandKinematics",
    "HandMotion",
    "HandMotionError",
    "MotionTokenizerConfig",
    "MotionTokenizerModel",
    "MotionTokenizerOutput",
    "PELAConfig",
    "PELAForPretraining",
    "PELAMotionGenerationOutput",
    "PELAPredictiveEmbeddingOutput",
    "PELAPretrainingOutput",
    "PELAProcessor",
    "SmplxHandKinematics",
    "load_hand_kinematics",
]
