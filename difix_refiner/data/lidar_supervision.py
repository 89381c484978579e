"""What ``pandaset-data`` hands to training besides images: the LiDAR sweep split, the seeds' sweeps,
per-image LiDAR depth targets and per-image dynamic-object masks.

Metadata keys (training split; the sweep split is in every split's metadata):

- ``lidar_sweep_split``: ``{"train": [...], "eval": [...], "rule": "..."}`` (see
  :mod:`difix_refiner.data.sweep_split`). Evaluation sweeps enter nothing of the training.
- ``lidar_depth``: per image a float32 tensor ``[M, 3]``: ``(u, v)`` in pixels of the image as the
  dataparser gives it and z-depth in *scene units* (see :mod:`difix_refiner.data.lidar_depth`); ``[0, 3]``
  where no training sweep of its window (its own frame with ``--depth-target-window 0``) exists. Absent
  when depth targets are off.
- ``dynamic_masks``: per image a bool tensor ``[H, W]``, True on pixels covered by a moving object's box
  (grown by the margin). Absent without boxes or with ``--moving-objects keep``.
- ``dynamic_box_corners``: ``{frame: float32 [B, 8, 3]}`` corners of the (grown) moving-object boxes in
  scene units, for masking pseudo views. Absent like ``dynamic_masks``.
- ``moving_objects``: ``"mask"``, ``"keep"`` or ``"no boxes"``.

Memory: the targets are a few thousand (u, v, z) triples per image; a mask is one byte per pixel, a
third of the uint8 image cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from difix_refiner.data.boxes import (
    Box,
    box_corners,
    box_pixel_mask,
    dynamic_boxes,
    load_boxes,
)
from difix_refiner.data.lidar_depth import static_points, training_depth_targets
from difix_refiner.data.pandaset import (
    PandasetCamera,
    load_lidar_positions,
    load_lidar_sweeps,
)
from difix_refiner.data.sweep_split import SweepSplit, split_sweeps

DEFAULT_EVAL_CAMERA = "front_camera"
"""The camera ``difix-refiner eval`` shifts when none is named (if trained on), else the first one."""


def evaluated_camera(cameras: Sequence[str]) -> str:
    """The training camera whose frames the shifted-view evaluation samples by default."""
    return DEFAULT_EVAL_CAMERA if DEFAULT_EVAL_CAMERA in cameras else cameras[0]


def available_sweeps(root: Path, frames: Sequence[int]) -> List[int]:
    """Frames in ``frames`` that have a sweep file (``lidar/NN.npz``, or the release's ``lidar/NN.pkl.gz``)."""
    from difix_refiner.data.pandaset_release import release_file

    lidar = Path(root) / "lidar"
    return [int(f) for f in frames if (lidar / f"{int(f):02d}.npz").is_file() or release_file(root, "lidar", int(f)).is_file()]


def sweep_split_for(root: Path, frames: Sequence[int], train_views: Sequence[Tuple[str, np.ndarray]], cameras: Sequence[str], stride: int, explicit: Optional[Sequence[int]]) -> SweepSplit:
    """The run's sweep split: evaluation sweeps are the evaluated camera's every ``stride``-th training frame."""
    name = evaluated_camera(cameras)
    camera_frames = np.concatenate([f for n, f in train_views if n == name] or [np.zeros(0, dtype=np.int64)])
    return split_sweeps(available_sweeps(root, frames), camera_frames, stride, explicit)


@dataclass
class TrainingLidar:
    """The training sweeps (cleaned) and the moving-object boxes of a frame range."""

    split: SweepSplit
    sweeps: Dict[int, np.ndarray]
    """``{frame: [N, 3]}`` training sweeps, world metres, without ego-car and moving-object returns."""
    dynamic: Optional[Dict[int, List[Box]]]
    """``{frame: grown moving-object boxes}``; None without boxes or with ``keep``."""
    moving_objects: str


def load_training_lidar(root: Path, frames: Sequence[int], split: SweepSplit, moving_objects: str, margin_m: float) -> TrainingLidar:
    """Read the training sweeps and boxes; drop ego-car returns and (with ``mask``) moving objects' points."""
    boxes = load_boxes(root, frames) if moving_objects == "mask" else None
    dynamic = None if boxes is None else {f: dynamic_boxes(b, margin_m) for f, b in boxes.items()}
    sensors = load_lidar_positions(root)  # [F, 3]
    raw = load_lidar_sweeps(root, split.train)
    sweeps = {f: static_points(xyz, sensors[f], None if dynamic is None else dynamic.get(f)) for f, xyz in raw.items()}
    state = "no boxes" if moving_objects == "mask" and boxes is None else moving_objects
    return TrainingLidar(split=split, sweeps=sweeps, dynamic=dynamic, moving_objects=state)


def _image_geometry(cams: Sequence[PandasetCamera], downscale: int) -> Tuple[List[int], np.ndarray, np.ndarray, List[Tuple[int, int]]]:
    """Frame, OpenCV pose, intrinsics and size (at the dataparser's resolution) of every image, in order."""
    frames, poses, Ks, sizes = [], [], [], []
    for c in cams:
        K = c.K.copy()
        K[:2] /= downscale
        for i, f in enumerate(c.frame_indices):
            frames.append(int(f))
            poses.append(c.c2w_opencv[i])
            Ks.append(K)
            sizes.append((c.width // downscale, c.height // downscale))
    return frames, np.asarray(poses).reshape(-1, 4, 4), np.asarray(Ks).reshape(-1, 3, 3), sizes


def training_metadata(
    lidar: TrainingLidar,
    cams: Sequence[PandasetCamera],
    downscale: int,
    translation: np.ndarray,
    scale: float,
    depth_targets: bool,
    depth_target_window: int = 0,
) -> Dict[str, object]:
    """The metadata entries listed in the module docstring for the training images ``cams``."""
    frames, poses, Ks, sizes = _image_geometry(cams, downscale)
    meta: Dict[str, object] = {"lidar_sweep_split": lidar.split.as_dict(), "moving_objects": lidar.moving_objects}
    masks: Optional[List[np.ndarray]] = None
    if lidar.dynamic is not None:
        masks = [
            box_pixel_mask(lidar.dynamic.get(f, []), poses[i], Ks[i], sizes[i][0], sizes[i][1]) for i, f in enumerate(frames)
        ]
        meta["dynamic_masks"] = [torch.from_numpy(m) for m in masks]
        meta["dynamic_box_corners"] = {
            f: torch.from_numpy(((box_corners(b) + translation) * scale).astype(np.float32)) for f, b in lidar.dynamic.items()
        }
    if depth_targets:
        targets = training_depth_targets(frames, poses, Ks, sizes, lidar.sweeps, masks, depth_target_window)
        meta["lidar_depth"] = [
            torch.zeros((0, 3)) if t is None else torch.from_numpy(t * np.array([1.0, 1.0, scale], dtype=np.float32))
            for t in targets
        ]
    return meta
