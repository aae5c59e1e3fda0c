"""Built-in procedural hand-motion clips: PELA's default data for the demo and the tests.

A deterministic, seeded generator of tabletop manipulation clips with known MANO parameters. Each clip has 2-4
objects (cube, ball, can, jar, plate, box; distinct colours) on a table seen by an egocentric camera, an instruction
that names the target object by colour and shape, and one or two hands performing an instruction-conditioned motion
primitive (reach, grasp, lift, place, rotate, push, pinch, wave, and the bimanual lift_both and handover). The
target is chosen among distractors, so the motion depends on both the instruction and the scene.

Two styles share the primitives:

* ``lab``: clean uniform background, fixed camera; labels are meant for training.
* ``wild``: cluttered textured table, per-clip camera pose jitter, small per-frame camera shake, random occluders,
  lighting and colour changes, and motion played ``wild_speedup`` (2x) faster than lab (the dataset pipeline later
  slows wild clips by 0.5). Labels exist but are meant to be hidden from training (``labelled_for_training``).

Submodules, leaves first (this package re-exports their public names):

* :mod:`.geometry`: the up axis, rotation vectors and unit vectors;
* :mod:`.trajectories`: minimum-jerk keyframed hand tracks and smooth noise;
* :mod:`.hand_pose`: wrist orientations and MANO finger poses (grasps, the pinch family);
* :mod:`.scene`: the table, camera and object frames, the camera, objects and appearance, scene drawing;
* :mod:`.primitives`: the motion planner, the primitives, the instruction templates and the task draw;
* :mod:`.generator`: the config, the clip, :func:`generate_clip` (junk clips included) and :func:`iter_clips`.

The frames are described in :mod:`.scene`, chunking, lazy rendering and junk clips in :mod:`.generator`.
"""

from .generator import (
    CHUNK_LENGTH,
    DISTRACTOR_NARRATIONS,
    JUNK_KINDS,
    RENDER_MODES,
    STYLES,
    ProceduralClip,
    ProceduralConfig,
    generate_clip,
    generate_clips,
    iter_clips,
)
from .geometry import UP, rotvec_to_matrix
from .hand_pose import (
    FLAT,
    OPEN,
    PALM_LOCAL,
    PINCH_INDEX_CURL,
    RELAXED,
    SIDES,
    THUMB_PINCH,
    finger_pose,
    hand_orientation,
    pinch_closure,
    pinch_pose,
)
from .primitives import BIMANUAL_PRIMITIVES, DIRECTIONS, PRIMITIVES, TEMPLATES
from .scene import (
    CAMERA_HEIGHT,
    CAMERA_PITCH,
    COLOURS,
    FOCAL_FACTOR,
    PRIMITIVE_TARGETS,
    REST_WRIST,
    SHAPES,
    SHOULDERS,
    WORKSPACE,
    Appearance,
    Camera,
    SceneObject,
)
from .trajectories import min_jerk, smooth_noise

__all__ = [
    "BIMANUAL_PRIMITIVES",
    "CAMERA_HEIGHT",
    "CAMERA_PITCH",
    "CHUNK_LENGTH",
    "COLOURS",
    "DIRECTIONS",
    "DISTRACTOR_NARRATIONS",
    "FLAT",
    "FOCAL_FACTOR",
    "JUNK_KINDS",
    "OPEN",
    "PALM_LOCAL",
    "PINCH_INDEX_CURL",
    "PRIMITIVES",
    "PRIMITIVE_TARGETS",
    "RELAXED",
    "RENDER_MODES",
    "REST_WRIST",
    "SHAPES",
    "SHOULDERS",
    "SIDES",
    "STYLES",
    "TEMPLATES",
    "THUMB_PINCH",
    "UP",
    "WORKSPACE",
    "Appearance",
    "Camera",
    "ProceduralClip",
    "ProceduralConfig",
    "SceneObject",
    "finger_pose",
    "generate_clip",
    "generate_clips",
    "hand_orientation",
    "iter_clips",
    "min_jerk",
    "pinch_closure",
    "pinch_pose",
    "rotvec_to_matrix",
    "smooth_noise",
]
