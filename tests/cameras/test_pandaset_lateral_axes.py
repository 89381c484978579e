"""Lateral axes on the real PandaSet drive 002 (pulls away from a standstill, ~21.5 m nearly straight).

The poses are the bundled excerpt's (examples/pandaset_002), unchanged from the release.
"""

import json
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from difix_refiner.cameras.trajectory import rig_axes, shift_poses, trajectory_axes

DATA = Path(__file__).resolve().parents[2] / "examples" / "pandaset_002"
CAMERAS = ["front_camera", "front_left_camera", "front_right_camera"]
WORLD_Z = np.array([0.0, 0.0, 1.0])


def load_opengl_poses(camera):
    """``[80, 3, 4]`` camera-to-world poses in metres, converted from OpenCV to OpenGL camera axes."""
    entries = json.loads((DATA / "camera" / camera / "poses.json").read_text())
    quat_wxyz = np.array([[e["heading"][k] for k in "wxyz"] for e in entries])
    position = np.array([[e["position"][k] for k in "xyz"] for e in entries])
    rot = Rotation.from_quat(quat_wxyz[:, [1, 2, 3, 0]]).as_matrix()  # scipy wants x, y, z, w
    rot = rot @ np.diag([1.0, -1.0, -1.0])  # flip camera y (down -> up) and z (forward -> back)
    return np.concatenate([rot, position[:, :, None]], axis=2)


def test_front_camera_axes_consistent_through_standstill():
    poses = load_opengl_poses("front_camera")
    steps = np.linalg.norm(np.diff(poses[:, :, 3], axis=0), axis=1)
    assert steps[:12].max() < 0.025  # the drive really starts (almost) at a standstill

    axes = trajectory_axes(poses, metres_per_scene_unit=1.0)
    left = axes.left_per_image()  # [80, 3]
    # Horizontal w.r.t. world z: what remains is the front camera's mounting roll (about 0.9 deg).
    assert np.abs(left @ WORLD_Z).max() < np.sin(np.deg2rad(1.0))
    # No flips or jumps between consecutive frames, standstill included.
    assert np.einsum("nc,nc->n", left[1:], left[:-1]).min() > np.cos(np.deg2rad(1.0))
    # Left of the overall direction of travel, and perpendicular to it.
    travel = poses[-1, :, 3] - poses[12, :, 3]
    travel /= np.linalg.norm(travel)
    world_left = np.cross(WORLD_Z, travel)
    world_left /= np.linalg.norm(world_left)
    assert (left @ world_left > np.cos(np.deg2rad(2.0))).all()
    # While standing still, the direction of travel matches where the camera looks.
    view = -poses[:13, :, 2]
    view_heading = np.arctan2(view[:, 1], view[:, 0])
    travel_heading = np.arctan2(axes.forward[:13, 1], axes.forward[:13, 0])
    assert np.degrees(np.abs(view_heading - travel_heading)).max() < 0.5


def test_rig_cameras_shift_with_the_vehicle():
    per_camera = [load_opengl_poses(c) for c in CAMERAS]
    poses = np.concatenate(per_camera)  # [240, 3, 4]
    names = [c for c in CAMERAS for _ in range(80)]
    frames = np.tile(np.arange(80), 3)
    axes = rig_axes(poses, frames, 1.0, camera_names=names)
    shifted = shift_poses(poses, -1.5, 1.0, axes=axes)
    delta = (shifted[:, :, 3] - poses[:, :, 3]).reshape(3, 80, 3)
    np.testing.assert_allclose(delta[1], delta[0], atol=1e-12)
    np.testing.assert_allclose(delta[2], delta[0], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(delta[0], axis=1), 1.5, atol=1e-9)
    # Negative offset = to the right, i.e. toward the front-right camera's side.
    towards_right_cam = per_camera[2][:, :, 3] - per_camera[0][:, :, 3]
    assert (np.einsum("nc,nc->n", delta[0], towards_right_cam) > 0).all()
