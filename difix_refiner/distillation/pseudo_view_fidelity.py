"""Fidelity of the refine loop's pseudo views: the LiDAR hint of each view, how much the fixer changed it
where the hint knows the scene and where it does not, and an optional per-pixel loss weight.

The hint comes from the dataparser's seed points (``points3D_xyz`` / ``points3D_rgb`` in scene units; for
``pandaset-data`` the LiDAR points of the training sweeps coloured from the training photos), rendered into
the view with :func:`difix_refiner.data.lidar_hint.render_lidar_hint`.

Statistics per view (mean absolute differences of [0, 1] colours, averaged over RGB):

- ``hint_coverage``: share of pixels with a valid hint;
- ``change_in_hint`` / ``change_outside_hint``: ``|fixed - render|`` inside / outside the valid hint pixels;
- ``render_hint_error`` / ``fixed_hint_error``: ``|render - hint|`` / ``|fixed - hint|`` on the valid hint
  pixels (a fixer that moves the view toward what the LiDAR saw lowers the second below the first);
- with fidelity weighting, ``mean_weight`` and ``downweighted``: the mean pixel weight and the share of
  pixels weighted below 1.

The weighting rule (``refine.fidelity_weighting``, an idea of DiffBIR's: trust the generator less where it
invents): a pixel is *supported* when a valid hint pixel lies within ``support_radius_px``; an unsupported
pixel whose change ``c = mean_rgb |fixed - render|`` exceeds the threshold ``t`` gets the weight ``t / c``
(so 1 at the threshold, ``t`` for a change of the whole range); every other pixel keeps weight 1.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from difix_refiner.data.lidar_hint import (
    HintSettings,
    LidarHint,
    opengl_to_opencv,
    render_lidar_hint,
)
from difix_refiner.scene.run_pipeline import camera_intrinsics

logger = logging.getLogger(__name__)


def hint_cloud_from_metadata(metadata: Optional[Dict[str, Any]]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The dataparser's seed points as a hint cloud: ([N, 3] scene units, [N, 3] uint8), or None without points.

    nerfstudio's convention (splatfacto divides by 255): ``points3D_rgb`` holds colours in 0..255.
    """
    if not metadata or metadata.get("points3D_xyz") is None or metadata.get("points3D_rgb") is None:
        return None
    xyz = np.asarray(torch.as_tensor(metadata["points3D_xyz"]).double().cpu().numpy()).reshape(-1, 3)
    rgb = torch.as_tensor(metadata["points3D_rgb"]).float().cpu().numpy().reshape(-1, 3)
    if len(xyz) == 0 or rgb.shape != xyz.shape:
        return None
    return xyz, np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def fixer_hint_cloud(pipeline: Any, fixer: Any) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The hint cloud a hint fixer gets outside the refine loop (eval, ``render-shifted --fix``, the benchmark):
    the pipeline's seed points (training sweeps only, so no evaluation sweep enters a hint). None for a plain
    fixer, or (said once) for a pipeline loaded without seed points or trained without LiDAR."""
    from difix_refiner.fixer.render_fixing import takes_hints

    if fixer is None or not takes_hints(fixer):
        return None
    cloud = hint_cloud_from_metadata(pipeline.datamanager.train_dataparser_outputs.metadata)
    if cloud is None:
        logger.warning("the run has no LiDAR seed points (loaded without them, or trained without LiDAR): the hint fixer runs without hints")
    return cloud


def view_hint(
    cloud: Tuple[np.ndarray, np.ndarray], pose: np.ndarray, intrinsics: Dict[str, float], metres_per_scene_unit: float
) -> LidarHint:
    """The hint of one view: ``pose`` [3, 4] nerfstudio camera-to-world (OpenGL axes, scene units)."""
    K = np.array([[intrinsics["fx"], 0.0, intrinsics["cx"]], [0.0, intrinsics["fy"], intrinsics["cy"]], [0.0, 0.0, 1.0]])
    settings = HintSettings().scaled(1.0 / metres_per_scene_unit)  # metres -> scene units
    c2w = opengl_to_opencv(np.asarray(pose, dtype=np.float64)[:3, :4])
    return render_lidar_hint(cloud[0], cloud[1], K, c2w, int(intrinsics["width"]), int(intrinsics["height"]), settings)


def camera_hint(
    cloud: Optional[Tuple[np.ndarray, np.ndarray]],
    cameras: Any,
    i: int,
    metres_per_scene_unit: float,
    pose: Optional[np.ndarray] = None,
) -> Optional[torch.Tensor]:
    """The fixer's hint input ``[4, H, W]`` for camera ``i`` of a nerfstudio ``Cameras`` batch (None without a
    cloud); ``pose`` ([3, 4], scene units, OpenGL axes) moves the camera, e.g. to a shifted drive."""
    if cloud is None:
        return None
    if pose is None:
        pose = cameras.camera_to_worlds[i].double().cpu().numpy()  # [3, 4]
    return view_hint(cloud, pose, camera_intrinsics(cameras, i), metres_per_scene_unit).tensor()


def _abs_diff(a: torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-pixel mean over RGB of |a - b| for [3, H, W] (or [H, W, 3] numpy for b): [H, W] float64."""
    b_t = torch.as_tensor(b).permute(2, 0, 1) if isinstance(b, np.ndarray) else b
    return (a.float().cpu() - b_t.float().cpu()).abs().mean(0).double().numpy()


def _mean(values: np.ndarray, where: np.ndarray) -> Optional[float]:
    return float(values[where].mean()) if where.any() else None


def change_stats(render: torch.Tensor, fixed: torch.Tensor, hint: Optional[LidarHint]) -> Dict[str, Optional[float]]:
    """How much the fixer changed a view inside / outside the hint (module docstring). ``render``, ``fixed``: [3, H, W]."""
    change = _abs_diff(fixed, render)  # [H, W]
    mask = hint.mask if hint is not None else np.zeros(change.shape, dtype=bool)
    stats: Dict[str, Optional[float]] = {
        "hint_coverage": float(mask.mean()),
        "change": float(change.mean()),
        "change_in_hint": _mean(change, mask),
        "change_outside_hint": _mean(change, ~mask),
        "render_hint_error": None,
        "fixed_hint_error": None,
    }
    if hint is not None and mask.any():
        stats["render_hint_error"] = _mean(_abs_diff(render, hint.rgb), mask)
        stats["fixed_hint_error"] = _mean(_abs_diff(fixed, hint.rgb), mask)
    return stats


def fidelity_weight(
    render: torch.Tensor, fixed: torch.Tensor, hint: Optional[LidarHint], threshold: float, support_radius_px: int
) -> np.ndarray:
    """Per-pixel pseudo-view loss weight in (0, 1], [H, W] float32 (rule in the module docstring)."""
    change = _abs_diff(fixed, render)  # [H, W]
    supported = np.zeros(change.shape, dtype=bool) if hint is None else hint.mask
    if hint is not None and support_radius_px > 0 and supported.any():
        from scipy.ndimage import maximum_filter

        supported = maximum_filter(supported, size=2 * support_radius_px + 1, mode="constant", cval=False)
    weight = np.where(~supported & (change > threshold), threshold / np.maximum(change, 1e-12), 1.0)
    return weight.astype(np.float32)


def weight_stats(weight: np.ndarray) -> Dict[str, float]:
    """Mean weight and share of pixels weighted below 1."""
    return {"mean_weight": float(weight.mean()), "downweighted": float((weight < 1.0).mean())}


def round_summary(views: list) -> Dict[str, Optional[float]]:
    """Means over a round's views of each statistic (views where it is undefined are left out)."""
    keys = [k for k in (views[0] if views else {}) if k != "file"]
    out: Dict[str, Optional[float]] = {}
    for key in keys:
        values = [v[key] for v in views if v.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out
