"""Between a run's scene frame and the world frame of its data.

nerfstudio dataparsers map world points as ``scene = scale * (transform @ [world; 1])`` with a rigid
``transform`` [3, 4] (``dataparser_transform``) and ``scale`` (``dataparser_scale``); camera axes are
left as they are (OpenGL for nerfstudio poses).
"""

from __future__ import annotations

import numpy as np


def scene_to_world(poses: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """Undo a dataparser's ``scene = scale * (transform @ world)``. # [N, 3, 4] -> [N, 3, 4]"""
    t = np.asarray(transform, dtype=np.float64)  # [3, 4], rigid
    rot_t, trans_t = t[:, :3], t[:, 3]
    p = np.asarray(poses, dtype=np.float64)
    out = np.empty_like(p)
    out[:, :, :3] = rot_t.T @ p[:, :, :3]
    out[:, :, 3] = (p[:, :, 3] / scale - trans_t) @ rot_t  # rot_t.T @ (x / s - t), row-wise
    return out


def world_to_scene(poses: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """Apply a dataparser's ``scene = scale * (transform @ world)``. # [N, 3, 4] -> [N, 3, 4]"""
    t = np.asarray(transform, dtype=np.float64)
    rot_t, trans_t = t[:, :3], t[:, 3]
    p = np.asarray(poses, dtype=np.float64)
    out = np.empty_like(p)
    out[:, :, :3] = rot_t @ p[:, :, :3]
    out[:, :, 3] = scale * (p[:, :, 3] @ rot_t.T + trans_t)
    return out
