"""Pre-flight checks of plain nerfstudio / instant-ngp scenes (a ``transforms.json`` and its images).

nerfstudio's ``nerfstudio-data`` dataparser finds a missing image only when it loads it, after the
whole set-up: a ``--downscale-factor N`` without the ``images_N/`` copies that ``ns-process-data``
makes, or a frame that ``transforms.json`` lists without an image, failed tens of seconds in with a
bare file-not-found error. These checks read ``transforms.json`` first and say in one sentence what
is missing and what to do. ``instant-ngp-data`` skips frames without an image by itself; the check
says how many it will skip.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, List, Optional, Tuple

from difix_refiner.core.errors import InputError


def transforms_file(data: Path) -> Tuple[Path, Path]:
    """``(transforms.json, folder its paths are relative to)`` for a dataparser's ``--data``."""
    data = Path(data)
    if data.suffix == ".json":
        return data, data.parent
    return data / "transforms.json", data


def listed_frames(data: Path, dataparser: str) -> Tuple[List[str], Path]:
    """The ``file_path`` of every frame in the scene's transforms.json, and the folder they are relative to."""
    path, root = transforms_file(data)
    if not path.is_file():
        raise InputError(
            f"{dataparser}: {path} does not exist; pass --data the folder that holds transforms.json (or the file itself)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        frames = [str(f["file_path"]) for f in meta["frames"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{dataparser}: {path} is not a transforms.json with frames[].file_path ({exc})") from None
    if not frames:
        raise InputError(f"{dataparser}: {path} lists no frames")
    return frames, root


def _first(missing: List[str], total: int, where: str) -> str:
    return f"{len(missing)} of the {total} images {where} do not exist (first: {missing[0]})"


def check_nerfstudio_scene(data: Path, downscale_factor: Optional[int]) -> None:
    """Raise :class:`InputError` when ``nerfstudio-data`` would miss an image it is going to read."""
    frames, root = listed_frames(data, "nerfstudio-data")
    if downscale_factor is not None and downscale_factor > 1:
        folder = root / f"images_{downscale_factor}"
        # nerfstudio reads images_N/<file name> and never the full-size image.
        missing = [str(folder / Path(f).name) for f in frames if not (folder / Path(f).name).is_file()]
        if missing:
            scale = 1.0 / downscale_factor
            what = f"{folder} does not exist" if not folder.is_dir() else _first(missing, len(frames), f"in {folder}")
            raise InputError(
                f"nerfstudio-data --downscale-factor {downscale_factor} reads copies made beforehand in "
                f"{folder.name}/, but {what}: leave --downscale-factor out and scale while loading with "
                f"--pipeline.datamanager.camera-res-scale-factor {scale:g} instead (or make {folder.name}/ with "
                "ns-process-data)"
            )
        return
    missing = [f for f in frames if not (root / f).is_file()]
    if missing:
        raise InputError(
            f"nerfstudio-data: {_first(missing, len(frames), 'listed in transforms.json')}, and nerfstudio-data "
            "needs every listed image: remove those frames from transforms.json, or train with instant-ngp-data, "
            "which skips them"
        )


def check_instant_ngp_scene(data: Path) -> None:
    """Raise when ``instant-ngp-data`` would find no image at all; warn how many frames it will skip."""
    frames, root = listed_frames(data, "instant-ngp-data")
    # instant-ngp-data also tries the path with ".png" appended.
    missing = [f for f in frames if not (root / f).is_file() and not (root / (f + ".png")).is_file()]
    if len(missing) == len(frames):
        raise InputError(
            f"instant-ngp-data: none of the {len(frames)} images listed in transforms.json exist "
            f"(first: {root / missing[0]}); check the frames' file_path entries"
        )
    if missing:
        warnings.warn(
            f"instant-ngp-data skips the {len(missing)} of {len(frames)} frames in transforms.json that have no "
            f"image (first: {missing[0]})",
            stacklevel=2,
        )


def preflight_scene(datamanager_config: Any) -> None:
    """Check the scene of a datamanager config before nerfstudio loads it (other dataparsers: nothing to do).

    The datamanager's ``data`` wins over the dataparser's, as in nerfstudio's datamanagers.
    """
    from nerfstudio.data.dataparsers.instant_ngp_dataparser import (
        InstantNGPDataParserConfig,
    )
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import (
        NerfstudioDataParserConfig,
    )

    dataparser = datamanager_config.dataparser
    data = getattr(datamanager_config, "data", None) or getattr(dataparser, "data", None)
    if data is None:
        return
    if isinstance(dataparser, NerfstudioDataParserConfig):
        check_nerfstudio_scene(Path(data), dataparser.downscale_factor)
    elif isinstance(dataparser, InstantNGPDataParserConfig):
        check_instant_ngp_scene(Path(data))
