"""Reading a sequence folder of the PandaSet release as downloaded (LiDAR and boxes as pickled DataFrames).

The release stores each LiDAR sweep as ``lidar/NN.pkl.gz`` and each frame's 3D boxes as
``annotations/cuboids/NN.pkl.gz``: gzip-compressed pickles of pandas DataFrames. Cameras, poses and
timestamps are JSON and JPEG as in this project's converted layout (``lidar/NN.npz``,
``annotations/cuboids/NN.json``), so only those two kinds of file need reading here.

Unpickling can run arbitrary code. So pickles are read only under the release's own file names
(:func:`is_release_file`), and through an unpickler that resolves just the few pandas and numpy names
a release DataFrame refers to, each to an inert stand-in or to numpy's array rebuilding: pandas is not
needed (nor imported), and a file that names anything else is refused with the name it asked for.

Nothing here knows about nerfstudio. Converted sweeps and boxes are cached under the user's cache
(:mod:`difix_refiner.data.release_cache`), never in the dataset.
"""

from __future__ import annotations

import copyreg
import gzip
import math
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from difix_refiner.data.pandaset import PandasetFormatError

LIDAR_DIR = "lidar"
CUBOIDS_DIR = "annotations/cuboids"
RELEASE_NAME = re.compile(r"^[0-9]{2}\.pkl\.gz$")
"""File names of the release's pickles: two-digit frame number, ``.pkl.gz``."""

LIDAR_COLUMNS = ("x", "y", "z", "i", "t", "d")
"""Columns of a release LiDAR sweep: world metres, intensity, Unix seconds, sensor (0 Pandar64, 1 PandarGT)."""

CUBOID_COLUMNS = (
    "uuid",
    "label",
    "yaw",
    "stationary",
    "camera_used",
    "position.x",
    "position.y",
    "position.z",
    "dimensions.x",
    "dimensions.y",
    "dimensions.z",
    "attributes.object_motion",
    "cuboids.sibling_id",
    "cuboids.sensor_id",
    "attributes.rider_status",
    "attributes.pedestrian_behavior",
    "attributes.pedestrian_age",
)
"""Columns of a release cuboid table, in the release's order (the keys of the converted JSON boxes)."""


def release_file(root: Path, kind: str, frame: int) -> Path:
    """Path of frame ``frame``'s release pickle; ``kind`` is 'lidar' or 'cuboids'."""
    folder = {"lidar": LIDAR_DIR, "cuboids": CUBOIDS_DIR}[kind]
    return Path(root) / folder / f"{int(frame):02d}.pkl.gz"


def is_release_file(path: Path) -> bool:
    """Whether ``path`` has one of the release's pickle names (lidar/NN.pkl.gz, annotations/cuboids/NN.pkl.gz)."""
    path = Path(path)
    parents = path.parent.parts
    in_lidar = parents[-1:] == (LIDAR_DIR,)
    in_cuboids = parents[-2:] == tuple(CUBOIDS_DIR.split("/"))
    return bool(RELEASE_NAME.match(path.name)) and (in_lidar or in_cuboids)


def is_release_layout(root: Path) -> bool:
    """Whether a sequence folder holds its LiDAR as release pickles (and not as converted .npz sweeps)."""
    lidar = Path(root) / LIDAR_DIR
    if not lidar.is_dir() or any(lidar.glob("[0-9][0-9].npz")):
        return False
    return any(RELEASE_NAME.match(p.name) for p in lidar.glob("*.pkl.gz"))


# ---------------------------------------------------------------------------------------- unpickling


class PickledObject:
    """Inert stand-in for a pandas object in a pickle: it only keeps the state the pickle gives it."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __reduce_ex__(self, protocol):
        return (copyreg.__newobj__, (type(self),), self.state)  # as pandas pickles it: NEWOBJ, then BUILD


class PickledDataFrame(PickledObject):
    """Stands for pandas.DataFrame; its state holds the BlockManager."""


class PickledBlockManager(PickledObject):
    """Stands for pandas' BlockManager; its state holds the column blocks."""


class PickledIndexClass(PickledObject):
    """Stands for the class pandas.Index (passed to ``_new_Index``)."""


class PickledRangeIndexClass(PickledObject):
    """Stands for the class pandas.RangeIndex (passed to ``_new_Index``)."""


class PickledIndex:
    """A pandas Index as pickled: its class stand-in and its attribute dict (``data`` or start/stop/step)."""

    def __init__(self, cls: type, attrs: Dict[str, Any]) -> None:
        self.cls = cls
        self.attrs = attrs

    def __reduce__(self):
        return (new_index, (self.cls, self.attrs))


def new_index(cls: type, attrs: Dict[str, Any]) -> PickledIndex:
    """Stand-in for pandas' ``_new_Index`` (how a pickled Index is rebuilt)."""
    return PickledIndex(cls, dict(attrs))


_NUMPY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]

ALLOWED_GLOBALS = {
    ("pandas.core.frame", "DataFrame"): PickledDataFrame,
    ("pandas.core.internals.managers", "BlockManager"): PickledBlockManager,
    ("pandas.core.indexes.base", "_new_Index"): new_index,
    ("pandas.core.indexes.base", "Index"): PickledIndexClass,
    ("pandas.core.indexes.range", "RangeIndex"): PickledRangeIndexClass,
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "slice"): slice,
}
"""Every name a release DataFrame pickle may refer to, and what it resolves to here."""


class ReleaseUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS` (no pandas, no other callable)."""

    def __init__(self, file, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise PandasetFormatError(
                f"{self.path} refers to {module}.{name}, which a PandaSet release DataFrame does not use: refusing to unpickle it"
            ) from None


def unpickle_release(path: Path) -> Any:
    """Unpickle a release file into stand-ins (:class:`PickledDataFrame` ...); only release names are read."""
    path = Path(path)
    if not is_release_file(path):
        raise PandasetFormatError(
            f"refusing to unpickle {path}: only the PandaSet release's lidar/NN.pkl.gz and annotations/cuboids/NN.pkl.gz are read"
        )
    if not path.is_file():
        raise PandasetFormatError(f"missing file: {path}")
    try:
        with gzip.open(path, "rb") as fh:
            return ReleaseUnpickler(fh, path).load()
    except PandasetFormatError:
        raise
    except Exception as err:  # gzip, pickle and numpy raise many types for broken files
        raise PandasetFormatError(f"cannot read {path} as a gzip-compressed pickled DataFrame: {err}") from err


def _index_values(index: Any, path: Path) -> List[Any]:
    if not isinstance(index, PickledIndex):
        raise PandasetFormatError(f"{path}: unexpected DataFrame axis {type(index).__name__}")
    if "data" in index.attrs:
        return list(np.asarray(index.attrs["data"]))
    return list(range(index.attrs["start"], index.attrs["stop"], index.attrs.get("step", 1) or 1))


def table_columns(frame: Any, path: Path) -> Dict[str, np.ndarray]:
    """The columns of an unpickled release DataFrame, in its column order. {name: [rows]}"""
    state = getattr(frame, "state", None)
    if not isinstance(frame, PickledDataFrame) or not isinstance(state, dict):
        raise PandasetFormatError(f"{path} does not hold a pandas DataFrame")
    manager = state.get("_data", state.get("_mgr"))
    extra = manager.state[-1] if isinstance(manager, PickledBlockManager) and isinstance(manager.state, tuple) else None
    layout = extra.get("0.14.1") if isinstance(extra, dict) else None
    if not isinstance(layout, dict) or "axes" not in layout or "blocks" not in layout:
        raise PandasetFormatError(f"{path}: the DataFrame's blocks are not in the layout of the PandaSet release")
    names = _index_values(layout["axes"][0], path)
    num_rows = len(_index_values(layout["axes"][1], path))
    columns: Dict[int, np.ndarray] = {}
    for block in layout["blocks"]:
        values, locs = np.asarray(block["values"]), block["mgr_locs"]
        positions = list(range(len(names)))[locs] if isinstance(locs, slice) else list(np.asarray(locs))
        if values.ndim != 2 or values.shape != (len(positions), num_rows):
            raise PandasetFormatError(f"{path}: a block of shape {list(values.shape)} does not fit {num_rows} rows")
        for row, pos in zip(values, positions):
            columns[int(pos)] = row
    if sorted(columns) != list(range(len(names))):
        raise PandasetFormatError(f"{path}: the DataFrame's blocks do not cover its {len(names)} columns")
    return {str(names[i]): columns[i] for i in range(len(names))}


def read_release_table(path: Path) -> Dict[str, np.ndarray]:
    """Columns of a release pickle (lidar/NN.pkl.gz or annotations/cuboids/NN.pkl.gz). {name: [rows]}"""
    return table_columns(unpickle_release(path), Path(path))


# ---------------------------------------------------------------------------------------- conversion


def sweep_from_columns(columns: Dict[str, np.ndarray], path: Path) -> Dict[str, np.ndarray]:
    """A release sweep's columns as the arrays of a converted ``lidar/NN.npz``.

    Returns xyz float32 [N, 3] (world metres), intensity uint8 [N], sensor uint8 [N] (0 Pandar64,
    1 PandarGT) and timestamp float64 [N] (Unix seconds), rows in the release's order.
    """
    missing = [c for c in LIDAR_COLUMNS if c not in columns]
    if missing:
        raise PandasetFormatError(f"{path} lacks the LiDAR column(s) {', '.join(missing)} (expected {', '.join(LIDAR_COLUMNS)})")
    xyz = np.stack([np.asarray(columns[c], dtype=np.float64) for c in "xyz"], axis=1)  # [N, 3]
    intensity = np.asarray(columns["i"], dtype=np.float64)  # [N], integers 0..255 in the release
    return {
        "xyz": xyz.astype(np.float32),
        "intensity": np.clip(np.round(intensity), 0, 255).astype(np.uint8),
        "sensor": np.asarray(columns["d"]).astype(np.uint8),
        "timestamp": np.asarray(columns["t"], dtype=np.float64),
    }


def plain_value(value: Any) -> Any:
    """A table cell as a JSON value: numpy scalars to Python, NaN (pandas' missing value) to None."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if value is None or isinstance(value, str):
        return value
    return str(value)


def cuboids_from_columns(columns: Dict[str, np.ndarray], path: Path) -> List[Dict[str, Any]]:
    """A release cuboid table as the list of dicts of a converted ``annotations/cuboids/NN.json``."""
    missing = [c for c in ("uuid", "label", "yaw", "position.x", "dimensions.x") if c not in columns]
    if missing:
        raise PandasetFormatError(f"{path} lacks the cuboid column(s) {', '.join(missing)}")
    names = list(columns)
    num_rows = len(columns[names[0]]) if names else 0
    return [{name: plain_value(columns[name][r]) for name in names} for r in range(num_rows)]


def read_release_sweep(path: Path) -> Dict[str, np.ndarray]:
    """Arrays of one release LiDAR sweep (see :func:`sweep_from_columns`); unpickles ``path``."""
    return sweep_from_columns(read_release_table(path), Path(path))


def read_release_cuboids(path: Path) -> List[Dict[str, Any]]:
    """Boxes of one release cuboid file (see :func:`cuboids_from_columns`); unpickles ``path``."""
    return cuboids_from_columns(read_release_table(path), Path(path))


def pickle_notice(root: Path, cache: Optional[Path] = None) -> str:
    """The one line said before a folder's release pickles are read."""
    where = f", cached as npz/json under {cache}" if cache is not None else ""
    return (
        f"{root} is a PandaSet release folder: its LiDAR sweeps and boxes are pickled pandas DataFrames; "
        f"reading only lidar/NN.pkl.gz and annotations/cuboids/NN.pkl.gz, with an unpickler limited to "
        f"pandas/numpy containers{where}"
    )
