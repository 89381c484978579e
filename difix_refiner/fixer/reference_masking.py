"""Moving objects out of a fixer's reference view.

A one-step fixer given a reference photo copies what it shows, moving objects included, into the view it
fixes, where those objects are not (a ghost of the car ahead in the middle of a shifted lane). So before
a reference reaches the fixer, its moving-object pixels are replaced by a *static* picture of the same
view: the scene model's render of the reference camera, which has no moving objects to show.
"""

from __future__ import annotations

from typing import Optional, TypeVar

import numpy as np
import torch

Image = TypeVar("Image", np.ndarray, torch.Tensor)


def mask_reference(reference: Image, moving: Optional[Image], static: Image) -> Image:
    """``reference`` with its ``moving`` pixels (``[H, W]`` bool) taken from ``static`` (same layout).

    Works on ``[H, W, 3]`` arrays and on ``[3, H, W]`` tensors (the mask is broadcast over channels).
    """
    if moving is None:
        return reference
    if isinstance(reference, torch.Tensor):
        channels_first = reference.shape[0] == 3 and reference.shape[-2:] == moving.shape
        m = moving.to(reference.device)[None] if channels_first else moving.to(reference.device)[..., None]
        return torch.where(m, static.to(reference.device, reference.dtype), reference)
    if reference.shape[:2] != moving.shape:
        raise ValueError(f"the reference is {reference.shape[:2]}, its mask {moving.shape}")
    return np.where(moving[..., None], static, reference)
