"""The shifted-drive evaluation: render the recorded drive and the drive shifted sideways, measure against LiDAR.

For every sampled training frame of one camera and every offset (0 = the recorded path) it gathers
the LiDAR depth and colour samples, the sharpness of the render, and how much the fixer changes it;
:func:`drive_metrics` turns them into the ``recorded`` and ``shifted`` entries of ``metrics.json``
(see :mod:`difix_refiner.evaluation.evaluate_run` for what each metric means).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.core import image_metrics as im
from difix_refiner.core.contact_sheet import thumbnail
from difix_refiner.core.errors import InputError
from difix_refiner.distillation.pseudo_view_fidelity import camera_hint, fixer_hint_cloud
from difix_refiner.evaluation import lidar_metrics as lm
from difix_refiner.evaluation.drive_extras import DriveExtras
from difix_refiner.evaluation.runs import LoadedRun, camera_matrix
from difix_refiner.evaluation.settings import EvalSettings
from difix_refiner.fixer.render_fixing import fix_render, read_photo
from difix_refiner.scene.run_pipeline import Render, render_camera
from difix_refiner.scene.shift_options import ShiftOptions


def offset_key(offset_m: float) -> str:
    """JSON key of an offset: ``+1``, ``-2``, ``+1.5``."""
    return f"{offset_m:+g}"


@dataclass
class OffsetStats:
    """What is gathered for one offset over the frames."""

    depth: List[lm.DepthSamples] = field(default_factory=list)
    """Rendered vs LiDAR depth of each frame."""
    colour: List[lm.ColourSamples] = field(default_factory=list)
    """Rendered vs photo colour at the LiDAR points of each frame."""
    colour_fixed: List[lm.ColourSamples] = field(default_factory=list)
    """The same for the fixed render (with a fixer): the "+" step's LiDAR PSNR."""
    sharpness: List[float] = field(default_factory=list)
    """Variance of the Laplacian of each render."""
    agreement: List[Dict[str, float]] = field(default_factory=list)
    """fixer(render) vs render of each frame (with a fixer)."""
    renders: List[np.ndarray] = field(default_factory=list)
    """Kept only for FID/KID."""
    fixed: List[np.ndarray] = field(default_factory=list)
    """Kept only for FID/KID."""

    def summary(self, real_features: Any, extractor: Any, seed: int) -> Dict[str, Any]:
        """The JSON entry of this offset (None where nothing could be measured)."""
        d = lm.depth_errors(lm.DepthSamples.concat(self.depth))
        pooled = lm.ColourSamples.concat(self.colour)
        c = lm.samples_psnr(pooled)
        nearer = lm.rendered_nearer_split(pooled)
        c_fixed = lm.samples_psnr(lm.ColourSamples.concat(self.colour_fixed)) if self.colour_fixed else {"psnr": None}
        out: Dict[str, Any] = {
            "lidar_psnr": c["psnr"],
            "lidar_psnr_fixed": c_fixed["psnr"],
            "lidar_points": c["num_points"],
            "lidar_share_rendered_nearer": nearer["share_rendered_nearer"],
            "lidar_psnr_not_rendered_nearer": nearer["psnr_not_rendered_nearer"],
            "depth_absrel": d["absrel"],
            "depth_rmse": d["rmse_m"],
            "depth_pixels": d["num_pixels"],
            "sharpness": im.mean_or_none(self.sharpness),
            "fixer_agreement_psnr": im.mean_or_none([a["psnr"] for a in self.agreement]),
            "fixer_mean_abs_diff": im.mean_or_none([a["mean_abs_diff"] for a in self.agreement]),
            "fid": None,
            "kid_mean": None,
            "kid_std": None,
            "fid_fixed": None,
            "kid_mean_fixed": None,
        }
        if extractor is not None and real_features is not None and len(self.renders) >= 2 and len(real_features) >= 2:
            fake = im.inception_features(self.renders, extractor)  # [M, D]
            r = im.fid_kid_from_features(real_features, fake, seed=seed)
            out.update(fid=r["fid"], kid_mean=r["kid_mean"], kid_std=r["kid_std"])
            if len(self.fixed) >= 2:
                r = im.fid_kid_from_features(real_features, im.inception_features(self.fixed, extractor), seed=seed)
                out.update(fid_fixed=r["fid"], kid_mean_fixed=r["kid_mean"])
        return out


@dataclass
class DriveResult:
    """What :func:`evaluate_drive` gathered."""

    stats: Dict[float, OffsetStats]
    """Per offset, 0.0 being the recorded path."""
    photo_sharpness: List[float]
    """Sharpness of the recorded photo of every frame."""
    photo_row: Dict[int, np.ndarray]
    """Thumbnails of the recorded photos of the sheet frames."""
    thumbs: Dict[str, Dict[int, np.ndarray]]
    """``recorded`` / ``shifted`` / ``fixed`` thumbnails per sheet frame."""
    notes: List[str]
    """Frames without LiDAR, for the warnings."""
    lidar_root: Path
    """The PandaSet folder whose LiDAR sweeps were used."""
    extras: Optional[DriveExtras] = None
    """Evaluation-sweep protocol, moving objects and the depth contact sheet (``drive_extras``)."""


@dataclass
class DrivePlan:
    """Which frames of which camera are rendered at which offsets, and what to keep."""

    camera: Optional[str]
    """Rig camera (None: all images as one camera)."""
    selection: np.ndarray
    """[M] training-image indices, in frame order."""
    offsets: Sequence[float]
    """The shifted offsets in metres (the recorded path, 0, is always added)."""
    columns: Sequence[int]
    """Frame indices of the contact-sheet columns."""
    shown: float
    """Offset whose renders go into the contact sheet."""
    keep_renders: bool
    """Keep every render (for FID/KID)."""


def _drive_poses(run: LoadedRun, plan: DrivePlan, all_offsets: Sequence[float]) -> Dict[float, np.ndarray]:
    """``{offset: [M, 3, 4]}`` poses of the selected images (scene units, OpenGL axes)."""
    recorded = run.recorded
    shifter = ShiftOptions(load_config=run.config_path, offsets=tuple(plan.offsets), output_dir=Path("."), camera=plan.camera)
    # Shift the camera's whole drive (shift_poses needs >= 2 poses), then keep the selected frames.
    full = recorded.select(plan.camera)  # [F] training-image indices, in frame order
    where = {int(i): p for p, i in enumerate(full.tolist())}
    take = np.array([where[int(i)] for i in plan.selection], dtype=np.int64)  # [M]
    return {o: shifter.shifted_poses(recorded, full, o)[take] for o in all_offsets}


def _load_lidar(root: Path, frames: np.ndarray, window: int) -> Tuple[Dict[int, np.ndarray], np.ndarray]:
    """The sweeps of every frame within ``window`` of ``frames`` (those that exist) and the sensor positions ``[F, 3]``."""
    from difix_refiner.data.pandaset import (
        PandasetFormatError,
        load_lidar_positions,
        load_lidar_sweeps,
    )

    try:
        sweeps = load_lidar_sweeps(root, sorted({int(f) + d for f in frames for d in range(-window, window + 1)}))
        return sweeps, load_lidar_positions(root)
    except PandasetFormatError as err:
        raise InputError(f"cannot read the LiDAR of {root}: {err}") from err


def _shifted_camera(train_cams: Any, m: int, pose: np.ndarray) -> Any:
    """Training camera ``m`` (its intrinsics) moved to ``pose`` ``[3, 4]``, as a ``Cameras`` of one."""
    import torch
    from nerfstudio.cameras.cameras import Cameras

    return Cameras(
        camera_to_worlds=torch.from_numpy(pose[None]).float(),
        fx=train_cams.fx[m : m + 1].clone(), fy=train_cams.fy[m : m + 1].clone(),
        cx=train_cams.cx[m : m + 1].clone(), cy=train_cams.cy[m : m + 1].clone(),
        width=train_cams.width[m : m + 1].clone(), height=train_cams.height[m : m + 1].clone(),
        camera_type=train_cams.camera_type[m : m + 1].clone(),
    )  # fmt: skip


def _keep_thumbnails(result: DriveResult, plan: DrivePlan, frame: int, offset: float, render: Render, fixed: Optional[np.ndarray], width: int) -> None:
    """The contact-sheet cells of one render: the recorded path, and the shown offset (and its fixed render)."""
    if frame not in plan.columns:
        return
    if offset == 0.0:
        result.thumbs["recorded"][frame] = thumbnail(render.rgb, width)
    elif np.isclose(offset, plan.shown):
        result.thumbs["shifted"][frame] = thumbnail(render.rgb, width)
        if fixed is not None:
            result.thumbs["fixed"][frame] = thumbnail(fixed, width)


def evaluate_drive(run: LoadedRun, settings: EvalSettings, plan: DrivePlan, fixer: Any, progress: Any, label: str) -> DriveResult:
    """Render the recorded and shifted drives at the selected frames and gather LiDAR/sharpness/fixer data."""
    import torch

    recorded = run.recorded
    mpsu = recorded.metres_per_scene_unit
    selection = plan.selection
    frames = recorded.frame_indices[selection]  # [M]
    all_offsets = [0.0] + sorted(plan.offsets, reverse=True)
    poses = _drive_poses(run, plan, all_offsets)
    train_cams = recorded.cameras[torch.from_numpy(selection)]

    lidar_root = Path(settings.lidar_data) if settings.lidar_data is not None else run.data
    k = settings.lidar_window
    sweeps, sensors = _load_lidar(lidar_root, frames, k)
    # Only the run's evaluation sweeps, without moving objects (lidar_protocol).
    extras, sweeps = DriveExtras.start(run, sweeps, frames.tolist(), k, plan.offsets, settings.thumbnail_width)
    visibility = settings.visibility()
    hints = fixer_hint_cloud(run.pipeline, fixer)  # a hint fixer gets each view's LiDAR hint

    def to_world(pose: np.ndarray) -> np.ndarray:
        return lm.scene_to_world_opencv(pose, recorded.dataparser_transform, recorded.dataparser_scale)

    result = DriveResult(
        stats={o: OffsetStats() for o in all_offsets},
        photo_sharpness=[],
        photo_row={},
        thumbs={"recorded": {}, "shifted": {}, "fixed": {}},
        notes=[],
        lidar_root=lidar_root,
        extras=extras,
    )
    without_lidar: List[int] = []
    width = settings.thumbnail_width
    task = progress.add_task(f"{label}: shifted drives ({plan.camera})", total=len(frames) * len(all_offsets))
    for m, (idx, frame) in enumerate(zip(selection.tolist(), frames.tolist())):
        K, w, h = camera_matrix(train_cams, m)
        photo = read_photo(run.train_paths[idx], w, h)  # [H, W, 3] the frame-t photo
        result.photo_sharpness.append(im.laplacian_variance(photo))
        if frame in plan.columns:
            result.photo_row[frame] = thumbnail(photo, width)
        points, used = lm.points_near_frame(sweeps, sensors, frame, k)  # [N, 3] world metres
        if not used:
            without_lidar.append(frame)
        real_view = lm.project_points(points, to_world(recorded.camera_to_worlds[idx]), K, w, h, visibility, max_depth=settings.max_depth_m)
        for offset in all_offsets:
            pose = poses[offset][m]  # [3, 4] scene units, OpenGL axes
            render = render_camera(run.pipeline, _shifted_camera(train_cams, m, pose), mpsu)
            if render.rgb.shape[:2] != (h, w):
                raise RuntimeError(f"the model rendered {render.rgb.shape[1]}x{render.rgb.shape[0]} for a {w}x{h} camera")
            extras.on_render(frame, offset, pose, K, render)
            stats = result.stats[offset]
            stats.sharpness.append(im.laplacian_variance(render.rgb))
            view = None
            if used:
                view = lm.project_points(points, to_world(pose), K, w, h, visibility, max_depth=settings.max_depth_m)
                stats.colour.append(lm.lidar_colour_samples(real_view, photo, view, render.rgb, render.depth_m))
                if render.depth_m is not None:
                    stats.depth.append(lm.depth_samples(view, render.depth_m, render.accumulation, settings.min_accumulation))
            fixed = None
            if fixer is not None:
                reference = extras.reference(photo, frame) if settings.fixer_reference else None
                fixed = fix_render(fixer, render.rgb, reference, camera_hint(hints, train_cams, m, mpsu, pose))
                stats.agreement.append(im.fixer_agreement(fixed, render.rgb))
                if view is not None:
                    stats.colour_fixed.append(lm.lidar_colour_samples(real_view, photo, view, fixed))
                extras.on_fixed(offset, fixed, render)
            if plan.keep_renders:
                stats.renders.append(render.rgb)
                if fixed is not None:
                    stats.fixed.append(fixed)
            if frame in plan.columns:
                extras.on_sheet(frame, offset, render, view)
            _keep_thumbnails(result, plan, frame, offset, render, fixed, width)
            progress.advance(task)
    if without_lidar:
        result.notes.append(f"no LiDAR sweep within ±{k} frames of frames {without_lidar}: no LiDAR metrics there")
    return result


def drive_metrics(
    drive: DriveResult, offsets: Sequence[float], real_features: Any, extractor: Any, seed: int
) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """The ``recorded`` entry and the ``shifted`` entries (keyed by :func:`offset_key`, ascending)."""
    recorded = drive.stats[0.0].summary(real_features, extractor, seed)
    recorded.update(drive.extras.offset_summary(0.0))
    recorded["photo_sharpness"] = im.mean_or_none(drive.photo_sharpness)
    shifted = {}
    for offset in sorted(offsets):
        entry = drive.stats[offset].summary(real_features, extractor, seed)
        rec = recorded["sharpness"]
        entry["sharpness_ratio"] = None if not rec or entry["sharpness"] is None else entry["sharpness"] / rec
        entry.update(drive.extras.offset_summary(offset))
        shifted[offset_key(offset)] = entry
    return recorded, shifted
