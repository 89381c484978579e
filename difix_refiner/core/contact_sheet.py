"""Contact sheet: a labelled grid of offsets (rows) by sampled frames (columns)."""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
RECORDED_TEXT = (170, 0, 0)
MISSING = (200, 200, 200)
"""Fill of a cell whose row has no thumbnail of that frame."""


def sample_positions(num_frames: int, num_samples: int) -> List[int]:
    """Up to ``num_samples`` evenly spaced positions in ``range(num_frames)``, first and last included."""
    if num_frames <= 0 or num_samples <= 0:
        return []
    return sorted(set(np.linspace(0, num_frames - 1, min(num_samples, num_frames)).round().astype(int).tolist()))


def offset_label(offset_m: float) -> str:
    """Row label: ``+2 m (left)``, ``0 m (recorded)``, ``-1.5 m (right)``."""
    if offset_m == 0:
        return "0 m (recorded)"
    return f"{offset_m:+g} m ({'left' if offset_m > 0 else 'right'})"


def load_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable bundled font (Pillow >= 10.1 with FreeType)
    except TypeError:
        return ImageFont.load_default()


def thumbnail(image: np.ndarray, width: int) -> np.ndarray:
    """Resize ``uint8 [H, W, 3]`` to ``width`` pixels wide (never enlarged), keeping the aspect ratio."""
    h, w = image.shape[:2]
    width = min(width, w)
    height = max(1, round(h * width / w))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


class LabelledRow(NamedTuple):
    """One contact-sheet row: its label (may hold a line break), thumbnails by frame, and whether it is a recorded-path row."""

    label: str
    thumbnails: Dict[int, np.ndarray]
    """``{frame_index: uint8 [h, w, 3]}``."""
    recorded: bool = False
    """Label the row in red (the recorded path)."""


def offset_rows(
    thumbnails: Dict[float, Dict[int, np.ndarray]],
    fixed: Optional[Dict[float, Dict[int, np.ndarray]]] = None,
) -> List[LabelledRow]:
    """Rows of offsets from most left to most right; with ``fixed``, each offset's fixed row follows it.

    Args:
        thumbnails: ``{offset_m: {frame_index: uint8 [h, w, 3]}}``.
        fixed: The same for the fixed frames (every offset of ``thumbnails`` must be present).
    """
    rows = []
    for offset in sorted(thumbnails, reverse=True):
        rows.append(LabelledRow(offset_label(offset), thumbnails[offset], offset == 0))
        if fixed is not None:
            rows.append(LabelledRow(f"{offset_label(offset)}\nfixed", fixed[offset], offset == 0))
    return rows


def make_contact_sheet(
    thumbnails: Dict[float, Dict[int, np.ndarray]],
    frame_labels: Sequence[int],
) -> Image.Image:
    """Assemble the grid.

    Rows are offsets from most left (top) to most right (bottom), so with symmetric offsets the
    recorded path (offset 0) is the middle row; it is labelled in red. Columns are frames.

    Args:
        thumbnails: ``{offset_m: {frame_index: uint8 [h, w, 3]}}``, all thumbnails the same size.
        frame_labels: Frame indices of the columns, in order.
    """
    return make_row_sheet(offset_rows(thumbnails), frame_labels)


def make_row_sheet(
    rows: Sequence[LabelledRow], frame_labels: Sequence[int], label_margin: Optional[int] = None, title: Optional[str] = None
) -> Image.Image:
    """Assemble a grid of labelled rows (top to bottom, in order) by frames (columns).

    Args:
        rows: The rows (``LabelledRow`` or ``(label, thumbnails)`` pairs). Rows without any thumbnail are
            left out; a frame a row has no thumbnail of shows a grey cell, and thumbnails are resized to
            the first one's size.
        frame_labels: Frame indices of the columns, in order.
        label_margin: Width in pixels of the label column; default ``max(140, thumbnail width / 2)``.
        title: A line of text above the sheet.
    """
    rows = [LabelledRow(*row) for row in rows if row[1]]  # (label, thumbnails) pairs are rows too
    if not rows or not frame_labels:
        raise ValueError("a contact sheet needs at least one row with images and one frame")
    th, tw = next(iter(rows[0].thumbnails.values())).shape[:2]
    font = load_font(max(12, tw // 18))
    margin_left = max(140, tw // 2) if label_margin is None else label_margin
    header = max(28, th // 6)
    top = header if title else 0  # a title line above the frame labels
    header += top
    pad = 4
    width = margin_left + len(frame_labels) * (tw + pad) + pad
    height = header + len(rows) * (th + pad) + pad
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, frame in enumerate(frame_labels):
        x = margin_left + pad + c * (tw + pad)
        draw.text((x + 4, top + (header - top) // 4), f"frame {frame}", fill=TEXT, font=font)
    if title:
        draw.text((8, top // 4), title, fill=TEXT, font=font)
    for r, row in enumerate(rows):
        y = header + pad + r * (th + pad)
        colour = RECORDED_TEXT if row.recorded else TEXT
        lines = row.label.count("\n") + 1
        draw.multiline_text((8, y + th // 2 - lines * header // 3), row.label, fill=colour, font=font)
        for c, frame in enumerate(frame_labels):
            x = margin_left + pad + c * (tw + pad)
            cell = row.thumbnails.get(frame)
            if cell is None:
                draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=MISSING)
                continue
            if cell.shape[:2] != (th, tw):
                cell = np.asarray(Image.fromarray(cell).resize((tw, th), Image.BILINEAR))
            sheet.paste(Image.fromarray(cell), (x, y))
    return sheet
