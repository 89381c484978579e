"""The ``pandaset-data`` nerfstudio dataparser: PandaSet camera rigs with LiDAR seed points.

Metres stay metres: the only change of scale is nerfstudio's ``dataparser_scale`` (scene units per
metre, since the PandaSet world is metric). It is saved by nerfstudio in ``dataparser_transforms.json``
and repeated in ``metadata["metres_per_scene_unit"]`` so that lateral shifts can be given in metres.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import (
    DataParser,
    DataParserConfig,
    DataparserOutputs,
)
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from difix_refiner.core import atomic
from difix_refiner.data.lidar import lidar_seed_points
from difix_refiner.data.lidar_supervision import (
    TrainingLidar,
    load_training_lidar,
    sweep_split_for,
    training_metadata,
)
from difix_refiner.data.pandaset import (
    CAMERA_NAMES,
    PandasetCamera,
    PandasetFormatError,
    list_frames,
    load_camera,
    load_lidar_positions,
)
from difix_refiner.data.pandaset_checks import (
    check_is_pandaset_folder,
    empty_split_message,
)
from difix_refiner.data.pandaset_release import is_release_layout
from difix_refiner.data.release_cache import prepare_release
from difix_refiner.data.sweep_split import SweepSplit


@dataclass
class PandasetDataParserConfig(DataParserConfig):
    """PandaSet sequence folder (camera/<name>/NN.jpg, poses.json, intrinsics.json; lidar/NN.npz or the release's lidar/NN.pkl.gz)."""

    _target: Type = field(default_factory=lambda: PandasetDataParser)
    data: Path = Path("examples/pandaset_002")
    """Folder of one PandaSet sequence: the layout of examples/pandaset_002 (see its README), or a sequence folder of the PandaSet release as downloaded (LiDAR in lidar/NN.pkl.gz; read with a restricted unpickler and cached under ~/.cache/difix_refiner)."""
    cameras: Tuple[str, ...] = ("front_camera",)
    """Rig cameras whose frames are used for training: any of front_camera, front_left_camera, front_right_camera, left_camera, right_camera, back_camera that the folder holds."""
    frame_start: int = 0
    """First frame index used (inclusive)."""
    frame_end: Optional[int] = None
    """Last frame index used (exclusive); None means up to the last frame."""
    downscale_factor: int = 1
    """Integer image downscale. Downscaled copies are cached under ~/.cache/difix_refiner, never in the dataset."""
    eval_mode: Literal["interval", "cross-camera", "interval+cross-camera"] = "interval"
    """Held-out views: 'interval' holds out every eval_interval-th frame of the training cameras;
    'cross-camera' trains on all frames of `cameras` and evaluates on `eval_cameras` (the Difix3D+
    driving protocol); 'interval+cross-camera' does both."""
    eval_interval: int = 8
    """With eval_mode 'interval': every N-th frame (counted from frame_start) is held out."""
    eval_cameras: Tuple[str, ...] = ("front_left_camera", "front_right_camera")
    """With eval_mode '*cross-camera': the rig cameras evaluated (never trained on)."""
    train_stride: int = 1
    """Train on every k-th of the remaining training frames only (sparse reconstructions, e.g. for make-pairs)."""
    load_lidar: bool = True
    """Initialise Gaussians from the LiDAR sweeps (else splatfacto's random initialisation is used)."""
    lidar_voxel_size: float = 0.15
    """Voxel size in metres for downsampling the aggregated LiDAR points."""
    lidar_max_points: int = 60000
    """At most this many seed points are kept (seeded random subset after voxel downsampling)."""
    auto_scale_poses: bool = True
    """Scale the scene so that the camera centres fit in [-1, 1] (recorded as dataparser_scale)."""
    scale_factor: float = 1.0
    """Extra scale applied after auto-scaling (also recorded in dataparser_scale)."""
    verify_images: bool = True
    """Decode every image (all its pixels) at load time, so a truncated or damaged file is reported by name
    before training starts; False reads only the first image's header per camera (a damaged image then
    fails when it is loaded, also by name)."""
    lidar_eval_stride: int = 4
    """LiDAR sweeps kept as evaluation truth: those of every n-th training frame of the evaluated camera
    (front_camera, else the first), the frames `difix-refiner eval --frame-stride n` renders. They never
    seed, supervise depth, hint the fixer or make training pairs; 0 keeps none (every sweep trains)."""
    lidar_eval_frames: Optional[Tuple[int, ...]] = None
    """Evaluation sweeps given as frame indices instead (overrides lidar_eval_stride)."""
    depth_targets: bool = True
    """Give every training image the LiDAR returns of its own (training) sweep, projected into its camera,
    as sparse depth targets for the model's depth loss (--pipeline.model.depth-loss-weight)."""
    depth_target_window: int = 0
    """Also take depth targets from the training sweeps of this many frames on each side of an image's own
    frame (returns that nearer ones hide are dropped). 0: its own sweep only, so the images of evaluation-sweep
    frames get none; 1 gives them their neighbours' returns."""
    moving_objects: Literal["mask", "keep"] = "mask"
    """With box annotations (annotations/cuboids): 'mask' removes the points of objects that are not
    stationary from the seeds and depth targets and masks their pixels out of the losses; 'keep' trains on
    them like on the static scene."""
    moving_object_margin: float = 0.3
    """Metres added on every side of a moving object's box before its points and pixels are removed."""


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "difix_refiner" / "downscaled"


def downscaled_copy(path: Path, factor: int) -> Path:
    """Path of an area-downscaled PNG copy of ``path`` (made once, atomically, in the user cache)."""
    key = hashlib.sha1(f"{path.resolve()}:{path.stat().st_mtime_ns}:{factor}".encode()).hexdigest()[:16]
    out = _cache_root() / f"{key}.png"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(path) as img:
                small = img.convert("RGB").resize((img.width // factor, img.height // factor), Image.BOX)
        except Exception as err:  # PIL raises many types for broken files
            raise PandasetFormatError(f"cannot read image {path}: {err}") from err
        with atomic.atomic_path(out) as tmp:
            small.save(tmp, format="PNG")
    return out


@dataclass
class PandasetDataParser(DataParser):
    """Reads a PandaSet folder into nerfstudio cameras, images and LiDAR seed points."""

    config: PandasetDataParserConfig

    def _frame_range(self) -> np.ndarray:
        cam_dir = self.config.data / "camera" / self.config.cameras[0]
        n = len(list_frames(cam_dir)) if cam_dir.is_dir() else 0
        end = n if self.config.frame_end is None else self.config.frame_end
        if not 0 <= self.config.frame_start < end <= n:
            raise PandasetFormatError(
                f"frame range [{self.config.frame_start}, {end}) is empty or outside the {n} frames of {cam_dir}"
            )
        return np.arange(self.config.frame_start, end)

    def _check_config(self) -> None:
        if not self.config.data.is_dir():
            raise PandasetFormatError(f"PandaSet folder not found: {self.config.data}")
        check_is_pandaset_folder(self.config.data)
        if not self.config.cameras:
            raise PandasetFormatError("--cameras must name at least one camera")
        eval_cameras = tuple(self.config.eval_cameras) if "cross-camera" in self.config.eval_mode else ()
        for name in tuple(self.config.cameras) + eval_cameras:
            if not (self.config.data / "camera" / name).is_dir():
                found = sorted(p.name for p in (self.config.data / "camera").iterdir() if p.is_dir())
                raise PandasetFormatError(
                    f"no camera '{name}' in {self.config.data / 'camera'} (it has: "
                    f"{', '.join(found) or 'no camera folders'}; PandaSet's are {', '.join(CAMERA_NAMES)})"
                )
        if self.config.downscale_factor < 1:
            raise PandasetFormatError(f"downscale_factor must be >= 1, got {self.config.downscale_factor}")
        if self.config.train_stride < 1:
            raise PandasetFormatError(f"train_stride must be >= 1, got {self.config.train_stride}")
        if self.config.eval_interval < 2 and "interval" in self.config.eval_mode:
            raise PandasetFormatError(f"eval_interval must be >= 2, got {self.config.eval_interval}")
        if self.config.lidar_eval_stride < 0:
            raise PandasetFormatError(f"lidar_eval_stride must be >= 0, got {self.config.lidar_eval_stride}")
        if self.config.depth_target_window < 0:
            raise PandasetFormatError(f"depth_target_window must be >= 0 frames, got {self.config.depth_target_window}")
        if self.config.moving_object_margin < 0:
            raise PandasetFormatError(f"moving_object_margin must be >= 0 metres, got {self.config.moving_object_margin}")

    def _split_views(self, split: str, frames: np.ndarray) -> List[Tuple[str, np.ndarray]]:
        """(camera name, frame indices) pairs that make up a split."""
        cfg = self.config
        views = []
        held_out = (frames - cfg.frame_start) % cfg.eval_interval == 0 if "interval" in cfg.eval_mode else None
        for name in cfg.cameras:
            if held_out is None:
                views.append((name, frames if split == "train" else frames[:0]))
            else:
                views.append((name, frames[~held_out] if split == "train" else frames[held_out]))
        if "cross-camera" in cfg.eval_mode and split != "train":
            views += [(name, frames) for name in cfg.eval_cameras if name not in cfg.cameras]
        if split == "train" and cfg.train_stride > 1:
            views = [(name, f[:: cfg.train_stride]) for name, f in views]
        return [(name, f) for name, f in views if len(f)]

    def _scene_transform(self, frames: np.ndarray) -> Tuple[np.ndarray, float]:
        """World -> scene: translate by the mean camera centre, then scale (no rotation: PandaSet is z-up).

        Computed from every camera in use over the frame range, so train and eval splits agree.
        """
        names = sorted(set(self.config.cameras) | set(self.config.eval_cameras if "cross-camera" in self.config.eval_mode else ()))
        centres = np.concatenate(
            [load_camera(self.config.data, n, frames, verify_images=False).c2w_opencv[:, :3, 3] for n in names]
        )
        transform = np.eye(4)[:3]
        transform[:, 3] = -centres.mean(axis=0)
        scale = 1.0
        if self.config.auto_scale_poses:
            scale = 1.0 / max(float(np.abs(centres + transform[:, 3]).max()), 1e-6)
        return transform, scale * self.config.scale_factor

    def sweep_split(self) -> SweepSplit:
        """Which of the frame range's LiDAR sweeps train and which are kept for evaluation (the config's rule)."""
        cfg = self.config
        frames = self._frame_range()
        return sweep_split_for(cfg.data, frames, self._split_views("train", frames), cfg.cameras, cfg.lidar_eval_stride, cfg.lidar_eval_frames)

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        self._check_config()
        frames = self._frame_range()
        if is_release_layout(self.config.data):  # release pickles: said once, converted into the user cache
            prepare_release(self.config.data, frames, self.config.load_lidar, log=lambda text: CONSOLE.log(text, markup=False))
        transform, scale = self._scene_transform(frames)

        views = self._split_views(split, frames)
        if not views:
            raise PandasetFormatError(empty_split_message(self.config, split, frames))
        cams: List[PandasetCamera] = [load_camera(self.config.data, n, f, self.config.verify_images) for n, f in views]

        c2w = np.concatenate([c.c2w_opengl for c in cams])  # [N, 4, 4], world metres
        c2w[:, :3, 3] = (c2w[:, :3, 3] + transform[:, 3]) * scale
        d = self.config.downscale_factor
        counts = [len(c.image_paths) for c in cams]

        def per_image(values):
            return torch.tensor(np.repeat(np.asarray(values, dtype=np.float64), counts), dtype=torch.float32)[:, None]

        cameras = Cameras(
            camera_to_worlds=torch.from_numpy(c2w[:, :3, :4]).float(),
            fx=per_image([c.fx / d for c in cams]),
            fy=per_image([c.fy / d for c in cams]),
            cx=per_image([c.cx / d for c in cams]),
            cy=per_image([c.cy / d for c in cams]),
            width=per_image([c.width // d for c in cams]).long(),
            height=per_image([c.height // d for c in cams]).long(),
            camera_type=CameraType.PERSPECTIVE,
        )
        image_paths = [p for c in cams for p in c.image_paths]
        if d > 1:
            image_paths = [downscaled_copy(p, d) for p in image_paths]

        metadata = {
            "metres_per_scene_unit": 1.0 / scale,
            "camera_names": [c.name for c in cams for _ in c.image_paths],
            "frame_indices": [int(f) for c in cams for f in c.frame_indices],
            "timestamps": [float(t) for c in cams for t in c.timestamps],
        }
        cfg = self.config
        has_lidar = (cfg.data / "lidar").is_dir()
        if has_lidar:
            sweep_split = self.sweep_split()
            metadata["lidar_sweep_split"] = sweep_split.as_dict()
        lidar = None
        if has_lidar and split == "train" and (cfg.load_lidar or cfg.depth_targets):
            lidar = load_training_lidar(cfg.data, frames, sweep_split, cfg.moving_objects, cfg.moving_object_margin)
            metadata.update(
                training_metadata(lidar, cams, d, transform[:, 3], scale, cfg.depth_targets, cfg.depth_target_window)
            )
        if self.config.load_lidar and split == "train":  # only training seeds the Gaussians
            pts, rgb = self._seed_points(frames, lidar)
            metadata["points3D_xyz"] = torch.from_numpy((pts + transform[:, 3]) * scale).float()
            metadata["points3D_rgb"] = torch.from_numpy(rgb.astype(np.float32))

        # A box around the cameras, generous enough for the street: used by the viewer and crops.
        radius = 2.0 * float(np.abs(c2w[:, :3, 3]).max() + 1.0)
        scene_box = SceneBox(aabb=torch.tensor([[-radius] * 3, [radius] * 3], dtype=torch.float32))
        return DataparserOutputs(
            image_filenames=image_paths,
            cameras=cameras,
            scene_box=scene_box,
            metadata=metadata,
            dataparser_transform=torch.from_numpy(transform).float(),
            dataparser_scale=scale,
        )

    def _seed_points(self, frames: np.ndarray, lidar: Optional[TrainingLidar]) -> Tuple[np.ndarray, np.ndarray]:
        """LiDAR points of the frame range's training sweeps (no evaluation sweep, no moving object),
        coloured from the training views only (no eval leakage)."""
        train_cams = [
            load_camera(self.config.data, n, f, verify_images=False) for n, f in self._split_views("train", frames)
        ]
        if lidar is None:
            raise PandasetFormatError(f"missing LiDAR folder: {self.config.data / 'lidar'} (or pass --load-lidar False)")
        sweeps = lidar.sweeps
        if not sweeps:
            raise PandasetFormatError(f"no LiDAR sweeps for frames {frames[0]}..{frames[-1]} in {self.config.data / 'lidar'}")
        pts, rgb = lidar_seed_points(
            sweeps,
            load_lidar_positions(self.config.data),
            train_cams,
            voxel_size=self.config.lidar_voxel_size,
            max_points=self.config.lidar_max_points,
        )
        CONSOLE.log(
            f"pandaset-data: {len(pts)} LiDAR seed points from {len(sweeps)} training sweeps "
            f"({len(lidar.split.eval)} evaluation sweeps held back; moving objects: {lidar.moving_objects})"
        )
        return pts, rgb


# The entry point nerfstudio discovers (group ``nerfstudio.dataparser_configs``). It lives here, not in
# ``difix_refiner.method_configs``: nerfstudio discovers dataparsers while importing its datamanagers,
# which the method configs import, so one module holding both would import itself circularly.
pandaset_dataparser = DataParserSpecification(
    config=PandasetDataParserConfig(),
    description="PandaSet sequence folder (cameras, poses, intrinsics, LiDAR) with metric scale and LiDAR seed points.",
)
