"""Camera-path JSON is read back by nerfstudio's own reader unchanged."""

import json

import numpy as np
import pytest
import torch
from nerfstudio.cameras.camera_paths import get_path_from_json
from nerfstudio.scripts.render import get_crop_from_json

from difix_refiner.cameras.camera_path import (
    camera_path_dict,
    vertical_fov_degrees,
    write_camera_path,
)
from difix_refiner.cameras.trajectory import shift_poses


def drive(n=12):
    """Level cameras (y up) looking along a slowly turning path, ``[n, 3, 4]``."""
    heading = 0.2 + 0.01 * np.arange(n)
    forward = np.stack([np.cos(heading), np.sin(heading), np.zeros(n)], 1)
    up = np.array([0.0, 0.0, 1.0])
    return np.stack([np.column_stack([np.cross(f, up), up, -f, [0.3 * i, 0.1, 0.05]]) for i, f in enumerate(forward)])


def test_round_trip_through_get_path_from_json(tmp_path):
    poses = shift_poses(drive(), 1.5, metres_per_scene_unit=10.0)  # [12, 3, 4], scene units
    fy = np.linspace(880.0, 890.0, len(poses))
    path = camera_path_dict(poses, width=960, height=540, fy=fy, fps=10.0, metadata={"offset_m": 1.5})
    target = tmp_path / "offset_+1.5m.json"
    write_camera_path(target, path)
    loaded = json.loads(target.read_text())
    cameras = get_path_from_json(loaded)
    assert get_crop_from_json(loaded) is None
    assert loaded["seconds"] == pytest.approx(1.2)
    np.testing.assert_allclose(cameras.camera_to_worlds.double().numpy(), poses, atol=1e-6)
    np.testing.assert_allclose(cameras.fy.squeeze(-1).double().numpy(), fy, rtol=1e-5)
    np.testing.assert_allclose(cameras.fx.squeeze(-1).double().numpy(), fy, rtol=1e-5)  # forced fx = fy
    assert int(cameras.width[0]) == 960 and int(cameras.height[0]) == 540
    assert float(cameras.cx[0]) == 480.0 and float(cameras.cy[0]) == 270.0  # forced centre
    assert loaded["difix_refiner"]["offset_m"] == 1.5
    assert not list(tmp_path.glob(".*partial*"))  # no temporary left behind


def test_vertical_fov():
    assert vertical_fov_degrees(500.0, 1000.0) == pytest.approx(90.0)
    with pytest.raises(ValueError):
        vertical_fov_degrees(0.0, 100.0)


def test_torch_input_and_bad_sizes():
    poses = torch.from_numpy(drive(3)).float()
    assert len(camera_path_dict(poses, width=10, height=10, fy=5.0)["camera_path"]) == 3
    with pytest.raises(ValueError):
        camera_path_dict(poses, width=0, height=10, fy=5.0)
