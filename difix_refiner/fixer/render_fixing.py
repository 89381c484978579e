"""Running the fixer on finished renders (the Difix3D+ "+" step), shared by ``eval`` and ``render-shifted``.

(Which fixer to load is :class:`difix_refiner.fixer.options.FixerOptions`.)

- :func:`fix_render`: fixer(render) for one ``uint8 [H, W, 3]`` frame, optionally with a reference view
  and, for a fixer trained with hints, the LiDAR hint of the rendered camera.
- :func:`read_photo`: a recorded photo at a render's size (the reference view, or a metric's truth).

Errors the user can fix (a missing adapter, weights that do not load, a missing photo) raise
``InputError`` so commands exit with a one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from difix_refiner.core.errors import InputError


def takes_references(fixer: Any) -> bool:
    """Whether ``fixer`` uses reference views (only the Difix variant joins views)."""
    return bool(getattr(fixer.config, "supports_references", False))


def takes_hints(fixer: Any) -> bool:
    """Whether ``fixer`` was trained with LiDAR hints (``hint_channels`` > 0)."""
    return bool(getattr(fixer.config, "uses_hint", False))


def fix_render(fixer: Any, image: np.ndarray, reference: Optional[np.ndarray], hint: Any = None) -> np.ndarray:
    """fixer(image) for one uint8 ``[H, W, 3]`` image, with an optional reference view of the same size.

    The reference is ignored by fixers that take none. ``hint``: the LiDAR hint of the image's camera,
    ``[4, H, W]`` (RGB + mask, :meth:`difix_refiner.data.lidar_hint.LidarHint.tensor`); a hint for a fixer
    trained without hints raises ``InputError``. Returns uint8 ``[H, W, 3]``.
    """
    import torch

    x = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0  # [1, 3, H, W] (a copy: inputs may be read-only)
    refs = None
    if reference is not None and takes_references(fixer):
        if reference.shape != image.shape:
            raise ValueError(f"the reference is {reference.shape}, the image {image.shape}")
        refs = torch.tensor(reference).permute(2, 0, 1)[None, None].float() / 255.0  # [1, 1, 3, H, W]
    hint_t = None if hint is None else torch.as_tensor(hint).float()[None]  # [1, 4, H, W]
    out = (fixer.fix(x, refs) if hint_t is None else fixer.fix(x, refs, hint=hint_t))[0].clamp(0, 1)  # [3, H, W]
    return (out.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def read_photo(path: Path, width: int, height: int) -> np.ndarray:
    """A photo as uint8 ``[H, W, 3]``, area-resized to ``width`` x ``height`` if needed."""
    from PIL import Image

    if not Path(path).is_file():
        raise InputError(f"image not found: {path}")
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (width, height):
            img = img.resize((width, height), Image.BOX)
        return np.array(img)  # a writable copy (torch warns about read-only arrays)
