"""Options shared by the ``shift-path`` and ``render-shifted`` commands."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from difix_refiner.cameras.trajectory import (
    DEFAULT_LOOK_AHEAD_M,
    DEFAULT_WINDOW_M,
    shift_poses,
)
from difix_refiner.core.errors import InputError
from difix_refiner.scene.trained_run import RecordedImages, validate_offsets


@dataclass
class ShiftOptions:
    """Which run, which offsets, and how to shift."""

    load_config: Path
    """Path to the run's config.yml (written by ns-train)."""
    offsets: Tuple[float, ...]
    """Lateral offsets in metres; positive moves the cameras to the vehicle's left, negative to its right (e.g. --offsets -2 -1 1 2). Zero is not allowed."""
    output_dir: Path
    """Folder for the results."""
    camera: Optional[str] = None
    """Rig camera to shift (e.g. front_left_camera). Default: front_camera if the dataparser names cameras, else all images as one camera. The whole rig always moves together with the vehicle."""
    metres_per_scene_unit: Optional[float] = None
    """Metres per scene unit. Default: the value the run trained with (--pipeline.refine.metres-per-scene-unit, saved in its config.yml), else the pandaset-data dataparser's; other runs need it (measure a known length, e.g. a 3.5 m lane, in the viewer)."""
    yaw_toward_road: bool = False
    """Turn each shifted camera about the vertical so it looks at the recorded path --look-ahead-m metres ahead (a converging lane) instead of keeping the recorded heading (a parallel lane)."""
    look_ahead_m: float = DEFAULT_LOOK_AHEAD_M
    """Distance ahead along the recorded path that --yaw-toward-road looks at, metres."""
    window_m: float = DEFAULT_WINDOW_M
    """Distance travelled (metres) over which the direction of travel is measured; frames where the car stands still take the direction of the nearest motion."""
    fps: float = 10.0
    """Frame rate of the recorded drive, used for playback (PandaSet: 10)."""
    overwrite: bool = False
    """Replace results already in --output-dir instead of refusing."""

    def checked_offsets(self) -> List[float]:
        """Validate the shared options; return the offsets as floats."""
        offsets = validate_offsets(self.offsets)
        if not (np.isfinite(self.look_ahead_m) and self.look_ahead_m > 0):
            raise InputError(f"--look-ahead-m must be positive, got {self.look_ahead_m}")
        if not (np.isfinite(self.window_m) and self.window_m > 0):
            raise InputError(f"--window-m must be positive, got {self.window_m}")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise InputError(f"--fps must be positive, got {self.fps}")
        return offsets

    def shifted_poses(self, recorded: RecordedImages, selection: np.ndarray, offset_m: float) -> np.ndarray:
        """``[M, 3, 4]`` poses of the selected images shifted by ``offset_m`` metres (0: recorded)."""
        axes = recorded.axes(self.window_m)
        # Axes come from the whole rig; keep the rows of the selected images.
        axes = dataclasses.replace(axes, index=axes.index[selection])
        return shift_poses(
            recorded.camera_to_worlds[selection],
            offset_m,
            recorded.metres_per_scene_unit,
            axes=axes,
            yaw_toward_road=self.yaw_toward_road,
            look_ahead_m=self.look_ahead_m,
        )
