"""HandMotion: validation, conversions, mirroring, resampling."""

import numpy as np
import pytest
import torch

from modeling_pela.hand_motion import HandMotion, HandMotionError
from modeling_pela.mano import BuiltinHandKinematics, mirror_points


def random_motion(num_frames: int = 30, side: str = "right", seed: int = 0) -> HandMotion:
    gen = torch.Generator().manual_seed(seed)
    return HandMotion(
        side=side,
        hand_pose=0.3 * torch.randn(num_frames, 45, generator=gen),
        global_orient=torch.randn(num_frames, 3, generator=gen),
        transl=torch.randn(num_frames, 3, generator=gen) * 0.1 + torch.tensor([0.0, 0.0, 0.5]),
        sample_id="clip-007",
    )


def test_shapes_and_flat_pose_are_normalised():
    motion = random_motion()
    assert motion.hand_pose.shape == (30, 15, 3)
    assert motion.num_frames == len(motion) == 30
    assert motion.duration == pytest.approx(2.0)
    assert [len(c) for c in motion.chunks(15)] == [15, 15]
    assert [len(c) for c in random_motion(40).chunks(15)] == [15, 15]  # partial tail dropped


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hand_pose", torch.zeros(30, 14, 3), "hand_pose"),
        ("global_orient", torch.zeros(29, 3), "global_orient"),
        ("transl", torch.zeros(30, 2), "transl"),
    ],
)
def test_wrong_shapes_name_sample_and_field(field, value, message):
    kwargs = dict(
        side="left", hand_pose=torch.zeros(30, 15, 3), global_orient=torch.zeros(30, 3), transl=torch.zeros(30, 3)
    )
    kwargs[field] = value
    with pytest.raises(HandMotionError, match=rf"sample 'bad-1'.*'{message}'"):
        HandMotion(sample_id="bad-1", **kwargs)


def test_nan_and_inf_are_rejected_with_frame():
    pose = torch.zeros(30, 15, 3)
    pose[12, 3, 1] = float("nan")
    with pytest.raises(HandMotionError, match=r"sample 'c1'.*hand_pose.*NaN.*frame 12"):
        HandMotion("right", pose, torch.zeros(30, 3), torch.zeros(30, 3), sample_id="c1")
    transl = torch.zeros(30, 3)
    transl[4, 0] = float("inf")
    with pytest.raises(HandMotionError, match=r"transl.*inf.*frame 4"):
        HandMotion("right", torch.zeros(30, 15, 3), torch.zeros(30, 3), transl)


def test_unknown_side_and_bad_fps():
    with pytest.raises(HandMotionError, match="unknown hand side 'both'"):
        HandMotion("both", torch.zeros(2, 15, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(HandMotionError, match="fps"):
        HandMotion("left", torch.zeros(2, 15, 3), torch.zeros(2, 3), torch.zeros(2, 3), fps=0)


def test_dict_round_trip_and_missing_field():
    motion = random_motion()
    data = motion.to_dict()
    assert data["hand_pose"].shape == (30, 45) and isinstance(data["hand_pose"], np.ndarray)
    back = HandMotion.from_dict(data)
    torch.testing.assert_close(back.hand_pose, motion.hand_pose)
    del data["transl"]
    with pytest.raises(HandMotionError, match=r"sample 'x'.*missing.*transl"):
        HandMotion.from_dict(data, sample_id="x")


def test_mirror_is_a_reflection_of_the_joints():
    """A mirrored motion, run through the mirrored (other-side) skeleton, is the reflection of the original."""
    kin = BuiltinHandKinematics()
    motion = random_motion()
    mirrored = motion.mirrored()
    assert mirrored.side == "left"
    torch.testing.assert_close(kin(mirrored), mirror_points(kin(motion)), atol=1e-5, rtol=0)
    torch.testing.assert_close(mirrored.mirrored().hand_pose, motion.hand_pose)


def test_resample_slows_down_and_keeps_endpoints():
    motion = random_motion(31)
    slow = motion.resample(2.0)  # half speed
    assert slow.num_frames == 61
    torch.testing.assert_close(slow.hand_pose[::2], motion.hand_pose, atol=1e-5, rtol=0)
    torch.testing.assert_close(slow.transl[::2], motion.transl)
    # midpoints of translation are linear interpolations
    torch.testing.assert_close(slow.transl[1::2], 0.5 * (motion.transl[:-1] + motion.transl[1:]))
    # wrist speed halves
    speed = lambda m: float((m.transl[1:] - m.transl[:-1]).norm(dim=-1).mean())  # noqa: E731
    assert speed(slow) == pytest.approx(0.5 * speed(motion), rel=1e-3)
    with pytest.raises(HandMotionError):
        motion.resample(0)
