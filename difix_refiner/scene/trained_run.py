"""What the shift commands need from a trained nerfstudio run: its recorded cameras and scale.

Supported runs: the ``difix-refiner`` method (and ``difix-refiner-*`` variants) and the splatfacto
family (``splatfacto``, ``splatfacto-*``). Both render whole cameras with a Gaussian-splatting model;
other methods are refused because ``render-shifted`` relies on that and the shifted-lane workflow is
only tested with them.

Images are ordered into a drive by the dataparser's ``metadata["frame_indices"]`` (our
``pandaset-data`` dataparser) or, for other dataparsers, by camera times when present, else by image
order; rig cameras are told apart by ``metadata["camera_names"]``, otherwise all images are one
camera. Only the training split is used: its poses are the recorded path.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from difix_refiner.cameras.trajectory import (
    DEFAULT_WINDOW_M,
    VehicleAxes,
    as_pose_array,
    rig_axes,
)
from difix_refiner.core.errors import InputError

SUPPORTED_METHODS = ("difix-refiner", "splatfacto")
"""Method names (and ``<name>-*`` variants) whose runs the commands accept."""

DEFAULT_CAMERA = "front_camera"
"""Camera used when none is named and the dataparser provides camera names."""


def check_method(method_name: Optional[str]) -> None:
    """Refuse runs of methods other than difix-refiner or the splatfacto family."""
    name = method_name or ""
    if not any(name == m or name.startswith(m + "-") for m in SUPPORTED_METHODS):
        raise InputError(
            f"the run was trained with method {method_name!r}; shift-path and render-shifted need a "
            f"'difix-refiner' or splatfacto-family run (methods: {', '.join(SUPPORTED_METHODS)} and their '-*' variants)"
        )


def load_run_config(config_path: Path) -> Any:
    """Read a run's ``config.yml`` (a nerfstudio ``TrainerConfig``) and check its method."""
    import yaml
    from nerfstudio.engine.trainer import TrainerConfig

    config_path = Path(config_path)
    if not config_path.is_file():
        raise InputError(f"config file {config_path} does not exist (pass the run's config.yml to --load-config)")
    try:
        config = yaml.load(config_path.read_text(encoding="utf-8"), Loader=yaml.Loader)
    except Exception as exc:  # yaml raises many kinds; all mean "not a loadable run config"
        raise InputError(f"could not read {config_path} as a nerfstudio run config: {exc}") from exc
    if not isinstance(config, TrainerConfig):
        raise InputError(f"{config_path} is not a nerfstudio run config (got {type(config).__name__})")
    check_method(config.method_name)
    return config


def train_outputs_without_model(config: Any) -> Any:
    """Run the run's dataparser on the training split, as the datamanager does, without a model.

    Returns:
        ``(dataparser_outputs, cameras)``: the training ``DataparserOutputs`` and its cameras at the
        training resolution (``camera_res_scale_factor`` applied).
    """
    dm_config = config.pipeline.datamanager
    dp_config = dm_config.dataparser
    # Same override as nerfstudio's datamanagers: the datamanager's `data` wins when set.
    if getattr(dm_config, "data", None) is not None:
        dp_config.data = Path(dm_config.data)
    outputs = dp_config.setup().get_dataparser_outputs(split="train")
    cameras = copy.deepcopy(outputs.cameras)
    scale = float(getattr(dm_config, "camera_res_scale_factor", 1.0))
    if scale != 1.0:
        cameras.rescale_output_resolution(scaling_factor=scale)
    return outputs, cameras


def warn_if_transform_differs(run_dir: Path, outputs: Any) -> None:
    """Warn when the dataparser now gives another transform than the one saved at training time."""
    saved = Path(run_dir) / "dataparser_transforms.json"
    if not saved.is_file():
        return
    data = json.loads(saved.read_text(encoding="utf-8"))
    same = np.allclose(np.asarray(data["transform"]), outputs.dataparser_transform.numpy(), atol=1e-5) and np.isclose(
        float(data["scale"]), float(outputs.dataparser_scale), rtol=1e-5
    )
    if not same:
        warnings.warn(
            f"the dataparser transform differs from the one saved in {saved}; the data may have changed "
            "since training, so shifted paths may not line up with the model",
            stacklevel=2,
        )


@dataclass
class RecordedImages:
    """The training images of a run as a drive: poses, order, rig camera names and scale."""

    camera_to_worlds: np.ndarray
    """[N, 3, 4] float64 poses, OpenGL camera axes, scene units."""
    cameras: Any
    """nerfstudio ``Cameras`` [N] with the training intrinsics."""
    frame_indices: np.ndarray
    """[N] int time-step index of each image."""
    camera_names: Optional[List[str]]
    """[N] rig camera of each image, or None for a single camera."""
    metres_per_scene_unit: float
    """Metres per scene unit."""
    dataparser_transform: np.ndarray
    """[3, 4] world-to-scene transform applied by the dataparser (before the scale)."""
    dataparser_scale: float
    """Scale applied by the dataparser after the transform."""

    def known_cameras(self) -> List[str]:
        """Camera names in order of first appearance (empty for a single unnamed camera)."""
        return list(dict.fromkeys(self.camera_names)) if self.camera_names is not None else []

    def resolve_camera(self, camera: Optional[str]) -> Optional[str]:
        """The camera to use: ``camera`` if known, else ``front_camera`` or the first camera."""
        known = self.known_cameras()
        if camera is None:
            if not known:
                return None
            return DEFAULT_CAMERA if DEFAULT_CAMERA in known else known[0]
        if not known:
            raise InputError(
                f"--camera {camera!r} was given but this dataparser does not name its cameras; "
                "leave --camera out (all images are treated as one camera)"
            )
        if camera not in known:
            raise InputError(f"unknown camera {camera!r}; known cameras: {', '.join(known)}")
        return camera

    def select(self, camera: Optional[str]) -> np.ndarray:
        """``[M]`` image indices of ``camera`` (already resolved), ordered by frame index."""
        if camera is None:
            idx = np.arange(len(self.frame_indices))
        else:
            assert self.camera_names is not None
            idx = np.array([i for i, n in enumerate(self.camera_names) if n == camera], dtype=np.int64)
        idx = idx[np.argsort(self.frame_indices[idx], kind="stable")]
        if idx.size < 2:
            raise InputError(f"camera {camera!r} has {idx.size} training pose(s); a trajectory needs at least 2")
        return idx

    def axes(self, window_m: float = DEFAULT_WINDOW_M) -> VehicleAxes:
        """Vehicle axes for every image (the whole rig shares the motion of each frame); cached."""
        cache = self.__dict__.setdefault("_axes_cache", {})
        if window_m not in cache:
            cache[window_m] = self._compute_axes(window_m)
        return cache[window_m]

    def _compute_axes(self, window_m: float) -> VehicleAxes:
        try:
            return rig_axes(
                self.camera_to_worlds,
                self.frame_indices,
                self.metres_per_scene_unit,
                camera_names=self.camera_names,
                window_m=window_m,
            )
        except ValueError as exc:
            raise InputError(str(exc)) from exc


def resolve_metres_per_scene_unit(metadata: dict, dataparser_scale: float, given: Optional[float]) -> float:
    """Pick the scene scale: the user's value, else the dataparser's ``metres_per_scene_unit``.

    Raises:
        InputError: neither is available (dataparsers of non-metric worlds, e.g. COLMAP).
    """
    from_data = metadata.get("metres_per_scene_unit")
    if given is not None:
        if not (np.isfinite(given) and given > 0):
            raise InputError(f"--metres-per-scene-unit must be a positive number, got {given}")
        if from_data is not None and not np.isclose(float(from_data), given, rtol=1e-6):
            warnings.warn(
                f"--metres-per-scene-unit {given} overrides the dataparser's value {float(from_data)}",
                stacklevel=2,
            )
        return float(given)
    if from_data is not None:
        return float(from_data)
    raise InputError(
        "the run's dataparser does not say how many metres one scene unit is, so offsets in metres cannot "
        "be converted: pass --metres-per-scene-unit. To measure it, open the run in the viewer, measure a "
        "known length in scene units (a lane is about 3.5 m wide, a car about 4.5 m long, a parking bay "
        "about 2.5 m wide) and divide the metres by the scene units. If the original poses were already "
        f"metric, it is 1 / dataparser_scale = {1.0 / float(dataparser_scale):.6g}."
    )


def recorded_images(outputs: Any, cameras: Any, metres_per_scene_unit: Optional[float] = None) -> RecordedImages:
    """Collect the drive from training ``DataparserOutputs`` and the matching training ``Cameras``."""
    metadata = dict(outputs.metadata or {})
    if len(cameras.shape) != 1:
        raise InputError(f"expected a flat list of training cameras, got shape {tuple(cameras.shape)}")
    try:
        poses = as_pose_array(cameras.camera_to_worlds, "training camera poses")
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    num = poses.shape[0]

    if "frame_indices" in metadata:
        frames = np.asarray(metadata["frame_indices"], dtype=np.int64)
    elif cameras.times is not None:
        # Rank by time so frames are small consecutive integers.
        times = cameras.times.reshape(-1).double().numpy()
        frames = np.empty(num, dtype=np.int64)
        frames[np.argsort(times, kind="stable")] = np.arange(num)
    else:
        frames = np.arange(num, dtype=np.int64)
    if frames.shape != (num,):
        raise InputError(f"metadata['frame_indices'] has {frames.size} entries for {num} training images")

    names = metadata.get("camera_names")
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != num:
            raise InputError(f"metadata['camera_names'] has {len(names)} entries for {num} training images")

    scale = float(outputs.dataparser_scale)
    return RecordedImages(
        camera_to_worlds=poses,
        cameras=cameras,
        frame_indices=frames,
        camera_names=names,
        metres_per_scene_unit=resolve_metres_per_scene_unit(metadata, scale, metres_per_scene_unit),
        dataparser_transform=outputs.dataparser_transform.double().numpy(),
        dataparser_scale=scale,
    )


def validate_offsets(offsets: Sequence[float]) -> List[float]:
    """Check an offset list (metres): non-empty, finite, no zero, no duplicates."""
    values = [float(o) for o in offsets]
    if not values:
        raise InputError("--offsets is empty; give one or more lateral offsets in metres, e.g. --offsets -2 -1 1 2")
    bad = [o for o in values if not np.isfinite(o)]
    if bad:
        raise InputError(f"--offsets must be finite numbers, got {bad}")
    if any(o == 0.0 for o in values):
        raise InputError(
            "--offsets contains 0; the recorded path needs no shifting (render-shifted renders it anyway "
            "as the reference row), so drop the zero"
        )
    names = [offset_name(o) for o in values]
    if len(set(names)) != len(names):
        raise InputError(f"--offsets has duplicate entries: {values}")
    return values


def offset_name(offset_m: float) -> str:
    """File-name stem for an offset: ``offset_+2m``, ``offset_-1.5m``, ``offset_+0m``."""
    return f"offset_{offset_m:+g}m"


def check_outputs_free(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse to write where results already exist unless ``overwrite``."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise InputError(f"the output folder already holds results ({shown}); pass --overwrite to replace them")
