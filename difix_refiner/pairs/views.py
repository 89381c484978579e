"""The recorded images of a trained run that pairs can be rendered against, and camera helpers.

A :class:`View` is one photo with its camera in the run's scene frame; :class:`RunViews` holds every
view of a run (trained on or held out) together with the run's scene frame, so renders of other runs
can be mapped into it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.core.errors import InputError


@dataclass
class View:
    """One recorded image of a run: its camera in the run's scene frame and its photo."""

    camera: str
    """Rig camera name (``"camera"`` when the dataparser names none)."""
    frame: int
    """Frame (time-step) index."""
    cameras: Any
    """nerfstudio ``Cameras`` [1] at the run's training resolution."""
    trained: bool
    """The run trained on this photo."""
    load_photo: Callable[[], np.ndarray] = field(repr=False)
    """Returns the photo, ``uint8 [H, W, 3]``, the size of ``cameras``."""

    @property
    def key(self) -> Tuple[str, int]:
        """``(camera, frame)``: unique within a run."""
        return (self.camera, self.frame)

    @property
    def pose(self) -> np.ndarray:
        """``[3, 4]`` camera-to-world, float64."""
        return self.cameras.camera_to_worlds[0].double().numpy()


@dataclass
class RunViews:
    """Every recorded image a run can render against, plus the run's scene frame."""

    name: str
    """The run's name under ``runs/``."""
    config_path: Path
    """The run's ``config.yml``."""
    views: List[View]
    """Every recorded image, trained on or held out."""
    dataparser_transform: np.ndarray
    """[3, 4] world -> scene transform (before the scale)."""
    dataparser_scale: float
    """Scene units per world unit after the transform."""
    metres_per_scene_unit: Optional[float]
    """Metres per scene unit; None when the dataparser has no metric scale."""


def _rgb(image: np.ndarray, background: Optional[np.ndarray]) -> np.ndarray:
    """``uint8 [H, W, 3]``; an alpha channel is composited over the model's background."""
    if image.shape[-1] == 3:
        return image
    rgb, alpha = image[..., :3].astype(np.float32), image[..., 3:4].astype(np.float32) / 255.0
    bg = np.zeros(3, np.float32) if background is None else np.asarray(background, np.float32).reshape(3) * 255.0
    return np.clip(rgb * alpha + bg * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)


def pandaset_views(name: str, config_path: Path, config: Any, pipeline: Any) -> RunViews:
    """All images of a ``pandaset-data`` run, including frames ``--train-stride`` skipped.

    The run's dataparser is set up again with ``train_stride=1`` (no LiDAR): its scene transform
    depends only on the frame range and camera set, which is checked against the run's own.
    """
    import torch
    from nerfstudio.data.datasets.base_dataset import InputDataset

    from difix_refiner.data.pandaset import PandasetFormatError

    run_outputs = pipeline.datamanager.train_dataparser_outputs
    meta = run_outputs.metadata
    trained = set(zip([str(n) for n in meta["camera_names"]], [int(f) for f in meta["frame_indices"]]))
    dp = dataclasses.replace(config.pipeline.datamanager.dataparser, train_stride=1, load_lidar=False)
    scale_factor = float(getattr(config.pipeline.datamanager, "camera_res_scale_factor", 1.0))
    background = getattr(pipeline.model, "background_color", None)
    background = background.detach().cpu().numpy() if isinstance(background, torch.Tensor) else None
    views: List[View] = []
    for split in ("train", "test"):
        try:
            outputs = dp.setup().get_dataparser_outputs(split=split)
        except PandasetFormatError:
            if split == "train":
                raise
            continue  # an empty eval split: nothing more to render
        same = np.allclose(outputs.dataparser_transform.numpy(), run_outputs.dataparser_transform.numpy(), atol=1e-6)
        if not same or not np.isclose(outputs.dataparser_scale, run_outputs.dataparser_scale, rtol=1e-9):
            raise RuntimeError(f"{config_path}: the dataparser's scene frame changed since training; cannot align renders")
        dataset = InputDataset(outputs, scale_factor=scale_factor)
        names, frames = outputs.metadata["camera_names"], outputs.metadata["frame_indices"]
        for i in range(len(dataset)):

            def load(i: int = i, dataset: Any = dataset) -> np.ndarray:
                return _rgb(dataset.get_numpy_image(i), background)

            key = (str(names[i]), int(frames[i]))
            views.append(View(key[0], key[1], dataset.cameras[i : i + 1], key in trained, load))
    return RunViews(
        name,
        config_path,
        views,
        run_outputs.dataparser_transform.double().numpy(),
        float(run_outputs.dataparser_scale),
        float(meta["metres_per_scene_unit"]),
    )


def dataset_views(name: str, config_path: Path, pipeline: Any, metres_per_scene_unit: Optional[float]) -> RunViews:
    """All images of a run of any dataparser: its train split (trained) and eval split (held out).

    Frames are the images' ranks by file name over both splits (or ``metadata["frame_indices"]``
    when the dataparser provides it); camera names come from ``metadata["camera_names"]`` if any.
    Distorted images are taken undistorted from the full-image datamanager, as the model saw them.
    """
    import torch

    dm = pipeline.datamanager
    background = getattr(pipeline.model, "background_color", None)
    background = background.detach().cpu().numpy() if isinstance(background, torch.Tensor) else None
    sources = []
    for split, dataset, cache_name in (("train", dm.train_dataset, "cached_train"), ("test", dm.eval_dataset, "cached_eval")):
        if dataset is None or len(dataset) == 0:
            continue
        dist = dataset.cameras.distortion_params
        cache = None
        if dist is not None and bool((dist != 0).any()) and hasattr(dm, cache_name):
            cache = getattr(dm, cache_name)  # undistorts, and rewrites the dataset's intrinsics in place
        sources.append((split, dataset, cache))
    filenames = sorted({str(f) for _, d, _ in sources for f in d.image_filenames})
    rank = {f: i for i, f in enumerate(filenames)}
    views: List[View] = []
    seen = set()
    for split, dataset, cache in sources:
        meta = dataset.metadata if hasattr(dataset, "metadata") else {}
        names = meta.get("camera_names")
        frames = meta.get("frame_indices")
        for i, filename in enumerate(dataset.image_filenames):
            if str(filename) in seen:  # eval_mode "all": the same image in both splits
                continue
            seen.add(str(filename))
            frame = int(frames[i]) if frames is not None else rank[str(filename)]
            camera = str(names[i]) if names is not None else "camera"

            def load(i: int = i, dataset: Any = dataset, cache: Any = cache) -> np.ndarray:
                if cache is not None:
                    img = cache[i]["image"].detach().cpu()
                    img = (img * 255.0 + 0.5).clamp(0, 255).byte() if img.dtype != torch.uint8 else img
                    return _rgb(img.numpy(), background)
                return _rgb(dataset.get_numpy_image(i), background)

            views.append(View(camera, frame, dataset.cameras[i : i + 1], split == "train", load))
    keys = [v.key for v in views]
    if len(set(keys)) != len(keys):
        raise InputError("several images share a (camera, frame) pair; give them distinct file names")
    outputs = dm.train_dataparser_outputs
    mpsu = metres_per_scene_unit or outputs.metadata.get("metres_per_scene_unit")
    return RunViews(
        name,
        config_path,
        views,
        outputs.dataparser_transform.double().numpy(),
        float(outputs.dataparser_scale),
        None if mpsu is None else float(mpsu),
    )


def camera_record(cameras: Any, pose: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """JSON description of one camera ``[1]``: pose (scene units, OpenGL axes), intrinsics, size."""
    c2w = cameras.camera_to_worlds[0].double().numpy() if pose is None else np.asarray(pose, dtype=np.float64)
    return {
        "camera_to_world": c2w[:3, :4].tolist(),
        "fx": float(cameras.fx[0, 0]),
        "fy": float(cameras.fy[0, 0]),
        "cx": float(cameras.cx[0, 0]),
        "cy": float(cameras.cy[0, 0]),
        "width": int(cameras.width[0, 0]),
        "height": int(cameras.height[0, 0]),
    }


def stack_cameras(views: Sequence[View]) -> Any:
    """nerfstudio ``Cameras`` [N] of several views."""
    import torch
    from nerfstudio.cameras.cameras import Cameras

    cams = [v.cameras for v in views]
    cat = lambda name: torch.cat([getattr(c, name) for c in cams])  # noqa: E731
    dist = None if any(c.distortion_params is None for c in cams) else cat("distortion_params")
    return Cameras(
        camera_to_worlds=cat("camera_to_worlds"), fx=cat("fx"), fy=cat("fy"), cx=cat("cx"), cy=cat("cy"),
        width=cat("width"), height=cat("height"), distortion_params=dist, camera_type=cat("camera_type"),
    )  # fmt: skip

