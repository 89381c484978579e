"""Which LiDAR sweeps training may use and which are kept as evaluation truth.

The shifted-view evaluation (``difix-refiner eval``) renders every n-th training frame of one camera
(:func:`every_nth_frame`) and measures depth and colour there against LiDAR. If those frames' sweeps
seeded the Gaussians or supervised depth, the evaluation would grade the model against its own training
targets. So by default the sweeps of exactly those frames are *evaluation sweeps*: never used for seed
points, the depth loss, LiDAR hints or training pairs, and the only ones the LiDAR metrics read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

DEFAULT_EVAL_STRIDE = 4
"""Every 4th training frame of the evaluated camera: the demo's ``eval_frame_stride``."""


def every_nth_frame(frames: Sequence[int], stride: int) -> np.ndarray:
    """The frames the shifted-view evaluation samples: every ``stride``-th of ``frames`` in frame order,
    starting with the first. # [M] int"""
    if stride < 1:
        raise ValueError(f"the frame stride must be at least 1, got {stride}")
    return np.unique(np.asarray(list(frames), dtype=np.int64))[::stride]


@dataclass(frozen=True)
class SweepSplit:
    """LiDAR sweeps (frame indices) split into training and evaluation sweeps; the two never overlap."""

    train: List[int]
    """Sweeps training may use (seeds, depth targets, hints, pairs)."""
    eval: List[int]
    """Sweeps kept for evaluation only."""
    rule: str
    """How ``eval`` was chosen, in words (recorded with the run)."""

    def __post_init__(self) -> None:
        if set(self.train) & set(self.eval):
            raise ValueError(f"training and evaluation sweeps overlap: {sorted(set(self.train) & set(self.eval))}")

    def as_dict(self) -> Dict[str, object]:
        """JSON-ready form (dataparser metadata, run outputs, metrics.json)."""
        return {"train": list(self.train), "eval": list(self.eval), "rule": self.rule}

    @staticmethod
    def from_dict(data: Dict[str, object]) -> "SweepSplit":
        """Inverse of :meth:`as_dict`."""
        return SweepSplit([int(f) for f in data["train"]], [int(f) for f in data["eval"]], str(data["rule"]))  # type: ignore[union-attr]


def split_sweeps(
    available: Sequence[int],
    camera_train_frames: Sequence[int],
    stride: int = DEFAULT_EVAL_STRIDE,
    explicit: Optional[Sequence[int]] = None,
) -> SweepSplit:
    """Split the ``available`` sweeps.

    Args:
        available: Frames that have a sweep (in the frame range used).
        camera_train_frames: Training frames of the camera the shifted-view evaluation renders.
        stride: Evaluation sweeps are those of ``every_nth_frame(camera_train_frames, stride)``; 0 keeps
            no evaluation sweeps (every sweep trains; the LiDAR metrics then have no truth of their own).
        explicit: Evaluation frames given outright (overrides ``stride``).
    """
    have = sorted({int(f) for f in available})
    if explicit is not None:
        wanted = sorted({int(f) for f in explicit})
        rule = f"frames given by lidar_eval_frames: {wanted}"
    elif stride == 0:
        wanted, rule = [], "no evaluation sweeps (lidar_eval_stride 0)"
    else:
        wanted = every_nth_frame(camera_train_frames, stride).tolist()
        rule = f"every {stride}th training frame of the evaluated camera (difix-refiner eval --frame-stride {stride})"
    held = [f for f in have if f in set(wanted)]
    return SweepSplit(train=[f for f in have if f not in set(held)], eval=held, rule=rule)
