"""The cycle strategy (pandaset-data only: it shifts in metres and needs LiDAR).

The run trained on the recorded path renders the path shifted sideways (``--cycle-offsets``, metres);
a second run is trained on those renders only (written as a PandaSet folder by
:mod:`difix_refiner.pairs.pandaset_writer`); it renders the recorded path back against the photos.

The second run lives in a scene frame of its own (nerfstudio centres every run on its cameras); poses
are mapped between the two frames exactly through the world frame with both runs' saved dataparser
transforms, and the mapping is checked against the second run's own cameras before anything is
rendered. The references are the first run's photos (the second run trained on renders only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.cameras.scene_frame import scene_to_world, world_to_scene
from difix_refiner.core.errors import InputError
from difix_refiner.pairs.collector import PairCollector
from difix_refiner.pairs.pandaset_writer import write_pandaset_folder
from difix_refiner.pairs.runs import RunTrainer
from difix_refiner.pairs.views import RunViews, View, camera_record, stack_cameras
from difix_refiner.scene import run_pipeline
from difix_refiner.scene.run_pipeline import (
    cameras_with_poses,
    checkpoint_steps,
    load_checkpoint,
)


def cycle_label(offset: float) -> str:
    """Label of the pairs (and name of the second run) of one offset, e.g. ``cycle+2m``."""
    return f"cycle{offset:+g}m"


@dataclass
class ShiftedDataset:
    """The first run's renders along one shifted path, written for the second run to train on."""

    offset: float
    """Lateral offset in metres (positive: the vehicle's left)."""
    folder: Path
    """The PandaSet folder of the renders."""
    recorded: List[View]
    """The first run's views of the recorded path, in the order of ``shifted_scene_poses``."""
    shifted_scene_poses: np.ndarray
    """``[N, 3, 4]`` the shifted poses in the first run's scene frame."""
    eval_camera: Optional[str]
    """The folder's held-out copy of a camera (pandaset-data needs an eval split)."""


def check_can_shift(data: Path, cameras: Sequence[str], frames: Sequence[int]) -> None:
    """The lateral axis needs motion: check on the recorded (metric) poses before any training.

    Raises:
        InputError: the rig does not move over ``frames``, so "sideways" is undefined.
    """
    from difix_refiner.cameras.trajectory import rig_axes
    from difix_refiner.data.pandaset import load_camera

    cams = [load_camera(data, c, frames, verify_images=False) for c in cameras]
    try:
        rig_axes(
            np.concatenate([c.c2w_opengl[:, :3, :4] for c in cams]),
            np.concatenate([c.frame_indices for c in cams]),
            1.0,  # PandaSet poses are in metres
            camera_names=[c.name for c in cams for _ in c.frame_indices],
        )
    except ValueError as exc:
        raise InputError(f"cycle cannot shift frames [{frames[0]}, {frames[-1] + 1}) sideways: {exc}") from exc


def render_shifted_datasets(
    progress: Any,
    console: Any,
    pipeline: Any,
    views: RunViews,
    *,
    cameras: Sequence[str],
    frames: Sequence[int],
    offsets: Sequence[float],
    data: Path,
    runs_dir: Path,
    suffix: str = "",
) -> List[ShiftedDataset]:
    """Render the first run along the recorded path of ``cameras`` shifted by each offset; write the datasets.

    ``suffix`` ends the datasets' folder names (one set per resolution and training length).
    """
    from difix_refiner.cameras.trajectory import rig_axes, shift_poses

    recorded = sorted((v for v in views.views if v.camera in cameras), key=lambda v: (v.camera, v.frame))
    recorded_frames = sorted({v.frame for v in recorded})
    if recorded_frames != list(frames):
        raise RuntimeError("cycle: the recorded cameras do not cover every frame of the range")
    poses = np.stack([v.pose for v in recorded])  # [N, 3, 4]
    mpsu = views.metres_per_scene_unit
    axes = rig_axes(poses, [v.frame for v in recorded], mpsu, camera_names=[v.camera for v in recorded])
    datasets = []
    for offset in offsets:
        label = cycle_label(offset)
        shifted = shift_poses(poses, offset, mpsu, axes=axes)  # [N, 3, 4] scene units
        cams = cameras_with_poses(stack_cameras(recorded), shifted)
        task = progress.add_task(f"render {label} shifted path", total=len(recorded))
        per_camera: Dict[str, Dict[str, Any]] = {}
        world = scene_to_world(shifted, views.dataparser_transform, views.dataparser_scale)  # [N, 3, 4] metres
        for i, v in enumerate(recorded):
            spec = per_camera.setdefault(
                v.camera,
                {"images": [], "camera_to_world": [], **{k: float(getattr(v.cameras, k)[0, 0]) for k in ("fx", "fy", "cx", "cy")}},
            )
            spec["images"].append(run_pipeline.render_camera(pipeline, cams[i : i + 1]).rgb)
            spec["camera_to_world"].append(world[i])
            progress.advance(task)
        for spec in per_camera.values():
            spec["camera_to_world"] = np.stack(spec["camera_to_world"])
        folder = runs_dir / f"{label}{suffix}-data"
        held = (pipeline.datamanager.train_dataparser_outputs.metadata.get("lidar_sweep_split") or {}).get("eval", [])
        info = write_pandaset_folder(folder, data, recorded_frames, per_camera, eval_copy_of=cameras[0], skip_sweeps=held)
        console.log(f"{label}: shifted renders written as a pandaset-data folder: {folder}")
        datasets.append(ShiftedDataset(offset, folder, recorded, shifted, info["eval_camera"]))
    return datasets


def render_cycle(
    trainer: RunTrainer,
    collector: PairCollector,
    progress: Any,
    base: RunViews,
    datasets: Sequence[ShiftedDataset],
    cameras: Sequence[str],
    suffix: str = "",
) -> None:
    """Train a second run on each shifted dataset; render the recorded path with it.

    ``suffix`` ends the second runs' names (the collector adds it to the labels itself).
    """
    for dataset in datasets:
        label = cycle_label(dataset.offset)
        args = trainer.pandaset_args(
            dataset.folder, cameras, 0, None, downscale_factor=1, eval_mode="cross-camera",
            eval_cameras=[dataset.eval_camera], auto_scale_poses="False", scale_factor=repr(base.dataparser_scale),
        )  # fmt: skip
        run = trainer.train(label + suffix, "pandaset-data", args, trainer.iterations, progress)
        start = time.perf_counter()
        config, pipeline = run_pipeline.load_pipeline(run.config, device=trainer.device, step=False)
        outputs = pipeline.datamanager.train_dataparser_outputs
        b_transform, b_scale = outputs.dataparser_transform.double().numpy(), float(outputs.dataparser_scale)
        check_cycle_frame(outputs, dataset.recorded, dataset.shifted_scene_poses, base, b_transform, b_scale)
        final = checkpoint_steps(config)[-1]
        load_checkpoint(config, pipeline, final)

        def cameras_for(view: View) -> Tuple[Any, Dict[str, Any]]:
            world = scene_to_world(view.pose[None], base.dataparser_transform, base.dataparser_scale)
            in_b = world_to_scene(world, b_transform, b_scale)  # [1, 3, 4] in the second run's frame
            cams = cameras_with_poses(view.cameras, in_b)
            # Record the pose the second run rendered, mapped back into the first run's frame.
            back = world_to_scene(scene_to_world(cams.camera_to_worlds.double().numpy(), b_transform, b_scale),
                                  base.dataparser_transform, base.dataparser_scale)  # fmt: skip
            return cams, camera_record(cams, back[0])

        collector.render_views(progress, f"render {label}", pipeline, dataset.recorded, base, label, "cycle", run.name, final, cameras_for)
        trainer.timings[f"render {run.name}"] = time.perf_counter() - start
        del pipeline  # free it before the next offset's run loads


def check_cycle_frame(
    outputs: Any, recorded: List[View], shifted: np.ndarray, base: RunViews, b_transform: np.ndarray, b_scale: float
) -> None:
    """The second run's cameras, mapped into the first run's frame, must be the shifted poses."""
    names = [str(n) for n in outputs.metadata["camera_names"]]
    frames = [int(f) for f in outputs.metadata["frame_indices"]]
    b_poses = outputs.cameras.camera_to_worlds.double().numpy()  # [M, 3, 4] second run's frame
    in_a = world_to_scene(scene_to_world(b_poses, b_transform, b_scale), base.dataparser_transform, base.dataparser_scale)
    first = min(v.frame for v in recorded)
    expected = {(v.camera, v.frame - first): shifted[i] for i, v in enumerate(recorded)}
    worst = 0.0
    for j, key in enumerate(zip(names, frames)):
        if key not in expected:
            raise RuntimeError(f"cycle: the second run has an unexpected image {key}")
        worst = max(worst, float(np.abs(in_a[j] - expected[key]).max()))
    if worst > 1e-4:
        raise RuntimeError(f"cycle: the second run's cameras are off by {worst:.2e} scene units from the shifted poses")
