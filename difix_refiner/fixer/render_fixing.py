"""Running the fixer on finished renders (the Difix3D+ "+" step), shared by ``eval`` and ``render-shifted``.

- :func:`load_fixer`: the fixer chosen by the ``--fixer-base`` / ``--fixer-adapter`` options
  (default ``examples/fixer-small`` when that folder exists).
- :func:`fix_render`: fixer(render) for one ``uint8 [H, W, 3]`` frame, optionally with a reference view.
- :func:`read_photo`: a recorded photo at a render's size (the reference view, or a metric's truth).

Errors the user can fix (a missing adapter, weights that do not load, a missing photo) raise
``InputError`` so commands exit with a one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

from difix_refiner.cameras.run_data import InputError

DEFAULT_FIXER = Path("examples/fixer-small")
"""Fixer used when --fixer-base is not given, if this folder exists."""


def load_fixer(base: Optional[str], adapter: Optional[Path], device: Optional[str] = None) -> Tuple[Any, Optional[str]]:
    """Load the fixer named by the command-line options.

    Args:
        base: ``tiny``, a hub id or a local folder (diffusers layout, or a saved fixer); ``none``
            for no fixer. None: use ``examples/fixer-small`` if it exists (or the base recorded in
            ``adapter``).
        adapter: Trained weights saved by ``Fixer.save_pretrained``.
        device: Torch device; default: CUDA when available.

    Returns:
        ``(fixer, None)``, or ``(None, reason)`` when no fixer was asked for and the default is absent.
        An explicitly requested fixer that fails to load raises ``InputError``.
    """
    import torch

    from difix_refiner.fixer import Fixer, FixerWeightsError

    if base is not None and base.lower() == "none":
        if adapter is not None:
            raise InputError("--fixer-base none disables the fixer; drop --fixer-adapter")
        return None, "the fixer was disabled (--fixer-base none)"
    if base is None and adapter is None:
        if not DEFAULT_FIXER.is_dir():
            return None, (
                f"no fixer: {DEFAULT_FIXER} does not exist; pass --fixer-base (tiny, a hub id or a local folder) "
                "and optionally --fixer-adapter"
            )
        base = str(DEFAULT_FIXER)
    if adapter is not None and not Path(adapter).exists():
        raise InputError(f"--fixer-adapter not found: {adapter}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        if base == "tiny" and adapter is None:
            torch.manual_seed(0)
            fixer = Fixer.tiny().to(device)
        else:
            fixer = Fixer.from_pretrained(base, adapter, device=device)
    except (FixerWeightsError, OSError, ValueError) as err:
        raise InputError(f"cannot load the fixer (base {base!r}, adapter {adapter}): {err}") from err
    fixer.eval()
    return fixer, None


def takes_references(fixer: Any) -> bool:
    """Whether ``fixer`` uses reference views (only the Difix variant joins views)."""
    return bool(getattr(fixer.config, "supports_references", False))


def fix_render(fixer: Any, image: np.ndarray, reference: Optional[np.ndarray]) -> np.ndarray:
    """fixer(image) for one uint8 ``[H, W, 3]`` image, with an optional reference view of the same size.

    The reference is ignored by fixers that take none. Returns uint8 ``[H, W, 3]``.
    """
    import torch

    x = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0  # [1, 3, H, W] (a copy: inputs may be read-only)
    refs = None
    if reference is not None and takes_references(fixer):
        if reference.shape != image.shape:
            raise ValueError(f"the reference is {reference.shape}, the image {image.shape}")
        refs = torch.tensor(reference).permute(2, 0, 1)[None, None].float() / 255.0  # [1, 1, 3, H, W]
    out = fixer.fix(x, refs)[0].clamp(0, 1)  # [3, H, W]
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
