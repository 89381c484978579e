"""Evaluation outputs: ``metrics.json`` and a labelled contact sheet, both written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from difix_refiner.core import atomic
from difix_refiner.core.contact_sheet import font
from difix_refiner.scene.trained_run import check_outputs_free

METRICS_JSON = "metrics.json"
CONTACT_SHEET = "contact_sheet.png"

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
MISSING = (200, 200, 200)

SheetRow = Tuple[str, Dict[int, np.ndarray]]
"""A contact-sheet row: its label and ``{frame_index: uint8 [h, w, 3] thumbnail}``."""


def output_paths(output_dir: Path) -> List[Path]:
    """The files an evaluation writes into ``output_dir``."""
    return [Path(output_dir) / METRICS_JSON, Path(output_dir) / CONTACT_SHEET]


def check_free(output_dir: Path, overwrite: bool) -> None:
    """Refuse (``InputError``) when results already exist in ``output_dir`` unless ``overwrite``."""
    check_outputs_free(output_paths(output_dir), overwrite)


def make_grid(rows: Sequence[SheetRow], frames: Sequence[int], title: Optional[str] = None) -> Image.Image:
    """Labelled grid: one row per entry of ``rows`` (label on the left), one column per frame.

    A row without a thumbnail for some frame shows a grey cell there.
    """
    rows = [r for r in rows if r[1]]
    if not rows or not frames:
        raise ValueError("a contact sheet needs at least one row with images and one frame")
    th, tw = next(iter(rows[0][1].values())).shape[:2]
    font = font(max(11, tw // 20))
    pad = 4
    margin_left = max(200, tw)
    header = max(24, th // 6) + (24 if title else 0)
    sheet = Image.new("RGB", (margin_left + len(frames) * (tw + pad) + pad, header + len(rows) * (th + pad) + pad), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 4), title, fill=TEXT, font=font)
    for c, frame in enumerate(frames):
        draw.text((margin_left + pad + c * (tw + pad) + 4, header - 20), f"frame {frame}", fill=TEXT, font=font)
    for r, (label, cells) in enumerate(rows):
        y = header + pad + r * (th + pad)
        draw.multiline_text((8, y + 4), label, fill=TEXT, font=font)
        for c, frame in enumerate(frames):
            x = margin_left + pad + c * (tw + pad)
            cell = cells.get(frame)
            if cell is None:
                draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=MISSING)
                continue
            if cell.shape[:2] != (th, tw):
                cell = np.asarray(Image.fromarray(cell).resize((tw, th), Image.BILINEAR))
            sheet.paste(Image.fromarray(cell), (x, y))
    return sheet


def write_report(output_dir: Path, metrics: Dict[str, Any], sheet: Optional[Image.Image], overwrite: bool = False) -> List[Path]:
    """Write ``metrics.json`` (and ``contact_sheet.png`` when given) atomically; returns the paths written."""
    check_free(output_dir, overwrite)
    out = Path(output_dir)
    written = []
    if sheet is not None:
        with atomic.atomic_path(out / CONTACT_SHEET) as tmp:
            sheet.save(tmp, format="PNG")
        written.append(out / CONTACT_SHEET)
    atomic.write_json(out / METRICS_JSON, metrics)
    written.append(out / METRICS_JSON)
    return written
