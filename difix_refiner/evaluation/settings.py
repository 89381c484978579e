"""What ``eval`` measures and how: :class:`EvalSettings`, shared by the ``eval`` command and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.core.errors import InputError
from difix_refiner.evaluation import lidar_metrics as lm
from difix_refiner.scene.trained_run import validate_offsets


@dataclass(kw_only=True)
class EvalSettings:
    """What to evaluate and how (shared by the ``eval`` command and in-process callers such as the demo)."""

    offsets: Tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)
    """Lateral offsets in metres of the shifted drives; positive = the vehicle's left (e.g. --offsets -2 -1 1 2)."""
    camera: Optional[str] = None
    """Rig camera whose drive is shifted (default: front_camera)."""
    frame_stride: Optional[int] = None
    """Shifted/recorded metrics use every n-th training frame of the camera; default: the run's
    --lidar-eval-stride (the frames whose LiDAR sweeps it held back for evaluation), else 5."""
    heldout_stride: int = 1
    """Use every n-th of the held-out (every eval_interval-th) frames."""
    cross_camera_stride: int = 1
    """Use every n-th frame of each cross-camera view."""
    data: Optional[Path] = None
    """PandaSet folder of the run, if the path saved in its config.yml is not valid from here."""
    lidar_data: Optional[Path] = None
    """PandaSet folder whose lidar/ sweeps are used (same world frame), e.g. a copy with denser sweeps. Default: the run's folder."""
    lidar_window: int = 2
    """Aggregate the LiDAR sweeps of frames t-k..t+k (those that exist) for frame t; more points, but moving objects smear."""
    occlusion_radius_px: int = 2
    """A LiDAR point counts as occluded if a nearer point lies within this many pixels (0: same pixel only); 2 suits whole sweeps (the bundled scene's evaluation sweeps) at 240x135."""
    occlusion_rel_tol: float = 0.05
    """Depth slack (fraction of depth) before a nearer point occludes another."""
    occlusion_abs_tol_m: float = 0.1
    """Depth slack in metres before a nearer point occludes another."""
    min_accumulation: float = 0.5
    """Depth errors only count pixels whose rendered accumulated opacity exceeds this."""
    max_depth_m: float = lm.DEFAULT_MAX_DEPTH_M
    """LiDAR points farther than this (z-depth, metres) are ignored."""
    inception_weights: Optional[Path] = None
    """torch-fidelity InceptionV3 weights file (weights-inception-2015-12-05-6726825d.pth) for FID/KID. Default: the
    file `difix-refiner weights fetch inception` writes, when it is there; else FID/KID are skipped (nothing is downloaded)."""
    fixer_reference: bool = True
    """Give the fixer the recorded photo of the same frame as its reference view (when the fixer takes references)."""
    fix_heldout: bool = True
    """With a fixer, also score the held-out and cross-camera renders after the fixer (the Difix3D+ "+"
    step; the reference is the nearest training photo by pose), under ``fixed``."""
    sheet_frames: int = 4
    """Number of frames (columns) in the contact sheet."""
    sheet_offset: Optional[float] = None
    """Offset (metres) shown in the contact sheet; default: the largest one (left on ties)."""
    thumbnail_width: int = 240
    """Width in pixels of each contact-sheet cell."""
    seed: int = 0
    """Seed for everything random (KID subsets)."""

    def checked_offsets(self) -> List[float]:
        """Validate the settings; return the offsets."""
        offsets = validate_offsets(self.offsets)
        for name in ("frame_stride", "heldout_stride", "cross_camera_stride", "sheet_frames"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lidar_window < 0:
            raise InputError(f"--lidar-window must be >= 0, got {self.lidar_window}")
        if self.occlusion_radius_px < 0 or self.occlusion_rel_tol < 0 or self.occlusion_abs_tol_m < 0:
            raise InputError("--occlusion-radius-px, --occlusion-rel-tol and --occlusion-abs-tol-m must be >= 0")
        if not 0.0 <= self.min_accumulation < 1.0:
            raise InputError(f"--min-accumulation must be in [0, 1), got {self.min_accumulation}")
        if not (np.isfinite(self.max_depth_m) and self.max_depth_m > lm.DEFAULT_NEAR_M):
            raise InputError(f"--max-depth-m must be larger than {lm.DEFAULT_NEAR_M}, got {self.max_depth_m}")
        if self.thumbnail_width < 8:
            raise InputError("--thumbnail-width must be at least 8")
        if self.sheet_offset is not None and not any(np.isclose(self.sheet_offset, o) for o in offsets):
            raise InputError(f"--sheet-offset {self.sheet_offset} is not one of --offsets {offsets}")
        if self.inception_weights is not None and not Path(self.inception_weights).is_file():
            raise InputError(f"--inception-weights file not found: {self.inception_weights}")
        for name in ("data", "lidar_data"):
            folder = getattr(self, name)
            if folder is not None and not Path(folder).is_dir():
                raise InputError(f"--{name.replace('_', '-')} folder not found: {folder}")
        return offsets

    def visibility(self) -> lm.Visibility:
        """The z-buffer settings."""
        return lm.Visibility(self.occlusion_radius_px, self.occlusion_rel_tol, self.occlusion_abs_tol_m)

    def shown_offset(self, offsets: Sequence[float]) -> float:
        """The offset shown in the contact sheet."""
        if self.sheet_offset is not None:
            return float(self.sheet_offset)
        return max(offsets, key=lambda o: (abs(o), o))
