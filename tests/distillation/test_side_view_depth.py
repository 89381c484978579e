"""The LiDAR depth loss at training cameras moved sideways: its pairs, its targets and what it does to a run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_refine_run import EXAMPLE, short_pandaset_run, tiny_model

from difix_refiner.distillation.side_view_depth import SIDE_VIEW_DEPTH_LOSS, SideViewDepth, SideViewDepthConfig
from difix_refiner.scene.depth_loss import depth_loss

INTRINSICS = {"fx": 20.0, "fy": 20.0, "cx": 16.0, "cy": 12.0, "width": 32, "height": 24}


def _grid(xs: np.ndarray, ys: np.ndarray, z: float) -> np.ndarray:
    x, y = np.meshgrid(xs, ys)
    return np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], axis=1)  # [N, 3]


def _loss(count: int, offsets, every: int = 1, cloud=None, downscale: int = 1) -> SideViewDepth:
    pose = np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1)  # [3, 4] at the origin, looking down -z
    poses = {}
    for o in offsets:
        poses[float(o)] = np.tile(pose, (count, 1, 1))  # [N, 3, 4]
        poses[float(o)][:, 0, 3] = o  # moved along x by the offset
    cloud = cloud if cloud is not None else (np.zeros((1, 3)), np.zeros((1, 3), np.uint8))
    config = SideViewDepthConfig(weight=1.0, offsets=tuple(offsets), every=every, downscale=downscale)
    return SideViewDepth(config, poses, [dict(INTRINSICS) for _ in range(count)], cloud, 1.0)


def test_pairs_cover_every_image_and_offset_once_per_cycle():
    loss = _loss(3, (-2.0, 2.0))
    first = [loss.pair(s) for s in range(6)]
    assert sorted(first) == sorted((i, o) for i in range(3) for o in (-2.0, 2.0))
    assert [loss.pair(s) for s in range(6, 12)] == first  # the next cycle repeats them: the step alone decides
    sparse = _loss(3, (-2.0, 2.0), every=2)
    assert [sparse.pair(s) for s in (1, 3, 5)] == [None] * 3
    assert [sparse.pair(2 * k) for k in range(6)] == first


def test_targets_are_the_nearest_lidar_surface_of_the_shifted_camera():
    """A wall 10 m away and a 1 m square 4 m away, seen by a camera moved 1 m along x: the square's pixels
    (hand projection: columns 13.5..18.5, rows 9.5..14.5) take its depth, not the wall's behind it."""
    wall = _grid(np.arange(-12, 12, 0.1), np.arange(-9, 9, 0.1), -10.0)
    square = _grid(np.arange(0.5, 1.501, 0.05), np.arange(-0.5, 0.501, 0.05), -4.0)
    points = np.concatenate([wall, square])
    loss = _loss(1, (1.0,), cloud=(points, np.full(points.shape, 128, np.uint8)))
    uvz = loss.targets(0, 1.0).numpy()
    assert np.allclose(uvz[:, :2] % 1.0, 0.5)  # pixel centres
    cols, rows, z = np.floor(uvz[:, 0]).astype(int), np.floor(uvz[:, 1]).astype(int), uvz[:, 2]
    inside = (cols >= 14) & (cols <= 17) & (rows >= 10) & (rows <= 13)
    assert inside.sum() == 16 and np.allclose(z[inside], 4.0, atol=1e-4)
    far = (np.abs(cols - 15.5) > 5) | (np.abs(rows - 11.5) > 5)
    assert far.sum() > 200 and np.allclose(z[far], 10.0, atol=1e-4)
    assert loss.targets(0, 1.0) is loss.targets(0, 1.0)  # computed once


@pytest.mark.parametrize("downscale", [1, 2])
def test_the_loss_reaches_the_splats_and_leaves_the_real_view_size(downscale):
    """A wall 3.5 units down -z behind the tiny model's blob, seen 0.5 to the side, at full and half size."""
    from difix_refiner.distillation.pipeline import DifixRefinerPipeline

    model = tiny_model()
    model.train()
    model.last_size = (24, 32)  # the real view's render, which splatfacto's loss reads afterwards
    wall = _grid(np.arange(-3, 3, 0.02), np.arange(-2, 2, 0.02), -3.5)
    loss = _loss(1, (0.5,), cloud=(wall, np.zeros(wall.shape, np.uint8)), downscale=downscale)
    value = loss.loss(model, DifixRefinerPipeline.make_camera, step=0)
    assert value.item() > 0 and model.last_size == (24, 32)
    value.backward()
    assert model.means.grad is not None and model.means.grad.abs().sum() > 0


def test_on_by_default_and_rejects_bad_settings():
    assert SideViewDepthConfig().weight > 0  # on wherever the dataparser gives LiDAR depth targets
    SideViewDepthConfig().validate()
    with pytest.raises(ValueError, match="every"):
        SideViewDepthConfig(weight=0.1, every=0).validate()
    with pytest.raises(ValueError, match="weight"):
        SideViewDepthConfig(weight=-1.0).validate()


# ------------------------------------------------------------------------------------------ short CPU runs


def _run(out: Path, name: str, steps: int, weight: float, data: Path = EXAMPLE, **dataparser):
    def configure(cfg):
        cfg.pipeline.side_view_depth.weight = weight
        cfg.pipeline.side_view_depth.every = 1  # a term on every step, at full size: a short run shows it
        cfg.pipeline.side_view_depth.downscale = 1

    return short_pandaset_run(out, name, steps, data, configure, **dataparser)


def _side_view_depth_error(trainer, reference: SideViewDepth) -> float:
    """mean |log d - log z| of full-resolution renders at every shifted camera against its LiDAR targets."""
    model = trainer.pipeline.model
    model.eval()
    errors = []
    with torch.no_grad():
        for i, offset in reference.pairs:
            intrinsics = reference.intrinsics[i]
            camera = trainer.pipeline.make_camera(reference.poses[offset][i], intrinsics)
            depth = model.get_outputs(camera)["depth"]  # [H, W, 1]
            size = (int(intrinsics["height"]), int(intrinsics["width"]))
            errors.append(depth_loss(depth, reference.targets(i, offset), size).item())
    return float(np.mean(errors))


def test_side_view_loss_lowers_depth_error_at_shifted_cameras(tmp_path):
    plain = _run(tmp_path, "plain", 40, weight=0.0)
    side = _run(tmp_path, "side", 40, weight=0.5)
    assert plain.pipeline.side_view_depth is None and side.pipeline.side_view_depth is not None
    _, losses, _ = side.pipeline.get_train_loss_dict(0)  # step 0 carries the term
    assert losses[SIDE_VIEW_DEPTH_LOSS].item() > 0
    reference = SideViewDepth.build(SideViewDepthConfig(weight=1.0), side.pipeline.datamanager)
    e_plain, e_side = _side_view_depth_error(plain, reference), _side_view_depth_error(side, reference)
    assert e_side < 0.8 * e_plain, (e_plain, e_side)


def test_a_dataparser_without_lidar_trains_exactly_as_before(tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(EXAMPLE, bare, ignore=shutil.ignore_patterns("annotations", "lidar"))
    runs = [_run(tmp_path, f"w{w}", 6, weight=w, data=bare, load_lidar=False) for w in (0.0, 0.5)]
    assert runs[1].pipeline.side_view_depth is None
    for key, value in runs[0].pipeline.model.gauss_params.items():
        assert torch.equal(value, runs[1].pipeline.model.gauss_params[key]), key


def test_a_camera_with_one_training_image_trains_without_side_views(tmp_path):
    """Frames 40-41: frame 40 is held out, so the one training image gives no direction of travel to shift along."""
    run = _run(tmp_path, "one_image", 2, weight=0.5, frame_start=40, frame_end=42)
    assert run.pipeline.side_view_depth is None
    assert len(run.pipeline.datamanager.train_dataset) == 1
