"""Progressive camera stepping, the way Difix3D moves novel cameras toward their targets.

Instead of jumping from a recorded pose to a far novel pose, Difix3D advances the novel camera
a bounded distance at a time, refining the reconstruction in between. One step moves the camera
centre at most ``step_m`` metres along the straight line to the target and rotates it by the same
fraction of the remaining rotation (a slerp, i.e. along the geodesic). When the target is within
one step, the camera snaps to it. A target ``d`` metres away is therefore reached in exactly
``ceil(d / step_m)`` steps (a target at the same centre but another rotation in one step).
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

from difix_refiner.cameras.trajectory import as_pose_array

SNAP_TOLERANCE = 1e-9
"""Relative slack so that floating-point round-off does not add a spurious tiny final step."""


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_step(step_m: float, metres_per_scene_unit: float) -> Tuple[float, float]:
    step = float(step_m)
    mpsu = float(metres_per_scene_unit)
    if not np.isfinite(step) or step <= 0:
        raise ValueError(f"step_m must be a positive finite number, got {step_m}")
    if not np.isfinite(mpsu) or mpsu <= 0:
        raise ValueError(f"metres_per_scene_unit must be a positive finite number, got {metres_per_scene_unit}")
    return step, mpsu


def step_toward(
    poses: Any, targets: Any, step_m: float, metres_per_scene_unit: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Advance each pose one step toward its target.

    Args:
        poses: ``[N, 3, 4]`` (or one ``[3, 4]``) camera-to-world poses, scene units.
        targets: Target poses, same shape.
        step_m: Maximum camera-centre motion per step, metres.
        metres_per_scene_unit: Scene scale.

    Returns:
        ``(new_poses, reached)``: poses of the input's shape (float64) and a bool array ``[N]``
        (or a 0-d bool) telling which poses now equal their target.
    """
    step, mpsu = _check_step(step_m, metres_per_scene_unit)
    cur_in, tgt_in = _to_numpy(poses), _to_numpy(targets)
    single = cur_in.ndim == 2
    cur = as_pose_array(cur_in[None] if single else cur_in, "poses", min_poses=1)  # [N, 3, 4]
    tgt = as_pose_array(tgt_in[None] if tgt_in.ndim == 2 else tgt_in, "targets", min_poses=1)  # [N, 3, 4]
    if cur.shape != tgt.shape:
        raise ValueError(f"poses and targets differ in shape: {list(cur.shape)} vs {list(tgt.shape)}")

    delta = tgt[:, :, 3] - cur[:, :, 3]  # [N, 3]
    dist_m = np.linalg.norm(delta, axis=1) * mpsu  # [N]
    reached = dist_m <= step * (1.0 + SNAP_TOLERANCE)  # [N]
    frac = np.where(reached, 1.0, step / np.maximum(dist_m, 1e-300))  # [N]

    out = tgt.copy()
    move = ~reached
    if move.any():
        r_cur = cur[move, :, :3]  # [M, 3, 3]
        r_rel = tgt[move, :, :3] @ r_cur.transpose(0, 2, 1)  # [M, 3, 3] rotation still to do
        rotvec = Rotation.from_matrix(r_rel).as_rotvec()  # [M, 3]
        partial = Rotation.from_rotvec(rotvec * frac[move, None]).as_matrix()  # [M, 3, 3]
        out[move, :, :3] = partial @ r_cur
        out[move, :, 3] = cur[move, :, 3] + frac[move, None] * delta[move]
    if single:
        return out[0], reached[0]
    return out, reached


def progressive_path(start: Any, target: Any, step_m: float, metres_per_scene_unit: float) -> np.ndarray:
    """All poses visited while stepping from ``start`` to ``target``.

    Args:
        start: ``[3, 4]`` (or ``[4, 4]``) starting pose, scene units.
        target: Target pose.
        step_m: Maximum camera-centre motion per step, metres.
        metres_per_scene_unit: Scene scale.

    Returns:
        ``[S, 3, 4]`` poses after each step, the last one equal to ``target``: ``S = ceil(d / step_m)``
        for a centre distance ``d > 0`` metres; ``S = 1`` for a pure rotation; ``S = 0`` when
        ``start`` already equals ``target``.
    """
    step, mpsu = _check_step(step_m, metres_per_scene_unit)
    cur = as_pose_array(_to_numpy(start)[None], "start", min_poses=1)[0]  # [3, 4]
    tgt = as_pose_array(_to_numpy(target)[None], "target", min_poses=1)[0]  # [3, 4]
    if np.allclose(cur, tgt, rtol=0.0, atol=1e-12):
        return np.zeros((0, 3, 4))
    dist_m = float(np.linalg.norm(tgt[:, 3] - cur[:, 3])) * mpsu
    # Guard against an endless loop; the expected count plus slack for round-off.
    max_steps = math.ceil(dist_m / step) + 2
    visited = []
    for _ in range(max_steps):
        cur, reached = step_toward(cur, tgt, step, mpsu)
        visited.append(cur)
        if reached:
            return np.stack(visited)  # [S, 3, 4]
    raise RuntimeError("progressive stepping did not converge")  # unreachable by construction
