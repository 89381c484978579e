"""Geometry of PandaSet's 3D boxes (cuboids): corners in world metres, points inside, pixels covered.

A box is centred at ``position`` (world metres), ``dimensions.x`` wide (across the object, the box's own
x axis), ``dimensions.y`` long (along it, the box's y axis) and ``dimensions.z`` high (world z), turned by
``yaw`` radians about world z (box axes -> world axes: ``R_z(yaw)``). On sequence 002 this reading puts
2.4x more LiDAR returns inside the boxes than the one with width and length swapped.

An object that is not ``stationary`` is *dynamic*: a static reconstruction cannot hold it, so its LiDAR
points are removed and its pixels (the box, grown by a margin, projected into an image) are masked.

Cameras here are camera-to-world ``[4, 4]`` / ``[3, 4]`` with OpenCV axes (x right, y down, z forward);
pixel ``(col, row)`` covers ``u in [col, col + 1)``, ``v in [row, row + 1)`` and is covered by a box when
its centre ``(col + 0.5, row + 0.5)`` lies inside the box's projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from difix_refiner.data.cuboids import load_cuboids
from difix_refiner.data.pandaset import PandasetFormatError

CUBOID_DIR = ("annotations", "cuboids")
"""Where a PandaSet folder keeps its boxes."""

DEFAULT_MARGIN_M = 0.3
"""Metres added on every side of a dynamic box before its points and pixels are removed: the boxes are
tight, LiDAR and camera fire some milliseconds apart, and a pedestrian's arm swings."""

NEAR_M = 0.05
"""A box is clipped at this z-depth (metres) in front of the camera before it is projected."""

# Corner signs in box axes, and the 12 edges between corners (indices into the 8 corners).
_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)  # [8, 3]
_EDGES = [(i, j) for i in range(8) for j in range(i + 1, 8) if int(np.abs(_SIGNS[i] - _SIGNS[j]).sum()) == 2]


@dataclass(frozen=True)
class Box:
    """One annotated object in one frame."""

    uuid: str
    label: str
    centre: np.ndarray
    """[3] world metres."""
    size: np.ndarray
    """[3] width (box x), length (box y), height (z), metres."""
    yaw: float
    """Rotation about world z, radians."""
    stationary: bool

    @property
    def dynamic(self) -> bool:
        """Whether the object moves during the sequence (so a static model cannot hold it)."""
        return not self.stationary

    def grown(self, margin_m: float) -> "Box":
        """The same box with ``margin_m`` metres added on every side."""
        return Box(self.uuid, self.label, self.centre, self.size + 2.0 * margin_m, self.yaw, self.stationary)


def _number(record: dict, key: str, where: str) -> float:
    value = record.get(key)
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PandasetFormatError(f"{where}: box {record.get('uuid', '?')} has no number under {key!r} (got {value!r})")
    if not math.isfinite(out):
        raise PandasetFormatError(f"{where}: box {record.get('uuid', '?')} has a non-finite {key!r}")
    return out


def boxes_from_records(records: Sequence[dict], where: str = "cuboids") -> List[Box]:
    """Boxes from the release's flat records (``position.x`` ... ``yaw``, ``stationary``); ``where`` names the file."""
    boxes = []
    for r in records:
        centre = np.array([_number(r, f"position.{k}", where) for k in "xyz"])
        size = np.array([_number(r, f"dimensions.{k}", where) for k in "xyz"])
        if (size <= 0).any():
            raise PandasetFormatError(f"{where}: box {r.get('uuid', '?')} has non-positive dimensions {size.tolist()}")
        stationary = r.get("stationary")
        if not isinstance(stationary, (bool, np.bool_)):
            raise PandasetFormatError(f"{where}: box {r.get('uuid', '?')} needs true/false under 'stationary'")
        boxes.append(Box(str(r.get("uuid", "")), str(r.get("label", "")), centre, size, _number(r, "yaw", where), bool(stationary)))
    return boxes


def has_boxes(root: Path) -> bool:
    """Whether a PandaSet folder has box annotations."""
    return Path(root).joinpath(*CUBOID_DIR).is_dir()


def load_boxes(root: Path, frames: Sequence[int]) -> Optional[Dict[int, List[Box]]]:
    """``{frame: boxes}`` of the given frames, or None when the folder has no ``annotations/cuboids``."""
    if not has_boxes(root):
        return None
    return {int(f): boxes_from_records(load_cuboids(root, int(f)), f"{Path(root).joinpath(*CUBOID_DIR)} frame {int(f)}") for f in frames}


def dynamic_boxes(boxes: Sequence[Box], margin_m: float = DEFAULT_MARGIN_M) -> List[Box]:
    """The boxes of moving objects, grown by ``margin_m``."""
    return [b.grown(margin_m) for b in boxes if b.dynamic]


def box_corners(boxes: Sequence[Box]) -> np.ndarray:
    """Corners in world metres. # [B, 8, 3]"""
    if not boxes:
        return np.zeros((0, 8, 3))
    half = np.stack([b.size for b in boxes]) / 2.0  # [B, 3]
    local = _SIGNS[None] * half[:, None, :]  # [B, 8, 3]
    yaw = np.array([b.yaw for b in boxes])
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]  # [B, 1]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], axis=-1) + np.stack([b.centre for b in boxes])[:, None, :]


def points_in_boxes(points: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Which points ``[N, 3]`` (world metres) lie inside any of the boxes (boundary included). # [N] bool"""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    inside = np.zeros(len(points), dtype=bool)
    for b in boxes:
        d = points - b.centre  # [N, 3]
        c, s = math.cos(b.yaw), math.sin(b.yaw)
        lx, ly = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]  # R_z(yaw)^T d
        half = b.size / 2.0
        inside |= (np.abs(lx) <= half[0]) & (np.abs(ly) <= half[1]) & (np.abs(d[:, 2]) <= half[2])
    return inside


def _clipped_vertices(corners_cam: np.ndarray, near: float) -> np.ndarray:
    """Vertices of a box (corners in camera axes ``[8, 3]``) cut by the plane ``z = near``, keeping ``z >= near``."""
    z = corners_cam[:, 2]
    verts = [corners_cam[z >= near]]
    for i, j in _EDGES:
        if (z[i] - near) * (z[j] - near) < 0:  # the edge crosses the plane
            t = (near - z[i]) / (z[j] - z[i])
            verts.append((corners_cam[i] + t * (corners_cam[j] - corners_cam[i]))[None])
    return np.concatenate(verts)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise convex hull (Andrew's monotone chain) of 2D points ``[N, 2]``. # [K, 2]"""
    pts = sorted(set(map(tuple, np.round(points, 9))))
    if len(pts) <= 2:
        return np.asarray(pts, dtype=np.float64).reshape(-1, 2)

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.float64)


def _fill_convex(mask: np.ndarray, hull: np.ndarray) -> None:
    """Set the pixels of ``mask [H, W]`` whose centres lie inside (or on) the convex polygon ``hull [K, 2]``."""
    height, width = mask.shape
    if len(hull) < 3:
        return
    lo = np.clip(np.floor(hull.min(axis=0) - 0.5).astype(np.int64), 0, [width, height])
    hi = np.clip(np.ceil(hull.max(axis=0) + 0.5).astype(np.int64), 0, [width, height])
    if (hi <= lo).any():
        return
    cols = np.arange(lo[0], hi[0]) + 0.5
    rows = np.arange(lo[1], hi[1]) + 0.5
    u, v = np.meshgrid(cols, rows)  # [h, w]
    inside = np.ones_like(u, dtype=bool)
    for k in range(len(hull)):
        a, b = hull[k], hull[(k + 1) % len(hull)]
        inside &= (b[0] - a[0]) * (v - a[1]) - (b[1] - a[1]) * (u - a[0]) >= -1e-9  # left of a->b (CCW)
    mask[lo[1] : hi[1], lo[0] : hi[0]] |= inside


def box_pixel_mask(
    boxes: Sequence[Box], c2w_opencv: np.ndarray, K: np.ndarray, width: int, height: int, near: float = NEAR_M
) -> np.ndarray:
    """Pixels covered by the projections of the boxes into one camera. # [H, W] bool

    Each box is clipped at ``near`` metres in front of the camera, so a box the camera sits in or next to
    still masks what it covers; a box wholly behind the camera masks nothing.
    """
    return corners_pixel_mask(box_corners(boxes), c2w_opencv, K, width, height, near)


def corners_pixel_mask(
    corners: np.ndarray, c2w_opencv: np.ndarray, K: np.ndarray, width: int, height: int, near: float = NEAR_M
) -> np.ndarray:
    """:func:`box_pixel_mask` of boxes given by their corners ``[B, 8, 3]`` (as :func:`box_corners` orders
    them), in any unit the camera pose shares (``near`` in that unit too). # [H, W] bool"""
    mask = np.zeros((int(height), int(width)), dtype=bool)
    pose = np.asarray(c2w_opencv, dtype=np.float64)
    R, t = pose[:3, :3], pose[:3, 3]
    K = np.asarray(K, dtype=np.float64)
    for box in np.asarray(corners, dtype=np.float64).reshape(-1, 8, 3):  # [8, 3]
        cam = (box - t) @ R  # R^T (X - t), [8, 3]
        verts = _clipped_vertices(cam, near)
        if len(verts) < 3:
            continue
        uv = np.stack([K[0, 0] * verts[:, 0] / verts[:, 2] + K[0, 2], K[1, 1] * verts[:, 1] / verts[:, 2] + K[1, 2]], 1)
        _fill_convex(mask, _convex_hull(uv))
    return mask
