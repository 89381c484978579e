"""Pose maths for shifted driving trajectories, in metres.

Poses follow nerfstudio: camera-to-world ``[N, 3, 4]``, OpenGL camera axes (x right, y up, z back),
scene units. ``metres_per_scene_unit`` converts to metres. **Positive offsets move cameras to the
vehicle's left.**

- ``trajectory``: up estimation, direction of travel, lateral axes, shifting (also for rigs).
- ``stepping``: progressive stepping of poses toward targets (Difix3D style).
- ``camera_path``: nerfstudio camera-path JSON.
- ``scene_frame``: scene <-> world (PandaSet metres) pose conversion.
- ``reference_views``: the one reference-view picker (nearest recorded view by pose).
"""
