"""What the shifted-drive evaluation adds for geometry and moving objects, gathered render by render.

``evaluation.shifted`` calls it at a few points of its loop over frames and offsets:

- :meth:`DriveExtras.start` keeps only the run's evaluation sweeps, without moving objects
  (:mod:`difix_refiner.evaluation.lidar_protocol`);
- :meth:`on_render` after each render (the moving-object mask of that view; the recorded-path render is the
  static picture that replaces moving objects in the fixer's reference, :meth:`reference`);
- :meth:`on_fixed` after the fixer (its change inside moving-object boxes against outside);
- :meth:`on_sheet` for the contact-sheet frames (the depth contact sheet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.core.image_metrics import mean_or_none
from difix_refiner.evaluation import lidar_protocol as lp
from difix_refiner.evaluation.depth_sheet import DepthSheetCells, sheet_offsets
from difix_refiner.evaluation.moving_objects import MovingObjectMasks, fixer_change
from difix_refiner.fixer.reference_masking import mask_reference


def run_masks(run: Any, frames: Sequence[int]) -> MovingObjectMasks:
    """Moving-object boxes of ``frames`` of a loaded run (its data folder, its margin, its scene transform)."""
    dp = run.config.pipeline.datamanager.dataparser
    boxes = lp.moving_boxes(run.data, frames, lp.margin_of(dp))
    return MovingObjectMasks(boxes, run.recorded.dataparser_transform, run.recorded.dataparser_scale)


@dataclass
class DriveExtras:
    """Per-run state; see the module docstring."""

    masks: MovingObjectMasks
    sheet: DepthSheetCells
    lidar_sweeps: Dict[str, Any]
    """The ``info.lidar_sweeps`` entry of ``metrics.json``."""
    figure_source: Dict[str, Any] = field(default_factory=dict)
    """Data folder, rig cameras, downscale and margin of the run, for the moving-object figure."""
    changes: Dict[float, List[Dict[str, Optional[float]]]] = field(default_factory=dict)
    _moving: Optional[np.ndarray] = None
    _recorded: Optional[Tuple[int, np.ndarray, Optional[np.ndarray]]] = None

    @classmethod
    def start(
        cls, run: Any, sweeps: Dict[int, np.ndarray], frames: Sequence[int], window: int, offsets: Sequence[float], thumb_width: int
    ) -> Tuple["DriveExtras", Dict[int, np.ndarray]]:
        """The extras of one run and the sweeps its LiDAR metrics may read."""
        frames = [int(f) for f in frames]
        masks = run_masks(run, sorted(set(sweeps) | set(frames)))  # the frames of the sweeps as loaded
        kept, info = lp.evaluation_sweeps(sweeps, lp.run_sweep_split(run.pipeline), masks.boxes, frames, window)
        sheet = DepthSheetCells(sheet_offsets(offsets), thumb_width)
        dp = run.config.pipeline.datamanager.dataparser
        cameras = list(dict.fromkeys(list(dp.cameras) + list(getattr(dp, "eval_cameras", ()))))
        source = {"data": run.data, "cameras": cameras, "downscale": int(dp.downscale_factor), "margin_m": lp.margin_of(dp)}
        return cls(masks=masks, sheet=sheet, lidar_sweeps=info, figure_source=source), kept

    def on_render(self, frame: int, offset: float, pose: np.ndarray, K: np.ndarray, render: Any) -> None:
        """A render of ``frame`` at ``pose`` (``[3, 4]`` scene units): its moving-object mask; the recorded one is kept."""
        h, w = render.rgb.shape[:2]
        self._moving = self.masks.mask(frame, pose, K, w, h)
        if offset == 0.0:
            self._recorded = (int(frame), render.rgb, self._moving)

    def reference(self, photo: np.ndarray, frame: int) -> np.ndarray:
        """The frame's photo for the fixer, its moving-object pixels replaced by the recorded-path render."""
        if self._recorded is None or self._recorded[0] != int(frame):
            return photo
        _, static, moving = self._recorded
        return mask_reference(photo, moving, static)

    def on_fixed(self, offset: float, fixed: np.ndarray, render: Any) -> None:
        """The fixer's change inside and outside the current view's moving-object pixels."""
        self.changes.setdefault(offset, []).append(fixer_change(fixed, render.rgb, self._moving))

    def on_sheet(self, frame: int, offset: float, render: Any, view: Any) -> None:
        """A contact-sheet frame: keep its depth thumbnail (with the evaluation LiDAR of ``view``, if any)."""
        lidar = None if view is None else view.depth_map()
        self.sheet.add(frame, offset, render.depth_m, render.accumulation, lidar)

    def offset_summary(self, offset: float) -> Dict[str, Optional[float]]:
        """``fixer_change_moving`` / ``fixer_change_static`` of one offset (None without a fixer or boxes)."""
        changes = self.changes.get(offset, [])
        return {
            "fixer_change_moving": mean_or_none([c["moving"] for c in changes]),
            "fixer_change_static": mean_or_none([c["static"] for c in changes]),
        }


def write_geometry_figures(out_dir: Path, runs: Sequence[Any]) -> List[Path]:
    """Write the depth contact sheet and the moving-object masks of the middle sheet frame (runs from
    ``evaluate_run``; those without extras are left out). Returns the files written."""
    from difix_refiner.core import atomic
    from difix_refiner.evaluation.depth_sheet import DEPTH_SHEET, depth_sheet
    from difix_refiner.evaluation.moving_object_figure import (
        MASKS_FIGURE,
        moving_object_figure,
    )

    with_extras = [r for r in runs if getattr(r, "extras", None) is not None]
    if not with_extras:
        return []
    frames = with_extras[0].sheet_frames
    figures = {DEPTH_SHEET: depth_sheet(with_extras[0].photo_row, [(r.label, r.extras.sheet) for r in with_extras], frames)}
    src = with_extras[0].extras.figure_source
    if frames:
        frame = frames[len(frames) // 2]
        figures[MASKS_FIGURE] = moving_object_figure(src["data"], frame, src["cameras"], src["downscale"], src["margin_m"])
    written = []
    for name, image in figures.items():
        if image is None:
            continue
        with atomic.atomic_path(Path(out_dir) / name) as tmp:
            image.save(tmp, format="PNG")
        written.append(Path(out_dir) / name)
    return written
