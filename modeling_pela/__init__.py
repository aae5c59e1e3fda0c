"""PELA modeling: hand motion, rotations, forward kinematics, the GRQ-VAE motion tokenizer and the PELA model.

Importing this package registers the tokenizer and PELA with ``AutoConfig``/``AutoModel``.
"""

from .configuration_motion_tokenizer import MotionTokenizerConfig
from .configuration_pela import PELAConfig
from .flow_matching_head import (
    EncodedCondition,
    FlowMatchingActionHead,
    FlowMatchingActionHeadConfig,
    FlowMatchingOutput,
)
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
    "EncodedCondition",
    "FlowMatchingActionHead",
    "FlowMatchingActionHeadConfig",
    "FlowMatchingOutput",
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
