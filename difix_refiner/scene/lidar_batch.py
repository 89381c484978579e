"""Per-image LiDAR depth targets and moving-object masks from the dataparser's metadata into a training batch.

``pandaset-data`` gives them per training image (:mod:`difix_refiner.data.lidar_supervision`); the
datamanager adds them to the batch of that image:

- ``batch["lidar_depth"]``: ``[M, 3]`` (u, v, z) targets of the model's depth loss;
- ``batch["mask"]``: ``[H, W, 1]`` float, 0 on moving-object pixels (splatfacto multiplies its photometric
  loss by it); multiplied into a mask the batch already has.

A dataparser without these keys leaves the batch exactly as it was. The sweep split the dataparser
recorded is written into the run folder as ``lidar_sweep_split.json`` (:func:`record_sweep_split`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch

from difix_refiner.core.atomic import write_json

DEPTH_KEY = "lidar_depth"
"""Batch and metadata key of the depth targets."""
MASKS_KEY = "dynamic_masks"
"""Metadata key of the per-image moving-object masks."""
SPLIT_FILE = "lidar_sweep_split.json"
"""The run folder's record of which LiDAR sweeps trained and which are kept for evaluation."""


def _entry(metadata: Optional[Dict], key: str, index: int) -> Optional[torch.Tensor]:
    values = (metadata or {}).get(key)
    return None if values is None else values[index]


def add_lidar_entries(batch: Dict, metadata: Optional[Dict], device: torch.device) -> Dict:
    """``batch`` (a real training image's, with ``image_idx``) plus its depth targets and moving-object mask."""
    index = int(batch["image_idx"])
    targets = _entry(metadata, DEPTH_KEY, index)
    if targets is not None:
        batch[DEPTH_KEY] = targets.to(device)
    dynamic = _entry(metadata, MASKS_KEY, index)
    if dynamic is not None and bool(dynamic.any()):
        keep = (~dynamic.to(device))[..., None].float()  # [H, W, 1]
        batch["mask"] = keep if "mask" not in batch else batch["mask"].to(device).float() * keep
    return batch


def record_sweep_split(metadata: Optional[Dict], run_dir: Path) -> Optional[Path]:
    """Write the dataparser's ``lidar_sweep_split`` (and how moving objects were handled) to ``run_dir``."""
    split = (metadata or {}).get("lidar_sweep_split")
    if split is None:
        return None
    path = Path(run_dir) / SPLIT_FILE
    write_json(path, {**split, "moving_objects": (metadata or {}).get("moving_objects")})
    return path
