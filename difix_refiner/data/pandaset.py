"""Reading a PandaSet sequence folder (the layout of ``examples/pandaset_002``) into plain arrays.

Nothing here knows about nerfstudio: the dataparser and the evaluation both build on it.

Conventions of the folder (see its README): world frame in metres with z up; camera poses are
camera-to-world with OpenCV camera axes (x right, y down, z forward); quaternions are (w, x, y, z).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

CAMERA_NAMES = ("front_camera", "front_left_camera", "front_right_camera")

# OpenCV camera axes (x right, y down, z forward) -> OpenGL/nerfstudio axes (x right, y up, z back).
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])


class PandasetFormatError(ValueError):
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


def _read_json(path: Path):
    if not path.is_file():
        raise PandasetFormatError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PandasetFormatError(f"{path} is not valid JSON: {err}") from err


def read_poses(path: Path) -> np.ndarray:
    """Read a PandaSet ``poses.json`` into 4x4 pose matrices. # [F, 4, 4]"""
    entries = _read_json(path)
    if not isinstance(entries, list) or not entries:
        raise PandasetFormatError(f"{path} must hold a non-empty list of poses")
    try:
        pos = np.array([[e["position"][k] for k in "xyz"] for e in entries], dtype=np.float64)
        quat = np.array([[e["heading"][k] for k in "wxyz"] for e in entries], dtype=np.float64)
    except (KeyError, TypeError) as err:
        raise PandasetFormatError(f"{path}: each entry needs position {{x,y,z}} and heading {{w,x,y,z}} ({err})")
    if not (np.isfinite(pos).all() and np.isfinite(quat).all()):
        raise PandasetFormatError(f"{path} holds non-finite values")
    poses = np.tile(np.eye(4), (len(entries), 1, 1))
    poses[:, :3, :3] = quat_wxyz_to_matrix(quat)
    poses[:, :3, 3] = pos
    return poses


def list_frames(camera_dir: Path) -> List[Path]:
    """The frame images of one camera folder, in frame order."""
    return sorted(camera_dir.glob("[0-9][0-9]*.jpg"), key=lambda p: int(p.stem))


def check_image(path: Path, size: Optional[tuple] = None) -> tuple:
    """Open an image header and verify it decodes; returns (width, height)."""
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            wh = img.size
    except Exception as err:  # PIL raises many types for broken files
        raise PandasetFormatError(f"cannot read image {path}: {err}") from err
    if size is not None and wh != tuple(size):
        raise PandasetFormatError(f"image {path} is {wh[0]}x{wh[1]}, expected {size[0]}x{size[1]} like the others")
    return wh


def load_camera(root: Path, name: str, frames: Optional[Sequence[int]] = None, verify_images: bool = True) -> PandasetCamera:
    """Load one camera of a PandaSet folder, optionally restricted to some frame indices."""
    root = Path(root)
    if not root.is_dir():
        raise PandasetFormatError(f"PandaSet folder not found: {root}")
    cam_dir = root / "camera" / name
    if not cam_dir.is_dir():
        known = sorted(p.name for p in (root / "camera").iterdir() if p.is_dir()) if (root / "camera").is_dir() else []
        raise PandasetFormatError(f"unknown camera '{name}' in {root}/camera (found: {', '.join(known) or 'none'})")
    images = list_frames(cam_dir)
    poses = read_poses(cam_dir / "poses.json")
    timestamps = np.asarray(_read_json(cam_dir / "timestamps.json"), dtype=np.float64)
    intr = _read_json(cam_dir / "intrinsics.json")
    if len(images) != len(poses) or len(timestamps) != len(poses):
        raise PandasetFormatError(
            f"frame count mismatch in {cam_dir}: {len(images)} images, {len(poses)} poses in poses.json, "
            f"{len(timestamps)} timestamps in timestamps.json"
        )
    stems = [int(p.stem) for p in images]
    if stems != list(range(len(images))):
        raise PandasetFormatError(f"{cam_dir}: images must be numbered 00..{len(images) - 1} without gaps")
    idx = np.arange(len(images)) if frames is None else np.asarray(list(frames), dtype=np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= len(images)):
        raise PandasetFormatError(f"frame range {idx.min()}..{idx.max()} is outside 0..{len(images) - 1} of {cam_dir}")
    try:
        fx, fy, cx, cy = (float(intr[k]) for k in ("fx", "fy", "cx", "cy"))
    except (KeyError, TypeError, ValueError) as err:
        raise PandasetFormatError(f"{cam_dir / 'intrinsics.json'} needs numbers fx, fy, cx, cy ({err})")
    paths = [images[i] for i in idx]
    width, height = check_image(paths[0]) if paths else (0, 0)
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


def load_lidar_positions(root: Path) -> np.ndarray:
    """LiDAR sensor centres per frame, world metres. # [F, 3]"""
    return read_poses(Path(root) / "lidar" / "poses.json")[:, :3, 3]


def load_cuboids(root: Path, frame: int) -> List[dict]:
    """The 3D boxes of one frame, ``annotations/cuboids/NN.json``: one dict per box with the release's flat
    keys (``uuid``, ``label``, ``stationary``, ``position.x`` .. ``dimensions.z`` in world metres, ``yaw``
    in radians; see the folder's README). :mod:`difix_refiner.data.boxes` turns them into geometry."""
    path = Path(root) / "annotations" / "cuboids" / f"{int(frame):02d}.json"
    records = _read_json(path)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise PandasetFormatError(f"{path} must hold a list of boxes (one dict per box)")
    return records
