"""Training the fixer with LiDAR hints: the ``--hint.*`` options of train-fixer and hint dropout.

Pairs carry a hint when their JSON entries have ``hint_image``/``hint_mask``
(:mod:`difix_refiner.pairs.format`). A fixer trained on them gets 4 hint channels
(``FixerConfig.hint_channels``, :mod:`difix_refiner.fixer.hint`). So that the same fixer also works where
there is no LiDAR, each training sample's hint is replaced by the all-unknown hint (zeros: what the fixer
sees without a hint) with probability ``dropout``. The draw depends only on (seed, step, process), so a
resumed run drops the same hints as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch


@dataclass
class HintOptions:
    """LiDAR hints of the pairs (hint_image / hint_mask in the pair JSON)."""

    use: Literal["auto", "yes", "no"] = "auto"
    """auto: train a hint fixer (hint_channels 4) when every training pair has a hint; yes: require hints;
    no: ignore them (a plain fixer)."""

    dropout: float = 0.3
    """Probability that a training sample's hint is hidden (all unknown), so the fixer also works without LiDAR."""

    def check(self) -> None:
        """Raise ``ValueError`` naming the option when a value cannot work."""
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"--hint.dropout must lie in [0, 1], got {self.dropout}")
        if self.use not in ("auto", "yes", "no"):
            raise ValueError(f"--hint.use must be auto, yes or no, got {self.use!r}")

    def with_hint(self) -> bool | None:
        """The ``with_hint`` argument of :class:`~difix_refiner.pairs.format.PairDataset`."""
        return {"auto": None, "yes": True, "no": False}[self.use]


def drop_hints(hint: torch.Tensor, probability: float, seed: int, step: int, rank: int = 0) -> torch.Tensor:
    """``hint`` [B, 4, H, W] with each sample zeroed (no hint) with ``probability``, drawn from (seed, step, rank)."""
    if probability <= 0.0:
        return hint
    keep = np.random.default_rng((seed, step, rank)).random(hint.shape[0]) >= probability  # [B]
    return hint * torch.as_tensor(keep, dtype=hint.dtype, device=hint.device)[:, None, None, None]
