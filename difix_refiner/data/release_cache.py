"""Converted PandaSet release sweeps and boxes, cached under the user's cache (never in the dataset).

The first read of ``lidar/NN.pkl.gz`` unpickles it (:mod:`difix_refiner.data.pandaset_release`) and
writes its arrays to ``$XDG_CACHE_HOME/difix_refiner/pandaset_release/<key>.npz`` (``~/.cache`` when
unset); boxes go to ``<key>.json``. The key hashes the source's absolute path, size and modification
time and the reader's version, so a changed source is read again and later runs read only the cache.
Writes are atomic, so concurrent runs at worst convert the same file twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Set

import numpy as np
from tqdm import tqdm

from difix_refiner.core import atomic
from difix_refiner.data import pandaset_release
from difix_refiner.data.pandaset import PandasetFormatError

READER_VERSION = 1
"""Bumped when the conversion changes, so older cache entries are not used."""

SWEEP_ARRAYS = ("xyz", "intensity", "sensor", "timestamp")


def cache_dir() -> Path:
    """Folder of the converted release files."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "difix_refiner" / "pandaset_release"


def cache_path(source: Path, suffix: str) -> Path:
    """Cache file of ``source`` (keyed by its absolute path, size, mtime and the reader version)."""
    stat = Path(source).stat()
    text = f"{Path(source).resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{READER_VERSION}"
    return cache_dir() / f"{hashlib.sha1(text.encode()).hexdigest()[:20]}{suffix}"


def _read_cached_sweep(path: Path) -> Dict[str, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return {name: np.asarray(data[name]) for name in SWEEP_ARRAYS}
    except Exception:  # a damaged entry (e.g. a full disk) is converted again
        return None


def cached_release_sweep(source: Path) -> Dict[str, np.ndarray]:
    """Arrays of a release sweep (xyz, intensity, sensor, timestamp), from the cache or converted into it."""
    source = Path(source)
    if not source.is_file():
        raise PandasetFormatError(f"missing file: {source}")
    out = cache_path(source, ".npz")
    if out.is_file():
        cached = _read_cached_sweep(out)
        if cached is not None:
            return cached
    arrays = pandaset_release.read_release_sweep(source)
    with atomic.atomic_path(out) as tmp:
        np.savez(tmp, **arrays)
    return arrays


def cached_release_cuboids(source: Path) -> List[Dict[str, Any]]:
    """Boxes of a release cuboid file (list of dicts), from the cache or converted into it."""
    source = Path(source)
    if not source.is_file():
        raise PandasetFormatError(f"missing file: {source}")
    out = cache_path(source, ".json")
    if out.is_file():
        try:
            return json.loads(out.read_text())
        except (OSError, ValueError):
            pass  # a damaged entry is converted again
    boxes = pandaset_release.read_release_cuboids(source)
    atomic.write_text(out, json.dumps(boxes))
    return boxes


_ANNOUNCED: Set[Path] = set()


def prepare_release(root: Path, frames: Sequence[int], lidar: bool = True, log: Callable[[str], None] = print) -> int:
    """Say once per process and folder that release pickles are read, then convert the frames' missing cache entries.

    Converts the sweeps (when ``lidar``) and boxes of ``frames`` that the cache lacks, with a progress
    bar; later reads of those frames touch no pickle. Returns the number of files unpickled now.
    """
    root = Path(root)
    if root.resolve() not in _ANNOUNCED:
        _ANNOUNCED.add(root.resolve())
        log(pandaset_release.pickle_notice(root, cache_dir()))
    todo = []
    for f in frames:
        kinds = (("lidar", ".npz", cached_release_sweep),) if lidar else ()
        for kind, suffix, convert in kinds + (("cuboids", ".json", cached_release_cuboids),):
            path = pandaset_release.release_file(root, kind, f)
            if path.is_file() and not cache_path(path, suffix).is_file():
                todo.append((path, convert))
    for path, convert in tqdm(todo, desc="converting PandaSet release files", unit="file", disable=not todo, leave=False):
        convert(path)
    return len(todo)
