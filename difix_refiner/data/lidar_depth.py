"""Sparse LiDAR depth targets for the training images: each image gets the returns of its own sweep
(and, with a sweep window, of its neighbours').

For an image of frame t: the points of sweep t (a *training* sweep, :mod:`difix_refiner.data.sweep_split`),
minus the ego car's returns (closer than ``min_range`` metres to the sensor, as for the seeds), minus the
points inside dynamic boxes, projected into the image's camera. Every pixel keeps its nearest return. With
a window w > 0 the training sweeps of frames t - w .. t + w fill the pixels sweep t leaves empty, where
nothing nearer hides them (:func:`merge_neighbour_targets`).

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
from difix_refiner.data.lidar_hint import nearest_per_pixel, unoccluded

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


def _pixel_index(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Flat pixel index ``row * width + col`` of projections ``[N, 2]``. # [N]"""
    cols = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, width - 1)
    rows = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, height - 1)
    return rows * width + cols


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
        free = ~np.asarray(exclude, dtype=bool).reshape(-1)[_pixel_index(uv, width, height)]
        uv, z = uv[free], z[free]
    idx = nearest_per_pixel(_pixel_index(uv, width, height), z)  # one per pixel, in pixel order
    return np.concatenate([uv[idx], z[idx, None]], axis=1).astype(np.float32)


OCCLUSION_RADIUS_PX = 1
"""Neighbourhood (pixels) in which a clearly nearer target hides a neighbouring sweep's return."""
OCCLUSION_REL_TOL = 0.1
"""Relative depth slack of that test: wide enough for the ground's depth change between pixel rows."""
OCCLUSION_ABS_TOL_M = 0.2
"""Absolute depth slack of that test, metres."""


def merge_neighbour_targets(own: np.ndarray, neighbours: np.ndarray, width: int, height: int) -> np.ndarray:
    """An image's own-sweep targets plus those of neighbouring sweeps that add a visible surface. # [K, 3]

    Both inputs are ``[M, 3]`` targets with one per pixel (:func:`image_depth_targets`). The own sweep's
    targets are kept as they are: that sweep was taken where the camera is. A neighbouring sweep's return
    is added only in a pixel the own sweep leaves empty, and only when no target within
    ``OCCLUSION_RADIUS_PX`` pixels is nearer by more than ``OCCLUSION_REL_TOL * z + OCCLUSION_ABS_TOL_M``:
    a sweep taken some metres away reaches surfaces this camera cannot see, and their returns land in the
    gaps between the sparse returns of the surface in front.
    """
    if len(neighbours) == 0:
        return own
    new = neighbours[~np.isin(_pixel_index(neighbours[:, :2], width, height), _pixel_index(own[:, :2], width, height))]
    both = np.concatenate([own, new])  # [M + N', 3], one per pixel
    zmap = np.full(height * width, np.inf)
    zmap[_pixel_index(both[:, :2], width, height)] = both[:, 2]
    visible = unoccluded(zmap.reshape(height, width), OCCLUSION_RADIUS_PX, OCCLUSION_REL_TOL, OCCLUSION_ABS_TOL_M)
    return np.concatenate([own, new[visible.reshape(-1)[_pixel_index(new[:, :2], width, height)]]])


def neighbour_points(sweeps: Dict[int, np.ndarray], frame: int, window: int) -> Optional[np.ndarray]:
    """The training sweeps of frames ``frame - window .. frame + window`` but ``frame`` itself, stacked
    (None if there are none)."""
    if window < 0:
        raise ValueError(f"the depth-target sweep window must be >= 0 frames, got {window}")
    used = [sweeps[f] for f in range(frame - window, frame + window + 1) if f != frame and f in sweeps]
    return np.concatenate(used) if used else None


def training_depth_targets(
    image_frames: Sequence[int],
    image_poses_opencv: np.ndarray,
    image_K: np.ndarray,
    image_sizes: Sequence[tuple],
    sweeps: Dict[int, np.ndarray],
    exclude_masks: Optional[Sequence[Optional[np.ndarray]]] = None,
    window: int = 0,
) -> List[Optional[np.ndarray]]:
    """Targets of every training image from the training sweeps of its frame and ``window`` frames each
    side (None where there are none).

    With ``window = 0`` an image takes its own sweep only, so the images whose own sweep is an
    evaluation sweep get no target. A wider window gives them (and every image) the returns of the
    neighbouring training sweeps where they add a visible surface (:func:`merge_neighbour_targets`).

    Args:
        image_frames: ``[I]`` frame index of each image.
        image_poses_opencv: ``[I, 4, 4]`` camera-to-world, OpenCV axes, metres.
        image_K: ``[I, 3, 3]`` intrinsics of each image.
        image_sizes: ``[I]`` ``(width, height)``.
        sweeps: ``{frame: [N, 3]}`` *training* sweeps, already cleaned by :func:`static_points`.
        exclude_masks: ``[I]`` optional ``[H, W]`` bool masks of pixels that take no target.
        window: Frames on each side whose training sweeps also give targets.
    """
    out: List[Optional[np.ndarray]] = []
    for i, frame in enumerate(image_frames):
        w, h = (int(x) for x in image_sizes[i])
        exclude = None if exclude_masks is None else exclude_masks[i]

        def targets_of(pts: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if pts is None else image_depth_targets(pts, image_poses_opencv[i], image_K[i], w, h, exclude)

        own = targets_of(sweeps.get(int(frame)))
        near = targets_of(neighbour_points(sweeps, int(frame), window))  # None with window 0
        if near is None:
            out.append(own)
        else:
            out.append(merge_neighbour_targets(np.zeros((0, 3), np.float32) if own is None else own, near, w, h))
    return out
