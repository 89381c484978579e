"""The one reference-view picker: the nearest training frame by position and viewing direction.

Difix3D conditions the fixer on a real photo of the scene taken near the view being fixed; here that
photo is the *training* image (one the reconstruction was trained on) that minimises

    cost = |c_query - c_candidate| * metres_per_scene_unit  +  angle_weight * angle(d_query, d_candidate)

where ``c`` are camera centres (scene units, converted to metres when the scale is known) and ``d``
the viewing directions (OpenGL cameras look along their -z axis), the angle in radians.

``DEFAULT_ANGLE_WEIGHT`` is 5 metres per radian: a heading difference of about 11.5 degrees costs as
much as 1 m of travel. At PandaSet's 10 Hz a car at urban speed moves about 1 m per frame, so the
previous or next frame of the same camera wins over a rig neighbour at the same instant (another
camera 45-90 degrees away costs 4-8 m), and frames of a turn are judged mostly by where they look.
Without a metric scale the distances stay in scene units, and the weight is then per scene unit.

The same picker serves every place a reference is chosen: training pairs (``make-pairs``), the refine
loop's pseudo views, the "+" step and evaluation, so the fixer is used with the kind of reference it
was trained with.

All functions take camera-to-world poses ``[N, 3, 4]`` (or ``[N, 4, 4]``) in nerfstudio's OpenGL
axes and return numpy arrays.
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

DEFAULT_ANGLE_WEIGHT = 5.0
"""Metres (of camera-centre distance) that one radian of viewing-direction difference costs."""


def _poses(poses: Any, name: str) -> np.ndarray:
    if hasattr(poses, "detach"):  # torch tensor
        poses = poses.detach().cpu().double().numpy()
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"{name} must have shape [N, 3, 4] or [N, 4, 4], got {list(arr.shape)}")
    return arr[:, :3, :4]


def viewing_directions(poses: Any) -> np.ndarray:
    """Unit viewing directions ``[N, 3]`` (the camera's -z axis in the world)."""
    p = _poses(poses, "poses")
    d = -p[:, :, 2]  # [N, 3]
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def pose_costs(
    query: Any,
    candidates: Any,
    angle_weight: float = DEFAULT_ANGLE_WEIGHT,
    metres_per_scene_unit: float = 1.0,
) -> np.ndarray:
    """Cost of every candidate as a reference for one query pose: metres plus weighted radians.

    Args:
        query: ``[3, 4]`` camera-to-world pose.
        candidates: ``[N, 3, 4]`` camera-to-world poses.
        angle_weight: Metres (or scene units) per radian of viewing-direction difference.
        metres_per_scene_unit: Converts centre distances to metres (1 keeps scene units).

    Returns:
        ``[N]`` costs (lower is nearer).
    """
    q = _poses(query, "query")
    c = _poses(candidates, "candidates")
    if q.shape[0] != 1:
        raise ValueError(f"query must be one pose, got {q.shape[0]}")
    if not (np.isfinite(angle_weight) and angle_weight >= 0):
        raise ValueError(f"angle_weight must be a finite number >= 0, got {angle_weight}")
    if not (np.isfinite(metres_per_scene_unit) and metres_per_scene_unit > 0):
        raise ValueError(f"metres_per_scene_unit must be positive, got {metres_per_scene_unit}")
    dist = np.linalg.norm(c[:, :, 3] - q[0, :, 3], axis=1) * metres_per_scene_unit  # [N]
    cos = np.clip(viewing_directions(c) @ viewing_directions(q)[0], -1.0, 1.0)  # [N]
    return dist + angle_weight * np.arccos(cos)


def nearest_references(
    query: Any,
    candidates: Any,
    count: int,
    allowed: Optional[np.ndarray] = None,
    angle_weight: float = DEFAULT_ANGLE_WEIGHT,
    metres_per_scene_unit: float = 1.0,
) -> List[int]:
    """Indices of the ``count`` allowed candidates with the lowest :func:`pose_costs`, nearest first.

    Args:
        query: ``[3, 4]`` pose of the view being fixed.
        candidates: ``[N, 3, 4]`` poses of the training images.
        count: How many references (fewer when fewer are allowed).
        allowed: ``[N]`` bool mask of usable candidates (e.g. not the target itself, same split).
        angle_weight: See :data:`DEFAULT_ANGLE_WEIGHT`.
        metres_per_scene_unit: Converts centre distances to metres.

    Ties go to the lowest index, so the choice is deterministic.
    """
    costs = pose_costs(query, candidates, angle_weight, metres_per_scene_unit)  # [N]
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != costs.shape:
            raise ValueError(f"allowed must have shape {list(costs.shape)}, got {list(allowed.shape)}")
        costs = np.where(allowed, costs, np.inf)
    order = np.argsort(costs, kind="stable")[: max(0, int(count))]
    return [int(i) for i in order if np.isfinite(costs[i])]


def nearest_reference(
    query: Any,
    candidates: Any,
    allowed: Optional[np.ndarray] = None,
    angle_weight: float = DEFAULT_ANGLE_WEIGHT,
    metres_per_scene_unit: float = 1.0,
) -> Optional[int]:
    """Index of the nearest allowed candidate (:func:`nearest_references`), or ``None`` if none is allowed."""
    found = nearest_references(query, candidates, 1, allowed, angle_weight, metres_per_scene_unit)
    return found[0] if found else None
