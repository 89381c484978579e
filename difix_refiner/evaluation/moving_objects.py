"""Moving objects in the evaluation: which pixels of a view they cover, photo PSNR without them, and how
much the fixer changes inside their boxes against outside.

A static reconstruction cannot reproduce an object that moves, so the whole-image PSNR of a held-out view
mixes reconstruction error with the object's motion. ``psnr_static_pixels`` is the PSNR over the pixels no
moving object's box (grown by the run's margin) covers: ``psnr`` stays the whole-image number.

A fixer that paints a moving object from its reference into a shifted view where that object is not
changes the pixels inside the object's box far more than the rest: ``fixer_change_moving`` against
``fixer_change_static`` (mean absolute change, 0..1) says whether it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from difix_refiner.core.image_metrics import as_float_image, mean_or_none
from difix_refiner.data.boxes import Box, box_pixel_mask
from difix_refiner.evaluation.lidar_metrics import scene_to_world_opencv


@dataclass
class MovingObjectMasks:
    """Moving-object boxes of a run's frames and the run's scene transform."""

    boxes: Optional[Dict[int, List[Box]]]
    """``{frame: grown moving-object boxes}``; None when the data has no annotations."""
    transform: np.ndarray
    """[3, 4] dataparser transform (world -> scene before the scale)."""
    scale: float

    def mask(self, frame: int, c2w_scene: Any, K: np.ndarray, width: int, height: int) -> Optional[np.ndarray]:
        """``[H, W]`` bool pixels a moving object covers in a nerfstudio camera (``[3, 4]`` OpenGL, scene units); None without boxes."""
        if self.boxes is None:
            return None
        pose = scene_to_world_opencv(np.asarray(c2w_scene, dtype=np.float64), self.transform, self.scale)
        return box_pixel_mask(self.boxes.get(int(frame), []), pose, K, width, height)


def static_pixel_psnr(render: Any, photo: Any, moving: Optional[np.ndarray]) -> Optional[float]:
    """PSNR (dB, peak 1) over the pixels outside ``moving`` (``[H, W]`` bool); None when none are left."""
    r, p = as_float_image(render), as_float_image(photo)
    keep = np.ones(r.shape[:2], dtype=bool) if moving is None else ~moving
    if not keep.any():
        return None
    mse = float(np.mean((r[keep] - p[keep]) ** 2))
    return float(10.0 * np.log10(1.0 / max(mse, 1e-10)))


@dataclass
class StaticPixelScores:
    """``psnr_static_pixels`` per camera and overall (mean over views, like ``psnr``)."""

    masks: MovingObjectMasks
    values: Dict[str, List[Optional[float]]] = field(default_factory=dict)
    covered: Dict[str, List[float]] = field(default_factory=dict)

    def add(self, camera: str, frame: int, c2w_scene: Any, K: np.ndarray, render: np.ndarray, photo: np.ndarray) -> None:
        """Score one view."""
        h, w = render.shape[:2]
        moving = self.masks.mask(frame, c2w_scene, K, w, h)
        self.values.setdefault(camera, []).append(static_pixel_psnr(render, photo, moving))
        self.covered.setdefault(camera, []).append(0.0 if moving is None else float(moving.mean()))

    def summary(self, camera: Optional[str] = None) -> Dict[str, Optional[float]]:
        """``psnr_static_pixels`` and ``moving_pixel_fraction`` of one camera (or all)."""
        names = [camera] if camera is not None else list(self.values)
        values = [v for n in names for v in self.values.get(n, [])]
        covered = [c for n in names for c in self.covered.get(n, [])]
        return {"psnr_static_pixels": mean_or_none(values), "moving_pixel_fraction": mean_or_none(covered)}


def fixer_change(fixed: np.ndarray, render: np.ndarray, moving: Optional[np.ndarray]) -> Dict[str, Optional[float]]:
    """Mean absolute change (0..1) the fixer made inside and outside the moving-object pixels."""
    diff = np.abs(as_float_image(fixed) - as_float_image(render)).mean(axis=-1)  # [H, W]
    if moving is None:
        return {"moving": None, "static": float(diff.mean())}
    return {
        "moving": float(diff[moving].mean()) if moving.any() else None,
        "static": float(diff[~moving].mean()) if (~moving).any() else None,
    }
