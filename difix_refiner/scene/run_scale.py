"""The scene scale a run was trained with, for the commands that read a finished run.

``ns-train difix-refiner`` on a dataparser without a metric scale (nerfstudio-data, instant-ngp-data,
colmap) needs ``--pipeline.refine.metres-per-scene-unit``; the value is saved in the run's config.yml.
``shift-path`` and ``render-shifted`` take it from there unless ``--metres-per-scene-unit``
is given, so the offsets mean the same metres as during training.
"""

from __future__ import annotations

from typing import Any, Optional


def trained_metres_per_scene_unit(config: Any) -> Optional[float]:
    """``pipeline.refine.metres_per_scene_unit`` of a run's ``TrainerConfig`` (None when unset or absent)."""
    refine = getattr(getattr(config, "pipeline", None), "refine", None)
    value = getattr(refine, "metres_per_scene_unit", None)
    return None if value is None else float(value)


def run_metres_per_scene_unit(config: Any, given: Optional[float]) -> Optional[float]:
    """The scale to use: ``given`` (the command's option), else the one the run trained with, else None.

    None leaves the choice to the dataparser's own ``metres_per_scene_unit`` (pandaset-data), and to an
    error that says how to measure it when there is none.
    """
    return given if given is not None else trained_metres_per_scene_unit(config)
