"""The LiDAR hint: coloured LiDAR points rendered into any camera with a z-buffer.

The drive's LiDAR measures much of what a shifted (novel) view should show. Coloured by the real
training photos and projected into a novel camera, its points give the fixer a sparse, metric picture of
that view: an RGB image, a validity mask and a depth map. Pixels no point reaches are *unknown*
(mask 0), never black.

One function, :func:`render_lidar_hint`, renders the hint for any pinhole camera; :func:`hint_cloud`
builds the coloured points from the sweeps the caller chooses (pass only the training sweeps: evaluation
sweeps must never enter a hint). Plain numpy; at 480x270 with 100k points one hint takes tens of ms.

Conventions (as in :mod:`difix_refiner.data.lidar`): camera-to-world ``[4, 4]`` or ``[3, 4]`` poses with
OpenCV axes (x right, y down, z forward); pixel ``(col, row)`` covers ``u in [col, col + 1)``,
``v in [row, row + 1)`` of ``u = fx * x / z + cx``. Depth is z-depth, in the points' units (metres for
PandaSet; scene units when points and poses are in scene units, see :func:`opengl_to_opencv`).

The z-buffer: every point covers the ``(2r+1) x (2r+1)`` pixels around its projection
(``splat_radius_px = r``) and each pixel keeps its nearest point. LiDAR is sparse, so a far point can
still show through a gap between the splats of a near surface; a pixel is therefore also dropped when a
pixel within ``occlusion_radius_px`` holds a point nearer by more than ``rel_tol * depth + abs_tol``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from difix_refiner.data.lidar import (
    aggregate_sweeps,
    colour_from_nearest_photos,
    project,
    voxel_downsample,
)
from difix_refiner.data.pandaset import OPENCV_TO_OPENGL, PandasetCamera

HINT_CHANNELS = 4
"""Channels of the hint as the fixer takes it: RGB (0 where unknown) and the validity mask."""


@dataclass(frozen=True)
class HintSettings:
    """How points become hint pixels (see the module docstring)."""

    near: float = 0.5
    """Points nearer than this z-depth (points' units, metres for PandaSet) are ignored."""
    max_depth: float = 80.0
    """Points farther than this z-depth are ignored (few returns, large pixel footprints)."""
    splat_radius_px: int = 1
    """Each point covers the (2r+1) x (2r+1) pixels around its projection; 0 = its pixel only."""
    occlusion_radius_px: int = 2
    """A pixel is dropped when a pixel this close holds a clearly nearer point; 0 = plain z-buffer."""
    rel_tol: float = 0.05
    """Relative depth slack of that occlusion test."""
    abs_tol: float = 0.2
    """Absolute depth slack of that occlusion test (points' units)."""

    def __post_init__(self) -> None:
        if not (0 < self.near < self.max_depth):
            raise ValueError(f"hint depth range must satisfy 0 < near < max_depth, got {self.near}, {self.max_depth}")
        if min(self.splat_radius_px, self.occlusion_radius_px) < 0 or min(self.rel_tol, self.abs_tol) < 0:
            raise ValueError(f"hint radii and tolerances must be non-negative, got {self}")

    def scaled(self, units_per_metre: float) -> "HintSettings":
        """The same settings for points and poses in other units (e.g. scene units: ``1 / metres_per_unit``)."""
        return HintSettings(
            near=self.near * units_per_metre,
            max_depth=self.max_depth * units_per_metre,
            splat_radius_px=self.splat_radius_px,
            occlusion_radius_px=self.occlusion_radius_px,
            rel_tol=self.rel_tol,
            abs_tol=self.abs_tol * units_per_metre,
        )


@dataclass
class LidarHint:
    """The LiDAR points seen by one camera."""

    rgb: np.ndarray
    """[H, W, 3] float32 colours in [0, 1]; 0 where ``mask`` is False (unknown, not black)."""
    mask: np.ndarray
    """[H, W] bool: a point is the nearest surface here."""
    depth: np.ndarray
    """[H, W] float32 z-depth of that point; ``inf`` where ``mask`` is False."""

    @property
    def coverage(self) -> float:
        """Share of valid pixels."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def tensor(self) -> torch.Tensor:
        """The fixer's input: [4, H, W] float32, RGB (0 where unknown) then the mask."""
        return hint_tensor(self.rgb, self.mask)


def hint_tensor(rgb: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[4, H, W] float32 from ``rgb`` [H, W, 3] in [0, 1] and ``mask`` [H, W]; colours are zeroed where unknown."""
    rgb_t = torch.as_tensor(np.asarray(rgb, dtype=np.float32) if not isinstance(rgb, torch.Tensor) else rgb).float()
    mask_t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).float()
    if rgb_t.ndim != 3 or rgb_t.shape[2] != 3 or mask_t.shape != rgb_t.shape[:2]:
        raise ValueError(f"hint rgb must be [H, W, 3] and mask [H, W], got {list(rgb_t.shape)} and {list(mask_t.shape)}")
    mask_t = (mask_t > 0.5).float()
    return torch.cat([rgb_t.permute(2, 0, 1) * mask_t[None], mask_t[None]])  # [4, H, W]


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """nerfstudio camera-to-world poses (OpenGL axes) to OpenCV axes, units unchanged. ``[..., 3|4, 4]``."""
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[..., :3, :3] = out[..., :3, :3] @ OPENCV_TO_OPENGL  # the flip is its own inverse
    return out


def min_filter(values: np.ndarray, radius: int) -> np.ndarray:
    """Minimum over a (2r+1) x (2r+1) window, ``inf`` outside the image (the z-buffer's neighbourhood test)."""
    if radius == 0:
        return values
    from scipy.ndimage import minimum_filter

    return minimum_filter(values, size=2 * radius + 1, mode="constant", cval=np.inf)


def nearest_per_pixel(pixel: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Indices (into ``pixel``/``depth`` [M]) of the nearest entry of every pixel that has one.

    Ties in depth go to the lower index. Two ``np.minimum.at`` passes (nearest depth, then lowest index
    among the entries at that depth): much faster than sorting.
    """
    if len(pixel) == 0:
        return np.zeros(0, dtype=np.int64)
    size = int(pixel.max()) + 1
    nearest = np.full(size, np.inf)
    np.minimum.at(nearest, pixel, depth)
    at_nearest = np.flatnonzero(depth == nearest[pixel])  # [K] entries at their pixel's nearest depth
    first = np.full(size, len(pixel), dtype=np.int64)
    np.minimum.at(first, pixel[at_nearest], at_nearest)
    return first[first < len(pixel)]


def _splat_nearest(
    uv: np.ndarray, z: np.ndarray, width: int, height: int, settings: HintSettings
) -> Tuple[np.ndarray, np.ndarray]:
    """Splat projected points [N] and keep the nearest per pixel: (flat pixel index [P], point index [P])."""
    r = settings.splat_radius_px
    keep = np.isfinite(uv).all(axis=1) & (z >= settings.near) & (z <= settings.max_depth)
    keep &= (uv[:, 0] >= -r) & (uv[:, 0] < width + r) & (uv[:, 1] >= -r) & (uv[:, 1] < height + r)
    ids = np.flatnonzero(keep)  # [M]
    col = np.floor(uv[ids, 0]).astype(np.int64)
    row = np.floor(uv[ids, 1]).astype(np.int64)
    steps = np.arange(-r, r + 1)
    dc, dr = [a.ravel() for a in np.meshgrid(steps, steps, indexing="xy")]  # [S] each, S = (2r+1)^2
    cols = (col[:, None] + dc[None]).ravel()  # [M * S]
    rows = (row[:, None] + dr[None]).ravel()
    src = np.repeat(ids, len(dc))  # [M * S] point of each splat pixel
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    pixel, src = (rows * width + cols)[inside], src[inside]
    win = nearest_per_pixel(pixel, z[src])
    return pixel[win], src[win]


def unoccluded(depth: np.ndarray, radius_px: int, rel_tol: float, abs_tol: float) -> np.ndarray:
    """[H, W] bool: pixels of a sparse depth map (``inf`` where empty) whose depth no pixel within ``radius_px``
    beats by more than ``rel_tol * depth + abs_tol`` (the occlusion test)."""
    nearest = min_filter(depth, radius_px)  # [H, W]
    finite = np.isfinite(depth)
    slack = rel_tol * np.where(finite, depth, 0.0) + abs_tol
    return finite & (depth <= nearest + slack)


def render_lidar_hint(
    points: np.ndarray,
    colours: np.ndarray,
    K: np.ndarray,
    c2w_opencv: np.ndarray,
    width: int,
    height: int,
    settings: HintSettings = HintSettings(),
) -> LidarHint:
    """Render coloured points into one camera with a z-buffer.

    Args:
        points: [N, 3] world points (metres, or scene units with ``settings.scaled``).
        colours: [N, 3] uint8, or floats in [0, 1].
        K: [3, 3] intrinsics of a ``width`` x ``height`` image.
        c2w_opencv: [4, 4] or [3, 4] camera-to-world, OpenCV axes.
    Returns:
        The hint; pixels no visible point covers have mask False, colour 0 and depth inf.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    colours = np.asarray(colours)
    if colours.shape != points.shape:
        raise ValueError(f"colours must be [N, 3] like points {list(points.shape)}, got {list(colours.shape)}")
    rgb_points = colours.astype(np.float32) / 255.0 if colours.dtype == np.uint8 else colours.astype(np.float32)
    width, height = int(width), int(height)
    rgb = np.zeros((height, width, 3), dtype=np.float32)
    depth = np.full((height, width), np.inf, dtype=np.float32)
    if len(points) == 0 or width <= 0 or height <= 0:
        return LidarHint(rgb=rgb, mask=np.zeros((height, width), dtype=bool), depth=depth)
    uv, z = project(points, np.asarray(c2w_opencv, dtype=np.float64), np.asarray(K, dtype=np.float64))  # [N, 2], [N]
    pixel, src = _splat_nearest(uv, z, width, height, settings)  # [P] each
    depth.reshape(-1)[pixel] = z[src]
    rgb.reshape(-1, 3)[pixel] = rgb_points[src]
    mask = unoccluded(depth, settings.occlusion_radius_px, settings.rel_tol, settings.abs_tol)
    rgb[~mask] = 0.0
    depth[~mask] = np.inf
    return LidarHint(rgb=rgb, mask=mask, depth=depth)


def colour_points_visible(
    points: np.ndarray,
    point_frames: np.ndarray,
    cameras: Sequence[PandasetCamera],
    max_frame_gap: int = 10,
    occluder_frames: int = 2,
    settings: HintSettings = HintSettings(splat_radius_px=1, occlusion_radius_px=2),
) -> Tuple[np.ndarray, np.ndarray]:
    """Colour each point from the photo closest in time in which it is in view *and not occluded*.

    Like :func:`difix_refiner.data.lidar.colour_points`, but a point hidden behind a nearer surface in a
    photo (a parked car in front of the road) does not take that surface's colour: the occluders are the
    points of the sweeps within ``occluder_frames`` of the photo's frame, z-buffered as in
    :func:`render_lidar_hint`.

    Returns:
        Colours [N, 3] uint8 and a mask [N] of the points some photo saw unoccluded.
    """

    def unoccluded(cam: PandasetCamera, i: int, cand: np.ndarray, gap: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        near_time = np.flatnonzero((gap <= occluder_frames) | cand)  # candidates and occluders
        uv, z = project(points[near_time], cam.c2w_opencv[i], cam.K)
        occluders = gap[near_time] <= occluder_frames
        depth = np.full((cam.height, cam.width), np.inf, dtype=np.float64)
        pixel, src = _splat_nearest(uv[occluders], z[occluders], cam.width, cam.height, settings)
        depth.reshape(-1)[pixel] = z[occluders][src]
        nearest = min_filter(depth, settings.occlusion_radius_px)  # [H, W]
        sel = cand[near_time]
        ids, uv_c, z_c = near_time[sel], uv[sel], z[sel]
        inside = (z_c >= settings.near) & (z_c <= settings.max_depth) & np.isfinite(uv_c).all(axis=1)
        inside &= (uv_c[:, 0] >= 0) & (uv_c[:, 0] < cam.width) & (uv_c[:, 1] >= 0) & (uv_c[:, 1] < cam.height)
        px = np.floor(uv_c[inside]).astype(np.int64)
        seen = z_c[inside] <= nearest[px[:, 1], px[:, 0]] + settings.rel_tol * z_c[inside] + settings.abs_tol
        return ids[inside][seen], px[seen]

    return colour_from_nearest_photos(points, point_frames, cameras, max_frame_gap, unoccluded)


def hint_cloud(
    sweeps: Dict[int, np.ndarray],
    sensor_positions: np.ndarray,
    cameras: Sequence[PandasetCamera],
    voxel_size: float = 0.1,
    max_frame_gap: int = 10,
    min_range: float = 2.0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Coloured points for hints: the given sweeps, voxel-downsampled, coloured from ``cameras``' photos.

    Pass only training sweeps and training cameras (evaluation data must never enter a hint). Each point
    takes the colour of the photo closest in time that sees it unoccluded (:func:`colour_points_visible`);
    points no photo saw are dropped.

    Returns:
        [N, 3] world points (metres) and [N, 3] uint8 colours.
    """
    pts, frames = aggregate_sweeps(sweeps, sensor_positions, min_range=min_range)
    if len(pts) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)
    pts, frames = voxel_downsample(pts, voxel_size, frames)
    colours, seen = colour_points_visible(pts, frames, cameras, max_frame_gap=max_frame_gap)
    return pts[seen], colours[seen]
