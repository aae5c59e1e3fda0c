"""PELA modeling: hand motion, rotations, forward kinematics and the GRQ-VAE motion tokenizer.

Importing this package registers the tokenizer with ``AutoConfig``/``AutoModel``.
"""

from .configuration_motion_tokenizer import MotionTokenizerConfig
from .hand_motion import HAND_SIDES, HandMotion, HandMotionError
from .mano import BuiltinHandKinematics, SmplxHandKinematics, load_hand_kinematics
from .modeling_motion_tokenizer import MotionTokenizerModel, MotionTokenizerOutput

__all__ = [
    "HAND_SIDES",
    "BuiltinHandKinematics",
    "HandMotion",
    "HandMotionError",
    "MotionTokenizerConfig",
    "MotionTokenizerModel",
    "MotionTokenizerOutput",
    "SmplxHandKinematics",
    "load_hand_kinematics",
]
