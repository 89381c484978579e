"""The depth contact sheet: the photo, then per run its rendered depth on the recorded path and shifted
by the largest offsets either way, each with the evaluation LiDAR depth drawn over it.

Depth is coloured on a log scale from :data:`NEAR_M` (warm) to :data:`FAR_M` (cool), the same scale for
renders and LiDAR; pixels the render leaves (nearly) empty are darkened by their accumulation. Every
evaluation-sweep return visible in the view is a dot of its own depth's colour (with a dark rim on wide
thumbnails): where the geometry is right a dot melts into the render, where it is wrong it stands out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

NEAR_M = 2.0
"""Depth (metres) at the warm end of the colour scale."""
FAR_M = 80.0
"""Depth (metres) at the cool end of the colour scale."""
DEPTH_SHEET = "depth_contact_sheet.png"
"""File name of the depth contact sheet in an evaluation folder."""


def depth_colours(depth_m: np.ndarray) -> np.ndarray:
    """Colours of depths (metres) on the sheet's log scale. ``[...]`` -> ``[..., 3]`` uint8"""
    from matplotlib import colormaps

    d = np.clip(np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=FAR_M, posinf=FAR_M), NEAR_M, FAR_M)
    t = 1.0 - (np.log(d) - np.log(NEAR_M)) / (np.log(FAR_M) - np.log(NEAR_M))  # 1 near, 0 far
    return (np.asarray(colormaps["turbo"](t))[..., :3] * 255.0 + 0.5).astype(np.uint8)


def depth_thumbnail(
    depth_m: np.ndarray, accumulation: Optional[np.ndarray], lidar_depth_m: Optional[np.ndarray], width: int
) -> np.ndarray:
    """A ``width``-wide picture of a rendered depth map ``[H, W]`` with LiDAR depth ``[H, W]`` (inf where
    no return) drawn over it. # [h, width, 3] uint8"""
    h, w = depth_m.shape
    img = depth_colours(depth_m).astype(np.float64)
    if accumulation is not None:
        img *= np.clip(np.asarray(accumulation, dtype=np.float64), 0.0, 1.0)[..., None]
    height = max(1, round(h * width / w))
    thumb = Image.fromarray(img.astype(np.uint8)).resize((width, height), Image.BILINEAR)
    if lidar_depth_m is not None:
        rows, cols = np.nonzero(np.isfinite(lidar_depth_m))
        colours = depth_colours(lidar_depth_m[rows, cols])
        draw = ImageDraw.Draw(thumb)
        sx, sy = width / w, height / h
        r = max(1.0, width / 320.0)
        rim = (20, 20, 20) if width >= 400 else None
        for y, x, c in zip(rows.tolist(), cols.tolist(), colours.tolist()):
            cx, cy = (x + 0.5) * sx, (y + 0.5) * sy
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(c), outline=rim)
    return np.asarray(thumb)


def sheet_offsets(offsets: Sequence[float]) -> List[float]:
    """The offsets shown: 0 (the recorded path), the largest to the left and the largest to the right."""
    shown = [0.0]
    left = [o for o in offsets if o > 0]
    right = [o for o in offsets if o < 0]
    if left:
        shown.append(max(left))
    if right:
        shown.append(min(right))
    return shown


@dataclass
class DepthSheetCells:
    """One run's depth thumbnails, ``{offset: {frame: thumb}}``."""

    offsets: List[float]
    width: int
    cells: Dict[float, Dict[int, np.ndarray]] = field(default_factory=dict)

    def add(self, frame: int, offset: float, depth_m: Optional[np.ndarray], accumulation: Optional[np.ndarray], lidar_depth_m: Optional[np.ndarray]) -> None:
        """Keep the thumbnail of one render when its offset is shown."""
        shown = [o for o in self.offsets if np.isclose(o, offset)]
        if not shown or depth_m is None:
            return
        self.cells.setdefault(shown[0], {})[int(frame)] = depth_thumbnail(depth_m, accumulation, lidar_depth_m, self.width)

    def rows(self, label: str) -> List[Tuple[str, Dict[int, np.ndarray]]]:
        """Contact-sheet rows of this run."""
        out = []
        for o in self.offsets:
            where = "recorded path" if o == 0.0 else f"shifted {o:+g} m"
            out.append((f"{label}\ndepth, {where}\n(dots: eval LiDAR)", self.cells.get(o, {})))
        return out


def depth_sheet(photo_row: Dict[int, np.ndarray], runs: Sequence[Tuple[str, DepthSheetCells]], frames: Sequence[int]) -> Optional[Image.Image]:
    """The sheet (see the module docstring), or None when no run has a depth thumbnail."""
    from difix_refiner.core.contact_sheet import make_row_sheet

    rows = [("recorded photo", photo_row)]
    for label, cells in runs:
        rows += cells.rows(label)
    if not any(cells.cells for _, cells in runs):
        return None
    title = f"depth, log scale: warm {NEAR_M:g} m .. cool {FAR_M:g} m; dots: evaluation-sweep LiDAR (never trained on)"
    return make_row_sheet(rows, frames, title=title)
