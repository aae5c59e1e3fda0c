"""Rotation conversions checked against scipy.spatial.transform.Rotation."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from modeling_pela import rotations as R


@pytest.fixture
def axis_angles() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    aa = torch.randn(512, 3, generator=gen, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(512, 1, generator=gen, dtype=torch.float64) * np.pi
    # edge cases: identity, tiny angles, angles near pi
    edge = torch.tensor([[0.0, 0, 0], [1e-9, 0, 0], [0, 1e-7, -1e-7], [np.pi - 1e-6, 0, 0], [0, 0, np.pi]])
    return torch.cat([aa, edge.double()])


def test_axis_angle_to_matrix_matches_scipy(axis_angles):
    ours = R.axis_angle_to_matrix(axis_angles).numpy()
    ref = Rotation.from_rotvec(axis_angles.numpy()).as_matrix()
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_matrix_to_axis_angle_matches_scipy(axis_angles):
    mats = torch.from_numpy(Rotation.from_rotvec(axis_angles.numpy()).as_matrix())
    ours = R.matrix_to_axis_angle(mats)
    # compare as rotations: axis-angle at exactly pi has two valid signs
    np.testing.assert_allclose(R.axis_angle_to_matrix(ours).numpy(), mats.numpy(), atol=1e-7)
    not_pi = axis_angles.norm(dim=-1) < np.pi - 1e-3
    np.testing.assert_allclose(ours[not_pi].numpy(), Rotation.from_matrix(mats[not_pi].numpy()).as_rotvec(), atol=1e-7)


def test_quaternion_matches_scipy(axis_angles):
    ours = R.axis_angle_to_quaternion(axis_angles).numpy()
    ref = Rotation.from_rotvec(axis_angles.numpy()).as_quat(scalar_first=True)
    np.testing.assert_allclose(np.abs((ours * ref).sum(-1)), 1.0, atol=1e-9)  # q and -q are the same rotation
    ref = np.where(ref[:, :1] < 0, -ref, ref)
    away_from_pi = np.abs(ref[:, 0]) > 1e-6
    np.testing.assert_allclose(ours[away_from_pi], ref[away_from_pi], atol=1e-9)
    mats = torch.from_numpy(Rotation.from_rotvec(axis_angles.numpy()).as_matrix())
    q = R.matrix_to_quaternion(mats).numpy()
    assert np.allclose(np.abs((q * ref).sum(-1)), 1.0, atol=1e-9)


def test_rotation_6d_round_trip_and_projection(axis_angles):
    mats = R.axis_angle_to_matrix(axis_angles)
    six = R.matrix_to_rotation_6d(mats)
    assert six.shape == (len(axis_angles), 6)
    np.testing.assert_allclose(six.numpy(), mats[:, :2, :].reshape(-1, 6).numpy())  # first two rows
    np.testing.assert_allclose(R.rotation_6d_to_matrix(six).numpy(), mats.numpy(), atol=1e-9)
    # any 6-vector maps to a proper rotation
    noisy = R.rotation_6d_to_matrix(six + 0.3 * torch.randn_like(six))
    eye = torch.eye(3, dtype=noisy.dtype).expand_as(noisy)
    np.testing.assert_allclose((noisy @ noisy.transpose(-1, -2)).numpy(), eye.numpy(), atol=1e-9)
    np.testing.assert_allclose(torch.linalg.det(noisy).numpy(), 1.0, atol=1e-9)
    back = R.rotation_6d_to_axis_angle(R.axis_angle_to_rotation_6d(axis_angles))
    np.testing.assert_allclose(R.axis_angle_to_matrix(back).numpy(), mats.numpy(), atol=1e-7)


def test_slerp_matches_scipy():
    from scipy.spatial.transform import Slerp

    key = Rotation.from_rotvec([[0.1, 0.2, 0.3], [1.0, -0.5, 2.0]])
    weights = np.linspace(0, 1, 7)
    ref = Slerp([0, 1], key)(weights).as_matrix()
    q = R.axis_angle_to_quaternion(torch.from_numpy(key.as_rotvec()))
    ours = R.quaternion_to_matrix(R.quaternion_slerp(q[:1].expand(7, 4), q[1:].expand(7, 4), torch.from_numpy(weights)))
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-9)


def test_gradients_are_finite_at_identity():
    aa = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    R.axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()
