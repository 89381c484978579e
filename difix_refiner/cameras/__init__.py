"""Shifted driving trajectories in metres, nerfstudio camera paths, and the shift commands.

Poses follow nerfstudio: camera-to-world ``[N, 3, 4]``, OpenGL camera axes (x right, y up, z back),
scene units. ``metres_per_scene_unit`` converts to metres. **Positive offsets move cameras to the
vehicle's left.**

Modules:

- ``trajectory``: up estimation, direction of travel, lateral axes, shifting (also for rigs).
- ``stepping``: progressive stepping of poses toward targets (Difix3D style).
- ``camera_path``: nerfstudio camera-path JSON.
- ``run_data``: reading a trained run's recorded cameras and scale; input checks.
- ``shift_command`` / ``render_command``: the ``shift-path``, ``render-shifted`` and ``render-recorded``
  commands (``--fix``: the fixer on the final renders).
- ``atomic``, ``video``, ``contact_sheet``: output helpers.
"""

from difix_refiner.cameras.camera_path import camera_path_dict, vertical_fov_degrees, write_camera_path
from difix_refiner.cameras.render_command import RenderRecordedCommand, RenderShiftedCommand
from difix_refiner.cameras.run_data import InputError
from difix_refiner.cameras.shift_command import ShiftPathCommand
from difix_refiner.cameras.stepping import progressive_path, step_toward
from difix_refiner.cameras.trajectory import (
    VehicleAxes,
    as_pose_array,
    estimate_up,
    rig_axes,
    road_yaw_angles,
    shift_poses,
    trajectory_axes,
    travel_directions,
    vehicle_axes,
)

__all__ = [
    "InputError",
    "RenderRecordedCommand",
    "RenderShiftedCommand",
    "ShiftPathCommand",
    "VehicleAxes",
    "as_pose_array",
    "camera_path_dict",
    "estimate_up",
    "progressive_path",
    "rig_axes",
    "road_yaw_angles",
    "shift_poses",
    "step_toward",
    "trajectory_axes",
    "travel_directions",
    "vehicle_axes",
    "vertical_fov_degrees",
    "write_camera_path",
]
