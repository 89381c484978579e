"""Does the fixer fit this scene? A check before the first refine round's pseudo views enter training.

A fixer trained on another kind of scene can turn every pseudo view into something else (a street fixer
on an object-centric capture paints streets), and the refine loop would then train on those views without
a word. So before the first round, the loop renders a few *training* views (they have photos), fixes
them the way it fixes pseudo views (the nearest *other* training images as references) and compares PSNR
against the photos with and without the fixer. A hint fixer gets no hint here (the all-unknown hint it is
trained to work with): at a training pose the LiDAR colours come from that very photo, so the hint would
hand the fixer the answer. If the fixer
lowers the mean PSNR by more than ``fixer_check_tolerance_db``, the loop says so in one line and by
default leaves the pseudo views out (``refine.unfit_fixer``).

This module holds the arithmetic and the wording; the pipeline does the rendering.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from difix_refiner.core.image_metrics import psnr_batch
from difix_refiner.training.validation import quantize


@dataclass
class FitCheck:
    """PSNR against the photos of the check views, before and after fixing."""

    frames: List[int]
    """Frame index of each check view."""
    psnr_render: List[float]
    """PSNR (dB) of each render against its photo."""
    psnr_fixed: List[float]
    """PSNR (dB) of each fixed render against its photo."""
    tolerance_db: float
    """Mean PSNR drop still counted as fitting."""
    action: str
    """What the loop does when the fixer does not fit: 'drop' or 'keep'."""

    @property
    def mean_render(self) -> float:
        return float(np.mean(self.psnr_render))

    @property
    def mean_fixed(self) -> float:
        return float(np.mean(self.psnr_fixed))

    @property
    def fits(self) -> bool:
        """Whether the fixer leaves the mean PSNR at least as high (within the tolerance)."""
        return self.mean_fixed >= self.mean_render - self.tolerance_db

    @property
    def pseudo_views_used(self) -> bool:
        """Whether the pseudo views enter training."""
        return self.fits or self.action == "keep"

    def to_json(self) -> Dict[str, Any]:
        """The record written into rounds.jsonl."""
        out = asdict(self)
        out.update(
            views=len(self.frames),
            mean_psnr_render=round(self.mean_render, 4),
            mean_psnr_fixed=round(self.mean_fixed, 4),
            delta_db=round(self.mean_fixed - self.mean_render, 4),
            fits=self.fits,
            pseudo_views_used=self.pseudo_views_used,
        )
        return out

    def message(self) -> str:
        """One line for the console."""
        head = (
            f"difix-refiner: fixer check on {len(self.frames)} training views: PSNR against their photos "
            f"{self.mean_render:.2f} -> {self.mean_fixed:.2f} dB"
        )
        if self.fits:
            return f"{head}; the fixer fits this scene"
        if self.action == "keep":
            return f"{head}: the fixer LOWERS PSNR and does not fit this scene; its pseudo views are kept (--pipeline.refine.unfit-fixer keep)"
        return (
            f"{head}: the fixer LOWERS PSNR and does not fit this scene, so its pseudo views are left out of training "
            "and no refine round runs (--pipeline.refine.unfit-fixer keep trains on them anyway)"
        )


def check_view_indices(num_views: int, count: int) -> List[int]:
    """``count`` training-image indices spread evenly over ``num_views`` (all when there are fewer)."""
    if count <= 0 or num_views <= 0:
        return []
    if count >= num_views:
        return list(range(num_views))
    return sorted({int(round(x)) for x in np.linspace(0, num_views - 1, count)})


def fit_check(
    renders: torch.Tensor,
    fixed: torch.Tensor,
    photos: torch.Tensor,
    frames: Sequence[int],
    tolerance_db: float = 0.0,
    action: str = "drop",
) -> FitCheck:
    """PSNR of renders and fixed renders [V, 3, H, W] against photos [V, 3, H, W] (8-bit rounded, as validation)."""
    if not (renders.shape == fixed.shape == photos.shape) or renders.ndim != 4:
        raise ValueError(f"renders, fixed and photos must be [V, 3, H, W] alike, got {renders.shape}, {fixed.shape}, {photos.shape}")
    photos = quantize(photos.float().cpu())
    before = psnr_batch(quantize(renders.float().cpu()), photos)  # [V]
    after = psnr_batch(quantize(fixed.float().cpu()), photos)
    return FitCheck(
        frames=[int(f) for f in frames],
        psnr_render=[round(float(v), 4) for v in before],
        psnr_fixed=[round(float(v), 4) for v in after],
        tolerance_db=float(tolerance_db),
        action=action,
    )
