"""The evaluation's contact sheets, for one run or several side by side (columns: the sheet frames).

- :func:`build_contact_sheet`: the recorded photo, then each run's render on the recorded path, its
  render shifted by the sheet offset, and that render after the fixer.
- :func:`build_cross_camera_sheet`: per never-trained camera, its photo, then each run's render.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from PIL import Image

from difix_refiner.core.contact_sheet import LabelledRow, make_row_sheet
from difix_refiner.evaluation.evaluate_run import RunEvaluation

MIN_LABEL_MARGIN = 200
"""Width in pixels of the label column at least: run names plus "shifted +2 m + fixer" fit."""


def _sheet(rows: Sequence[LabelledRow], frames: Sequence[int]) -> Image.Image:
    """The grid, with a label column as wide as a thumbnail (at least :data:`MIN_LABEL_MARGIN`)."""
    widths = [next(iter(row.thumbnails.values())).shape[1] for row in rows if row.thumbnails]
    return make_row_sheet(rows, frames, label_margin=max([MIN_LABEL_MARGIN] + widths[:1]))


def build_contact_sheet(runs: Sequence[RunEvaluation]) -> Image.Image:
    """Contact sheet of one or more runs: the recorded photo, then each run's rows."""
    if not runs:
        raise ValueError("no runs to show")
    rows: List[LabelledRow] = [LabelledRow("recorded photo", runs[0].photo_row)]
    for run in runs:
        rows += run.rows
    return _sheet(rows, runs[0].sheet_frames)


def build_cross_camera_sheet(runs: Sequence[RunEvaluation]) -> Optional[Image.Image]:
    """Contact sheet of the cross-camera views: per held-out camera, its photo, then each run's render
    (None when no run has cross-camera views)."""
    if not runs or not any(cells["photo"] for cells in runs[0].cross_camera.values()):
        return None
    rows: List[LabelledRow] = []
    for camera, cells in runs[0].cross_camera.items():
        rows.append(LabelledRow(f"{camera}\nphoto (never trained on)", cells["photo"]))
        for run in runs:
            rows.append(LabelledRow(f"{camera}\n{run.label} render", run.cross_camera.get(camera, {}).get("render", {})))
    return _sheet(rows, runs[0].sheet_frames)
