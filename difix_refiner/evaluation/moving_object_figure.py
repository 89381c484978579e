"""The moving-object masks of one frame: each camera's photo with the pixels that training leaves out
(the boxes of objects that are not stationary, grown by the margin, projected into the camera) tinted red."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from difix_refiner.data.boxes import box_pixel_mask, dynamic_boxes, load_boxes
from difix_refiner.data.pandaset import load_camera
from difix_refiner.data.pandaset_dataparser import downscaled_copy

MASKS_FIGURE = "moving_object_masks.png"
"""File name of the figure in an evaluation folder."""
TINT = np.array([230.0, 30.0, 30.0])


def tinted(photo: np.ndarray, mask: np.ndarray, strength: float = 0.55) -> np.ndarray:
    """``photo`` ``[H, W, 3]`` uint8 with ``mask`` ``[H, W]`` pixels blended toward red."""
    out = photo.astype(np.float64)
    out[mask] = (1 - strength) * out[mask] + strength * TINT
    return out.astype(np.uint8)


def moving_object_figure(
    data: Path, frame: int, cameras: Sequence[str], downscale: int, margin_m: float, width: int = 480
) -> Optional[Image.Image]:
    """One row per camera at ``frame``; None when the folder has no box annotations."""
    from difix_refiner.core.contact_sheet import make_row_sheet, thumbnail

    boxes = load_boxes(data, [frame])
    if boxes is None:
        return None
    moving = dynamic_boxes(boxes[int(frame)], margin_m)
    rows = []
    for name in cameras:
        cam = load_camera(data, name, [frame], verify_images=False)
        K = cam.K.copy()
        K[:2] /= downscale
        w, h = cam.width // downscale, cam.height // downscale
        path = downscaled_copy(cam.image_paths[0], downscale) if downscale > 1 else cam.image_paths[0]
        with Image.open(path) as img:
            photo = np.asarray(img.convert("RGB").resize((w, h), Image.BOX))
        mask = box_pixel_mask(moving, cam.c2w_opencv[0], K, w, h)
        label = f"{name}\nred: {100 * mask.mean():.0f}% of pixels left out"
        rows.append((label, {int(frame): thumbnail(tinted(photo, mask), width)}))
    title = f"frame {frame}: the {len(moving)} objects that are not stationary, boxes grown by {margin_m:g} m"
    return make_row_sheet(rows, [int(frame)], title=title)
