"""``difix-refiner import-pandaset SRC DST``: a PandaSet release sequence in this project's layout, once.

For users who want no pickles at training time: ``pandaset-data`` reads the release layout directly
too (caching the converted sweeps), so this step is optional.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Dict, List

import numpy as np
import tyro
from tqdm import tqdm

from difix_refiner.cameras import atomic
from difix_refiner.cameras.run_data import InputError
from difix_refiner.data import pandaset_release as pr
from difix_refiner.data.pandaset import PandasetFormatError


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


@dataclass
class ImportPandasetCommand:
    """Convert a PandaSet release sequence folder (pickled LiDAR and boxes) into this project's layout.

    Writes DST with lidar/NN.npz (every point: xyz, intensity, sensor, timestamp) and
    annotations/cuboids/NN.json (full precision) in place of the release's lidar/NN.pkl.gz and
    annotations/cuboids/NN.pkl.gz; cameras, poses, timestamps and meta/ are copied. The pickles are read
    with an unpickler limited to pandas/numpy containers. SRC is never written to; DST appears whole or
    not at all. Optional: pandaset-data reads the release folder directly too.
    """

    src: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="SRC")]]
    """Sequence folder of the PandaSet release (camera/, lidar/NN.pkl.gz, annotations/cuboids/NN.pkl.gz)."""
    dst: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="DST")]]
    """Folder to create in this project's layout (must not exist unless --overwrite)."""
    overwrite: bool = False
    """Replace an existing DST."""

    def main(self) -> None:
        try:
            counts = import_pandaset(self.src, self.dst, self.overwrite)
        except (InputError, PandasetFormatError) as exc:
            raise SystemExit(f"import-pandaset: error: {exc}") from None
        note = f"; {counts['pickles_skipped']} other pickle(s) not read" if counts["pickles_skipped"] else ""
        print(
            f"wrote {self.dst}: {counts['sweeps']} LiDAR sweeps (npz), boxes of {counts['cuboid_frames']} frames (json), "
            f"{counts['files_copied']} files copied{note}"
        )


if __name__ == "__main__":
    tyro.cli(ImportPandasetCommand).main()
