"""Forward kinematics: built-in skeleton and smplx's MANO on synthetic MANO-format files."""

import numpy as np
import pytest
import torch
from synthetic_mano import write_synthetic_mano

from modeling_pela.hand_motion import HandMotion, HandMotionError
from modeling_pela.mano import (
    KEYPOINT_NAMES,
    KEYPOINT_PARENTS,
    MANO_PARENTS,
    BuiltinHandKinematics,
    SmplxHandKinematics,
    load_hand_kinematics,
    mirror_points,
)


@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory):
    return write_synthetic_mano(tmp_path_factory.mktemp("mano"))


def random_params(n: int = 64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (
        0.4 * torch.randn(n, 15, 3, generator=gen),
        torch.randn(n, 3, generator=gen),
        torch.randn(n, 3, generator=gen) * 0.1 + torch.tensor([0.0, 0.0, 0.5]),
    )


def test_builtin_rest_pose_is_a_plausible_adult_hand():
    kin = BuiltinHandKinematics()
    joints = kin.joints(torch.zeros(15, 3), torch.zeros(3), torch.tensor([0.1, 0.2, 0.3]), "right")
    assert joints.shape == (21, 3)
    torch.testing.assert_close(joints[0], torch.tensor([0.1, 0.2, 0.3]))  # wrist sits at transl
    bones = {KEYPOINT_NAMES[k]: float((joints[k] - joints[p]).norm()) for k, p in enumerate(KEYPOINT_PARENTS) if p >= 0}
    total_middle = sum(bones[f"middle_{j}"] for j in ("mcp", "pip", "dip", "tip"))
    assert 0.17 < total_middle < 0.21  # wrist to middle fingertip of an adult hand, ~19 cm
    assert all(0.015 < v < 0.1 for v in bones.values())
    # fingers point along -x, thumb towards +z (right hand)
    assert joints[12, 0] < joints[0, 0] - 0.15 and joints[4, 2] > joints[0, 2] + 0.05


def test_fk_is_rigid_and_wrist_rotation_pivots_about_wrist():
    kin = BuiltinHandKinematics()
    pose, orient, transl = random_params()
    joints = kin.joints(pose, orient, transl, "right")
    torch.testing.assert_close(joints[:, 0], transl)
    rest = kin.joints(pose, torch.zeros_like(orient), torch.zeros_like(transl), "right")

    def bone(j: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [(j[..., k, :] - j[..., p, :]).norm(dim=-1) for k, p in enumerate(KEYPOINT_PARENTS) if p >= 0], -1
        )

    torch.testing.assert_close(bone(joints), bone(rest), atol=1e-6, rtol=0)


def test_finger_flexion_curls_towards_the_palm():
    kin = BuiltinHandKinematics()
    pose = torch.zeros(15, 3)
    pose[3:6, 2] = 1.0  # middle finger joints about +z
    flexed = kin.joints(pose, torch.zeros(3), torch.zeros(3), "right")
    flat = kin.joints(torch.zeros(15, 3), torch.zeros(3), torch.zeros(3), "right")
    assert flexed[12, 1] < flat[12, 1] - 0.03  # middle tip moves to -y (palm side)
    torch.testing.assert_close(flexed[8], flat[8])  # index untouched


def test_left_hand_is_mirror_of_right():
    kin = BuiltinHandKinematics()
    pose, orient, transl = random_params()
    flip = torch.tensor([1.0, -1.0, -1.0])
    right = kin.joints(pose, orient, transl, "right")
    left = kin.joints(pose * flip, orient * flip, mirror_points(transl), "left")
    torch.testing.assert_close(left, mirror_points(right), atol=1e-6, rtol=0)


def test_batched_leading_dims():
    kin = BuiltinHandKinematics()
    pose, orient, transl = random_params(24)
    flat = kin.joints(pose, orient, transl, "left")
    batched = kin.joints(pose.view(2, 3, 4, 15, 3), orient.view(2, 3, 4, 3), transl.view(2, 3, 4, 3), "left")
    torch.testing.assert_close(batched.reshape(24, 21, 3), flat)


@pytest.mark.parametrize("side", ["right", "left"])
def test_smplx_mano_matches_builtin_on_synthetic_model(mano_dir, side):
    smplx_kin = SmplxHandKinematics(mano_dir)
    assert smplx_kin.layers[side].parents.tolist() == [-1, *MANO_PARENTS[1:]]
    assert smplx_kin.source == "mano"
    pose, orient, transl = random_params(32, seed=3)
    ours = BuiltinHandKinematics().joints(pose, orient, transl, side)
    theirs = smplx_kin.joints(pose, orient, transl, side)
    torch.testing.assert_close(theirs, ours, atol=2e-6, rtol=0)


def test_smplx_wrist_stays_at_transl_for_any_shape(mano_dir):
    kin = SmplxHandKinematics(mano_dir)
    pose, orient, transl = random_params(8, seed=4)
    motion = HandMotion("right", pose, orient, transl, betas=torch.randn(10) * 3)
    joints = kin(motion)
    torch.testing.assert_close(joints[:, 0], transl, atol=1e-6, rtol=0)
    # the shape changes the hand: fingertips move away from the zero-shape model
    zero = kin.joints(pose, orient, transl, "right")
    assert (joints[:, 1:] - zero[:, 1:]).norm(dim=-1).max() > 1e-4


def test_load_hand_kinematics_selects_backend(mano_dir, tmp_path):
    assert load_hand_kinematics(None).source == "builtin"
    assert load_hand_kinematics(mano_dir).source == "mano"
    with pytest.raises(FileNotFoundError, match="MANO_RIGHT.pkl"):
        load_hand_kinematics(tmp_path)


def test_fk_input_errors():
    kin = BuiltinHandKinematics()
    with pytest.raises(HandMotionError, match="unknown hand side"):
        kin.joints(torch.zeros(15, 3), torch.zeros(3), torch.zeros(3), "middle")
    with pytest.raises(HandMotionError, match=r"hand_pose \(\.\.\., 15, 3\)"):
        kin.joints(torch.zeros(16, 3), torch.zeros(3), torch.zeros(3), "left")
    bad = torch.zeros(5, 3)
    bad[2, 1] = np.nan
    with pytest.raises(HandMotionError, match="transl.*NaN"):
        kin.joints(torch.zeros(5, 15, 3), torch.zeros(5, 3), bad, "left")


def test_shape_convention_is_validated_and_needs_both_files_for_a_fixed_left_hand(mano_dir, tmp_path):
    pose, orient, transl = random_params(4, seed=5)
    with pytest.raises(HandMotionError, match="shape_convention.*'mirrored'"):
        HandMotion("left", pose, orient, transl, shape_convention="mirrored")
    with pytest.raises(HandMotionError, match="shape_convention"):
        BuiltinHandKinematics().joints(pose, orient, transl, "left", shape_convention="mirrored")
    (tmp_path / "MANO_LEFT.pkl").write_bytes((mano_dir / "MANO_LEFT.pkl").read_bytes())
    only_left = SmplxHandKinematics(tmp_path)
    betas = torch.linspace(-1, 1, 10)
    released = only_left(HandMotion("left", pose, orient, transl, betas=betas, shape_convention="released"))
    assert released.shape == (4, 21, 3)
    only_left(HandMotion("left", pose, orient, transl))  # no betas: the shape directions do not matter
    with pytest.raises(FileNotFoundError, match="'left_fixed' MANO convention needs MANO_RIGHT"):
        only_left(HandMotion("left", pose, orient, transl, betas=betas))
