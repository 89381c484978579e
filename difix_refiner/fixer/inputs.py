"""Checking what the fixer is given: shapes, dtypes and the [0, 1] value range of images and references."""

from __future__ import annotations

import torch

from difix_refiner.fixer.config import FixerConfig

RANGE_TOLERANCE = 1e-3
"""Slack on the [0, 1] check for values rounded by fp16/bf16 conversions."""


def check_fixer_inputs(
    config: FixerConfig, images: torch.Tensor, refs: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``images`` [B,3,H,W] and ``refs`` [B,R,3,H,W] (a 4-D ref means R=1).

    Returns the inputs with refs as 5-D (or None when there are none).
    Raises ValueError with the offending shape or value range.
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [B, 3, H, W], got {list(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images must not be empty, got {list(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor in [0, 1], got {images.dtype}")
    _check_range(images, "images")
    if refs is None:
        return images, None
    if not config.supports_references:
        raise ValueError(f"the {config.variant!r} variant takes a single view; refs must be None")
    if not isinstance(refs, torch.Tensor):
        raise ValueError(f"refs must be a torch.Tensor or None, got {type(refs).__name__}")
    if refs.ndim == 4:
        refs = refs[:, None]  # [B,3,H,W] -> [B,1,3,H,W]
    if refs.ndim != 5 or refs.shape[2] != 3:
        raise ValueError(f"refs must have shape [B, R, 3, H, W], got {list(refs.shape)}")
    if refs.shape[0] != images.shape[0]:
        raise ValueError(f"batch mismatch: {images.shape[0]} images but refs for {refs.shape[0]}")
    if refs.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"refs must have the images' size {tuple(images.shape[-2:])}, got {tuple(refs.shape[-2:])}; "
            "resize them first"
        )
    if not refs.is_floating_point():
        raise ValueError(f"refs must be a floating-point tensor in [0, 1], got {refs.dtype}")
    if refs.shape[1] == 0:
        return images, None
    _check_range(refs, "refs")
    return images, refs


def _check_range(x: torch.Tensor, name: str) -> None:
    lo, hi = torch.aminmax(x.detach())
    lo, hi = float(lo), float(hi)
    # Written so that NaN fails too (every comparison with NaN is False).
    if not (lo >= -RANGE_TOLERANCE and hi <= 1.0 + RANGE_TOLERANCE):
        raise ValueError(f"{name} must hold finite values in [0, 1], got min {lo:.4g}, max {hi:.4g}")
