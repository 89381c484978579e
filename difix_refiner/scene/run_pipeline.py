"""The one way to load a trained run's pipeline and render cameras with it.

Used by ``render-shifted``/``render-recorded``, ``eval`` and ``make-pairs``. Loading follows
nerfstudio's ``eval_setup`` (the run's method's datamanager, ``test_mode="test"`` so the dataparser's
downscale factor and the training cameras are exactly those of training), with three choices made
explicit: the device, another data folder, and which checkpoint step (or none yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from difix_refiner.core.errors import InputError
from difix_refiner.scene.trained_run import load_run_config


def checkpoint_steps(config: Any) -> list:
    """Steps of the checkpoints a run has saved, ascending."""
    ckpt_dir = Path(config.get_checkpoint_dir())
    return sorted(int(p.stem.split("-")[1]) for p in ckpt_dir.glob("step-*.ckpt")) if ckpt_dir.is_dir() else []


def load_checkpoint(config: Any, pipeline: Any, step: Optional[int] = None) -> int:
    """Load the run's checkpoint of ``step`` (None: the latest) into ``pipeline``; returns the step."""
    import torch

    import difix_refiner.scene  # noqa: F401  (lets torch load nerfstudio checkpoints)

    steps = checkpoint_steps(config)
    if not steps:
        raise InputError(f"no checkpoint in {config.get_checkpoint_dir()}: the run has not saved one yet")
    step = steps[-1] if step is None else int(step)
    path = Path(config.get_checkpoint_dir()) / f"step-{step:09d}.ckpt"
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path} (saved steps: {', '.join(map(str, steps))})")
    state = torch.load(path, map_location="cpu")
    pipeline.load_pipeline(state["pipeline"], state["step"])
    pipeline.eval()
    return step


def load_pipeline(
    config_path: Path,
    *,
    device: Optional[str] = None,
    data: Optional[Path] = None,
    step: Union[int, None, bool] = None,
    seed_points: bool = False,
) -> Tuple[Any, Any]:
    """Set up a trained run's pipeline for rendering; returns ``(config, pipeline)``.

    Args:
        config_path: The run's ``config.yml``.
        device: Torch device; default CUDA when available, else the CPU (as ``eval_setup``).
        data: A data folder to use instead of the one saved in the config (e.g. the run was moved).
        step: Checkpoint step to load; None: the latest; False: load none yet (see :func:`load_checkpoint`).
        seed_points: Keep the dataparser's seed points in the training metadata (what a hint fixer's LiDAR
            hints are rendered from); otherwise they are skipped, the checkpoint replacing them.
    """
    import torch
    from nerfstudio.configs.method_configs import all_methods

    import difix_refiner.scene  # noqa: F401  (lets torch load nerfstudio checkpoints)

    config = load_run_config(config_path)
    dm = config.pipeline.datamanager
    if config.method_name in all_methods:  # as eval_setup: the method's own datamanager class
        dm._target = all_methods[config.method_name].pipeline.datamanager._target
    if data is not None:
        dm.data = Path(data)
        dm.dataparser.data = Path(data)
    if hasattr(dm.dataparser, "load_lidar") and not seed_points:
        dm.dataparser.load_lidar = False  # seed points are replaced by the checkpoint's Gaussians anyway
    if hasattr(config.pipeline.model, "num_random"):
        config.pipeline.model.num_random = 1000  # likewise the random initialisation
    if step is not False and not checkpoint_steps(config):
        raise InputError(f"no checkpoint in {config.get_checkpoint_dir()}: the run has not saved one yet")
    config.load_dir = config.get_checkpoint_dir()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipeline = config.pipeline.setup(device=device, test_mode="test")
    pipeline.eval()
    if step is not False:
        load_checkpoint(config, pipeline, step)
    return config, pipeline


def camera_intrinsics(cameras: Any, i: int) -> Dict[str, float]:
    """``fx, fy, cx, cy, width, height`` of camera ``i`` of a nerfstudio ``Cameras`` batch (what a LiDAR hint is rendered with)."""
    return {k: float(getattr(cameras, k)[i].reshape(-1)[0]) for k in ("fx", "fy", "cx", "cy", "width", "height")}


def training_cameras(pipeline: Any) -> Any:
    """The training cameras exactly as the model was trained on them."""
    datamanager = pipeline.datamanager
    cameras = datamanager.train_dataset.cameras
    dist = cameras.distortion_params
    if dist is not None and bool((dist != 0).any()) and hasattr(datamanager, "cached_train"):
        # The full-image datamanager undistorts images on first access and rewrites the
        # intrinsics in place; the model was trained on those, so trigger it.
        _ = datamanager.cached_train
    return cameras


def cameras_with_poses(cameras: Any, poses: np.ndarray) -> Any:
    """A copy of nerfstudio ``cameras`` [N] (same intrinsics and size) at other poses ``[N, 3, 4]``."""
    import torch
    from nerfstudio.cameras.cameras import Cameras

    return Cameras(
        camera_to_worlds=torch.from_numpy(np.asarray(poses, dtype=np.float64)).float(),
        fx=cameras.fx.clone(),
        fy=cameras.fy.clone(),
        cx=cameras.cx.clone(),
        cy=cameras.cy.clone(),
        width=cameras.width.clone(),
        height=cameras.height.clone(),
        distortion_params=None if cameras.distortion_params is None else cameras.distortion_params.clone(),
        camera_type=cameras.camera_type.clone(),
        times=None if cameras.times is None else cameras.times.clone(),
    )


@dataclass
class Render:
    """One render: colour uint8 ``[H, W, 3]``, z-depth in metres and accumulation ``[H, W]``."""

    rgb: np.ndarray
    depth_m: Optional[np.ndarray]
    accumulation: Optional[np.ndarray]


def render_camera(pipeline: Any, camera: Any, metres_per_scene_unit: float = 1.0) -> Render:
    """Render one camera ``[1]`` with the model's generic camera API (no training state is touched)."""
    import torch

    with torch.no_grad():
        out = pipeline.model.get_outputs_for_camera(camera.to(pipeline.device))

    def plain(key: str) -> Optional[np.ndarray]:
        value = out.get(key)
        if value is None:
            return None
        while value.dim() > 3:  # some models keep a batch dimension of 1
            value = value[0]
        return value.detach().float().cpu().numpy()

    rgb = plain("rgb")
    assert rgb is not None, "the model returned no 'rgb'"
    rgb8 = (np.clip(rgb[..., :3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # [H, W, 3]
    depth = plain("depth")
    acc = plain("accumulation")
    return Render(
        rgb=rgb8,
        depth_m=None if depth is None else depth[..., 0] * metres_per_scene_unit,
        accumulation=None if acc is None else acc[..., 0],
    )
