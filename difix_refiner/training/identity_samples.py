"""Identity samples: training pairs whose render is replaced by its own photo.

A fixer trained only on broken renders learns to change every view it is given, and then makes good renders
worse (the refine loop's fixer check catches that). Showing it, now and then, a view that needs no fixing
(the photo as the input, the same photo as the target) teaches it to leave such views alone. The draw
depends only on (seed, step, process), like hint dropout, so a resumed run draws the same samples.
"""

from __future__ import annotations

import numpy as np
import torch

_STREAM = 1
"""Sub-stream of the (seed, step, process) generator, so this draw is independent of hint dropout's."""


def identity_mask(batch: int, probability: float, seed: int, step: int, rank: int = 0) -> np.ndarray:
    """[B] bool: which samples of a step become identity samples, drawn from (seed, step, rank)."""
    if probability <= 0.0:
        return np.zeros(batch, dtype=bool)
    return np.random.default_rng((seed, step, rank, _STREAM)).random(batch) < probability


def with_identity_samples(
    images: torch.Tensor, target: torch.Tensor, probability: float, seed: int, step: int, rank: int = 0
) -> torch.Tensor:
    """``images`` [B, 3, H, W] with each sample replaced by its ``target`` [B, 3, H, W] with ``probability``."""
    assert images.shape == target.shape, (images.shape, target.shape)
    chosen = identity_mask(images.shape[0], probability, seed, step, rank)
    if not chosen.any():
        return images
    pick = torch.as_tensor(chosen, device=images.device)[:, None, None, None]  # [B,1,1,1]
    return torch.where(pick, target, images)
