"""LiDAR hints stored next to training pairs: two PNGs per pair (``hint_image``, ``hint_mask``).

``hint_image`` holds the hint's colours (8-bit RGB, 0 where unknown), ``hint_mask`` its validity (8-bit
grey, 255 where a point is the nearest surface, 0 where the hint knows nothing). Both have the pair's
input size. :func:`load_hint` gives the fixer's ``[4, H, W]`` input (RGB + mask); see
:mod:`difix_refiner.data.lidar_hint` for how a hint is rendered and :mod:`difix_refiner.fixer.hint` for
how the fixer takes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from difix_refiner.core.atomic import atomic_path
from difix_refiner.data.lidar_hint import LidarHint
from difix_refiner.fixer.hint_folder import read_hint_files


def write_hint(hint: LidarHint, image_path: str | Path, mask_path: str | Path) -> tuple[Path, Path]:
    """Write a hint as ``image_path`` (RGB PNG) and ``mask_path`` (grey PNG), atomically; returns both paths."""
    rgb = np.round(np.clip(hint.rgb, 0.0, 1.0) * 255.0).astype(np.uint8)  # [H, W, 3]
    rgb[~hint.mask] = 0
    mask = np.where(hint.mask, 255, 0).astype(np.uint8)  # [H, W]
    for path, array in ((Path(image_path), rgb), (Path(mask_path), mask)):
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
    return Path(image_path), Path(mask_path)


def load_hint(image_path: str | Path, mask_path: str | Path) -> torch.Tensor:
    """A stored hint as the fixer's input: [4, H, W] float32, RGB in [0, 1] (0 where unknown) and the mask.

    The one reader of the stored format, :func:`difix_refiner.fixer.hint_folder.read_hint_files` (the
    ``fix`` command reads hint folders with it too).
    """
    return read_hint_files(image_path, mask_path)
