"""Write MANO-format model files (every key and shape ``smplx.MANO`` reads) built on the built-in skeleton.

The real MANO files are licensed and never shipped. These synthetic ones let the smplx code path run in CI, and they
are rigged so that smplx's linear blend skinning reproduces the built-in skeleton exactly:
  * vertices 0-15 sit on the 16 joints and ``J_regressor`` picks them (one-hot rows),
  * the five fingertip vertices smplx users take (744, 320, 443, 554, 671) sit on the built-in fingertips,
  * every vertex is skinned rigidly (one-hot ``weights``) to one joint, and ``posedirs`` are zero.
The rest wrist is moved away from the origin, as in the real model, to exercise the wrist-translation convention.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from modeling_pela.mano import (
    FINGERTIP_NAMES,
    FINGERTIP_PARENTS,
    MANO_FINGERTIP_VERTEX_IDS,
    MANO_PARENTS,
    BuiltinHandKinematics,
)

NUM_VERTICES = 778
REST_WRIST = np.array([0.0957, 0.0064, 0.0062])


def synthetic_mano_data(side: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    joints, tips = (t.double().numpy() for t in BuiltinHandKinematics().rest[side])
    offset = REST_WRIST * np.array([-1.0 if side == "left" else 1.0, 1.0, 1.0])
    joints, tips = joints + offset, tips + offset
    owner = rng.integers(0, 16, NUM_VERTICES)
    v_template = joints[owner] + rng.normal(scale=0.004, size=(NUM_VERTICES, 3))
    owner[:16] = np.arange(16)
    v_template[:16] = joints
    for name, parent in zip(FINGERTIP_NAMES, FINGERTIP_PARENTS, strict=True):
        vid = MANO_FINGERTIP_VERTEX_IDS[name]
        owner[vid] = parent
        v_template[vid] = tips[FINGERTIP_NAMES.index(name)]
    weights = np.zeros((NUM_VERTICES, 16))
    weights[np.arange(NUM_VERTICES), owner] = 1.0
    j_regressor = np.zeros((16, NUM_VERTICES))
    j_regressor[np.arange(16), np.arange(16)] = 1.0
    kintree = np.stack([np.array(MANO_PARENTS, dtype=np.int64), np.arange(16)])
    kintree[0, 0] = 4294967295  # as stored in the real files
    return {
        "v_template": v_template,
        "shapedirs": rng.normal(scale=2e-3, size=(NUM_VERTICES, 3, 10)),
        "posedirs": np.zeros((NUM_VERTICES, 3, 135)),
        "J_regressor": j_regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": rng.integers(0, NUM_VERTICES, size=(1538, 3)).astype(np.uint32),
        "hands_components": np.eye(45),
        "hands_mean": rng.normal(scale=0.1, size=45),
    }


def write_synthetic_mano(folder: str | Path) -> Path:
    """Write ``MANO_RIGHT.pkl`` and ``MANO_LEFT.pkl`` into ``folder`` (pickle protocol 2, like the originals)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for side in ("right", "left"):
        with open(folder / f"MANO_{side.upper()}.pkl", "wb") as f:
            pickle.dump(synthetic_mano_data(side, seed=1 if side == "left" else 0), f, protocol=2)
    return folder
