"""Checks of a ``pandaset-data`` folder and split that end in one sentence saying what is wrong and what
was expected (the dataparser calls them before it reads anything else)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from difix_refiner.data.pandaset import PandasetFormatError

LAYOUT = (
    "camera/<name>/NN.jpg with poses.json, intrinsics.json and timestamps.json per camera, and lidar/NN.npz "
    "with lidar/poses.json (the layout of examples/pandaset_002, see its README)"
)
"""What pandaset-data reads, for messages."""


def _foreign_format_hint(root: Path) -> str:
    """A pointer to the right dataparser when ``root`` looks like another format's folder."""
    if (root / "transforms.json").is_file():
        return (
            "; it holds a transforms.json, so it looks like a nerfstudio-format folder: use the nerfstudio-data "
            "dataparser instead of pandaset-data (with --pipeline.refine.metres-per-scene-unit for the refine loop)"
        )
    if (root / "sparse").is_dir() or (root / "colmap").is_dir():
        return "; it looks like a COLMAP folder: use the colmap dataparser instead of pandaset-data"
    return ""


def check_is_pandaset_folder(root: Path) -> None:
    """Raise ``PandasetFormatError`` when ``root`` (an existing folder) is not a PandaSet sequence folder."""
    root = Path(root)
    if (root / "camera").is_dir():
        return
    raise PandasetFormatError(
        f"{root} is not a PandaSet folder: it has no camera/ subfolder; pandaset-data expects {LAYOUT}"
        + _foreign_format_hint(root)
    )


def empty_split_message(config: Any, split: str, frames: np.ndarray) -> str:
    """Why a split of the frame range came out empty, with how many frames were held out for evaluation."""
    n, start, end = len(frames), config.frame_start, config.frame_start + len(frames)
    if "interval" in config.eval_mode:
        held = int(np.sum((frames - config.frame_start) % config.eval_interval == 0))
        every = f"every {config.eval_interval}th frame from the first"
        how = f"{held} held out for evaluation (--eval-mode {config.eval_mode}: {every})"
    else:
        held = 0
        how = f"none held out (--eval-mode {config.eval_mode} evaluates on {', '.join(config.eval_cameras)})"
    name = "training" if split == "train" else f"'{split}'"
    return (
        f"the {name} split is empty: the frame range [{start}, {end}) of {config.data} has {n} frame(s), {how}, "
        f"{n - held} left for training; use more frames (--frame-start/--frame-end) or another "
        "--eval-mode/--eval-interval"
    )
