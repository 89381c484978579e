"""Reading a run's training cameras into a drive: ordering, camera names, scale and input checks."""

from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs

from difix_refiner.core.errors import InputError
from difix_refiner.scene.trained_run import (
    check_method,
    recorded_images,
    validate_offsets,
)


def outputs_for(x_positions, times=None, metadata=None, scale=0.5):
    f, up = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    poses = np.stack([np.column_stack([np.cross(f, up), up, -f, [x, 0.0, 0.0]]) for x in x_positions])
    cameras = Cameras(
        camera_to_worlds=torch.from_numpy(poses).float(), fx=50.0, fy=50.0, cx=20.0, cy=10.0, width=40, height=20,
        times=None if times is None else torch.tensor(times, dtype=torch.float32)[:, None],
    )
    outputs = DataparserOutputs(
        image_filenames=[Path(f"{i}.png") for i in range(len(poses))], cameras=cameras,
        dataparser_scale=scale, metadata=metadata or {},
    )
    return outputs, cameras


def test_orders_by_times_when_no_frame_indices():
    outputs, cameras = outputs_for([2.0, 0.0, 1.0, 3.0], times=[0.2, 0.0, 0.1, 0.3])
    recorded = recorded_images(outputs, cameras, metres_per_scene_unit=2.0)
    selection = recorded.select(recorded.resolve_camera(None))
    np.testing.assert_array_equal(recorded.camera_to_worlds[selection, 0, 3], [0.0, 1.0, 2.0, 3.0])
    assert recorded.resolve_camera(None) is None  # unnamed: one camera


def test_metadata_scale_and_override():
    outputs, cameras = outputs_for([0.0, 1.0, 2.0], metadata={"metres_per_scene_unit": 4.0})
    assert recorded_images(outputs, cameras).metres_per_scene_unit == 4.0
    with pytest.warns(UserWarning, match="overrides"):
        assert recorded_images(outputs, cameras, metres_per_scene_unit=3.0).metres_per_scene_unit == 3.0
    outputs, cameras = outputs_for([0.0, 1.0], scale=0.25)
    with pytest.raises(InputError, match=r"--metres-per-scene-unit.*1 / dataparser_scale = 4"):
        recorded_images(outputs, cameras)


def test_camera_with_a_single_pose_is_refused():
    names = ["front_camera", "front_camera", "rear_camera"]
    outputs, cameras = outputs_for([0.0, 1.0, 0.5], metadata={"camera_names": names, "frame_indices": [0, 1, 0]})
    recorded = recorded_images(outputs, cameras, metres_per_scene_unit=1.0)
    assert recorded.known_cameras() == ["front_camera", "rear_camera"]
    with pytest.raises(InputError, match="1 training pose"):
        recorded.select("rear_camera")
    with pytest.raises(InputError, match="camera_names"):
        bad, cams = outputs_for([0.0, 1.0], metadata={"camera_names": ["a"]})
        recorded_images(bad, cams, metres_per_scene_unit=1.0)


@pytest.mark.parametrize("method", ["difix-refiner", "splatfacto", "splatfacto-big", "difix-refiner-lite"])
def test_supported_methods(method):
    check_method(method)


@pytest.mark.parametrize("method", ["nerfacto", None, "splatfactory"])
def test_unsupported_methods(method):
    with pytest.raises(InputError, match="difix-refiner"):
        check_method(method)


def test_validate_offsets():
    assert validate_offsets((-2, 1.5)) == [-2.0, 1.5]
    for bad, message in [((), "empty"), ((1.0, 0.0), "contains 0"), ((1.0, float("inf")), "finite")]:
        with pytest.raises(InputError, match=message):
            validate_offsets(bad)
