"""Lateral axes and lateral shifting on synthetic drives (straight, curved, stop-and-go, noisy, rig)."""

import numpy as np
import pytest
import torch

from difix_refiner.cameras.trajectory import (
    as_pose_array,
    estimate_up,
    rig_axes,
    road_yaw_angles,
    shift_poses,
    trajectory_axes,
)

WORLD_UP = np.array([0.0, 0.0, 1.0])


def look_poses(centres, forwards, up=WORLD_UP, yaw_offset=0.0):
    """``[N, 3, 4]`` OpenGL poses at ``centres`` looking along ``forwards`` rotated by ``yaw_offset`` about up."""
    poses = []
    for c, f in zip(centres, forwards):
        f = f - (f @ up) * up
        f = f / np.linalg.norm(f)
        if yaw_offset:
            left = np.cross(up, f)
            f = np.cos(yaw_offset) * f + np.sin(yaw_offset) * left
        right = np.cross(f, up)
        poses.append(np.column_stack([right, up, -f, c]))  # x right, y up, z back
    return np.stack(poses)


def straight_drive(n=40, speed=0.8):
    centres = np.stack([np.arange(n) * speed, np.full(n, 2.0), np.full(n, 1.6)], axis=1)
    forwards = np.tile([1.0, 0.0, 0.0], (n, 1))
    return look_poses(centres, forwards), forwards


def curved_drive(n=60, radius=25.0, step=0.7):
    """Counter-clockwise arc (turning left), true tangents returned."""
    angle = np.arange(n) * step / radius
    centres = np.stack([radius * np.sin(angle), radius * (1 - np.cos(angle)), np.full(n, 1.5)], axis=1)
    tangents = np.stack([np.cos(angle), np.sin(angle), np.zeros(n)], axis=1)
    return look_poses(centres, tangents), tangents


def stop_and_go(seed=0):
    """Start at standstill, drive, stop again, drive; millimetre jitter while stopped."""
    rng = np.random.default_rng(seed)
    speeds = np.concatenate([np.zeros(15), np.linspace(0.0, 0.6, 10), np.full(10, 0.6), np.zeros(20), np.full(15, 0.5)])
    x = np.cumsum(speeds)
    heading = np.deg2rad(30.0)
    direction = np.array([np.cos(heading), np.sin(heading), 0.0])
    centres = x[:, None] * direction + np.array([3.0, -1.0, 1.7])
    centres += rng.normal(scale=0.002, size=centres.shape)  # GPS/pose jitter, isotropic
    forwards = np.tile(direction, (len(x), 1))
    return look_poses(centres, forwards), forwards


def assert_axes_valid(left, forward_true, up=WORLD_UP, tol_deg=1.0):
    """Unit, horizontal, perpendicular to the true travel direction, pointing left."""
    np.testing.assert_allclose(np.linalg.norm(left, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(left @ up, 0.0, atol=1e-9)
    sin_tol = np.sin(np.deg2rad(tol_deg))
    assert np.abs(np.einsum("nc,nc->n", left, forward_true)).max() < sin_tol
    expected_left = np.cross(up, forward_true)
    assert (np.einsum("nc,nc->n", left, expected_left) > np.cos(np.deg2rad(tol_deg))).all()


@pytest.mark.parametrize("builder", [straight_drive, curved_drive, stop_and_go])
def test_lateral_axis_horizontal_perpendicular_and_left(builder):
    poses, forward_true = builder()
    axes = trajectory_axes(poses, metres_per_scene_unit=1.0)
    np.testing.assert_allclose(axes.up, WORLD_UP, atol=1e-9)
    assert_axes_valid(axes.left_per_image(), forward_true, tol_deg=1.0)


def test_noisy_poses_give_stable_axes():
    rng = np.random.default_rng(1)
    poses, forward_true = curved_drive(n=80, radius=40.0, step=0.6)
    noisy = poses.copy()
    noisy[:, :, 3] += rng.normal(scale=0.01, size=(len(poses), 3))  # 1 cm position noise
    # Small random rotation noise (about 0.5 degrees) on every camera.
    from scipy.spatial.transform import Rotation

    jitter = Rotation.from_rotvec(rng.normal(scale=np.deg2rad(0.5), size=(len(poses), 3))).as_matrix()
    noisy[:, :, :3] = jitter @ noisy[:, :, :3]
    axes = trajectory_axes(noisy, metres_per_scene_unit=1.0, window_m=4.0)
    # The estimated up averages the rotation noise away.
    assert np.degrees(np.arccos(np.clip(axes.up @ WORLD_UP, -1, 1))) < 0.3
    left = axes.left_per_image()
    np.testing.assert_allclose(left @ axes.up, 0.0, atol=1e-9)
    flat = left - (left @ WORLD_UP)[:, None] * WORLD_UP
    assert_axes_valid(flat / np.linalg.norm(flat, axis=1, keepdims=True), forward_true, tol_deg=2.5)
    # Neighbouring frames never disagree by more than a few degrees (no flips from noise).
    cos_neighbours = np.einsum("nc,nc->n", left[1:], left[:-1])
    assert cos_neighbours.min() > np.cos(np.deg2rad(3.0))


def test_standstill_takes_direction_of_later_motion():
    poses, forward_true = stop_and_go(seed=3)
    axes = trajectory_axes(poses, metres_per_scene_unit=1.0)
    forward = axes.forward_per_image()
    # The first 15 frames only jitter by millimetres, yet follow the pull-away direction.
    assert (forward[:15] @ forward_true[0] > np.cos(np.deg2rad(1.0))).all()
    assert (forward[35:55] @ forward_true[0] > np.cos(np.deg2rad(1.0))).all()


def test_shift_distance_sign_and_heading():
    poses, forward_true = curved_drive()
    for offset in (-2.0, 1.5):
        shifted = shift_poses(poses, offset, metres_per_scene_unit=1.0)
        delta = shifted[:, :, 3] - poses[:, :, 3]  # [N, 3]
        np.testing.assert_allclose(np.linalg.norm(delta, axis=1), abs(offset), atol=1e-9)
        left_component = np.einsum("nc,nc->n", delta, np.cross(WORLD_UP, forward_true))
        assert (np.sign(left_component) == np.sign(offset)).all()
        np.testing.assert_allclose(shifted[:, :, :3], poses[:, :, :3], atol=0)  # heading unchanged


def test_positive_offset_is_left_on_a_simple_case():
    # Driving along +x with z up: the vehicle's left is +y.
    poses, _ = straight_drive()
    shifted = shift_poses(poses, 1.0, metres_per_scene_unit=1.0)
    np.testing.assert_allclose(shifted[:, :, 3] - poses[:, :, 3], np.tile([0.0, 1.0, 0.0], (len(poses), 1)), atol=1e-12)


def random_rotation(seed):
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=seed).as_matrix()


def test_offsets_survive_dataparser_transform_and_scale_round_trip():
    """World metres -> scene units (non-trivial transform and scale) -> shift -> back to world."""
    from nerfstudio.data.dataparsers.base_dataparser import (
        transform_poses_to_original_space,
    )

    world, forward_true = curved_drive(n=50, radius=30.0, step=1.1)
    transform = np.column_stack([random_rotation(7), [12.0, -40.0, 3.5]])  # [3, 4]
    scale = 0.0437
    scene = world.copy()
    scene[:, :, :3] = transform[:, :3] @ world[:, :, :3]
    scene[:, :, 3] = scale * (world[:, :, 3] @ transform[:, :3].T + transform[:, 3])
    scene32 = torch.from_numpy(scene).float()  # nerfstudio keeps float32 poses

    for offset in (-3.0, -0.5, 0.75, 2.0):
        shifted = shift_poses(scene32, offset, metres_per_scene_unit=1.0 / scale)
        back = transform_poses_to_original_space(
            torch.from_numpy(shifted).float(), torch.from_numpy(transform).float(), scale, camera_convention="opengl"
        ).double().numpy()
        delta = back[:, :, 3] - world[:, :, 3]
        np.testing.assert_allclose(np.linalg.norm(delta, axis=1), abs(offset), atol=1e-3)  # 1 mm
        world_left = np.cross(WORLD_UP, forward_true)
        along_left = np.einsum("nc,nc->n", delta, world_left) * np.sign(offset)
        assert (along_left > abs(offset) * np.cos(np.deg2rad(1.0))).all()


def test_rig_side_camera_moves_with_vehicle():
    poses, forward_true = curved_drive(n=30, radius=20.0, step=0.8)
    n = len(poses)
    # Side cameras rigidly mounted: 0.7 m left/right, 0.6 m ahead, yawed +-60 degrees.
    left_cam, right_cam = [], []
    for pose, f in zip(poses, forward_true):
        left = np.cross(WORLD_UP, f)
        left_cam.append(look_poses([pose[:, 3] + 0.7 * left + 0.6 * f], [f], yaw_offset=np.deg2rad(60))[0])
        right_cam.append(look_poses([pose[:, 3] - 0.7 * left + 0.6 * f], [f], yaw_offset=np.deg2rad(-60))[0])
    all_poses = np.concatenate([poses, np.stack(left_cam), np.stack(right_cam)])
    names = ["front_camera"] * n + ["front_left_camera"] * n + ["front_right_camera"] * n
    frames = np.tile(np.arange(n), 3)
    order = np.random.default_rng(0).permutation(3 * n)  # rig images in arbitrary order
    axes = rig_axes(all_poses[order], frames[order], 0.5, camera_names=[names[i] for i in order])
    shifted = shift_poses(all_poses[order], 1.2, 0.5, axes=axes)
    delta = np.empty((3 * n, 3))
    delta[order] = shifted[:, :, 3] - all_poses[order][:, :, 3]
    front, side_l, side_r = delta[:n], delta[n : 2 * n], delta[2 * n :]
    np.testing.assert_allclose(side_l, front, atol=1e-12)
    np.testing.assert_allclose(side_r, front, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(front, axis=1), 1.2 / 0.5, atol=1e-9)
    # The side camera is NOT moved along its own x axis.
    side_x = all_poses[n : 2 * n, :, 0]
    assert np.abs(np.einsum("nc,nc->n", side_l, side_x) / np.linalg.norm(side_l, axis=1)).max() < 0.9


def test_rig_without_front_camera_uses_mean_of_complete_cameras():
    poses, _ = straight_drive(n=10)
    a = poses.copy()
    b = poses.copy()
    b[:, 1, 3] -= 1.0
    axes = rig_axes(np.concatenate([a, b]), np.tile(np.arange(10), 2), 1.0, camera_names=["a"] * 10 + ["b"] * 10)
    np.testing.assert_allclose(axes.centres[:, 1], 1.5)
    with pytest.raises(ValueError, match="known cameras: a, b"):
        rig_axes(np.concatenate([a, b]), np.tile(np.arange(10), 2), 1.0, ["a"] * 10 + ["b"] * 10, reference_camera="c")


def test_yaw_toward_road_straight_road():
    poses, _ = straight_drive(n=60)
    offset, look = 2.0, 20.0
    shifted = shift_poses(poses, offset, 1.0, yaw_toward_road=True, look_ahead_m=look)
    np.testing.assert_allclose(np.linalg.norm(shifted[:, :, 3] - poses[:, :, 3], axis=1), offset, atol=1e-12)
    view = -shifted[:, :, 2]  # viewing direction
    yaw = np.arctan2(view[:, 1], view[:, 0])
    np.testing.assert_allclose(yaw, -np.arctan2(offset, look), atol=1e-9)  # shifted left, turns right
    np.testing.assert_allclose(shifted[:, :, 1], poses[:, :, 1], atol=1e-12)  # still upright
    axes = trajectory_axes(poses, 1.0)
    np.testing.assert_allclose(road_yaw_angles(axes, -offset, look), np.arctan2(offset, look), atol=1e-9)


@pytest.mark.parametrize(
    "poses, message",
    [
        (np.zeros((1, 3, 4)), "at least 2"),
        (np.full((3, 3, 4), np.nan), "non-finite"),
        (np.zeros((3, 3, 3)), "shape"),
    ],
)
def test_bad_poses_are_rejected(poses, message):
    with pytest.raises(ValueError, match=message):
        as_pose_array(poses)


def test_static_camera_has_no_direction_of_travel():
    poses, _ = straight_drive(n=5, speed=0.001)
    with pytest.raises(ValueError, match="direction of travel"):
        trajectory_axes(poses, 1.0)


def test_estimate_up_rejects_inconsistent_cameras():
    poses, _ = straight_drive(n=2)
    flipped = poses.copy()
    flipped[1, :, :3] = poses[1, :, :3] @ np.diag([1.0, -1.0, -1.0])  # upside down
    with pytest.raises(ValueError, match="up axes disagree"):
        estimate_up(flipped)
