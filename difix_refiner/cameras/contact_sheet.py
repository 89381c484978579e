"""Contact sheet: a labelled grid of offsets (rows) by sampled frames (columns)."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
RECORDED_TEXT = (170, 0, 0)


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


def _font(size: int) -> ImageFont.ImageFont:
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
    offsets = sorted(thumbnails, reverse=True)
    if not offsets or not frame_labels:
        raise ValueError("a contact sheet needs at least one offset and one frame")
    th, tw = next(iter(thumbnails[offsets[0]].values())).shape[:2]
    font = _font(max(12, tw // 18))
    margin_left = max(140, tw // 2)
    header = max(28, th // 6)
    pad = 4
    width = margin_left + len(frame_labels) * (tw + pad) + pad
    height = header + len(offsets) * (th + pad) + pad
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, frame in enumerate(frame_labels):
        x = margin_left + pad + c * (tw + pad)
        draw.text((x + 4, header // 4), f"frame {frame}", fill=TEXT, font=font)
    for r, offset in enumerate(offsets):
        y = header + pad + r * (th + pad)
        colour = RECORDED_TEXT if offset == 0 else TEXT
        draw.text((8, y + th // 2 - header // 3), offset_label(offset), fill=colour, font=font)
        for c, frame in enumerate(frame_labels):
            x = margin_left + pad + c * (tw + pad)
            sheet.paste(Image.fromarray(thumbnails[offset][frame]), (x, y))
    return sheet
