"""Converting a PandaSet release sequence into this project's layout, once (``difix-refiner import-pandaset``).

For users who want no pickles at training time: ``pandaset-data`` reads the release layout directly
too (caching the converted sweeps), so this step is optional.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
from tqdm import tqdm

from difix_refiner.core import atomic
from difix_refiner.core.errors import InputError
from difix_refiner.data import pandaset_release as pr


def _frames(folder: Path) -> List[int]:
    """Frame numbers of the release pickles in a folder (NN.pkl.gz)."""
    return sorted(int(p.name[:2]) for p in folder.glob("*.pkl.gz") if pr.RELEASE_NAME.match(p.name)) if folder.is_dir() else []


def check_locations(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuse a source that is not a release folder, and a destination that is in or above it or already exists."""
    if not src.is_dir():
        raise InputError(f"PandaSet folder not found: {src}")
    if not pr.is_release_layout(src):
        hint = " (it holds lidar/NN.npz: it is already in this project's layout)" if any((src / "lidar").glob("*.npz")) else ""
        raise InputError(f"{src} is not a PandaSet release sequence folder: it has no lidar/NN.pkl.gz{hint}")
    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents or d in s.parents:
        raise InputError(f"DST {dst} must be outside SRC {src} (and not contain it): SRC is never written to")
    if dst.exists() and not overwrite:
        raise InputError(f"{dst} already exists; pass --overwrite to replace it")


def _copy_tree(src: Path, dst: Path) -> int:
    """Copy every file of ``src`` except pickles; returns the number of files copied."""
    count = 0
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.name.endswith(".pkl.gz"):
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        count += 1
    return count


def import_pandaset(src: Path, dst: Path, overwrite: bool = False, progress: bool = True) -> Dict[str, int]:
    """Write ``dst``: ``src`` with lidar/NN.npz and annotations/cuboids/NN.json in place of the pickles.

    Sweeps keep every point: xyz float32 [N, 3], intensity uint8 [N], sensor uint8 [N], timestamp
    float64 [N]. Boxes keep full precision, missing values as null. Everything else is copied. Other
    pickles of the release (e.g. semantic segmentation) are not read and not copied. Returns counts.
    """
    src, dst = Path(src), Path(dst)
    check_locations(src, dst, overwrite)
    lidar, cuboids = _frames(src / pr.LIDAR_DIR), _frames(src / pr.CUBOIDS_DIR)
    skipped = [p for p in src.rglob("*.pkl.gz") if not pr.is_release_file(p)]
    print(pr.pickle_notice(src))
    with atomic.atomic_dir(dst, overwrite=overwrite) as tmp:
        copied = _copy_tree(src, tmp)
        for f in tqdm(lidar, desc="lidar sweeps", unit="sweep", disable=not progress):
            arrays = pr.read_release_sweep(pr.release_file(src, "lidar", f))
            np.savez_compressed(tmp / pr.LIDAR_DIR / f"{f:02d}.npz", **arrays)
        for f in tqdm(cuboids, desc="boxes", unit="frame", disable=not progress):
            boxes = pr.read_release_cuboids(pr.release_file(src, "cuboids", f))
            out = tmp / pr.CUBOIDS_DIR / f"{f:02d}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(boxes))
    return {"sweeps": len(lidar), "cuboid_frames": len(cuboids), "files_copied": copied, "pickles_skipped": len(skipped)}
