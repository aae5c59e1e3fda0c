"""UniHand-Mix data: the built-in procedural hand-motion clips (lab and wild styles) and their rendering."""

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
