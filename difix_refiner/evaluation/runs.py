"""A trained run loaded for evaluation, and which of its views are evaluated.

- :func:`load_run`: the pipeline (through :func:`~difix_refiner.scene.run_pipeline.load_pipeline`) plus
  what the evaluation needs from its pandaset-data dataparser (:class:`LoadedRun`).
- :func:`heldout_views` / :func:`cross_camera_views`: the held-out frames and the never-trained cameras.
- :func:`pandaset_cameras`: cameras and photos of any PandaSet camera, in the run's scene frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

from difix_refiner.core.errors import InputError
from difix_refiner.evaluation import lidar_metrics as lm
from difix_refiner.scene.run_pipeline import load_pipeline, training_cameras
from difix_refiner.scene.trained_run import load_run_config, recorded_images


@dataclass
class LoadedRun:
    """A trained pipeline plus what the evaluation needs from its dataparser."""

    config_path: Path
    """The run's ``config.yml``."""
    config: Any
    """Its ``TrainerConfig`` (as loaded, with the data folder used)."""
    pipeline: Any
    """The trained pipeline, in eval mode, latest checkpoint loaded."""
    recorded: Any
    """``RecordedImages`` of the training split."""
    data: Path
    """The run's PandaSet folder."""
    trained: Set[Tuple[str, int]]
    """(camera name, frame index) of every training image."""
    train_paths: List[Path]
    """Image file of every training image (same order as ``recorded``)."""
    res_scale: float
    """The datamanager's camera_res_scale_factor."""


def load_run(config_path: Path, data: Optional[Path] = None, seed_points: bool = False) -> LoadedRun:
    """Load a trained ``pandaset-data`` run (its latest checkpoint included) for evaluation.

    Args:
        config_path: The run's ``config.yml``.
        data: The run's PandaSet folder, if the one saved in its config is not valid from here.
        seed_points: Keep the run's seed points (training sweeps only): a hint fixer's LiDAR hints
            (:func:`~difix_refiner.distillation.pseudo_view_fidelity.fixer_hint_cloud`) are rendered from them.
    """
    from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig

    config_path = Path(config_path)
    dm = load_run_config(config_path).pipeline.datamanager
    if not isinstance(dm.dataparser, PandasetDataParserConfig):
        raise InputError(
            f"{config_path} was trained with the {type(dm.dataparser).__name__} dataparser; eval needs a "
            "pandaset-data run (it reads cameras and LiDAR from the PandaSet folder)"
        )
    folder = Path(data) if data is not None else Path(dm.data if getattr(dm, "data", None) is not None else dm.dataparser.data)
    if not folder.is_dir():
        raise InputError(f"the run's PandaSet folder {folder} does not exist from here; pass --data PATH")
    config, pipeline = load_pipeline(config_path, data=folder, seed_points=seed_points)
    outputs = pipeline.datamanager.train_dataparser_outputs
    recorded = recorded_images(outputs, training_cameras(pipeline))
    names = recorded.camera_names or []
    return LoadedRun(
        config_path=config_path,
        config=config,
        pipeline=pipeline,
        recorded=recorded,
        data=folder,
        trained={(n, int(f)) for n, f in zip(names, recorded.frame_indices.tolist())},
        train_paths=[Path(p) for p in outputs.image_filenames],
        res_scale=float(getattr(dm, "camera_res_scale_factor", 1.0)),
    )


def run_frame_range(dp_config: Any, data: Path) -> np.ndarray:
    """The frame indices a pandaset-data run used (its frame_start / frame_end over the first camera)."""
    from difix_refiner.data.pandaset import list_frames

    n = len(list_frames(Path(data) / "camera" / dp_config.cameras[0]))
    end = n if dp_config.frame_end is None else min(int(dp_config.frame_end), n)
    return np.arange(int(dp_config.frame_start), end)


def untrained_frames(camera: str, frames: np.ndarray, trained: Set[Tuple[str, int]]) -> Tuple[np.ndarray, int]:
    """Drop frames of ``camera`` that the run trained on. Returns (kept frames, number dropped)."""
    keep = np.array([(camera, int(f)) not in trained for f in frames], dtype=bool)
    return frames[keep], int((~keep).sum())


def heldout_views(dp_config: Any, frames: np.ndarray, trained: Set[Tuple[str, int]], stride: int = 1) -> Tuple[List[Tuple[str, np.ndarray]], List[str]]:
    """Every ``eval_interval``-th frame of each training camera, minus anything trained on.

    Returns ``([(camera, frames)], warnings)``.
    """
    held = frames[(frames - int(dp_config.frame_start)) % int(dp_config.eval_interval) == 0]
    return _views_not_trained_on(
        {name: held for name in dp_config.cameras}, trained, stride,
        lambda name, dropped: f"{name}: {dropped} of the {len(held)} every-{dp_config.eval_interval}th frames were trained on and are not evaluated",
    )  # fmt: skip


def cross_camera_views(
    dp_config: Any, frames: np.ndarray, trained: Set[Tuple[str, int]], data: Path, stride: int = 1
) -> Tuple[List[Tuple[str, np.ndarray]], List[str]]:
    """All frames of the run's ``eval_cameras`` that it did not train on. Returns ``([(camera, frames)], warnings)``."""
    for name in dp_config.eval_cameras:
        if not (Path(data) / "camera" / name).is_dir():
            raise InputError(f"unknown camera {name!r} in eval_cameras: {Path(data) / 'camera' / name} does not exist")
    return _views_not_trained_on(
        {name: frames for name in dp_config.eval_cameras}, trained, stride,
        lambda name, dropped: f"{name}: the run trained on {dropped} of its frames; those are not evaluated as cross-camera views",
    )  # fmt: skip


def _views_not_trained_on(
    frames_per_camera: Dict[str, np.ndarray], trained: Set[Tuple[str, int]], stride: int, note: Any
) -> Tuple[List[Tuple[str, np.ndarray]], List[str]]:
    """Every ``stride``-th frame of each camera that the run did not train on, and a note per camera that lost some."""
    views, notes = [], []
    for name, frames in frames_per_camera.items():
        kept, dropped = untrained_frames(name, frames, trained)
        if dropped:
            notes.append(note(name, dropped))
        if len(kept[::stride]):
            views.append((name, kept[::stride]))
    return views, notes


def pandaset_cameras(run: LoadedRun, name: str, frames: np.ndarray) -> Tuple[Any, List[Path]]:
    """nerfstudio ``Cameras`` and photo paths of one PandaSet camera, through the run's dataparser transform.

    Intrinsics and images get the run's downscale factor (the dataparser's cached copies) and the
    datamanager's camera_res_scale_factor, so they match how the model saw its training images.
    """
    import torch
    from nerfstudio.cameras.cameras import Cameras, CameraType

    from difix_refiner.data.pandaset import load_camera
    from difix_refiner.data.pandaset_dataparser import downscaled_copy

    dp = run.config.pipeline.datamanager.dataparser
    cam = load_camera(run.data, name, frames, verify_images=False)
    transform = run.recorded.dataparser_transform  # [3, 4]
    scale = run.recorded.dataparser_scale
    c2w = cam.c2w_opengl  # [F, 4, 4] world
    rot_t, t = transform[:, :3], transform[:, 3]
    scene = np.zeros((len(frames), 3, 4))
    scene[:, :, :3] = rot_t @ c2w[:, :3, :3]
    scene[:, :, 3] = scale * (c2w[:, :3, 3] @ rot_t.T + t)
    d = int(dp.downscale_factor)
    n = len(frames)

    def col(value: float) -> torch.Tensor:
        return torch.full((n, 1), float(value))

    cameras = Cameras(
        camera_to_worlds=torch.from_numpy(scene).float(),
        fx=col(cam.fx / d), fy=col(cam.fy / d), cx=col(cam.cx / d), cy=col(cam.cy / d),
        width=col(cam.width // d).long(), height=col(cam.height // d).long(),
        camera_type=CameraType.PERSPECTIVE,
    )  # fmt: skip
    if run.res_scale != 1.0:
        cameras.rescale_output_resolution(run.res_scale)
    paths = [downscaled_copy(p, d) if d > 1 else p for p in cam.image_paths]
    return cameras, paths


def camera_matrix(cameras: Any, i: int) -> Tuple[np.ndarray, int, int]:
    """``K [3, 3]``, width and height of camera ``i`` of a ``Cameras`` batch."""
    fx, fy = float(cameras.fx[i]), float(cameras.fy[i])
    cx, cy = float(cameras.cx[i]), float(cameras.cy[i])
    return lm.intrinsics_matrix(fx, fy, cx, cy), int(cameras.width[i]), int(cameras.height[i])
