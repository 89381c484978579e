"""Progressive stepping toward a target pose (Difix3D style)."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from difix_refiner.cameras.stepping import progressive_path, step_toward


def pose(rotvec, centre):
    return np.column_stack([Rotation.from_rotvec(rotvec).as_matrix(), centre])  # [3, 4]


@pytest.mark.parametrize(
    "distance_m, step_m, mpsu",
    [(5.0, 0.7, 1.0), (1.0, 0.25, 1.0), (3.3, 1.0, 0.05), (0.2, 0.5, 2.0), (12.0, 0.5, 0.37)],
)
def test_reaches_target_in_ceil_distance_over_step(distance_m, step_m, mpsu):
    rng = np.random.default_rng(0)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    start = pose([0.1, -0.2, 0.3], [1.0, 2.0, 3.0])
    target = pose([-0.4, 0.5, 0.2], start[:, 3] + direction * distance_m / mpsu)
    path = progressive_path(start, target, step_m, mpsu)
    assert len(path) == math.ceil(distance_m / step_m)
    np.testing.assert_allclose(path[-1], target, atol=1e-12)
    # Every step but the last moves exactly step_m metres; none moves more.
    centres = np.concatenate([start[None, :, 3], path[:, :, 3]])
    moves = np.linalg.norm(np.diff(centres, axis=0), axis=1) * mpsu
    np.testing.assert_allclose(moves[:-1], step_m, rtol=1e-9)
    assert moves[-1] <= step_m * (1 + 1e-9)


def test_rotation_is_slerped_in_proportion():
    start = pose([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    target = pose([0.0, 0.0, 0.8], [4.0, 0.0, 0.0])  # 4 m, 0.8 rad about z
    moved, reached = step_toward(start, target, 1.0, 1.0)
    assert not reached
    np.testing.assert_allclose(moved[:, 3], [1.0, 0.0, 0.0], atol=1e-12)
    angle = Rotation.from_matrix(moved[:, :3]).as_rotvec()
    np.testing.assert_allclose(angle, [0.0, 0.0, 0.2], atol=1e-12)
    # Batched, torch input, one pose already within a step snaps.
    starts = torch.from_numpy(np.stack([start, target]))
    targets = torch.from_numpy(np.stack([target, target]))
    out, reached = step_toward(starts, targets, 1.0, 1.0)
    assert reached.tolist() == [False, True]
    np.testing.assert_allclose(out[1], target)


def test_pure_rotation_and_identity():
    start = pose([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    turned = pose([0.0, 0.3, 0.0], [1.0, 1.0, 1.0])
    assert len(progressive_path(start, turned, 0.5, 1.0)) == 1
    assert len(progressive_path(start, start, 0.5, 1.0)) == 0


@pytest.mark.parametrize("step_m, mpsu", [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (float("nan"), 1.0)])
def test_bad_step_or_scale(step_m, mpsu):
    start = pose([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        step_toward(start, start, step_m, mpsu)
