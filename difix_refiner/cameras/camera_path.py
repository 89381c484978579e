"""nerfstudio camera-path JSON, as read by ``ns-render camera-path``.

nerfstudio's reader (``nerfstudio.cameras.camera_paths.get_path_from_json``) uses, per entry,
``camera_to_world`` (a row-major 4x4 list, OpenGL camera axes, scene units) and ``fov`` (vertical
field of view in degrees), plus the top-level ``render_width``, ``render_height``, ``camera_type``
and ``seconds`` (``ns-render`` plays ``len(path) / seconds`` frames per second). The format cannot
express every pinhole camera: it rebuilds ``fx = fy`` from the vertical FOV and puts the principal
point at the image centre. Paths written here are therefore an approximation of the training
cameras whenever ``fx != fy`` or the principal point is off-centre; ``render-shifted`` renders with
the exact intrinsics instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from difix_refiner.cameras.trajectory import as_pose_array
from difix_refiner.core import atomic

METADATA_KEY = "difix_refiner"
"""Top-level key for our own information; nerfstudio ignores unknown keys."""


def vertical_fov_degrees(fy: float, height: float) -> float:
    """Vertical field of view (degrees) of a pinhole camera with focal ``fy`` and ``height`` pixels."""
    if not (np.isfinite(fy) and fy > 0 and np.isfinite(height) and height > 0):
        raise ValueError(f"fy and height must be positive, got fy={fy}, height={height}")
    return math.degrees(2.0 * math.atan(0.5 * float(height) / float(fy)))


def camera_path_dict(
    camera_to_worlds: Any,
    *,
    width: int,
    height: int,
    fy: Union[float, Sequence[float]],
    fps: float = 10.0,
    metadata: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Build a perspective camera path in nerfstudio's JSON layout.

    Args:
        camera_to_worlds: ``[N, 3, 4]`` poses, OpenGL camera axes, scene units.
        width: Render width in pixels.
        height: Render height in pixels.
        fy: Vertical focal length in pixels, one value or one per pose.
        fps: Playback rate; ``seconds = N / fps``.
        metadata: Extra information stored under ``"difix_refiner"``.

    Returns:
        A JSON-serialisable dictionary.
    """
    poses = as_pose_array(camera_to_worlds, min_poses=1)  # [N, 3, 4]
    num = poses.shape[0]
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    fys = np.broadcast_to(np.asarray(fy, dtype=np.float64), (num,))  # [N]
    bottom = np.array([0.0, 0.0, 0.0, 1.0])
    entries = []
    for pose, f in zip(poses, fys):
        matrix = np.vstack([pose, bottom])  # [4, 4]
        entries.append(
            {
                "camera_to_world": [float(v) for v in matrix.reshape(-1)],
                "fov": vertical_fov_degrees(float(f), height),
                "aspect": width / height,
            }
        )
    path: Dict[str, Any] = {
        "camera_type": "perspective",
        "render_width": width,
        "render_height": height,
        "fps": float(fps),
        "seconds": num / float(fps),
        "camera_path": entries,
    }
    if metadata:
        path[METADATA_KEY] = metadata
    return path


def write_camera_path(path: Path, camera_path: Dict[str, Any]) -> None:
    """Write a camera-path dictionary to ``path`` atomically."""
    atomic.write_json(Path(path), camera_path)
