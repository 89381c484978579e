"""Box geometry in metres: corners, points inside, and the pixels a box covers in a camera."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from difix_refiner.data.boxes import (
    Box,
    box_corners,
    box_pixel_mask,
    boxes_from_records,
    dynamic_boxes,
    load_boxes,
    points_in_boxes,
)
from difix_refiner.data.cuboids import load_cuboids
from difix_refiner.data.pandaset import PandasetFormatError, load_lidar_sweeps

SCENE = Path(__file__).resolve().parents[2] / "examples" / "pandaset_002"
K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])


def box(centre, size, yaw=0.0, stationary=True) -> Box:
    return Box("id", "Car", np.asarray(centre, dtype=float), np.asarray(size, dtype=float), yaw, stationary)


def test_corners_of_a_turned_box():
    """Width along the box's x, length along its y, then turned by yaw about world z."""
    b = box([10.0, 5.0, 1.0], [2.0, 4.0, 1.0], yaw=math.pi / 2)
    corners = box_corners([b])[0]  # [8, 3]
    # Turned by 90 degrees, the 4 m length lies along world x and the 2 m width along world y.
    np.testing.assert_allclose(corners.min(axis=0), [8.0, 4.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(corners.max(axis=0), [12.0, 6.0, 1.5], atol=1e-12)
    assert points_in_boxes(np.array([[11.9, 5.9, 1.0], [10.0, 6.5, 1.0], [9.0, 4.2, 1.49]]), [b]).tolist() == [True, False, True]


def test_margin_and_dynamic_selection():
    moving, parked = box([0, 0, 0], [1, 1, 1], stationary=False), box([5, 0, 0], [1, 1, 1])
    grown = dynamic_boxes([moving, parked], margin_m=0.25)
    assert len(grown) == 1 and np.allclose(grown[0].size, [1.5, 1.5, 1.5])
    assert points_in_boxes(np.array([[0.7, 0, 0]]), grown).tolist() == [True]
    assert points_in_boxes(np.array([[0.7, 0, 0]]), [moving]).tolist() == [False]


def test_projected_cube_covers_its_pixels():
    """A 2 m cube 10 m ahead of a camera looking down +z: its near face (z = 9 m) spans
    u, v in 50 -+ 100/9 px, so exactly the pixels whose centres lie in [38.89, 61.11] are covered."""
    cube = box([0.0, 0.0, 10.0], [2.0, 2.0, 2.0])
    mask = box_pixel_mask([cube], np.eye(4), K, 100, 100)
    expected = np.zeros((100, 100), dtype=bool)
    centres = np.arange(100) + 0.5
    inside = np.abs(centres - 50.0) <= 100.0 / 9.0
    expected[np.ix_(inside, inside)] = True
    assert np.array_equal(mask, expected)
    assert np.flatnonzero(inside).tolist() == list(range(39, 61))


def test_box_around_or_behind_the_camera():
    """A box the camera sits in covers the whole image; one wholly behind it covers nothing; one beside the
    camera reaching ahead covers only its side of the image."""
    assert box_pixel_mask([box([0, 0, 0], [4, 4, 4])], np.eye(4), K, 100, 100).all()
    assert not box_pixel_mask([box([0, 0, -10], [2, 2, 2])], np.eye(4), K, 100, 100).any()
    side = box_pixel_mask([box([3.0, 0, 0], [2, 2, 40])], np.eye(4), K, 100, 100)  # x in [2, 4] m, right of the camera
    assert side[:, 60:].any() and not side[:, :50].any()


def test_camera_pose_is_used():
    """Turning the camera by 90 degrees about its y axis brings a cube on the world's +x axis into view."""
    turn = np.eye(4)
    turn[:3, :3] = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # camera z -> world +x
    cube = box([10.0, 0.0, 0.0], [2.0, 2.0, 2.0])
    assert box_pixel_mask([cube], turn, K, 100, 100).sum() == 22 * 22
    assert not box_pixel_mask([cube], np.eye(4), K, 100, 100).any()


def test_bundled_boxes_hold_their_lidar_points():
    """On the bundled frame 40, the README's reading (width across, length along) puts more LiDAR returns
    inside the boxes than the swapped one: the geometry matches the data."""
    boxes = load_boxes(SCENE, [40])[40]
    assert len(boxes) > 50 and 0.2 < np.mean([b.dynamic for b in boxes]) < 0.8
    xyz = load_lidar_sweeps(SCENE, [40])[40]
    swapped = [Box(b.uuid, b.label, b.centre, b.size[[1, 0, 2]], b.yaw, b.stationary) for b in boxes]
    assert points_in_boxes(xyz, boxes).sum() > 1.5 * points_in_boxes(xyz, swapped).sum()


def test_missing_or_broken_annotations(tmp_path):
    assert load_boxes(tmp_path, [0]) is None  # no annotations folder: no boxes
    folder = tmp_path / "annotations" / "cuboids"
    folder.mkdir(parents=True)
    with pytest.raises(PandasetFormatError, match="00.json"):
        load_cuboids(tmp_path, 0)
    shutil.copy(SCENE / "annotations" / "cuboids" / "00.json", folder / "00.json")
    records = load_cuboids(tmp_path, 0)
    assert {"uuid", "stationary", "position.x", "dimensions.y", "yaw"} <= set(records[0])
    records[0]["dimensions.x"] = None
    with pytest.raises(PandasetFormatError, match="dimensions.x"):
        boxes_from_records(records, "00.json")
