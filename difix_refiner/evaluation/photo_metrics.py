"""Scoring renders against photos: the held-out frames and the cross-camera views of a run.

PSNR / SSIM (/ LPIPS when its AlexNet weights are on disk) of each view's render against its photo,
pooled over all views and per camera; with a fixer, the same after the fixer (the Difix3D+ "+" step),
given the nearest training photo by pose as its reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.cameras.reference_views import nearest_reference
from difix_refiner.core import image_metrics as im
from difix_refiner.core.contact_sheet import thumbnail
from difix_refiner.distillation.pseudo_view_fidelity import camera_hint, fixer_hint_cloud
from difix_refiner.evaluation.drive_extras import run_masks
from difix_refiner.evaluation.moving_objects import StaticPixelScores
from difix_refiner.evaluation.runs import (
    LoadedRun,
    camera_matrix,
    cross_camera_views,
    heldout_views,
    pandaset_cameras,
    run_frame_range,
)
from difix_refiner.evaluation.settings import EvalSettings
from difix_refiner.fixer.render_fixing import fix_render, read_photo
from difix_refiner.scene.run_pipeline import render_camera

ViewCells = Dict[str, Dict[str, Dict[int, np.ndarray]]]
"""Thumbnails of views: ``{camera: {"photo" | "render": {frame: uint8 [h, w, 3]}}}``."""


@dataclass
class PhotoViewFixing:
    """The "+" step on views that have photos: the fixer gets the nearest training photo by pose as reference
    (the one picker) and, when it was trained with hints, the view's LiDAR hint from the run's seed points."""

    fixer: Any
    run: LoadedRun
    hints: Optional[Tuple[np.ndarray, np.ndarray]]
    train_poses: np.ndarray
    """[N, 3, 4] training camera-to-world poses, scene units."""

    @classmethod
    def of(cls, run: LoadedRun, fixer: Any) -> "PhotoViewFixing":
        poses = np.asarray(run.recorded.camera_to_worlds, dtype=np.float64)  # [N, 3, 4]
        return cls(fixer=fixer, run=run, hints=fixer_hint_cloud(run.pipeline, fixer), train_poses=poses)

    def __call__(self, render: np.ndarray, cams: Any, i: int) -> np.ndarray:
        """The fixed render of camera ``i`` of ``cams`` (nerfstudio ``Cameras``). ``render``: [H, W, 3]."""
        mpsu = self.run.recorded.metres_per_scene_unit
        pose = cams.camera_to_worlds[i].double().numpy()  # [3, 4] scene units
        ref = nearest_reference(pose, self.train_poses, metres_per_scene_unit=mpsu)
        h, w = render.shape[:2]
        reference = read_photo(self.run.train_paths[ref], w, h) if ref is not None else None
        return fix_render(self.fixer, render, reference, camera_hint(self.hints, cams, i, mpsu, pose))


@dataclass
class ViewThumbnails:
    """Which frames of the scored views to keep as thumbnails, and where."""

    frames: Sequence[int]
    """Frame indices to keep (the contact-sheet columns)."""
    width: int
    """Thumbnail width in pixels."""
    cells: ViewCells = field(default_factory=dict)
    """Filled by :func:`score_views`."""


def score_views(
    run: LoadedRun,
    views: List[Tuple[str, np.ndarray]],
    lpips: Any,
    progress: Any,
    title: str,
    sheet: Optional[ViewThumbnails] = None,
    fixer: Any = None,
) -> Tuple[Dict[str, Any], bool]:
    """PSNR/SSIM/LPIPS over views; returns (summary with per-camera means, whether LPIPS was skipped).

    ``sheet`` also keeps thumbnails of its frames. With a ``fixer``, every render is also scored after
    the fixer (the Difix3D+ "+" step) under ``"fixed"``, its reference being the nearest training photo
    by pose (and, for a hint fixer, its hint the run's seed points rendered into the view).
    """
    total = int(sum(len(f) for _, f in views))
    task = progress.add_task(title, total=total)
    overall = im.PhotoMetrics(lpips=lpips)
    fixed_metrics = im.PhotoMetrics(lpips=lpips) if fixer is not None else None
    per_camera = {}
    mpsu = run.recorded.metres_per_scene_unit
    fixing = PhotoViewFixing.of(run, fixer) if fixer is not None else None
    static = StaticPixelScores(run_masks(run, [int(f) for _, fs in views for f in fs]))  # moving objects left out
    for name, frames in views:
        cams, paths = pandaset_cameras(run, name, frames)
        one = im.PhotoMetrics(lpips=lpips)
        for i in range(len(frames)):
            _, w, h = camera_matrix(cams, i)
            render = render_camera(run.pipeline, cams[i : i + 1], mpsu)
            photo = read_photo(paths[i], w, h)
            scores = one.add(render.rgb, photo)
            static.add(name, int(frames[i]), cams.camera_to_worlds[i].numpy(), camera_matrix(cams, i)[0], render.rgb, photo)
            if sheet is not None and int(frames[i]) in sheet.frames:
                cells = sheet.cells.setdefault(name, {"photo": {}, "render": {}})
                cells["photo"][int(frames[i])] = thumbnail(photo, sheet.width)
                cells["render"][int(frames[i])] = thumbnail(render.rgb, sheet.width)
            overall.psnr.append(scores["psnr"])
            overall.ssim.append(scores["ssim"])
            if "lpips" in scores:
                overall.lpips_values.append(scores["lpips"])
            if fixed_metrics is not None and fixing is not None:
                fixed_metrics.add(fixing(render.rgb, cams, i), photo)
            progress.advance(task)
        summary = one.summary()
        summary.update(static.summary(name))
        summary["frames"] = [int(f) for f in frames]
        per_camera[name] = summary
        overall.lpips_skipped |= one.lpips_skipped
    result = overall.summary()
    result.setdefault("lpips", None)
    result.update(static.summary())  # psnr is the whole image; psnr_static_pixels leaves moving objects out
    result["per_camera"] = per_camera
    result["fixed"] = None
    if fixed_metrics is not None:
        result["fixed"] = {"lpips": None, **fixed_metrics.summary()}
    return result, overall.lpips_skipped or (lpips is not None and not lpips.available)


def empty_photo_metrics() -> Dict[str, Any]:
    """The entry of a view set with nothing to score."""
    return {
        "psnr": None, "ssim": None, "lpips": None, "psnr_static_pixels": None, "moving_pixel_fraction": None,
        "num_views": 0, "per_camera": {}, "fixed": None,
    }  # fmt: skip


@dataclass
class PhotoScores:
    """The held-out and cross-camera entries of ``metrics.json``, and what came with them."""

    heldout: Dict[str, Any]
    """Scores of the held-out frames (``metrics.json``'s ``heldout``)."""
    cross_camera: Dict[str, Any]
    """Scores of the cross-camera views (``cross_camera``)."""
    cross_cells: ViewCells
    """Thumbnails of the cross-camera views at the contact-sheet frames."""
    skipped: Dict[str, str]
    """What could not be measured, and why (in the order it was found)."""
    notes: List[str]
    """Views that were left out (trained on), for the warnings."""


def score_heldout_and_cross_camera(
    run: LoadedRun, settings: EvalSettings, columns: Sequence[int], fixer: Any, progress: Any, label: str
) -> PhotoScores:
    """Score the run's held-out frames and its cross-camera views (``fixer``: also after the fixer)."""
    from difix_refiner.core.lpips import LazyLPIPS

    dp = run.config.pipeline.datamanager.dataparser
    skipped: Dict[str, str] = {}
    notes: List[str] = []
    lpips = LazyLPIPS()
    if not lpips.available:
        skipped["lpips"] = im.lpips_skip_reason()
    plus_fixer = fixer if settings.fix_heldout else None
    frames_all = run_frame_range(dp, run.data)

    views, msgs = heldout_views(dp, frames_all, run.trained, settings.heldout_stride)
    notes += msgs
    if views:
        heldout, lp_skip = score_views(run, views, lpips, progress, f"{label}: held-out frames", fixer=plus_fixer)
    else:
        heldout, lp_skip = empty_photo_metrics(), False
        skipped["heldout"] = (
            f"the run trained on every frame of {', '.join(dp.cameras)} (eval_mode {dp.eval_mode!r}), so no "
            f"every-{dp.eval_interval}th frame is held out"
        )

    views, msgs = cross_camera_views(dp, frames_all, run.trained, run.data, settings.cross_camera_stride)
    notes += msgs
    sheet = ViewThumbnails(columns, settings.thumbnail_width)
    if views:
        cross, lp_skip_cross = score_views(
            run, views, lpips, progress, f"{label}: cross-camera views", sheet, fixer=plus_fixer
        )
        lp_skip |= lp_skip_cross
    else:
        cross = empty_photo_metrics()
        skipped["cross_camera"] = f"no cross-camera view the run did not train on (eval_cameras {list(dp.eval_cameras)}, trained {list(dp.cameras)})"
    if lp_skip and "lpips" not in skipped:
        skipped["lpips"] = im.lpips_skip_reason()
    return PhotoScores(heldout=heldout, cross_camera=cross, cross_cells=sheet.cells, skipped=skipped, notes=notes)
