"""Lateral axes of a driving trajectory and poses shifted sideways by metres.

Conventions (nerfstudio's):

- Poses are camera-to-world matrices ``[N, 3, 4]`` (``[N, 4, 4]`` is accepted) with OpenGL camera
  axes: x right, y up, z back. They live in *scene units*, i.e. after the dataparser applied its
  transform and scale: ``p_scene = dataparser_scale * (T @ [p_world; 1])``.
- ``metres_per_scene_unit`` converts lengths: ``metres = scene_units * metres_per_scene_unit``. For a
  metric world it is ``1 / dataparser_scale``.

Vehicle axes, per recorded frame:

- ``up``: one unit vector for the whole drive, estimated from the cameras' up axes (mean over all
  given cameras, so a rig of cameras looking in different directions still averages to the vertical).
- ``forward``: the horizontal direction of travel. It is taken from a chord of the trajectory that
  spans about ``window_m`` metres of *displacement* around the frame (half behind, half ahead), so
  frames where the car stands still or creeps borrow the direction of the nearest real motion, and
  millimetre pose noise cannot turn it.
- ``left = up x forward``: horizontal, perpendicular to the direction of travel, pointing to the
  vehicle's left.

Sign convention: a **positive offset moves the cameras to the vehicle's left**, a negative one to
its right. The shift is a pure translation by ``offset_m / metres_per_scene_unit`` scene units along
``left``, so shifted camera centres lie exactly ``|offset_m|`` metres from the recorded ones. Headings
stay unchanged (a parallel lane change) unless ``yaw_toward_road`` is set.

All functions accept numpy arrays or torch tensors and return float64 numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

DEFAULT_WINDOW_M = 2.0
"""Default displacement (metres) spanned by the chord that defines the direction of travel."""

DEFAULT_LOOK_AHEAD_M = 20.0
"""Default distance (metres) along the recorded path that yawed cameras look at."""

MIN_TRAVEL_M = 0.1
"""A trajectory whose horizontal extent is below this (metres) has no usable direction of travel."""


def as_pose_array(poses: Any, name: str = "camera_to_worlds", min_poses: int = 2) -> np.ndarray:
    """Validate camera-to-world poses and return them as a float64 array ``[N, 3, 4]``.

    Args:
        poses: ``[N, 3, 4]`` or ``[N, 4, 4]`` camera-to-world matrices (numpy, torch or nested lists).
        name: Name used in error messages.
        min_poses: Minimum number of poses required.

    Raises:
        ValueError: wrong shape, too few poses, non-finite values or non-orthonormal rotations.
    """
    if hasattr(poses, "detach"):  # torch tensor
        poses = poses.detach().cpu().double().numpy()
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"{name} must have shape [N, 3, 4] or [N, 4, 4], got {list(arr.shape)}")
    arr = arr[:, :3, :4].copy()  # [N, 3, 4]
    if arr.shape[0] < min_poses:
        raise ValueError(f"{name} needs at least {min_poses} poses, got {arr.shape[0]}")
    finite = np.isfinite(arr).all(axis=(1, 2))  # [N]
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name} has non-finite values (NaN or inf) in poses {bad[:10].tolist()}")
    rot = arr[:, :, :3]  # [N, 3, 3]
    err = np.abs(rot.transpose(0, 2, 1) @ rot - np.eye(3)).max(axis=(1, 2))  # [N]
    if (err > 1e-3).any() or (np.linalg.det(rot) < 0).any():
        bad = np.flatnonzero((err > 1e-3) | (np.linalg.det(rot) < 0))
        raise ValueError(f"{name} has rotations that are not proper orthonormal in poses {bad[:10].tolist()}")
    return arr


def _unit(v: np.ndarray, name: str = "vector") -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"{name} must be a finite non-zero vector, got {v.tolist()}")
    return v / n


def _check_scale(metres_per_scene_unit: float) -> float:
    m = float(metres_per_scene_unit)
    if not np.isfinite(m) or m <= 0:
        raise ValueError(f"metres_per_scene_unit must be a positive finite number, got {metres_per_scene_unit}")
    return m


def estimate_up(camera_to_worlds: Any) -> np.ndarray:
    """Estimate the world's up direction from the cameras' up axes.

    The OpenGL camera y axis points up in the image; for cameras mounted roughly level on a car,
    its mean over all poses (of every rig camera) is the vertical. Camera pitch tilts it toward the
    direction of travel only, which does not change the lateral axis (``up x forward``).

    Args:
        camera_to_worlds: ``[N, 3, 4]`` poses, OpenGL camera axes.

    Returns:
        ``[3]`` unit up vector in scene coordinates.
    """
    poses = as_pose_array(camera_to_worlds, min_poses=1)
    ups = poses[:, :, 1]  # [N, 3] camera y axes in world coordinates
    mean = ups.mean(axis=0)  # [3]
    norm = float(np.linalg.norm(mean))
    if norm < 0.5:
        raise ValueError(
            "the cameras' up axes disagree too much to estimate the vertical "
            f"(mean up-axis length {norm:.2f}); pass `up` explicitly"
        )
    return mean / norm


@dataclass(frozen=True)
class VehicleAxes:
    """Per-frame vehicle axes of a recorded drive, in scene coordinates.

    ``K`` is the number of recorded frames (time steps), ``N`` the number of images (poses) they
    serve; a rig has several images per frame. ``index`` maps each image to its frame row.
    """

    up: np.ndarray
    """[3] unit vertical."""
    centres: np.ndarray
    """[K, 3] reference (vehicle) position per frame: a reference camera's centre or the rig mean."""
    forward: np.ndarray
    """[K, 3] unit horizontal direction of travel."""
    left: np.ndarray
    """[K, 3] unit horizontal lateral axis, ``up x forward`` (the vehicle's left)."""
    arc_length: np.ndarray
    """[K] cumulative horizontal distance travelled, scene units."""
    index: np.ndarray
    """[N] frame row of each image."""
    metres_per_scene_unit: float
    """Metres per scene unit used for the window (and required by ``shift_poses``)."""

    def left_per_image(self) -> np.ndarray:
        """``[N, 3]`` lateral axis of each image."""
        return self.left[self.index]

    def forward_per_image(self) -> np.ndarray:
        """``[N, 3]`` direction of travel of each image."""
        return self.forward[self.index]


def _horizontal(v: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Remove the component along ``up`` from vectors ``[..., 3]``."""
    return v - (v @ up)[..., None] * up


def _far_neighbour(ch: np.ndarray, i: int, half: float, direction: int) -> Optional[int]:
    """Nearest frame before (``direction=-1``) or after (``+1``) ``i`` at least ``half`` away from it."""
    if direction > 0:
        far = np.flatnonzero(np.linalg.norm(ch[i + 1 :] - ch[i], axis=1) >= half)
        return int(far[0]) + i + 1 if far.size else None
    far = np.flatnonzero(np.linalg.norm(ch[:i] - ch[i], axis=1) >= half)
    return int(far[-1]) if far.size else None


def _signed_angle(a: np.ndarray, b: np.ndarray, up: np.ndarray) -> float:
    """Angle (radians) from ``a`` to ``b`` about ``up``, right-handed."""
    return float(np.arctan2(np.cross(a, b) @ up, a @ b))


def _rotate_about_up(v: np.ndarray, up: np.ndarray, angle: float) -> np.ndarray:
    """Rotate horizontal ``v`` by ``angle`` about ``up``."""
    return np.cos(angle) * v + np.sin(angle) * np.cross(up, v)


def _one_sided_tangent(ch: np.ndarray, i: int, k: int, k2: Optional[int], up: np.ndarray) -> np.ndarray:
    """Tangent at the end of a drive from the chord ``i -> k`` (``k`` may lie before ``i``).

    A chord of a curve points half its turning angle away from the tangent at its end point. The
    next chord ``k -> k2`` (further from ``i``) measures the turning rate, which lets us remove
    that bias (exact on a circle); without it, the raw chord direction is used.
    """
    sign = 1.0 if k > i else -1.0
    first = sign * (ch[k] - ch[i])  # oriented along travel
    d1 = first / np.linalg.norm(first)
    if k2 is None:
        return d1
    second = sign * (ch[k2] - ch[k])
    d2 = second / np.linalg.norm(second)
    turn = _signed_angle(d1, d2, up)
    if abs(turn) > np.deg2rad(45.0):  # not a smooth curve (e.g. a U-turn): do not extrapolate
        return d1
    a1, a2 = np.linalg.norm(first), np.linalg.norm(second)
    # The heading changes by `turn` over (a1 + a2) / 2 of travel between the chord midpoints, and
    # frame i lies a1 / 2 beyond the first midpoint, on the side away from the second chord.
    correction = -turn * a1 / (a1 + a2)
    tangent = _rotate_about_up(d1, up, correction)
    return tangent / np.linalg.norm(tangent)


def travel_directions(
    centres: Any, up: Any, metres_per_scene_unit: float, window_m: float = DEFAULT_WINDOW_M
) -> np.ndarray:
    """Horizontal unit direction of travel at each frame of an ordered trajectory.

    For frame ``i`` we take the latest earlier frame ``j`` and the earliest later frame ``k`` whose
    horizontal distance from frame ``i`` is at least ``window_m / 2``; the direction is the chord
    ``c_k - c_j``. At the ends of the drive only one side exists; the one-sided chord is corrected
    for the curvature measured by the next chord (see ``_one_sided_tangent``). The chord is the sum of the
    displacements over the window, so each frame is weighted by how far the car actually moved:
    a standing car contributes nothing and its frames inherit the direction of the motion that
    comes before or after. Frames with no such neighbour at all (a drive shorter than the window)
    use the drive's principal horizontal direction, oriented from start to end.

    Args:
        centres: ``[K, 3]`` ordered positions, scene units.
        up: ``[3]`` vertical.
        metres_per_scene_unit: Scene scale.
        window_m: Displacement in metres spanned by the chord.

    Returns:
        ``[K, 3]`` unit horizontal directions.
    """
    c = np.asarray(centres.detach().cpu().numpy() if hasattr(centres, "detach") else centres, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"centres must have shape [K, 3], got {list(c.shape)}")
    if c.shape[0] < 2:
        raise ValueError(f"a trajectory needs at least 2 frames, got {c.shape[0]}")
    if not np.isfinite(c).all():
        raise ValueError("centres contain non-finite values")
    up = _unit(up, "up")
    mpsu = _check_scale(metres_per_scene_unit)
    if not np.isfinite(window_m) or window_m <= 0:
        raise ValueError(f"window_m must be positive, got {window_m}")
    half = 0.5 * window_m / mpsu  # scene units

    ch = _horizontal(c, up)  # [K, 3]
    extent = np.linalg.norm(ch - ch[0], axis=1).max() * mpsu
    if extent < MIN_TRAVEL_M:
        raise ValueError(
            f"the trajectory moves only {extent:.3f} m horizontally; the direction of travel "
            f"(and so the lateral axis) is undefined below {MIN_TRAVEL_M} m"
        )

    num = c.shape[0]
    forward = np.zeros((num, 3))
    valid = np.zeros(num, dtype=bool)
    for i in range(num):
        j = _far_neighbour(ch, i, half, -1)
        k = _far_neighbour(ch, i, half, +1)
        if j is not None and k is not None:
            chord = ch[k] - ch[j]
            # A two-sided chord can collapse where the path doubles back; then use one side.
            if np.linalg.norm(chord) >= 0.5 * half:
                forward[i] = chord / np.linalg.norm(chord)
                valid[i] = True
                continue
        if k is not None:
            forward[i] = _one_sided_tangent(ch, i, k, _far_neighbour(ch, k, half, +1), up)
            valid[i] = True
        elif j is not None:
            forward[i] = _one_sided_tangent(ch, i, j, _far_neighbour(ch, j, half, -1), up)
            valid[i] = True

    if not valid.all():
        # The drive is shorter than the window around these frames: use its principal direction.
        centred = ch - ch.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        principal = _horizontal(vt[0], up)
        principal /= np.linalg.norm(principal)
        if principal @ (ch[-1] - ch[0]) < 0:
            principal = -principal
        forward[~valid] = principal
    return forward


def vehicle_axes(
    centres: Any,
    metres_per_scene_unit: float,
    up: Any,
    window_m: float = DEFAULT_WINDOW_M,
    index: Optional[np.ndarray] = None,
) -> VehicleAxes:
    """Vehicle axes along an ordered reference trajectory (one position per frame).

    Args:
        centres: ``[K, 3]`` ordered reference positions, scene units.
        metres_per_scene_unit: Scene scale.
        up: ``[3]`` vertical in scene coordinates.
        window_m: Displacement in metres spanned by the direction-of-travel chord.
        index: ``[N]`` frame row per image; defaults to one image per frame.
    """
    c = np.asarray(centres.detach().cpu().numpy() if hasattr(centres, "detach") else centres, dtype=np.float64)
    up = _unit(up, "up")
    forward = travel_directions(c, up, metres_per_scene_unit, window_m)  # [K, 3]
    left = np.cross(up, forward)  # [K, 3], unit since forward is horizontal and unit
    left /= np.linalg.norm(left, axis=1, keepdims=True)
    steps = np.linalg.norm(np.diff(_horizontal(c, up), axis=0), axis=1)  # [K-1]
    arc = np.concatenate([[0.0], np.cumsum(steps)])  # [K]
    if index is None:
        index = np.arange(c.shape[0])
    index = np.asarray(index, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= c.shape[0]):
        raise ValueError("index refers to frames outside the trajectory")
    return VehicleAxes(
        up=up,
        centres=c,
        forward=forward,
        left=left,
        arc_length=arc,
        index=index,
        metres_per_scene_unit=_check_scale(metres_per_scene_unit),
    )


def trajectory_axes(
    camera_to_worlds: Any,
    metres_per_scene_unit: float,
    up: Optional[Any] = None,
    window_m: float = DEFAULT_WINDOW_M,
) -> VehicleAxes:
    """Vehicle axes for the poses of one camera, already ordered in time.

    Args:
        camera_to_worlds: ``[N, 3, 4]`` ordered poses, OpenGL camera axes, scene units.
        metres_per_scene_unit: Scene scale.
        up: ``[3]`` vertical; estimated from the poses when ``None``.
        window_m: Displacement in metres spanned by the direction-of-travel chord.
    """
    poses = as_pose_array(camera_to_worlds)
    if up is None:
        up = estimate_up(poses)
    return vehicle_axes(poses[:, :, 3], metres_per_scene_unit, up, window_m)


def rig_axes(
    camera_to_worlds: Any,
    frame_indices: Sequence[int],
    metres_per_scene_unit: float,
    camera_names: Optional[Sequence[str]] = None,
    reference_camera: Optional[str] = None,
    up: Optional[Any] = None,
    window_m: float = DEFAULT_WINDOW_M,
) -> VehicleAxes:
    """Vehicle axes for the images of a multi-camera rig (any order).

    All cameras of a frame share the frame's axes, so a side camera moves with the vehicle, not
    along its own x axis. The vehicle position per frame is, in order of preference:
    ``reference_camera``'s centre (it must appear in every frame); ``front_camera``'s centre if that
    camera appears in every frame; the mean centre of the cameras that appear in every frame; the
    mean centre of whatever cameras a frame has.

    Args:
        camera_to_worlds: ``[N, 3, 4]`` poses, OpenGL camera axes, scene units.
        frame_indices: ``[N]`` time-step index of each image (orders the drive).
        metres_per_scene_unit: Scene scale.
        camera_names: ``[N]`` rig camera of each image; ``None`` means one camera.
        reference_camera: Camera whose trajectory defines the vehicle's motion.
        up: ``[3]`` vertical; estimated from all poses when ``None``.
        window_m: Displacement in metres spanned by the direction-of-travel chord.
    """
    poses = as_pose_array(camera_to_worlds)
    num = poses.shape[0]
    frames = np.asarray(frame_indices)
    if frames.shape != (num,):
        raise ValueError(f"frame_indices must have one entry per pose ({num}), got shape {list(frames.shape)}")
    if not np.issubdtype(frames.dtype, np.integer):
        raise ValueError("frame_indices must be integers")
    names = None if camera_names is None else [str(n) for n in camera_names]
    if names is not None and len(names) != num:
        raise ValueError(f"camera_names must have one entry per pose ({num}), got {len(names)}")

    unique_frames, index = np.unique(frames, return_inverse=True)  # [K], [N]
    num_frames = unique_frames.size
    if num_frames < 2:
        raise ValueError(f"a trajectory needs at least 2 frames, got {num_frames}")
    centres = poses[:, :, 3]  # [N, 3]

    if names is None:
        if num_frames != num:
            raise ValueError("several images share a frame index but no camera names tell them apart")
        ref = np.zeros((num_frames, 3))
        ref[index] = centres
    else:
        pairs = set(zip(names, frames.tolist()))
        if len(pairs) != num:
            raise ValueError("some (camera name, frame index) pairs occur more than once")
        known = sorted(set(names))
        coverage = {n: np.unique(index[[m == n for m in names]]).size for n in known}
        complete = [n for n in known if coverage[n] == num_frames]
        if reference_camera is not None:
            if reference_camera not in known:
                raise ValueError(f"unknown reference camera {reference_camera!r}; known cameras: {', '.join(known)}")
            if reference_camera not in complete:
                raise ValueError(
                    f"reference camera {reference_camera!r} is missing in "
                    f"{num_frames - coverage[reference_camera]} of {num_frames} frames"
                )
            use = [reference_camera]
        elif "front_camera" in complete:
            use = ["front_camera"]
        elif complete:
            use = complete
        else:
            use = known
        mask = np.array([n in use for n in names])
        sums = np.zeros((num_frames, 3))
        counts = np.zeros(num_frames)
        np.add.at(sums, index[mask], centres[mask])
        np.add.at(counts, index[mask], 1.0)
        ref = sums / counts[:, None]

    if up is None:
        up = estimate_up(poses)
    return vehicle_axes(ref, metres_per_scene_unit, up, window_m, index=index)


def _rotation_about(axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotations ``[K, 3, 3]`` by ``angles`` ``[K]`` (radians, right-handed) about unit ``axis``."""
    x, y, z = axis
    skew = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    return cos * np.eye(3) + sin * skew + (1.0 - cos) * np.outer(axis, axis)


def road_yaw_angles(axes: VehicleAxes, offset_m: float, look_ahead_m: float = DEFAULT_LOOK_AHEAD_M) -> np.ndarray:
    """Yaw (radians, about ``up``, positive = to the left) that turns a shifted camera toward the road.

    The target of frame ``k`` is the point of the recorded reference path ``look_ahead_m`` metres of
    horizontal travel ahead (beyond the end of the drive, the path is extended straight along the
    last direction of travel). The angle is the one between the direction of travel and the
    horizontal direction from the shifted vehicle position to that target; on a straight road it is
    ``-atan(offset_m / look_ahead_m)``, so a camera shifted left turns right toward the recorded lane.

    Returns:
        ``[K]`` yaw angle per frame.
    """
    if not np.isfinite(look_ahead_m) or look_ahead_m <= 0:
        raise ValueError(f"look_ahead_m must be positive, got {look_ahead_m}")
    mpsu = axes.metres_per_scene_unit
    up = axes.up
    ch = _horizontal(axes.centres, up)  # [K, 3]
    arc = axes.arc_length  # [K]
    target_s = arc + look_ahead_m / mpsu  # [K]
    targets = np.empty_like(ch)
    for r, s in enumerate(target_s):
        if s >= arc[-1]:
            targets[r] = ch[-1] + axes.forward[-1] * (s - arc[-1])
            continue
        hi = int(np.searchsorted(arc, s, side="right"))  # arc[hi-1] <= s < arc[hi]
        lo = hi - 1
        seg = arc[hi] - arc[lo]
        t = 0.0 if seg <= 0 else (s - arc[lo]) / seg
        targets[r] = ch[lo] + t * (ch[hi] - ch[lo])
    shifted = ch + (offset_m / mpsu) * axes.left  # [K, 3]
    view = _horizontal(targets - shifted, up)  # [K, 3]
    sin = np.einsum("kc,kc->k", np.cross(axes.forward, view), np.broadcast_to(up, view.shape))
    cos = np.einsum("kc,kc->k", axes.forward, view)
    return np.arctan2(sin, cos)


def shift_poses(
    camera_to_worlds: Any,
    offset_m: float,
    metres_per_scene_unit: float,
    *,
    axes: Optional[VehicleAxes] = None,
    yaw_toward_road: bool = False,
    look_ahead_m: float = DEFAULT_LOOK_AHEAD_M,
    window_m: float = DEFAULT_WINDOW_M,
) -> np.ndarray:
    """Shift poses sideways by ``offset_m`` metres; positive = to the vehicle's left.

    Each camera centre moves by ``offset_m / metres_per_scene_unit`` scene units along its frame's
    lateral axis, so it ends up exactly ``|offset_m|`` metres from the recorded centre in the real
    world. Rotations are unchanged (a parallel lane change) unless ``yaw_toward_road``: then every
    camera of a frame is turned about ``up`` (about its own centre) by ``road_yaw_angles`` so that
    it looks at the recorded path ``look_ahead_m`` metres ahead.

    Args:
        camera_to_worlds: ``[N, 3, 4]`` poses, OpenGL camera axes, scene units. Without ``axes``
            they must be one camera's poses in time order.
        offset_m: Lateral offset in metres, positive to the left.
        metres_per_scene_unit: Scene scale.
        axes: Precomputed axes (e.g. ``rig_axes`` for a rig), one ``index`` entry per pose.
        yaw_toward_road: Turn the cameras toward the recorded path ahead.
        look_ahead_m: Distance ahead for ``yaw_toward_road``.
        window_m: Direction-of-travel window when ``axes`` is computed here.

    Returns:
        ``[N, 3, 4]`` shifted poses (float64).
    """
    poses = as_pose_array(camera_to_worlds)
    mpsu = _check_scale(metres_per_scene_unit)
    offset = float(offset_m)
    if not np.isfinite(offset):
        raise ValueError(f"offset_m must be finite, got {offset_m}")
    if axes is None:
        axes = trajectory_axes(poses, mpsu, window_m=window_m)
    if axes.index.shape != (poses.shape[0],):
        raise ValueError(f"axes cover {axes.index.shape[0]} images but {poses.shape[0]} poses were given")
    if not np.isclose(axes.metres_per_scene_unit, mpsu, rtol=1e-9, atol=0.0):
        raise ValueError(
            f"axes were computed with metres_per_scene_unit={axes.metres_per_scene_unit}, not {mpsu}"
        )
    out = poses.copy()
    out[:, :, 3] += (offset / mpsu) * axes.left_per_image()  # [N, 3]
    if yaw_toward_road:
        yaw = _rotation_about(axes.up, road_yaw_angles(axes, offset, look_ahead_m))  # [K, 3, 3]
        out[:, :, :3] = yaw[axes.index] @ poses[:, :, :3]
    return out
