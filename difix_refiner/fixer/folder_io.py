"""Folder handling for the ``fix`` command: listing, pairing, reading and atomic writing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class FixCommandError(ValueError):
    """A problem with the command's inputs; the message is meant for the user as it is."""


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden files skipped), sorted by name."""
    if not folder.is_dir():
        raise FixCommandError(f"input folder '{folder}' does not exist or is not a folder")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise FixCommandError(f"no images found in '{folder}' (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def check_output_location(output: Path, protected: dict[str, Path]) -> None:
    """Refuse an output folder that is, or lies inside, any protected folder (input, refs)."""
    out = output.expanduser().resolve()
    for role, folder in protected.items():
        src = folder.expanduser().resolve()
        if out == src or src in out.parents:
            raise FixCommandError(
                f"output folder '{output}' is the {role} folder or inside it; choose a folder outside '{folder}' "
                "(the fix command never writes into its inputs)"
            )


def pair_by_name(images: list[Path], ref_folder: Path) -> dict[Path, Path]:
    """Reference for each image: same file name in ``ref_folder``, else same stem with an image extension."""
    if not ref_folder.is_dir():
        raise FixCommandError(f"reference folder '{ref_folder}' does not exist or is not a folder")
    by_stem: dict[str, Path] = {}
    for p in sorted(ref_folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(p.stem, p)
    pairs, missing = {}, []
    for img in images:
        exact = ref_folder / img.name
        ref = exact if exact.is_file() else by_stem.get(img.stem)
        if ref is None:
            missing.append(img.name)
        else:
            pairs[img] = ref
    if missing:
        raise FixCommandError(
            f"{len(missing)} of {len(images)} images have no reference in '{ref_folder}' "
            f"(paired by file name): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    return pairs


def pair_by_map(images: list[Path], map_file: Path) -> tuple[dict[Path, Path], list[str]]:
    """Reference for each image from a JSON ``{image_name: ref_path}`` (paths relative to the JSON).

    Returns the pairs and the map keys that name no input image (for a warning).
    """
    try:
        data = json.loads(map_file.read_text())
    except FileNotFoundError:
        raise FixCommandError(f"reference map '{map_file}' does not exist") from None
    except (OSError, json.JSONDecodeError) as err:
        raise FixCommandError(f"cannot read reference map '{map_file}': {err}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise FixCommandError(f"reference map '{map_file}' must be a JSON object {{image_name: ref_path}}")
    pairs, missing, absent = {}, [], []
    used = set()
    for img in images:
        key = img.name if img.name in data else img.stem if img.stem in data else None
        if key is None:
            missing.append(img.name)
            continue
        used.add(key)
        ref = Path(data[key]).expanduser()
        if not ref.is_absolute():
            ref = map_file.parent / ref
        if not ref.is_file():
            absent.append(f"{img.name} -> {ref}")
        pairs[img] = ref
    if missing:
        raise FixCommandError(
            f"{len(missing)} of {len(images)} images have no entry in the reference map '{map_file}': "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    if absent:
        raise FixCommandError(
            f"{len(absent)} references named in '{map_file}' do not exist: {'; '.join(absent[:5])}"
            f"{' ...' if len(absent) > 5 else ''}"
        )
    return pairs, sorted(set(data) - used)


def read_image(path: Path) -> Image.Image:
    """Open an image fully as RGB; raises FixCommandError naming the file when it cannot."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Exception as err:  # PIL raises many types for broken files
        raise FixCommandError(f"cannot read image '{path}': {err}") from None


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> [3, H, W] float32 in [0, 1]."""
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] -> PIL RGB (rounded to 8 bits)."""
    arr = tensor.detach().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def write_image_atomic(image: Image.Image, path: Path) -> None:
    """Write to a hidden temp file in the same folder, then rename: a reader (or a rerun that
    skips finished files) never sees a half-written image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    from difix_refiner.cameras.atomic import create_temp_file  # the shared writer (lazy: no import cycle)
    tmp = str(create_temp_file(path.parent, prefix=f".{path.stem}.", suffix=path.suffix))  # umask's mode
    try:
        fmt = Image.registered_extensions().get(path.suffix.lower())
        kwargs = {"quality": 95} if fmt == "JPEG" else {}
        image.save(tmp, format=fmt, **kwargs)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
