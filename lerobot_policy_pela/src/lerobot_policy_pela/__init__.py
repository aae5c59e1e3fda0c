"""LeRobot policy plugin of PELA: predictive embeddings of a pretrained PELA backbone + a flow-matching DiT head.

Importing the package registers the ``pela`` policy config with LeRobot and PELA's processor steps with
``ProcessorStepRegistry`` (needed to reload saved pipelines). LeRobot's factory finds the classes by naming
convention: ``PelaConfig`` (``configuration_pela``), ``PelaPolicy`` (``modeling_pela``) and
``make_pela_pre_post_processors`` (``processor_pela``).
"""

from .configuration_pela import PelaConfig
from .modeling_pela import PelaPolicy
from .processor_pela import PelaImageProcessorStep, PelaInstructionTokenizerStep, make_pela_pre_post_processors

__all__ = [
    "PelaConfig",
    "PelaImageProcessorStep",
    "PelaInstructionTokenizerStep",
    "PelaPolicy",
    "make_pela_pre_post_processors",
]
