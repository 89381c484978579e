"""Reading a PandaSet sequence folder (the layout of ``examples/pandaset_002``) into plain arrays.

Nothing here knows about nerfstudio: the dataparser and the evaluation both build on it.

Conventions of the folder (see its README): world frame in metres with z up; camera poses are
camera-to-world with OpenCV camera axes (x right, y down, z forward); quaternions are (w, x, y, z).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from difix_refiner.core.errors import InputError

CAMERA_NAMES = (
    "front_camera",
    "front_left_camera",
    "front_right_camera",
    "left_camera",
    "right_camera",
    "back_camera",
)
"""The six cameras of the PandaSet rig (a folder may hold only some of them, e.g. the bundled scene's first three)."""

# OpenCV camera axes (x right, y down, z forward) -> OpenGL/nerfstudio axes (x right, y up, z back).
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])


class PandasetFormatError(InputError):
    """A PandaSet folder is missing files or holds inconsistent data; the message names the file."""


@dataclass
class PandasetCamera:
    """One camera of the rig over a range of frames."""

    name: str
    frame_indices: np.ndarray  # [F] int
    image_paths: List[Path]  # [F]
    c2w_opencv: np.ndarray  # [F, 4, 4] camera-to-world, OpenCV axes, metres
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    timestamps: np.ndarray  # [F] Unix seconds

    @property
    def c2w_opengl(self) -> np.ndarray:
        """Camera-to-world with nerfstudio's OpenGL camera axes. # [F, 4, 4]"""
        out = self.c2w_opencv.copy()
        out[:, :3, :3] = out[:, :3, :3] @ OPENCV_TO_OPENGL
        return out

    @property
    def K(self) -> np.ndarray:
        """Pinhole intrinsics. # [3, 3]"""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) to rotation matrices. # [..., 4] -> [..., 3, 3]"""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quat_wxyz(rotations: np.ndarray) -> np.ndarray:
    """Rotation matrices to unit quaternions (w, x, y, z) with w >= 0. # [N, 3, 3] -> [N, 4]"""
    out = np.empty((len(rotations), 4))
    for i, m in enumerate(np.asarray(rotations, dtype=np.float64)):
        # Shepperd's method: divide by the largest of the four candidates for stability.
        tr = m[0, 0] + m[1, 1] + m[2, 2]
        if tr > 0:
            s = 2.0 * math.sqrt(tr + 1.0)
            q = (0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
        elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
            s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
            q = ((m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s)
        elif m[1, 1] > m[2, 2]:
            s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
            q = ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s)
        else:
            s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
            q = ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s)
        q = np.asarray(q) / np.linalg.norm(q)
        out[i] = q if q[0] >= 0 else -q
    return out


def _read_json(path: Path):
    if not path.is_file():
        raise PandasetFormatError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PandasetFormatError(f"{path} is not valid JSON: {err}") from err


def _pose_entry_problem(entry, index: int) -> Optional[str]:
    """What is wrong with one ``poses.json`` entry (None when it is a usable pose); entry i is frame i."""
    where = f"entry {index} (frame {index:02d})"
    for group, keys in (("position", "xyz"), ("heading", "wxyz")):
        values = entry.get(group) if isinstance(entry, dict) else None
        if not isinstance(values, dict) or any(k not in values for k in keys):
            return f"{where} needs {group} {{{', '.join(keys)}}}, got {json.dumps(entry)[:120]}"
        for k in keys:
            v = values[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"{where} has {group}.{k} = {json.dumps(v)}, not a number"
            if not np.isfinite(v):
                return f"{where} has {group}.{k} = {v}; every pose value must be a finite number"
    if all(entry["heading"][k] == 0 for k in "wxyz"):
        return f"{where} has a zero heading quaternion (w, x, y, z all 0)"
    return None


def read_poses(path: Path) -> np.ndarray:
    """Read a PandaSet ``poses.json`` into 4x4 pose matrices. # [F, 4, 4]

    A bad entry is named: ``<path>: entry 12 has position.y = nan; ...`` (entry i is frame i)."""
    entries = _read_json(path)
    if not isinstance(entries, list) or not entries:
        raise PandasetFormatError(f"{path} must hold a non-empty list of poses")
    for i, entry in enumerate(entries):
        problem = _pose_entry_problem(entry, i)
        if problem is not None:
            raise PandasetFormatError(f"{path}: {problem}")
    pos = np.array([[e["position"][k] for k in "xyz"] for e in entries], dtype=np.float64)  # [F, 3]
    quat = np.array([[e["heading"][k] for k in "wxyz"] for e in entries], dtype=np.float64)  # [F, 4]
    poses = np.tile(np.eye(4), (len(entries), 1, 1))
    poses[:, :3, :3] = quat_wxyz_to_matrix(quat)
    poses[:, :3, 3] = pos
    return poses


def list_frames(camera_dir: Path) -> List[Path]:
    """The frame images of one camera folder, in frame order."""
    return sorted(camera_dir.glob("[0-9][0-9]*.jpg"), key=lambda p: int(p.stem))


def frame_images(camera_dir: Path, num_frames: int, poses_file: Path) -> List[Path]:
    """The images of frames ``0..num_frames-1`` (one per pose), naming any frame without an image and any
    image without a pose."""
    by_frame = {int(p.stem): p for p in list_frames(camera_dir)}
    missing = [f for f in range(num_frames) if f not in by_frame]
    if missing:
        shown = ", ".join(str(camera_dir / f"{f:02d}.jpg") for f in missing[:5]) + (" ..." if len(missing) > 5 else "")
        which = f"frame {missing[0]}" if len(missing) == 1 else f"frames {', '.join(map(str, missing[:10]))}"
        has = "has" if len(missing) == 1 else "have"
        raise PandasetFormatError(
            f"{which} of {camera_dir.name} {has} no image: {shown} ({poses_file.name} lists {num_frames} poses, "
            "one per frame, numbered from 00)"
        )
    extra = sorted(f for f in by_frame if f >= num_frames)
    if extra:
        raise PandasetFormatError(
            f"{by_frame[extra[0]]} has no pose: {poses_file} lists {num_frames} poses (frames 00..{num_frames - 1:02d})"
        )
    return [by_frame[f] for f in range(num_frames)]


def check_image(path: Path, size: Optional[tuple] = None, decode: bool = True) -> tuple:
    """Open an image and, with ``decode``, decode all of its pixels (a truncated or damaged file fails here,
    by name, not later in training); returns (width, height)."""
    try:
        with Image.open(path) as img:
            wh = img.size
            if decode:
                img.load()
    except Exception as err:  # PIL raises many types for broken files
        raise PandasetFormatError(f"cannot read image {path}: {err}") from err
    if size is not None and wh != tuple(size):
        raise PandasetFormatError(f"image {path} is {wh[0]}x{wh[1]}, expected {size[0]}x{size[1]} like the others")
    return wh


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image as ``[H, W, 3]`` uint8 RGB; a damaged file fails naming it."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as err:  # PIL raises many types for broken files
        raise PandasetFormatError(f"cannot read image {path}: {err}") from err


def load_camera(root: Path, name: str, frames: Optional[Sequence[int]] = None, verify_images: bool = True) -> PandasetCamera:
    """Load one camera of a PandaSet folder, optionally restricted to some frame indices."""
    root = Path(root)
    if not root.is_dir():
        raise PandasetFormatError(f"PandaSet folder not found: {root}")
    cam_dir = root / "camera" / name
    if not cam_dir.is_dir():
        known = sorted(p.name for p in (root / "camera").iterdir() if p.is_dir()) if (root / "camera").is_dir() else []
        raise PandasetFormatError(f"unknown camera '{name}' in {root}/camera (found: {', '.join(known) or 'none'})")
    poses = read_poses(cam_dir / "poses.json")
    images = frame_images(cam_dir, len(poses), cam_dir / "poses.json")
    timestamps = np.asarray(_read_json(cam_dir / "timestamps.json"), dtype=np.float64)
    intr = _read_json(cam_dir / "intrinsics.json")
    if len(timestamps) != len(poses):
        raise PandasetFormatError(
            f"{cam_dir / 'timestamps.json'} lists {len(timestamps)} timestamps, but {cam_dir / 'poses.json'} "
            f"lists {len(poses)} poses (one of each per frame)"
        )
    idx = np.arange(len(images)) if frames is None else np.asarray(list(frames), dtype=np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= len(images)):
        raise PandasetFormatError(f"frame range {idx.min()}..{idx.max()} is outside 0..{len(images) - 1} of {cam_dir}")
    try:
        fx, fy, cx, cy = (float(intr[k]) for k in ("fx", "fy", "cx", "cy"))
    except (KeyError, TypeError, ValueError) as err:
        raise PandasetFormatError(f"{cam_dir / 'intrinsics.json'} needs numbers fx, fy, cx, cy ({err})")
    paths = [images[i] for i in idx]
    width, height = check_image(paths[0], decode=verify_images) if paths else (0, 0)
    if verify_images:
        for p in paths[1:]:
            check_image(p, (width, height))
    return PandasetCamera(
        name=name,
        frame_indices=idx,
        image_paths=paths,
        c2w_opencv=poses[idx],
        fx=fx,
        fy=fy,
        cx=cx,
        cy=cy,
        width=width,
        height=height,
        timestamps=timestamps[idx],
    )


def load_lidar_sweeps(root: Path, frames: Sequence[int]) -> Dict[int, np.ndarray]:
    """World-space LiDAR points of the given frames (frames without a sweep are skipped). {frame: [N, 3]}"""
    lidar_dir = Path(root) / "lidar"
    if not lidar_dir.is_dir():
        raise PandasetFormatError(f"missing LiDAR folder: {lidar_dir}")
    sweeps = {}
    for f in frames:
        path = lidar_dir / f"{int(f):02d}.npz"
        if not path.is_file():
            release = _release_sweep_xyz(Path(root), int(f))
            if release is not None:
                sweeps[int(f)] = release[np.isfinite(release).all(axis=1)]
            continue  # PandaSet drops some sweeps (frames 56-58 and 71 of sequence 002)
        try:
            with np.load(path) as data:
                xyz = np.asarray(data["xyz"], dtype=np.float64)
        except Exception as err:
            raise PandasetFormatError(f"cannot read LiDAR sweep {path}: {err}") from err
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise PandasetFormatError(f"{path}: 'xyz' must be [N, 3], got {list(xyz.shape)}")
        sweeps[int(f)] = xyz[np.isfinite(xyz).all(axis=1)]
    return sweeps


def _release_sweep_xyz(root: Path, frame: int) -> Optional[np.ndarray]:
    """World points of a PandaSet release sweep (lidar/NN.pkl.gz, through the user cache), None without one. # [N, 3]"""
    from difix_refiner.data.pandaset_release import release_file
    from difix_refiner.data.release_cache import cached_release_sweep

    path = release_file(root, "lidar", frame)
    return cached_release_sweep(path)["xyz"].astype(np.float64) if path.is_file() else None


def load_lidar_positions(root: Path) -> np.ndarray:
    """LiDAR sensor centres per frame, world metres. # [F, 3]"""
    return read_poses(Path(root) / "lidar" / "poses.json")[:, :3, 3]
