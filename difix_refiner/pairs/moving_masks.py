"""The hook for moving objects in make-pairs: an optional provider of per-view masks.

A fixer trained on a car that is in the photo but not in the render (it moved) learns to paint cars
from nothing. With a :class:`MovingObjectMasks` provider (for PandaSet: the projected boxes of the moving
objects, built on :func:`difix_refiner.data.cuboids.load_cuboids`), make-pairs keeps those pixels out
of the pairs:

- in the *target*, masked pixels take the render's colour, so the loss asks the fixer to leave them;
- in the *reference*, masked pixels become mid-grey, so there is nothing there to copy.

Masked copies are written beside the plain photos (which stay as they are) and the manifest records the
masks. Without a provider nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Protocol

import numpy as np

from difix_refiner.data.boxes import DEFAULT_MARGIN_M, Box, box_pixel_mask, dynamic_boxes, load_boxes
from difix_refiner.data.lidar_hint import opengl_to_opencv
from difix_refiner.pairs.hint_source import ViewGeometry

MASKED_REFERENCE_GREY = 128
"""Value of a reference's masked pixels."""


class MovingObjectMasks(Protocol):
    """Gives the moving-object mask of one recorded view, or None when nothing moves there."""

    def __call__(self, camera: str, frame: int, geometry: ViewGeometry) -> Optional[np.ndarray]:
        """[H, W] bool, True on moving objects, at ``geometry``'s size (world metres, OpenGL axes)."""


@dataclass
class PandasetBoxMasks:
    """The PandaSet provider: a frame's non-stationary boxes (``annotations/cuboids``), grown by ``margin_m``
    and projected into the view (the boxes the dataparser masks out of its losses)."""

    root: Path
    """PandaSet folder (either layout); without ``annotations/cuboids`` nothing is masked."""
    margin_m: float = DEFAULT_MARGIN_M
    """Metres each box is grown by on every side."""
    _boxes: Dict[int, List[Box]] = field(default_factory=dict, init=False, repr=False)

    def __call__(self, camera: str, frame: int, geometry: ViewGeometry) -> Optional[np.ndarray]:
        if frame not in self._boxes:
            loaded = load_boxes(self.root, [frame])
            self._boxes[frame] = dynamic_boxes(loaded[frame], self.margin_m) if loaded is not None else []
        boxes = self._boxes[frame]
        if not boxes:
            return None
        c2w = opengl_to_opencv(np.asarray(geometry.c2w_world, dtype=np.float64))  # [3, 4] world metres
        mask = box_pixel_mask(boxes, c2w, geometry.K, geometry.width, geometry.height)  # [H, W]
        return mask if mask.any() else None


def check_mask(mask: Optional[np.ndarray], geometry: ViewGeometry, what: str) -> Optional[np.ndarray]:
    """The provider's answer as [H, W] bool (None when empty); a wrong shape is the provider's bug."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (geometry.height, geometry.width):
        raise ValueError(f"moving-object mask of {what} is {list(mask.shape)}, the view {[geometry.height, geometry.width]}")
    return mask if mask.any() else None


def masked_target(photo: np.ndarray, render: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The target with masked pixels taken from the render: uint8 [H, W, 3]."""
    return np.where(mask[..., None], render, photo).astype(np.uint8)


def masked_reference(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The reference with masked pixels mid-grey: uint8 [H, W, 3]."""
    out = np.array(photo, dtype=np.uint8, copy=True)
    out[mask] = MASKED_REFERENCE_GREY
    return out
