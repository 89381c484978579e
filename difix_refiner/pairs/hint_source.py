"""The LiDAR hints of make-pairs: one coloured cloud per job, rendered into every pair's camera.

The cloud is :func:`difix_refiner.data.lidar_hint.hint_cloud` of the *training* sweeps only: the sweeps
of the frames that make train pairs, minus any frame the caller also keeps out (``exclude_frames``, e.g.
a dataparser's evaluation sweeps). The test frames' sweeps never enter a hint, so a test pair's hint
holds only what the training drive measured. The points are coloured from the photos of the cameras
the reconstructions train on (``--cameras``), at training frames only: a cross-camera pair's hint never
holds a colour of its own target photo.

Each pair's hint is that cloud rendered into the camera of its input (pose, intrinsics, size), in world
metres: the view's pose is taken out of its run's scene frame with the run's dataparser transform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from difix_refiner.cameras.scene_frame import scene_to_world
from difix_refiner.core.errors import InputError
from difix_refiner.data.lidar_hint import (
    HintSettings,
    LidarHint,
    hint_cloud,
    opengl_to_opencv,
    render_lidar_hint,
)
from difix_refiner.pairs.frame_split import FrameSplit

DEFAULT_HINT_VOXEL_M = 0.1
"""Voxel size (metres) of the hint cloud: finer than the seed points', a hint should be dense."""


@dataclass
class ViewGeometry:
    """One view's camera in world metres: what a hint (or a moving-object mask) is rendered with."""

    c2w_world: np.ndarray
    """[3, 4] camera-to-world in the data's world frame (metres for PandaSet), OpenGL axes (nerfstudio's)."""
    K: np.ndarray
    """[3, 3] intrinsics at the view's size."""
    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""


def view_geometry(cameras: Any, dataparser_transform: np.ndarray, dataparser_scale: float) -> ViewGeometry:
    """The world-frame camera of a nerfstudio ``Cameras`` [1] given in a run's scene frame."""
    pose = cameras.camera_to_worlds[0].double().cpu().numpy()[None]  # [1, 3, 4] scene units
    world = scene_to_world(pose, dataparser_transform, dataparser_scale)[0]  # [3, 4]
    fx, fy, cx, cy = (float(getattr(cameras, k)[0, 0]) for k in ("fx", "fy", "cx", "cy"))
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return ViewGeometry(world, K, int(cameras.width[0, 0]), int(cameras.height[0, 0]))


@dataclass
class HintSource:
    """The coloured LiDAR points of one make-pairs job (world metres), and what they were made from."""

    points: np.ndarray
    """[N, 3] world points, metres."""
    colours: np.ndarray
    """[N, 3] uint8 colours from the training photos."""
    sweep_frames: List[int]
    """Frames whose sweeps made the points (train frames, minus the excluded ones)."""
    excluded_frames: List[int]
    """Frames whose sweeps were kept out (the test frames and ``exclude_frames``)."""
    colour_cameras: List[str]
    """Cameras whose training photos coloured the points."""
    settings: HintSettings = field(default_factory=HintSettings)
    """How points become hint pixels."""

    def render(self, geometry: ViewGeometry) -> LidarHint:
        """The hint of one view."""
        c2w = opengl_to_opencv(geometry.c2w_world)  # [3, 4] OpenCV axes, metres
        return render_lidar_hint(self.points, self.colours, geometry.K, c2w, geometry.width, geometry.height, self.settings)

    def record(self) -> Dict[str, Any]:
        """What the manifest says about the hints."""
        return {
            "points": int(len(self.points)),
            "sweep_frames": self.sweep_frames,
            "excluded_sweep_frames": self.excluded_frames,
            "coloured_from": self.colour_cameras,
        }


def hint_sweep_frames(frames: Sequence[int], split: FrameSplit, exclude_frames: Sequence[int] = ()) -> Tuple[List[int], List[int]]:
    """(frames whose sweeps may enter a hint, frames kept out): train frames minus ``exclude_frames``."""
    excluded = set(int(f) for f in exclude_frames)
    used = [int(f) for f in frames if split.split(int(f)) == "train" and int(f) not in excluded]
    kept_out = [int(f) for f in frames if int(f) not in used]
    return used, kept_out


def build_hint_source(
    data: Path,
    cameras: Sequence[str],
    frames: Sequence[int],
    split: FrameSplit,
    exclude_frames: Sequence[int] = (),
    voxel_size: float = DEFAULT_HINT_VOXEL_M,
) -> HintSource:
    """The hint cloud of a PandaSet folder: training sweeps, coloured from ``cameras``' training photos.

    Raises:
        InputError: no training frame has a LiDAR sweep.
    """
    from difix_refiner.data.pandaset import (
        load_camera,
        load_lidar_positions,
        load_lidar_sweeps,
    )

    used, kept_out = hint_sweep_frames(frames, split, exclude_frames)
    sweeps = load_lidar_sweeps(Path(data), used) if used else {}
    if not sweeps:
        raise InputError(
            f"no LiDAR sweep of the training frames in {Path(data) / 'lidar'} for the pairs' hints; "
            "pass --no-hints to make pairs without them"
        )
    photo_cameras = [load_camera(Path(data), name, used, verify_images=False) for name in cameras]
    points, colours = hint_cloud(sweeps, load_lidar_positions(Path(data)), photo_cameras, voxel_size=voxel_size)
    return HintSource(points, colours, sorted(sweeps), kept_out, list(cameras))
