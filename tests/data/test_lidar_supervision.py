"""The sweep split, per-image LiDAR depth targets and moving-object masks that pandaset-data hands to training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from difix_refiner.data.boxes import Box, dynamic_boxes, load_boxes, points_in_boxes
from difix_refiner.data.lidar_depth import (
    image_depth_targets,
    merge_neighbour_targets,
    neighbour_points,
    static_points,
    training_depth_targets,
)
from difix_refiner.data.pandaset import (
    load_camera,
    load_lidar_positions,
    load_lidar_sweeps,
)
from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig
from difix_refiner.data.sweep_split import SweepSplit, every_nth_frame, split_sweeps

SCENE = Path(__file__).resolve().parents[2] / "examples" / "pandaset_002"
MISSING_SWEEPS = {56, 57, 58, 71}


def parse(split="train", **kwargs):
    return PandasetDataParserConfig(data=kwargs.pop("data", SCENE), **kwargs).setup().get_dataparser_outputs(split)


@pytest.fixture(scope="module")
def outputs():
    """The demo's split (front camera trains, every 8th frame and the side cameras are held out), half size."""
    settings = dict(eval_mode="interval+cross-camera", downscale_factor=2, lidar_max_points=5000)
    return parse("train", **settings), parse("test", **settings)


# ------------------------------------------------------------------------------------------ split


def test_split_rule():
    assert every_nth_frame([7, 1, 2, 3, 5, 6, 9, 10], 4).tolist() == [1, 6]
    split = split_sweeps(range(20), range(1, 20), stride=4)
    assert split.eval == [1, 5, 9, 13, 17] and split.train == [0] + [f for f in range(2, 20) if f not in split.eval]
    assert split_sweeps([0, 2, 3], range(4), stride=2).eval == [0, 2]  # a frame without a sweep is no sweep
    assert split_sweeps(range(5), range(5), stride=0).eval == []
    assert split_sweeps(range(5), range(5), explicit=[3, 4]).eval == [3, 4]
    with pytest.raises(ValueError, match="overlap"):
        SweepSplit(train=[1, 2], eval=[2], rule="bad")


def test_dataparser_splits_sweeps_disjointly_and_records_the_split(outputs):
    train, test = outputs
    split = train.metadata["lidar_sweep_split"]
    assert split == test.metadata["lidar_sweep_split"]  # both splits of a run agree
    assert not set(split["train"]) & set(split["eval"])
    assert sorted(split["train"] + split["eval"]) == sorted(set(range(80)) - MISSING_SWEEPS)
    front_training = [f for f in range(80) if f % 8 != 0]
    assert split["eval"] == [f for f in front_training[::4] if f not in MISSING_SWEEPS]  # eval --frame-stride 4
    assert "every 4th" in split["rule"]


def test_the_bundled_scene_keeps_its_evaluation_sweeps_whole():
    """The default split's evaluation sweeps hold the source's 35,000 points, the training sweeps 4,000."""
    split = PandasetDataParserConfig(data=SCENE).setup().sweep_split()
    assert len(split.eval) == 18
    for frame in split.train + split.eval:
        with np.load(SCENE / "lidar" / f"{frame:02d}.npz") as sweep:
            assert sweep["xyz"].shape == ((35000 if frame in split.eval else 4000), 3), frame


def test_seeds_come_from_training_sweeps_only():
    """Every seed is a return of a training sweep (not of an evaluation sweep), outside moving objects' boxes."""
    out = parse("train", eval_mode="interval", frame_start=36, frame_end=48, lidar_max_points=100000)
    split = out.metadata["lidar_sweep_split"]
    seeds = out.metadata["points3D_xyz"].double().numpy() / out.dataparser_scale - out.dataparser_transform[:, 3].double().numpy()
    sweeps = load_lidar_sweeps(SCENE, split["train"] + split["eval"])
    train_pts = np.concatenate([sweeps[f] for f in split["train"]])
    eval_pts = np.concatenate([sweeps[f] for f in split["eval"]])
    from scipy.spatial import cKDTree

    assert np.all(cKDTree(train_pts).query(seeds)[0] < 1e-4)
    assert np.all(cKDTree(eval_pts).query(seeds)[0] > 1e-4)
    boxes = load_boxes(SCENE, split["train"])
    for f in split["train"]:
        moving = points_in_boxes(seeds, dynamic_boxes(boxes[f], 0.3))
        near_sweep = cKDTree(sweeps[f]).query(seeds)[0] < 1e-4
        assert not (moving & near_sweep).any()


# ------------------------------------------------------------------------------------------ depth targets


def test_targets_by_hand_at_a_known_pose():
    """A camera 2 m above the origin looking along world +x (OpenCV axes: x right = world -y, y down =
    world -z): hand projections of a few points, the nearest of two in one pixel, nothing behind or outside."""
    c2w = np.eye(4)
    c2w[:3, :3] = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    c2w[:3, 3] = [0.0, 0.0, 2.0]
    K = np.array([[50.0, 0.0, 40.0], [0.0, 50.0, 30.0], [0.0, 0.0, 1.0]])
    points = np.array(
        [
            [10.0, 0.0, 2.0],  # straight ahead: (40, 30), z 10
            [5.0, -1.0, 1.0],  # right and below: u = 50 * 1/5 + 40 = 50, v = 50 * 1/5 + 30 = 40
            [20.0, -2.0, 0.0],  # u = 50 * 2/20 + 40 = 45, v = 50 * 2/20 + 30 = 35: same pixel as the next
            [10.0, -1.0, 1.0],  # (45, 35), z 10: nearer, wins the pixel
            [-5.0, 0.0, 2.0],  # behind the camera
            [10.0, 20.0, 2.0],  # far left, outside the image
        ]
    )
    targets = image_depth_targets(points, c2w, K, 80, 60)
    got = sorted(map(tuple, np.round(targets.astype(np.float64), 4)))
    assert got == [(40.0, 30.0, 10.0), (45.0, 35.0, 10.0), (50.0, 40.0, 5.0)]
    exclude = np.zeros((60, 80), dtype=bool)
    exclude[40, 50] = True
    assert len(image_depth_targets(points, c2w, K, 80, 60, exclude=exclude)) == 2


def test_ego_and_moving_returns_are_dropped():
    sensor = np.array([0.0, 0.0, 2.0])
    pts = np.array([[0.5, 0.0, 2.0], [10.0, 0.0, 1.0], [20.0, 0.0, 1.0]])
    mover = Box("m", "Car", np.array([10.0, 0.0, 1.0]), np.array([2.0, 4.0, 2.0]), 0.0, False)
    assert static_points(pts, sensor, None).tolist() == [[10.0, 0.0, 1.0], [20.0, 0.0, 1.0]]
    assert static_points(pts, sensor, [mover]).tolist() == [[20.0, 0.0, 1.0]]


def test_each_image_gets_its_own_sweeps_returns(outputs):
    """Image targets are exactly the hand projections of its own frame's sweep (cleaned), in scene units;
    images of evaluation-sweep frames (and frames without a sweep) get none."""
    train, _ = outputs
    meta = train.metadata
    split = meta["lidar_sweep_split"]
    frames = meta["frame_indices"]
    cam = load_camera(SCENE, "front_camera", frames, verify_images=False)
    K = cam.K.copy()
    K[:2] /= 2
    sensors = load_lidar_positions(SCENE)
    boxes = load_boxes(SCENE, frames)
    checked = 0
    for i, frame in enumerate(frames):
        targets = meta["lidar_depth"][i].numpy()
        if frame not in split["train"]:
            assert targets.shape == (0, 3)
            continue
        if checked >= 3:
            continue
        pts = static_points(load_lidar_sweeps(SCENE, [frame])[frame], sensors[frame], dynamic_boxes(boxes[frame], 0.3))
        mask = meta["dynamic_masks"][i].numpy()
        expected = image_depth_targets(pts, cam.c2w_opencv[i], K, 240, 135, exclude=mask)
        expected[:, 2] *= train.dataparser_scale
        assert len(targets) > 300
        np.testing.assert_allclose(targets[np.lexsort(targets.T)], expected[np.lexsort(expected.T)], rtol=1e-6)
        u, v, _ = targets[0]
        assert not mask[int(v), int(u)]  # no target on a moving object's pixel
        checked += 1
    assert checked == 3


def test_a_neighbour_return_in_a_gap_of_a_nearer_surface_is_dropped():
    """Targets (u, v, z) on an 80x60 image: the own sweep has a wall at 10 m on every 2nd pixel; of the
    neighbouring sweep's returns, one at 30 m in a gap of the wall is hidden, one at 30 m far from it, one at
    10.9 m in a gap (within the 10% + 0.2 m slack) and one at 12 m in a pixel the wall already holds do not
    hide; the last is not taken either: the own sweep keeps its pixels."""
    wall = np.array([[u + 0.5, v + 0.5, 10.0] for u in range(10, 30, 2) for v in range(10, 30, 2)], dtype=np.float32)
    neighbours = np.array([[13.5, 13.5, 30.0], [70.5, 50.5, 30.0], [15.5, 11.5, 10.9], [10.7, 10.2, 12.0]], np.float32)
    merged = merge_neighbour_targets(wall, neighbours, 80, 60)
    np.testing.assert_array_equal(merged[: len(wall)], wall)
    np.testing.assert_allclose(merged[len(wall) :], neighbours[[1, 2]])
    np.testing.assert_array_equal(merge_neighbour_targets(wall, np.zeros((0, 3), np.float32), 80, 60), wall)


def test_a_sweep_window_takes_neighbouring_training_sweeps_only():
    sweeps = {3: np.zeros((2, 3)), 4: np.ones((1, 3)), 5: np.full((5, 3), 9.0), 7: np.full((3, 3), 2.0)}
    assert neighbour_points(sweeps, 6, 0) is None  # frame 6: an evaluation sweep, not in `sweeps`
    assert len(neighbour_points(sweeps, 6, 1)) == 8  # frames 5 and 7
    assert len(neighbour_points(sweeps, 5, 1)) == 1  # frame 4; 5 is the own sweep, 6 has none
    assert len(neighbour_points(sweeps, 5, 2)) == 6
    with pytest.raises(ValueError, match="window"):
        neighbour_points(sweeps, 5, -1)


def test_window_targets_keep_the_own_sweeps_targets_and_add_more(outputs):
    """On the bundled drive: a window of one frame gives the evaluation-sweep frames' images targets from
    their neighbours, keeps every own-sweep target and adds more; window 0 is the own sweep alone."""
    train, _ = outputs
    meta = train.metadata
    frames = meta["frame_indices"][:12]
    cam = load_camera(SCENE, "front_camera", frames, verify_images=False)
    K = np.stack([cam.K.copy() / np.array([[2.0], [2.0], [1.0]])] * len(frames))
    sensors = load_lidar_positions(SCENE)
    train_frames = [f for f in meta["lidar_sweep_split"]["train"] if f <= max(frames) + 1]
    sweeps = {f: static_points(xyz, sensors[f], None) for f, xyz in load_lidar_sweeps(SCENE, train_frames).items()}
    sizes = [(240, 135)] * len(frames)
    own = training_depth_targets(frames, cam.c2w_opencv, K, sizes, sweeps)
    wide = training_depth_targets(frames, cam.c2w_opencv, K, sizes, sweeps, window=1)
    assert any(f not in sweeps for f in frames)
    for frame, i, o, w in zip(frames, range(len(frames)), own, wide):
        assert w is not None and len(w) > 300
        if frame not in sweeps:
            assert o is None
            continue
        np.testing.assert_array_equal(o, image_depth_targets(sweeps[frame], cam.c2w_opencv[i], K[i], 240, 135))
        np.testing.assert_array_equal(w[: len(o)], o)
        assert len(w) > 1.5 * len(o)


def test_the_dataparser_gives_evaluation_sweep_frames_neighbour_targets_with_a_window():
    """--depth-target-window 1 through pandaset-data: images of evaluation-sweep frames get targets, the
    other images keep their own sweep's targets first; a negative window is refused by name."""
    settings = dict(eval_mode="interval+cross-camera", downscale_factor=2, lidar_max_points=2000, frame_end=20)
    own, wide = parse("train", **settings), parse("train", depth_target_window=1, **settings)
    split = own.metadata["lidar_sweep_split"]
    assert set(split["eval"]) & set(own.metadata["frame_indices"])
    for frame, o, w in zip(own.metadata["frame_indices"], own.metadata["lidar_depth"], wide.metadata["lidar_depth"]):
        assert len(w) > 300
        if frame in split["eval"]:
            assert len(o) == 0
        elif frame in split["train"]:
            np.testing.assert_array_equal(w[: len(o)].numpy(), o.numpy())
    with pytest.raises(Exception, match="depth_target_window"):
        parse("train", depth_target_window=-1, **settings)


def _copy_with_one_box(tmp_path: Path, stationary: bool) -> Path:
    """The bundled scene with frame 41's boxes replaced by one 4 m cube 15 m ahead of the front camera, turned
    to face it."""
    folder = tmp_path / f"scene_{stationary}"
    shutil.copytree(SCENE, folder, ignore=shutil.ignore_patterns("camera"))
    (folder / "camera").mkdir()
    shutil.copytree(SCENE / "camera" / "front_camera", folder / "camera" / "front_camera")
    cam = load_camera(SCENE, "front_camera", [41], verify_images=False)
    ahead = cam.c2w_opencv[0, :3, 3] + 15.0 * cam.c2w_opencv[0, :3, 2]
    heading = cam.c2w_opencv[0, :3, 2]
    record = {"uuid": "cube", "label": "Car", "stationary": stationary, "yaw": float(np.arctan2(heading[1], heading[0]))}
    record.update({f"position.{k}": float(v) for k, v in zip("xyz", ahead)})
    record.update({f"dimensions.{k}": 4.0 for k in "xyz"})
    (folder / "annotations" / "cuboids" / "41.json").write_text(json.dumps([record]))
    return folder


@pytest.mark.parametrize("stationary", [False, True])
def test_moving_box_masks_its_pixels_and_a_stationary_one_does_not(tmp_path, stationary):
    folder = _copy_with_one_box(tmp_path, stationary)
    out = parse("train", data=folder, eval_mode="interval", frame_start=40, frame_end=44, downscale_factor=4, load_lidar=False)
    i = out.metadata["frame_indices"].index(41)
    mask = out.metadata["dynamic_masks"][i]
    if stationary:
        assert not mask.any()
    else:
        # Grown by the 0.3 m margin, the cube's near face (4.6 m wide, 12.7 m away) spans 4.6 / 12.7 * fx pixels.
        fx = float(out.cameras.fx[i])
        assert abs(int(mask.any(dim=0).sum()) - 4.6 / 12.7 * fx) <= 1.5
    keep = parse("train", data=folder, eval_mode="interval", frame_start=40, frame_end=44, downscale_factor=4, load_lidar=False, moving_objects="keep")
    assert "dynamic_masks" not in keep.metadata and keep.metadata["moving_objects"] == "keep"
