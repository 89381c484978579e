"""Moving objects in the refine loop: masks for the fixer's reference photos and for pseudo views.

- A reference photo's moving-object pixels (the dataparser's ``dynamic_masks`` of that training image) are
  replaced by the model's own render of the reference camera before the fixer sees it
  (:func:`difix_refiner.fixer.reference_masking.mask_reference`), so the fixer has no moving object to copy.
- A pseudo view's pixels where a moving object's box projects (``dynamic_box_corners`` of the view's frame,
  into the novel camera) are left out of the pseudo-view loss: whatever the fixer made of them is not a
  static scene.

Without those metadata keys (no boxes, ``--moving-objects keep``, other dataparsers) nothing is masked.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from difix_refiner.data.boxes import NEAR_M, corners_pixel_mask
from difix_refiner.data.pandaset import OPENCV_TO_OPENGL


def reference_moving_mask(metadata: Optional[Dict], index: int, height: int, width: int) -> Optional[torch.Tensor]:
    """``[H, W]`` bool moving-object pixels of training image ``index`` at ``height`` x ``width`` (any
    covered part of a resized pixel counts), or None."""
    masks = (metadata or {}).get("dynamic_masks")
    if masks is None:
        return None
    mask = masks[index]
    if not bool(mask.any()):
        return None
    if tuple(mask.shape) != (height, width):
        mask = F.interpolate(mask[None, None].float(), size=(height, width), mode="area")[0, 0] > 0
    return mask


def pseudo_view_moving_mask(
    metadata: Optional[Dict], frame: int, c2w_scene: np.ndarray, intrinsics: Dict[str, float], metres_per_scene_unit: float
) -> Optional[torch.Tensor]:
    """``[H, W]`` bool pixels of a novel camera (``[3, 4]`` OpenGL, scene units) that moving objects of
    ``frame`` cover, or None when there are no boxes."""
    corners = ((metadata or {}).get("dynamic_box_corners") or {}).get(int(frame))
    if corners is None:
        return None
    pose = np.eye(4)
    pose[:3, :4] = np.asarray(c2w_scene, dtype=np.float64)
    pose[:3, :3] = pose[:3, :3] @ OPENCV_TO_OPENGL  # OpenGL -> OpenCV camera axes
    K = np.array([[intrinsics["fx"], 0, intrinsics["cx"]], [0, intrinsics["fy"], intrinsics["cy"]], [0, 0, 1.0]])
    near = NEAR_M / metres_per_scene_unit
    mask = corners_pixel_mask(corners.numpy(), pose, K, int(intrinsics["width"]), int(intrinsics["height"]), near)
    return torch.from_numpy(mask)


def without_moving(mask: Optional[torch.Tensor], moving: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A pseudo view's ``[H, W, 1]`` loss mask (None = every pixel) with the ``moving`` ``[H, W]`` pixels left out."""
    if moving is None or not bool(moving.any()):
        return mask
    keep = ~moving[..., None]
    if mask is None:
        return keep
    return mask & keep if mask.dtype == torch.bool else mask * keep.to(mask.dtype)  # a fidelity weight stays a weight
