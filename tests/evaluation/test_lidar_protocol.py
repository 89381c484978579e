"""The evaluation's LiDAR protocol (evaluation sweeps only, no moving objects) and its moving-object metrics."""

from __future__ import annotations

import numpy as np
import pytest

from difix_refiner.data.boxes import Box
from difix_refiner.data.sweep_split import SweepSplit
from difix_refiner.evaluation.depth_sheet import (
    depth_colours,
    depth_thumbnail,
    sheet_offsets,
)
from difix_refiner.evaluation.lidar_protocol import evaluation_sweeps, frame_stride
from difix_refiner.evaluation.moving_objects import fixer_change, static_pixel_psnr


def test_only_evaluation_sweeps_without_moving_points():
    sweeps = {f: np.array([[float(f), 0.0, 0.0], [50.0, 50.0, 0.0]]) for f in range(10)}
    split = SweepSplit(train=[0, 2, 3, 4, 6, 7, 8, 9], eval=[1, 5], rule="test")
    mover = Box("m", "Car", np.array([50.0, 50.0, 0.0]), np.array([2.0, 2.0, 2.0]), 0.0, False)
    kept, info = evaluation_sweeps(sweeps, split, {5: [mover]}, frames=[1, 5, 9], window=1)
    assert sorted(kept) == [1, 5] and len(kept[1]) == 2 and kept[5].tolist() == [[5.0, 0.0, 0.0]]
    assert info["sweeps"] == [1, 5] and info["moving_object_points_removed"] == 1
    assert info["frames_without_evaluation_sweep"] == [9]
    everything, info = evaluation_sweeps(sweeps, None, None, frames=[1], window=0)
    assert len(everything) == 10 and "no sweep split" in info["source"] and info["sweeps"] == [1]


def test_frame_stride_follows_the_run():
    class Dp:
        lidar_eval_stride, lidar_eval_frames = 4, None

    assert frame_stride(None, Dp()) == 4 and frame_stride(7, Dp()) == 7
    Dp.lidar_eval_stride = 0
    assert frame_stride(None, Dp()) == 5  # no evaluation sweeps: the old default


def test_static_pixel_psnr_and_fixer_change():
    photo = np.zeros((4, 4, 3), dtype=np.uint8)
    render = photo.copy()
    render[:2] = 255  # wrong only in the top half
    moving = np.zeros((4, 4), dtype=bool)
    moving[:2] = True
    assert static_pixel_psnr(render, photo, moving) == pytest.approx(100.0)
    assert static_pixel_psnr(render, photo, None) == pytest.approx(10 * np.log10(2))
    assert static_pixel_psnr(render, photo, np.ones((4, 4), dtype=bool)) is None
    change = fixer_change(render, photo, moving)
    assert change == {"moving": 1.0, "static": 0.0}


def test_depth_thumbnail_draws_lidar_in_its_depth_colour():
    depth = np.full((20, 40), 10.0)
    lidar = np.full((20, 40), np.inf)
    lidar[10, 20] = 2.0  # a near return where the render says 10 m
    thumb = depth_thumbnail(depth, np.ones((20, 40)), lidar, 40)
    assert thumb.shape == (20, 40, 3)
    assert np.array_equal(thumb[10, 20], depth_colours(np.array(2.0)))
    assert np.array_equal(thumb[2, 2], depth_colours(np.array(10.0)))
    assert sheet_offsets([-2, -1, 1, 2]) == [0.0, 2, -2]
