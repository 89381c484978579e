"""LiDAR points as the initial Gaussians: aggregate sweeps, voxel-downsample, colour from images.

Plain numpy (no open3d): the bundled sweeps are already in world coordinates.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from difix_refiner.data.pandaset import PandasetCamera, read_rgb


def aggregate_sweeps(
    sweeps: Dict[int, np.ndarray], sensor_positions: np.ndarray, min_range: float = 2.0
) -> Tuple[np.ndarray, np.ndarray]:
    """Stack sweeps, dropping returns closer than ``min_range`` metres to their sensor (the ego car).

    Returns points [N, 3] and the frame each came from [N].
    """
    pts, frames = [], []
    for f, xyz in sorted(sweeps.items()):
        keep = np.linalg.norm(xyz - sensor_positions[f], axis=1) >= min_range
        pts.append(xyz[keep])
        frames.append(np.full(int(keep.sum()), f, dtype=np.int64))
    if not pts:
        return np.zeros((0, 3)), np.zeros((0,), dtype=np.int64)
    return np.concatenate(pts), np.concatenate(frames)


def voxel_downsample(points: np.ndarray, voxel_size: float, *extra: np.ndarray) -> Tuple[np.ndarray, ...]:
    """Keep one point per voxel (the first one), plus the matching rows of ``extra`` arrays."""
    assert points.ndim == 2 and points.shape[1] == 3, points.shape
    assert voxel_size > 0, voxel_size
    keys = np.floor(points / voxel_size).astype(np.int64)  # [N, 3]
    _, first = np.unique(keys, axis=0, return_index=True)
    first = np.sort(first)  # keep the original order, so results do not depend on hashing
    return (points[first],) + tuple(e[first] for e in extra)


def project(points: np.ndarray, c2w_opencv: np.ndarray, K: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Project world points into one OpenCV camera. Returns pixel coordinates [N, 2] and depth [N]."""
    R, t = c2w_opencv[:3, :3], c2w_opencv[:3, 3]
    cam = (points - t) @ R  # R^T (X - t), [N, 3]
    z = cam[:, 2]
    safe_z = np.where(np.abs(z) < 1e-9, 1e-9, z)
    uv = np.stack([K[0, 0] * cam[:, 0] / safe_z + K[0, 2], K[1, 1] * cam[:, 1] / safe_z + K[1, 2]], axis=1)
    return uv, z


PhotoPick = Callable[[PandasetCamera, int, np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]
"""``pick(camera, image_index, candidates, gap) -> (point ids, pixels [M, 2])``: which candidate points
(``candidates`` is a bool mask [N]) the photo colours, and at which pixels (x, y)."""


def colour_from_nearest_photos(
    points: np.ndarray, point_frames: np.ndarray, cameras: Sequence[PandasetCamera], max_frame_gap: int, pick: PhotoPick
) -> Tuple[np.ndarray, np.ndarray]:
    """Colour each point from the photo closest in time (within ``max_frame_gap`` frames) that ``pick`` accepts.

    Returns colours [N, 3] uint8 and a mask [N] of the points some photo coloured.
    """
    n = len(points)
    colours = np.zeros((n, 3), dtype=np.uint8)
    best_gap = np.full(n, np.inf)
    for cam in cameras:
        for i, frame in enumerate(cam.frame_indices):
            gap = np.abs(point_frames - frame).astype(np.float64)  # [N]
            cand = gap < np.minimum(best_gap, max_frame_gap + 1)  # [N]
            if not cand.any():
                continue
            ids, px = pick(cam, i, cand, gap)
            if len(ids) == 0:
                continue
            img = read_rgb(cam.image_paths[i])  # [H, W, 3]
            colours[ids] = img[px[:, 1], px[:, 0]]
            best_gap[ids] = gap[ids]
    return colours, np.isfinite(best_gap)


def colour_points(
    points: np.ndarray, point_frames: np.ndarray, cameras: Sequence[PandasetCamera], max_frame_gap: int = 10
) -> Tuple[np.ndarray, np.ndarray]:
    """Colour each point from the training image closest in time in which it is in view.

    Returns colours [N, 3] uint8 and a mask [N] of points that some camera saw; points no training
    camera saw within ``max_frame_gap`` frames of their sweep stay uncoloured (mask False).
    """

    def in_view(cam: PandasetCamera, i: int, cand: np.ndarray, gap: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        uv, z = project(points[cand], cam.c2w_opencv[i], cam.K)
        inside = (z > 0.5) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        return np.flatnonzero(cand)[inside], uv[inside].astype(np.int64)

    return colour_from_nearest_photos(points, point_frames, cameras, max_frame_gap, in_view)


def lidar_seed_points(
    sweeps: Dict[int, np.ndarray],
    sensor_positions: np.ndarray,
    cameras: Sequence[PandasetCamera],
    voxel_size: float,
    max_points: int,
    seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """World-space seed points [N, 3] (metres) and colours [N, 3] uint8 from LiDAR and the training images."""
    pts, frames = aggregate_sweeps(sweeps, sensor_positions)
    pts, frames = voxel_downsample(pts, voxel_size, frames)
    colours, seen = colour_points(pts, frames, cameras)
    pts, colours = pts[seen], colours[seen]
    if len(pts) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(pts), size=max_points, replace=False))
        pts, colours = pts[keep], colours[keep]
    return pts, colours
