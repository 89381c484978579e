"""Which LiDAR the LiDAR-anchored metrics may read: the run's evaluation sweeps, without moving objects.

A ``pandaset-data`` run records its sweep split (``lidar_sweep_split`` in the dataparser metadata,
:mod:`difix_refiner.data.sweep_split`). Depth AbsRel/RMSE and LiDAR colour PSNR read only its evaluation
sweeps, which training never used, and drop every point inside a moving object's box (grown by the run's
``moving_object_margin``) whatever the run's ``--moving-objects``, so runs are graded alike. ``metrics.json``
records the sweeps read (``info.lidar_sweeps``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.data.boxes import (
    DEFAULT_MARGIN_M,
    Box,
    dynamic_boxes,
    load_boxes,
    points_in_boxes,
)
from difix_refiner.data.sweep_split import SweepSplit, every_nth_frame

FALLBACK_FRAME_STRIDE = 5
"""Shifted-drive frame stride for runs that record no sweep split (older runs, no LiDAR)."""


def run_sweep_split(pipeline: Any) -> Optional[SweepSplit]:
    """The sweep split a loaded run's dataparser recorded, or None."""
    metadata = getattr(pipeline.datamanager.train_dataparser_outputs, "metadata", None) or {}
    split = metadata.get("lidar_sweep_split")
    return None if split is None else SweepSplit.from_dict(split)


def frame_stride(given: Optional[int], dataparser_config: Any) -> int:
    """``--frame-stride`` if given, else the run's ``lidar_eval_stride`` (the frames whose sweeps it held
    back), else :data:`FALLBACK_FRAME_STRIDE`."""
    if given is not None:
        return int(given)
    stride = getattr(dataparser_config, "lidar_eval_stride", None)
    explicit = getattr(dataparser_config, "lidar_eval_frames", None)
    return int(stride) if stride and explicit is None else (FALLBACK_FRAME_STRIDE if explicit is None else 1)


def shifted_selection(recorded: Any, camera: Optional[str], stride: int) -> np.ndarray:
    """Training-image indices of ``camera`` at :func:`every_nth_frame` of its frames (the shared rule). # [M]"""
    idx = recorded.select(camera)  # in frame order
    wanted = set(every_nth_frame(recorded.frame_indices[idx], stride).tolist())
    return np.array([i for i in idx.tolist() if int(recorded.frame_indices[i]) in wanted], dtype=np.int64)


def margin_of(dataparser_config: Any) -> float:
    """The moving-object margin (metres) the run used, or the default."""
    return float(getattr(dataparser_config, "moving_object_margin", DEFAULT_MARGIN_M))


def moving_boxes(data: Path, frames: Sequence[int], margin_m: float) -> Optional[Dict[int, List[Box]]]:
    """``{frame: grown moving-object boxes}`` of a PandaSet folder, or None without annotations."""
    boxes = load_boxes(data, sorted({int(f) for f in frames}))
    return None if boxes is None else {f: dynamic_boxes(b, margin_m) for f, b in boxes.items()}


def evaluation_sweeps(
    sweeps: Dict[int, np.ndarray],
    split: Optional[SweepSplit],
    boxes: Optional[Dict[int, List[Box]]],
    frames: Sequence[int],
    window: int,
) -> Tuple[Dict[int, np.ndarray], Dict[str, Any]]:
    """Keep the evaluation sweeps (all sweeps when the run recorded no split) and drop moving objects' points.

    Args:
        sweeps: ``{frame: [N, 3]}`` world points as loaded.
        frames: The evaluated frames; ``window`` the ``--lidar-window``.

    Returns:
        The sweeps the metrics may read, and the ``info.lidar_sweeps`` entry of ``metrics.json``.
    """
    allowed = set(sweeps) if split is None else set(split.eval)
    kept: Dict[int, np.ndarray] = {}
    removed = 0
    for f, xyz in sweeps.items():
        if f not in allowed:
            continue
        moving = (boxes or {}).get(f)
        if moving:
            inside = points_in_boxes(xyz, moving)
            removed += int(inside.sum())
            xyz = xyz[~inside]
        kept[f] = xyz
    used = sorted(f for f in kept if any(abs(f - int(t)) <= window for t in frames))
    info = {
        "sweeps": used,
        "source": "evaluation sweeps (never trained on)" if split is not None else "all sweeps (the run records no sweep split)",
        "rule": None if split is None else split.rule,
        "moving_object_points_removed": removed if boxes is not None else None,
        "frames_without_evaluation_sweep": sorted(int(t) for t in frames if not any(abs(f - int(t)) <= window for f in kept)),
    }
    return kept, info

