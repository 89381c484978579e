"""Validation of the fixer on paired data: PSNR/SSIM before and after fixing, and an image grid.

"Before" compares the input render with its target, "after" the fixed image with the target;
the difference is what fixing bought. Both are computed on images rounded to 8 bits, i.e. on
exactly the pixels ``difix-refiner fix`` would write, and averaged per image (the mean of
per-image PSNRs, as papers report it).

PSNR and SSIM are the project's one definition (``difix_refiner.core.image_metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from difix_refiner.core.contact_sheet import load_font
from difix_refiner.core.image_metrics import psnr_batch, ssim_batch

# --------------------------------------------------------------------------- metrics


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] images to 8-bit levels (what an image file would hold), float again."""
    return images.detach().float().clamp(0.0, 1.0).mul(255.0).round().div(255.0)


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Before/after metrics of one evaluation pass, and the first few images for a grid."""

    records: list[dict[str, Any]] = field(default_factory=list)
    """Per image: id, psnr_before, psnr_after, ssim_before, ssim_after."""

    rows: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    """(id, input, output, target) [3, H, W] each, for the first ``grid_rows`` images."""

    def summary(self) -> dict[str, Any]:
        """{"num_images", "before": {"psnr", "ssim"}, "after": {...}, "delta": {...}} (means over images)."""
        if not self.records:
            return {"num_images": 0}

        def mean(key: str) -> float:
            values = [r[key] for r in self.records]
            return float(np.mean(values))

        before = {"psnr": mean("psnr_before"), "ssim": mean("ssim_before")}
        after = {"psnr": mean("psnr_after"), "ssim": mean("ssim_after")}
        return {
            "num_images": len(self.records),
            "before": before,
            "after": after,
            "delta": {k: after[k] - before[k] for k in before},
        }


FixFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def evaluate_pairs(
    fix: FixFn,
    dataset: Sequence[dict[str, Any]],
    *,
    max_images: int | None = None,
    grid_rows: int = 4,
    device: torch.device | str = "cpu",
    use_refs: bool = True,
) -> EvalResult:
    """Run ``fix(images [1,3,H,W], refs [1,R,3,H,W] | None) -> [1,3,H,W]`` over a paired dataset
    (``fix(images, refs, hint [1,4,H,W])`` for items with a LiDAR hint).

    ``dataset`` items are :class:`~difix_refiner.pairs.format.PairDataset` items (``image``,
    ``target``, optional ``ref``, ``id``). One image at a time: test images may differ in size.
    Metrics are computed on 8-bit-rounded images (see the module docstring).
    """
    result = EvalResult()
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    for index in range(count):
        item = dataset[index]
        image = item["image"][None].to(device)  # [1, 3, H, W]
        target = item["target"][None].to(device)
        refs = item["ref"][None].to(device) if use_refs and "ref" in item else None  # [1, R, 3, H, W]
        hint = item["hint"][None].to(device) if "hint" in item else None  # [1, 4, H, W] LiDAR hint
        output = quantize((fix(image, refs) if hint is None else fix(image, refs, hint)).to(device))  # [1, 3, H, W]
        image, target = quantize(image), quantize(target)
        result.records.append(
            {
                "id": item["id"],
                "psnr_before": float(psnr_batch(image, target)[0]),
                "psnr_after": float(psnr_batch(output, target)[0]),
                "ssim_before": float(ssim_batch(image, target)[0]),
                "ssim_after": float(ssim_batch(output, target)[0]),
            }
        )
        if len(result.rows) < grid_rows:
            result.rows.append((item["id"], image[0].cpu(), output[0].cpu(), target[0].cpu()))
    return result


# --------------------------------------------------------------------------- image grid


def _to_pil(image: torch.Tensor, width: int) -> Image.Image:
    arr = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    pil = Image.fromarray(arr)
    if pil.width > width:
        height = max(1, round(pil.height * width / pil.width))
        pil = pil.resize((width, height), Image.Resampling.LANCZOS)
    return pil


def make_grid(result: EvalResult, tile_width: int = 384, title: str | None = None) -> Image.Image:
    """Rows of input | output | target, each tile labelled with its PSNR against the target.

    Tiles wider than ``tile_width`` are shrunk (aspect kept) so a grid of big frames stays viewable.
    """
    if not result.rows:
        raise ValueError("no images to put in a grid")
    records = {r["id"]: r for r in result.records}
    tiles = [[_to_pil(x, tile_width) for x in (inp, out, tgt)] for _, inp, out, tgt in result.rows]
    label_h = 18
    header_h = 24 if title else 0
    col_w = max(150, max(t.width for row in tiles for t in row))  # room for the labels
    row_hs = [max(t.height for t in row) + label_h for row in tiles]
    gap = 4
    width = 3 * col_w + 2 * gap
    height = header_h + sum(row_hs) + gap * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = load_font(13)
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0), font=load_font(15))
    y = header_h
    for (key, *_), row, row_h in zip(result.rows, tiles, row_hs):
        rec = records.get(key, {})
        labels = (
            f"input {rec.get('psnr_before', math.nan):.2f} dB",
            f"output {rec.get('psnr_after', math.nan):.2f} dB",
            f"target {key}",
        )
        for col, (tile, label) in enumerate(zip(row, labels)):
            x = col * (col_w + gap)
            while len(label) > 4 and draw.textlength(label, font=font) > col_w - 4:
                label = label[:-2] + "…"  # long ids: keep the label inside its column
            draw.text((x + 2, y + 2), label, fill=(0, 0, 0), font=font)
            canvas.paste(tile, (x, y + label_h))
        y += row_h + gap
    return canvas


def grid_to_tensor(grid: Image.Image) -> torch.Tensor:
    """PIL grid -> [3, H, W] uint8 tensor (for tensorboard's ``add_image``)."""
    return torch.from_numpy(np.asarray(grid.convert("RGB")).copy()).permute(2, 0, 1)
