"""The pandaset-data dataparser on the bundled scene, and its errors on broken copies of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from difix_refiner.data.lidar import project, voxel_downsample
from difix_refiner.data.pandaset import (
    PandasetFormatError,
    load_camera,
    quat_wxyz_to_matrix,
)
from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig

SCENE = Path(__file__).resolve().parents[2] / "examples" / "pandaset_002"


def parse(split="train", **kwargs):
    return PandasetDataParserConfig(data=kwargs.pop("data", SCENE), **kwargs).setup().get_dataparser_outputs(split)


@pytest.fixture(scope="module")
def interval_outputs():
    return parse("train"), parse("test")


def test_interval_split_holds_out_every_nth_frame(interval_outputs):
    train, test = interval_outputs
    assert test.metadata["frame_indices"] == list(range(0, 80, 8))
    assert sorted(train.metadata["frame_indices"] + test.metadata["frame_indices"]) == list(range(80))
    assert set(train.metadata["camera_names"]) == {"front_camera"}


def test_cross_camera_split_trains_front_and_evaluates_sides():
    train = parse("train", eval_mode="cross-camera", load_lidar=False)
    test = parse("test", eval_mode="cross-camera", load_lidar=False)
    assert len(train.image_filenames) == 80 and set(train.metadata["camera_names"]) == {"front_camera"}
    assert set(test.metadata["camera_names"]) == {"front_left_camera", "front_right_camera"}
    assert torch.equal(train.dataparser_transform, test.dataparser_transform)
    assert train.dataparser_scale == test.dataparser_scale


def test_train_stride_keeps_every_kth_training_frame():
    train = parse("train", eval_mode="cross-camera", train_stride=4, load_lidar=False)
    assert train.metadata["frame_indices"] == list(range(0, 80, 4))


def test_metres_stay_metres(interval_outputs):
    """Distances between scene camera centres times metres_per_scene_unit equal world distances."""
    train, _ = interval_outputs
    scale = train.dataparser_scale
    assert train.metadata["metres_per_scene_unit"] == pytest.approx(1.0 / scale)
    cam = load_camera(SCENE, "front_camera", train.metadata["frame_indices"], verify_images=False)
    world = cam.c2w_opencv[:, :3, 3]
    scene = train.cameras.camera_to_worlds[:, :3, 3].double().numpy()
    d_world = np.linalg.norm(world[-1] - world[0])
    d_scene = np.linalg.norm(scene[-1] - scene[0]) * train.metadata["metres_per_scene_unit"]
    assert d_world == pytest.approx(21.5, abs=1.0)  # the README's "about 21.5 m"
    assert d_scene == pytest.approx(d_world, abs=1e-4)
    # scene = scale * (world + t): the recorded transform maps every centre exactly
    t = train.dataparser_transform[:, 3].double().numpy()
    np.testing.assert_allclose(scene, (world + t) * scale, atol=1e-5)


def test_camera_axes_are_opengl(interval_outputs):
    """The front camera looks along world -z of its OpenGL frame, i.e. forward, and its up is world +z."""
    train, _ = interval_outputs
    R = train.cameras.camera_to_worlds[:, :3, :3]
    up = R[:, :, 1]  # camera +y in world
    assert (up[:, 2] > 0.95).all()


def test_intrinsics_follow_the_image_size(interval_outputs):
    train, _ = interval_outputs
    assert int(train.cameras.width[0]) == 480 and int(train.cameras.height[0]) == 270
    assert float(train.cameras.fx[0]) == pytest.approx(1970.0131 / 4, rel=1e-5)


def test_lidar_seeds_project_onto_matching_colours(interval_outputs):
    """Seed colours are the image colours at their projection (colour check at the image-wide mean level)."""
    train, _ = interval_outputs
    xyz, rgb = train.metadata["points3D_xyz"], train.metadata["points3D_rgb"]
    assert xyz.shape[0] > 10000 and xyz.shape == rgb.shape
    assert rgb.min() >= 0 and rgb.max() <= 255 and rgb.std() > 10


def test_downscale_uses_a_cache_and_never_writes_into_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = sorted(p.name for p in (SCENE / "camera" / "front_camera").iterdir())
    out = parse("test", downscale_factor=2, load_lidar=False)
    assert sorted(p.name for p in (SCENE / "camera" / "front_camera").iterdir()) == before
    assert all(str(p).startswith(str(tmp_path)) for p in out.image_filenames)
    assert int(out.cameras.width[0]) == 240 and float(out.cameras.fx[0]) == pytest.approx(1970.0131 / 8, rel=1e-5)


@pytest.fixture()
def scene_copy(tmp_path):
    dst = tmp_path / "scene"
    shutil.copytree(SCENE / "camera" / "front_camera", dst / "camera" / "front_camera")
    return dst


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(PandasetFormatError, match="not found"):
        parse(data=tmp_path / "nope", load_lidar=False)


def test_unknown_camera_lists_the_known_ones():
    with pytest.raises(PandasetFormatError, match="no camera 'rear_camera'.*it has: front_camera"):
        parse(cameras=("rear_camera",), load_lidar=False)


def test_frame_count_mismatch_names_the_file(scene_copy):
    (scene_copy / "camera" / "front_camera" / "79.jpg").unlink()
    with pytest.raises(PandasetFormatError, match="frame 79 of front_camera has no image: .*79.jpg .*80 poses"):
        parse(data=scene_copy, load_lidar=False)


def test_corrupt_image_names_the_file(scene_copy):
    (scene_copy / "camera" / "front_camera" / "05.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(PandasetFormatError, match="05.jpg"):
        parse(data=scene_copy, load_lidar=False)


def test_bad_pose_json_names_the_file(scene_copy):
    path = scene_copy / "camera" / "front_camera" / "poses.json"
    poses = json.loads(path.read_text())
    del poses[3]["heading"]
    path.write_text(json.dumps(poses))
    with pytest.raises(PandasetFormatError, match="poses.json"):
        parse(data=scene_copy, load_lidar=False)


def test_missing_lidar_is_reported(scene_copy):
    with pytest.raises(PandasetFormatError, match="LiDAR"):
        parse(data=scene_copy)


def test_quaternion_and_projection_conventions():
    """A 90-degree yaw quaternion and a pinhole projection of a point on the optical axis."""
    R = quat_wxyz_to_matrix(np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]))
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    c2w = np.eye(4)
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    uv, z = project(np.array([[1.0, 2.0, 13.0], [2.0, 2.0, 13.0]]), c2w, K)
    np.testing.assert_allclose(uv, [[50, 40], [60, 40]])
    np.testing.assert_allclose(z, [10, 10])


def test_voxel_downsample_keeps_one_point_per_voxel():
    pts = np.array([[0.01, 0.01, 0.01], [0.02, 0.03, 0.04], [0.5, 0.5, 0.5], [1.01, 0, 0]])
    kept, ids = voxel_downsample(pts, 0.1, np.arange(4))
    assert ids.tolist() == [0, 2, 3]
