"""Rendered images written as a PandaSet folder, so that ``pandaset-data`` can train a run on them.

The cycle strategy trains its second run on the first run's shifted renders; writing them in the
layout of ``examples/pandaset_002`` (poses in world metres, the original LiDAR sweeps) lets that run
use the same dataparser, scale and LiDAR seeding as any other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from difix_refiner.core import atomic
from difix_refiner.data.pandaset import (
    OPENCV_TO_OPENGL,
    load_camera,
    matrix_to_quat_wxyz,
)
from difix_refiner.data.pandaset_release import release_file
from difix_refiner.data.release_cache import cached_release_sweep

PANDASET_FRAME_RATE_HZ = 10.0
"""Timestamps of a camera the source folder lacks are spaced at PandaSet's rate."""


def write_pandaset_folder(
    folder: Path,
    source: Path,
    frames: Sequence[int],
    cameras: Dict[str, Dict[str, Any]],
    eval_copy_of: Optional[str] = None,
    skip_sweeps: Sequence[int] = (),
) -> Dict[str, Any]:
    """Write rendered images as a PandaSet folder (the layout ``pandaset-data`` reads), atomically.

    Args:
        folder: New folder (must not exist).
        source: The original PandaSet folder (LiDAR sweeps and timestamps are taken from it).
        frames: ``[M]`` original frame indices; they become frames ``0..M-1`` of the new folder.
        cameras: ``{name: {"images": [M] uint8 [H, W, 3], "camera_to_world": [M, 3, 4] world metres,
            OpenGL axes, "fx", "fy", "cx", "cy"}}``.
        eval_copy_of: Also write a copy of this camera as ``<name>_eval`` so that the new folder has
            a held-out camera and the run can train on every frame (pandaset-data needs an eval split).
        skip_sweeps: Original frames whose LiDAR sweeps are not copied (the base run's evaluation sweeps).

    Returns:
        ``{"eval_camera": name or None, "frames": [...]}``.
    """
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} already exists")
    frames = [int(f) for f in frames]
    with atomic.atomic_dir(folder) as tmp:
        # (folder name, spec, original camera whose timestamps it takes)
        jobs = [(name, cameras[name], name) for name in cameras]
        if eval_copy_of is not None:
            jobs.append((f"{eval_copy_of}_eval", cameras[eval_copy_of], eval_copy_of))
        for name, spec, source_name in jobs:
            _write_camera(tmp / "camera" / name, spec, frames, Path(source), source_name)
        _write_lidar(tmp / "lidar", Path(source), frames, skip_sweeps)
        (tmp / "README.md").write_text(
            "Rendered by difix-refiner make-pairs (cycle strategy): shifted renders of a first run, in\n"
            f"PandaSet layout. Frames 0..{len(frames) - 1} are frames {frames[0]}..{frames[-1]} of {source}.\n"
            "No real photo is in this folder; the LiDAR sweeps are copies of the original ones.\n"
        )
    return {"eval_camera": f"{eval_copy_of}_eval" if eval_copy_of else None, "frames": frames}


def _write_camera(cam_dir: Path, spec: Dict[str, Any], frames: Sequence[int], source: Path, source_name: str) -> None:
    """One camera folder: JPEG images, poses (OpenCV axes, quaternions), timestamps and intrinsics."""
    from PIL import Image

    cam_dir.mkdir(parents=True)
    images, c2w = spec["images"], np.asarray(spec["camera_to_world"], dtype=np.float64)
    if len(images) != len(frames) or c2w.shape != (len(frames), 3, 4):
        raise ValueError(f"camera {cam_dir.name}: {len(images)} images and poses {list(c2w.shape)} for {len(frames)} frames")
    for j, img in enumerate(images):
        # High-quality JPEG: pandaset-data reads *.jpg only (like the real photos).
        Image.fromarray(img).save(cam_dir / f"{j:02d}.jpg", format="JPEG", quality=97, subsampling=0)
    rot_cv = c2w[:, :, :3] @ OPENCV_TO_OPENGL  # OpenGL -> OpenCV camera axes (diag(1,-1,-1) is its own inverse)
    quats = matrix_to_quat_wxyz(rot_cv)
    poses = [
        {"position": dict(zip("xyz", map(float, c2w[j, :, 3]))), "heading": dict(zip("wxyz", map(float, quats[j])))}
        for j in range(len(frames))
    ]
    (cam_dir / "poses.json").write_text(json.dumps(poses, indent=1))
    if (source / "camera" / source_name).is_dir():
        stamps = load_camera(source, source_name, frames, verify_images=False).timestamps
    else:
        stamps = np.arange(len(frames)) * (1.0 / PANDASET_FRAME_RATE_HZ)
    (cam_dir / "timestamps.json").write_text(json.dumps([float(t) for t in stamps]))
    (cam_dir / "intrinsics.json").write_text(json.dumps({k: float(spec[k]) for k in ("fx", "fy", "cx", "cy")}, indent=1))


def _write_lidar(lidar_dir: Path, source: Path, frames: Sequence[int], skip_sweeps: Sequence[int] = ()) -> None:
    """The source's LiDAR poses and sweeps of ``frames``, renumbered from 0 (``skip_sweeps``: original frames left out)."""
    lidar_dir.mkdir(parents=True)
    all_poses = json.loads((source / "lidar" / "poses.json").read_text())
    (lidar_dir / "poses.json").write_text(json.dumps([all_poses[f] for f in frames], indent=1))
    skip = set(int(f) for f in skip_sweeps)
    for j, f in enumerate(frames):
        if int(f) in skip:  # the base run's evaluation sweeps never train anything
            continue
        sweep = source / "lidar" / f"{f:02d}.npz"
        if sweep.is_file():  # PandaSet drops some sweeps; the dataparser skips missing ones
            shutil.copyfile(sweep, lidar_dir / f"{j:02d}.npz")
        elif release_file(source, "lidar", f).is_file():  # a PandaSet release folder: its converted sweep
            np.savez(lidar_dir / f"{j:02d}.npz", **cached_release_sweep(release_file(source, "lidar", f)))
