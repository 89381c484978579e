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

from typing import Optional, Protocol

import numpy as np

from difix_refiner.pairs.hint_source import ViewGeometry

MASKED_REFERENCE_GREY = 128
"""Value of a reference's masked pixels."""


class MovingObjectMasks(Protocol):
    """Gives the moving-object mask of one recorded view, or None when nothing moves there."""

    def __call__(self, camera: str, frame: int, geometry: ViewGeometry) -> Optional[np.ndarray]:
        """[H, W] bool, True on moving objects, at ``geometry``'s size (world metres, OpenGL axes)."""


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
