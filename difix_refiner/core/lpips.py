"""LPIPS that is built only when its backbone weights are already on disk.

torchmetrics' LPIPS (AlexNet) downloads torchvision's ImageNet weights on first use. Machines without
network access (CI, air-gapped clusters) must skip the metric with one warning instead of crashing.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import torch


def alexnet_weights_path() -> str:
    """Where torchvision caches the AlexNet weights that LPIPS needs (the optional-weights registry's path)."""
    from difix_refiner.core.optional_weights import alexnet_path

    return str(alexnet_path())


class LazyLPIPS:
    """Callable LPIPS (inputs [B, 3, H, W] in [0, 1]) that returns None when weights are missing."""

    def __init__(self) -> None:
        self._metric = None
        self._unavailable = False

    @property
    def available(self) -> bool:
        return not self._unavailable and (self._metric is not None or os.path.isfile(alexnet_weights_path()))

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
        if self._metric is None:
            if not self.available:
                if not self._unavailable:
                    warnings.warn(
                        f"LPIPS skipped: its AlexNet weights are not at {alexnet_weights_path()} "
                        "(no download is attempted). Run `difix-refiner weights fetch lpips-alex` "
                        "or copy the file there to enable it.",
                        stacklevel=2,
                    )
                self._unavailable = True
                return None
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            self._metric = LearnedPerceptualImagePatchSimilarity(normalize=True)
        self._metric = self._metric.to(pred.device)
        return self._metric(pred.clamp(0, 1), target.clamp(0, 1))
