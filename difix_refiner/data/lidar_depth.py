"""Sparse LiDAR depth targets for the training images: each image gets the returns of its own sweep.

For an image of frame t: the points of sweep t (a *training* sweep, :mod:`difix_refiner.data.sweep_split`),
minus the ego car's returns (closer than ``min_range`` metres to the sensor, as for the seeds), minus the
points inside dynamic boxes, projected into the image's camera. Every pixel keeps its nearest return.

A target is ``(u, v, z)``: the return's exact projection in pixels of the image as the dataparser gives it
(``u`` along the row, ``v`` down; pixel ``(col, row)`` covers ``[col, col + 1) x [row, row + 1)``) and its
z-depth along the optical axis. Storing sub-pixel ``(u, v)`` at the full resolution keeps the targets valid
at every resolution of splatfacto's schedule: a render downscaled by ``d`` looks them up at ``(u / d, v / d)``
(see :func:`difix_refiner.scene.depth_loss.depth_loss`).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from difix_refiner.data.boxes import Box, points_in_boxes
from difix_refiner.data.lidar import aggregate_sweeps, project

TARGET_NEAR_M = 0.5
"""Returns nearer than this (z-depth, metres) are not targets."""
TARGET_MAX_DEPTH_M = 80.0
"""Returns farther than this (z-depth, metres) are not targets (few returns, large pixel footprints)."""


def static_points(
    xyz: np.ndarray, sensor_position: np.ndarray, dynamic: Optional[Sequence[Box]], min_range: float = 2.0
) -> np.ndarray:
    """One sweep's returns without the ego car (nearer than ``min_range`` m to the sensor) and without
    the points in the ``dynamic`` boxes. ``[N, 3]`` world metres -> ``[M, 3]``."""
    pts, _ = aggregate_sweeps({0: np.asarray(xyz, dtype=np.float64)}, np.asarray(sensor_position)[None], min_range)
    if dynamic:
        pts = pts[~points_in_boxes(pts, dynamic)]
    return pts


def nearest_per_pixel(uv: np.ndarray, z: np.ndarray, width: int, height: int) -> np.ndarray:
    """Indices of the points that are the nearest (smallest ``z``) in their pixel, one per pixel hit.

    Args:
        uv: ``[N, 2]`` projections (pixels), all inside the image.
        z: ``[N]`` depths.

    Returns:
        ``[M]`` indices into the points, in pixel order (row-major).
    """
    cols = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, width - 1)
    rows = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, height - 1)
    pixel = rows * width + cols  # [N]
    order = np.lexsort((z, pixel))  # by pixel, then nearest first
    first = np.ones(len(order), dtype=bool)
    first[1:] = pixel[order][1:] != pixel[order][:-1]
    return order[first]


def image_depth_targets(
    points: np.ndarray,
    c2w_opencv: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    exclude: Optional[np.ndarray] = None,
    near: float = TARGET_NEAR_M,
    max_depth: float = TARGET_MAX_DEPTH_M,
) -> np.ndarray:
    """Depth targets of one image from world points ``[N, 3]`` (metres). # [M, 3] float32 (u, v, z metres)

    Args:
        c2w_opencv: ``[4, 4]`` / ``[3, 4]`` camera-to-world, OpenCV axes, metres.
        K: ``[3, 3]`` intrinsics of the ``width`` x ``height`` image.
        exclude: ``[H, W]`` bool, pixels that take no target (e.g. dynamic-object masks).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    uv, z = project(points, np.asarray(c2w_opencv, dtype=np.float64), np.asarray(K, dtype=np.float64))
    keep = np.isfinite(uv).all(axis=1) & (z >= near) & (z <= max_depth)
    keep &= (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    uv, z = uv[keep], z[keep]
    if exclude is not None and len(z):
        cols = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, width - 1)
        rows = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, height - 1)
        free = ~np.asarray(exclude, dtype=bool)[rows, cols]
        uv, z = uv[free], z[free]
    idx = nearest_per_pixel(uv, z, width, height)
    return np.concatenate([uv[idx], z[idx, None]], axis=1).astype(np.float32)


def training_depth_targets(
    image_frames: Sequence[int],
    image_poses_opencv: np.ndarray,
    image_K: np.ndarray,
    image_sizes: Sequence[tuple],
    sweeps: Dict[int, np.ndarray],
    exclude_masks: Optional[Sequence[Optional[np.ndarray]]] = None,
) -> List[Optional[np.ndarray]]:
    """Targets of every training image from its own frame's sweep (None where the frame has no sweep).

    Args:
        image_frames: ``[I]`` frame index of each image.
        image_poses_opencv: ``[I, 4, 4]`` camera-to-world, OpenCV axes, metres.
        image_K: ``[I, 3, 3]`` intrinsics of each image.
        image_sizes: ``[I]`` ``(width, height)``.
        sweeps: ``{frame: [N, 3]}`` *training* sweeps, already cleaned by :func:`static_points`.
        exclude_masks: ``[I]`` optional ``[H, W]`` bool masks of pixels that take no target.
    """
    out: List[Optional[np.ndarray]] = []
    for i, frame in enumerate(image_frames):
        pts = sweeps.get(int(frame))
        if pts is None:
            out.append(None)
            continue
        w, h = image_sizes[i]
        exclude = None if exclude_masks is None else exclude_masks[i]
        out.append(image_depth_targets(pts, image_poses_opencv[i], image_K[i], int(w), int(h), exclude))
    return out
