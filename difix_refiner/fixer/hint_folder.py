"""LiDAR hints stored as files, for ``difix-refiner fix --hint FOLDER`` (and make-pairs' pair hints).

A stored hint is two PNGs (:func:`difix_refiner.pairs.pair_hints.write_hint` writes them): the colours
(8-bit RGB, 0 where unknown) and the validity mask (8-bit grey, 255 where a point is). In a hint folder
they are named after the image they belong to: ``<stem>.png`` and ``<stem>.mask.png`` for the input
``<stem>.<ext>`` (another image extension works too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from difix_refiner.data.lidar_hint import hint_tensor
from difix_refiner.fixer.folder_io import IMAGE_EXTENSIONS, FixCommandError

MASK_SUFFIX = ".mask"
"""Ends the stem of a hint's mask file: ``<stem>.mask.png``."""


def read_hint_files(image_path: str | Path, mask_path: str | Path) -> torch.Tensor:
    """A stored hint as the fixer's input: [4, H, W] float32, RGB in [0, 1] (0 where unknown) and the mask.

    Raises:
        ValueError: the colours and the mask differ in size.
    """
    with Image.open(image_path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    with Image.open(mask_path) as im:
        mask = np.asarray(im.convert("L")) >= 128  # [H, W]
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"hint '{image_path}' is {rgb.shape[1]}x{rgb.shape[0]} but its mask '{mask_path}' {mask.shape[1]}x{mask.shape[0]}")
    return hint_tensor(rgb, mask)


def pair_hints_by_name(images: list[Path], hint_folder: Path) -> dict[Path, tuple[Path, Path]]:
    """(hint colours, hint mask) for each image: ``<stem>.<ext>`` and ``<stem>.mask.<ext>`` in ``hint_folder``.

    Raises:
        FixCommandError: the folder is missing, or some image has no hint (or no mask).
    """
    if not hint_folder.is_dir():
        raise FixCommandError(f"hint folder '{hint_folder}' does not exist or is not a folder")
    colours: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for p in sorted(hint_folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if p.stem.endswith(MASK_SUFFIX):
            masks.setdefault(p.stem[: -len(MASK_SUFFIX)], p)
        else:
            colours.setdefault(p.stem, p)
    pairs, missing = {}, []
    for img in images:
        found = colours.get(img.stem), masks.get(img.stem)
        if None in found:
            missing.append(f"{img.name} (needs {img.stem}.png and {img.stem}{MASK_SUFFIX}.png)")
        else:
            pairs[img] = found
    if missing:
        raise FixCommandError(
            f"{len(missing)} of {len(images)} images have no LiDAR hint in '{hint_folder}' "
            f"(paired by file name): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    return pairs


def read_hint(paths: tuple[Path, Path], size: tuple[int, int]) -> torch.Tensor:
    """The hint of one image of ``size`` (W, H): [4, H, W].

    Raises:
        FixCommandError: a file cannot be read, or the hint is not the image's size.
    """
    try:
        hint = read_hint_files(*paths)
    except ValueError as err:
        raise FixCommandError(str(err)) from None
    except Exception as err:  # PIL raises many types for broken files
        raise FixCommandError(f"cannot read the LiDAR hint '{paths[0]}' / '{paths[1]}': {err}") from None
    if tuple(hint.shape[1:]) != (size[1], size[0]):
        raise FixCommandError(
            f"LiDAR hint '{paths[0]}' is {hint.shape[2]}x{hint.shape[1]} but its image is {size[0]}x{size[1]}; they must match"
        )
    return hint
