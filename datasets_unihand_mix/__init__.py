"""UniHand-Mix data: the built-in procedural hand-motion clips (lab and wild styles) and their rendering.

The data set itself lives in submodules, imported on demand (they need ``datasets``): :mod:`.schema` (the Features),
:mod:`.builder` (``UniHandMix``, configs toy/lab/wild/mix), :mod:`.curation` / :mod:`.curation_models` (the wild
curation pipeline), :mod:`.export` (Hub-native parquet + card, upload) and :mod:`.streaming` (validating reader).
"""

from .procedural import (
    STYLES,
    Camera,
    ProceduralClip,
    ProceduralConfig,
    SceneObject,
    generate_clip,
    generate_clips,
    iter_clips,
)
from .render import preview_grid

__all__ = [
    "STYLES",
    "Camera",
    "ProceduralClip",
    "ProceduralConfig",
    "SceneObject",
    "generate_clip",
    "generate_clips",
    "iter_clips",
    "preview_grid",
]
