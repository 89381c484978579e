"""LiDAR as world-space truth for views that have no photo: depth errors and LiDAR-anchored colour PSNR.

Shifted cameras (the drive moved sideways by some metres) have no ground-truth image, but the LiDAR
points are measured in the world frame and can be projected into any virtual camera. This module is
plain numpy and knows nothing about nerfstudio; ``evaluation.shifted`` feeds it renders and cameras.

Conventions:

- World frame in metres (PandaSet: z up). Cameras here are camera-to-world ``[4, 4]`` (or ``[3, 4]``)
  with **OpenCV** axes (x right, y down, z forward) in metres; :func:`scene_to_world_opencv` converts
  nerfstudio cameras (OpenGL axes, scene units) back to that.
- Pixel ``(col, row)`` covers ``u in [col, col + 1)``, ``v in [row, row + 1)`` of the projection
  ``u = fx * x / z + cx`` (nerfstudio and gsplat put pixel centres at ``+0.5``).
- Depth is z-depth along the camera's optical axis (what gsplat's expected-depth "ED" mode renders),
  not the distance along the ray.

Visibility (the z-buffer). Every projected point is binned to its pixel and a pixel keeps its nearest
point. Because LiDAR is sparse, a far point can land in a pixel that the near surface in front of it
happens not to cover; so a point also counts as occluded when any point within
``radius_px`` pixels is nearer by more than ``rel_tol * depth + abs_tol`` metres. ``radius_px=0``
with zero tolerances is the plain per-pixel z-buffer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.cameras.scene_frame import scene_to_world
from difix_refiner.data.lidar import aggregate_sweeps, project
from difix_refiner.data.lidar_hint import min_filter as _min_filter
from difix_refiner.data.pandaset import OPENCV_TO_OPENGL

DEFAULT_NEAR_M = 0.5
"""Points closer to the camera than this (metres, z-depth) are ignored."""

DEFAULT_MAX_DEPTH_M = 80.0
"""Points farther than this (metres, z-depth) are ignored: few returns and large pixel footprints."""


@dataclass(frozen=True)
class Visibility:
    """How strictly the z-buffer decides that a LiDAR point is occluded (see the module docstring)."""

    radius_px: int = 1
    """Neighbourhood (pixels) in which a nearer point hides a farther one; 0 = the pixel only."""
    rel_tol: float = 0.05
    """Relative depth slack: points within ``rel_tol * depth`` of the nearest one stay visible."""
    abs_tol: float = 0.1
    """Absolute depth slack, metres."""

    def __post_init__(self) -> None:
        if self.radius_px < 0 or self.rel_tol < 0 or self.abs_tol < 0:
            raise ValueError(f"visibility settings must be non-negative, got {self}")


PLAIN_ZBUFFER = Visibility(radius_px=0, rel_tol=0.0, abs_tol=0.0)
"""Exactly the per-pixel z-buffer: only the nearest point of each pixel is visible."""


# --------------------------------------------------------------------------------------------
# Cameras


def scene_to_world_opencv(c2w_scene_opengl: np.ndarray, dataparser_transform: np.ndarray, dataparser_scale: float) -> np.ndarray:
    """Undo a dataparser transform: nerfstudio poses (OpenGL, scene units) to world OpenCV poses in metres.

    nerfstudio maps world points as ``scene = scale * (R @ world + t)`` with ``transform = [R | t]``.

    Args:
        c2w_scene_opengl: ``[N, 3, 4]`` or ``[N, 4, 4]`` (or a single ``[3, 4]``) camera-to-world poses.
        dataparser_transform: ``[3, 4]`` world-to-scene transform (before the scale).
        dataparser_scale: Scene units per transformed world unit.

    Returns:
        ``[N, 4, 4]`` (or ``[4, 4]``) camera-to-world poses, OpenCV axes, world metres.
    """
    poses = np.asarray(c2w_scene_opengl, dtype=np.float64)
    single = poses.ndim == 2
    if single:
        poses = poses[None]
    if poses.ndim != 3 or poses.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"poses must be [N, 3, 4] or [N, 4, 4], got {list(poses.shape)}")
    transform = np.asarray(dataparser_transform, dtype=np.float64)
    if transform.shape != (3, 4):
        raise ValueError(f"dataparser_transform must be [3, 4], got {list(transform.shape)}")
    scale = float(dataparser_scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"dataparser_scale must be positive, got {dataparser_scale}")
    out = np.tile(np.eye(4), (poses.shape[0], 1, 1))  # [N, 4, 4]
    out[:, :3, :4] = scene_to_world(poses[:, :3, :4], transform, scale)
    out[:, :3, :3] = out[:, :3, :3] @ OPENCV_TO_OPENGL  # OPENCV_TO_OPENGL is its own inverse
    return out[0] if single else out


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Pinhole intrinsics. # [3, 3]"""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Projection and z-buffer


@dataclass
class Projection:
    """World points projected into one camera."""

    pixels: np.ndarray
    """[N, 2] int (col, row) of each point's pixel (meaningful where ``inside``)."""
    depth: np.ndarray
    """[N] z-depth, metres."""
    inside: np.ndarray
    """[N] bool: in front of the camera within [near, max_depth] and inside the image."""
    visible: np.ndarray
    """[N] bool: ``inside`` and not occluded by nearer points (the z-buffer test)."""
    width: int
    height: int

    def depth_map(self) -> np.ndarray:
        """``[H, W]`` z-depth of the nearest *visible* point per pixel; ``inf`` where there is none."""
        return zbuffer(self.pixels, self.depth, self.visible, self.width, self.height)


def zbuffer(pixels: np.ndarray, depth: np.ndarray, mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest depth per pixel over the masked points. ``[H, W]``, ``inf`` where no point falls."""
    zmap = np.full(height * width, np.inf)
    idx = pixels[mask, 1] * width + pixels[mask, 0]
    np.minimum.at(zmap, idx, depth[mask])
    return zmap.reshape(height, width)


def project_points(
    points: np.ndarray,
    c2w_opencv: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    visibility: Visibility = Visibility(),
    near: float = DEFAULT_NEAR_M,
    max_depth: float = DEFAULT_MAX_DEPTH_M,
) -> Projection:
    """Project world points ``[N, 3]`` into a camera and decide which are visible (z-buffer).

    Args:
        points: ``[N, 3]`` world points, metres.
        c2w_opencv: ``[4, 4]`` or ``[3, 4]`` camera-to-world, OpenCV axes, metres.
        K: ``[3, 3]`` intrinsics in pixels of a ``width`` x ``height`` image.
        visibility: Occlusion test settings.
        near, max_depth: Depth range kept, metres.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    uv, z = project(points, np.asarray(c2w_opencv, dtype=np.float64), np.asarray(K, dtype=np.float64))  # [N, 2], [N]
    finite = np.isfinite(uv).all(axis=1) & np.isfinite(z)
    inside = finite & (z >= near) & (z <= max_depth)
    inside &= (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    pixels = np.zeros((len(points), 2), dtype=np.int64)
    pixels[inside] = np.floor(uv[inside]).astype(np.int64)
    # Floating-point edge cases (u just below width) must still index the image.
    pixels[:, 0] = np.clip(pixels[:, 0], 0, max(width - 1, 0))
    pixels[:, 1] = np.clip(pixels[:, 1], 0, max(height - 1, 0))

    zmap = _min_filter(zbuffer(pixels, z, inside, width, height), visibility.radius_px)  # [H, W]
    nearest = zmap[pixels[:, 1], pixels[:, 0]]  # [N]
    slack = visibility.rel_tol * z + visibility.abs_tol
    visible = inside & (z <= nearest + slack)
    return Projection(pixels=pixels, depth=np.where(finite, z, np.inf), inside=inside, visible=visible, width=width, height=height)


# --------------------------------------------------------------------------------------------
# Points around a frame


def points_near_frame(
    sweeps: Dict[int, np.ndarray],
    sensor_positions: np.ndarray,
    frame: int,
    window: int,
    min_range: float = 2.0,
) -> Tuple[np.ndarray, list]:
    """Aggregate the sweeps of frames ``frame - window .. frame + window`` that exist.

    Sweeps missing from the data (PandaSet drops a few) are simply absent from the window. Returns
    from within ``min_range`` metres of their sensor (the ego car itself) are dropped.

    Returns:
        ``[N, 3]`` world points and the list of frames whose sweeps were used (empty if none).
    """
    if window < 0:
        raise ValueError(f"the LiDAR window must be >= 0 frames, got {window}")
    used = {f: sweeps[f] for f in range(frame - window, frame + window + 1) if f in sweeps}
    if not used:
        return np.zeros((0, 3)), []
    pts, _ = aggregate_sweeps(used, sensor_positions, min_range=min_range)
    return pts, sorted(used)


def _pooled(cls: type, items: Sequence[Any], empty: Any) -> Any:
    """``cls`` with every array field concatenated over ``items`` (``empty`` when there are none)."""
    if not items:
        return empty
    return cls(*[np.concatenate([getattr(s, f.name) for s in items]) for f in dataclasses.fields(cls)])


# --------------------------------------------------------------------------------------------
# Depth


@dataclass
class DepthSamples:
    """Pixels where both LiDAR depth (nearest visible point) and a confident render exist."""

    rendered: np.ndarray
    """[M] rendered z-depth, metres."""
    lidar: np.ndarray
    """[M] LiDAR z-depth, metres."""

    @staticmethod
    def concat(items: Sequence["DepthSamples"]) -> "DepthSamples":
        """Pool samples of several frames."""
        return _pooled(DepthSamples, items, DepthSamples(np.zeros(0), np.zeros(0)))


def depth_samples(
    projection: Projection,
    rendered_depth_m: np.ndarray,
    accumulation: Optional[np.ndarray] = None,
    min_accumulation: float = 0.5,
) -> DepthSamples:
    """Pair LiDAR depth with rendered depth per pixel.

    A pixel counts when it holds a visible LiDAR point (its nearest one is the truth) and, if
    ``accumulation`` is given, the render is confident there (accumulated opacity > ``min_accumulation``):
    in empty pixels the rendered depth is a placeholder, not a surface.

    Args:
        projection: The LiDAR points in this camera.
        rendered_depth_m: ``[H, W]`` or ``[H, W, 1]`` rendered z-depth in metres.
        accumulation: ``[H, W]`` or ``[H, W, 1]`` accumulated opacity in [0, 1].
    """
    depth = np.asarray(rendered_depth_m, dtype=np.float64).reshape(projection.height, projection.width)
    truth = projection.depth_map()  # [H, W]
    mask = np.isfinite(truth) & np.isfinite(depth)
    if accumulation is not None:
        acc = np.asarray(accumulation, dtype=np.float64).reshape(projection.height, projection.width)
        mask &= acc > min_accumulation
    return DepthSamples(rendered=depth[mask], lidar=truth[mask])


def depth_errors(samples: DepthSamples) -> Dict[str, Optional[float]]:
    """AbsRel (mean of ``|d - d*| / d*``) and RMSE (metres) over the samples; None when there are none."""
    n = int(samples.lidar.size)
    if n == 0:
        return {"absrel": None, "rmse_m": None, "num_pixels": 0}
    diff = samples.rendered - samples.lidar  # [M]
    return {
        "absrel": float(np.mean(np.abs(diff) / samples.lidar)),
        "rmse_m": float(np.sqrt(np.mean(diff**2))),
        "num_pixels": n,
    }


# --------------------------------------------------------------------------------------------
# LiDAR-anchored colour


@dataclass
class ColourSamples:
    """Real and rendered colours of the same LiDAR points. Values in [0, 1]."""

    real: np.ndarray
    """[M, 3] colour of each point in the real image."""
    rendered: np.ndarray
    """[M, 3] colour at each point's projection in the render being judged."""
    rendered_nearer: np.ndarray
    """[M] bool: the render's depth there is nearer than the point by more than ``NEARER_FRACTION`` (all
    False when no rendered depth was given)."""

    @staticmethod
    def concat(items: Sequence["ColourSamples"]) -> "ColourSamples":
        """Pool samples of several frames."""
        return _pooled(ColourSamples, items, ColourSamples(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, dtype=bool)))


NEARER_FRACTION = 0.2
"""A render shows something in front of a LiDAR point when its depth there is below ``(1 - this) * z``."""


def _as_unit_float(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` image as float64 in [0, 1] (uint8 is divided by 255)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"images must be [H, W, 3], got {list(arr.shape)}")
    arr = arr[..., :3]
    return arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)


def lidar_colour_samples(
    real_view: Projection,
    real_image: np.ndarray,
    target_view: Projection,
    target_image: np.ndarray,
    target_depth: Optional[np.ndarray] = None,
) -> ColourSamples:
    """Colours of the points visible in both the real camera and the target (e.g. shifted) camera.

    A point's real colour is the real image's pixel it falls in (it must be visible there, i.e. not
    occluded by nearer points in the real camera's z-buffer); its rendered colour is the target
    image's pixel at its projection in the target camera (again visible there).

    Args:
        real_view, target_view: The same points ``[N]`` projected into the real and target cameras.
        real_image: ``[H, W, 3]`` photo of the real camera (uint8 or float in [0, 1]).
        target_image: ``[H', W', 3]`` render of the target camera.
        target_depth: ``[H', W']`` (or ``[H', W', 1]``) the render's z-depth in metres, for
            ``rendered_nearer``: a point the render hides behind something nearer. On a shifted view that is a
            floater or splat in front of the surface, or an occluder the sparse LiDAR z-buffer missed.
    """
    if real_view.depth.shape != target_view.depth.shape:
        raise ValueError("both projections must be of the same points")
    real = _as_unit_float(real_image)
    target = _as_unit_float(target_image)
    for name, img, view in (("real_image", real, real_view), ("target_image", target, target_view)):
        if img.shape[:2] != (view.height, view.width):
            raise ValueError(f"{name} is {img.shape[1]}x{img.shape[0]}, its camera {view.width}x{view.height}")
    both = real_view.visible & target_view.visible  # [N]
    rp, tp = real_view.pixels[both], target_view.pixels[both]
    nearer = np.zeros(len(tp), dtype=bool)
    if target_depth is not None:
        depth = np.asarray(target_depth, dtype=np.float64).reshape(target_view.height, target_view.width)
        nearer = depth[tp[:, 1], tp[:, 0]] < (1.0 - NEARER_FRACTION) * target_view.depth[both]
    return ColourSamples(real=real[rp[:, 1], rp[:, 0]], rendered=target[tp[:, 1], tp[:, 0]], rendered_nearer=nearer)


def rendered_nearer_split(samples: ColourSamples) -> Dict[str, Optional[float]]:
    """The share of points the render hides behind something nearer, and the PSNR (dB) of the others."""
    n = int(samples.real.shape[0])
    if n == 0:
        return {"share_rendered_nearer": None, "psnr_not_rendered_nearer": None}
    keep = ~samples.rendered_nearer
    rest = ColourSamples(samples.real[keep], samples.rendered[keep], samples.rendered_nearer[keep])
    return {"share_rendered_nearer": float(samples.rendered_nearer.mean()), "psnr_not_rendered_nearer": samples_psnr(rest)["psnr"]}


def samples_psnr(samples: ColourSamples) -> Dict[str, Optional[float]]:
    """PSNR (dB, peak 1) of the pooled squared colour errors; None without samples."""
    n = int(samples.real.shape[0])
    if n == 0:
        return {"psnr": None, "num_points": 0}
    mse = float(np.mean((samples.rendered - samples.real) ** 2))
    return {"psnr": float(10.0 * np.log10(1.0 / max(mse, 1e-10))), "num_points": n}
