"""``difix-refiner eval``: held-out photo metrics and photo-free metrics of laterally shifted drives.

What is measured (``metrics.json``; every metric key is always present, ``null`` when it could not
be computed, with the reason under ``"skipped"``):

- ``heldout``: PSNR / SSIM (/ LPIPS when its AlexNet weights are on disk) of renders against the
  photos of every ``eval_interval``-th frame of the training cameras (the run's own interval rule),
  whatever the run's ``eval_mode``. Frames the run trained on are dropped with a warning (a run
  trained with ``eval_mode cross-camera`` has none left: skipped).
- ``cross_camera``: the same metrics on the run's ``eval_cameras`` (front-left and front-right for a
  front-only training), loaded from the PandaSet folder through the run's dataparser transform. A
  camera the run trained on is skipped with a warning.
- ``heldout.fixed`` / ``cross_camera.fixed``: the same metrics after the fixer (the Difix3D+ "+" step),
  given the nearest training photo by pose as its reference (needs a fixer; ``--no-fix-heldout`` skips).
- ``shifted["+1"]`` etc. (offsets in metres, positive = vehicle's left) and ``recorded`` (offset 0),
  over every ``frame_stride``-th training frame of one camera:

  - ``depth_absrel``, ``depth_rmse`` (metres): rendered z-depth against LiDAR z-depth. The LiDAR
    truth of a pixel is its nearest projected point (z-buffer); points hidden behind nearer points
    within ``occlusion_radius_px`` are dropped, and only pixels whose rendered accumulation exceeds
    ``min_accumulation`` count. Pixels of all frames are pooled.
  - ``lidar_psnr``: LiDAR-anchored colour PSNR. The sweeps of frames ``t - lidar_window .. t +
    lidar_window`` (those that exist) are aggregated; a point visible (z-buffer) in the real camera
    at frame t takes its colour from the frame-t photo; if it is also visible in the shifted camera,
    the shifted render's pixel at its projection is compared with that colour. Squared errors of all
    points of all frames are pooled into one PSNR. Moving objects and the LiDAR-camera time offset
    add error that is the same for every run, so compare runs, not absolute values.
    ``lidar_psnr_fixed`` is the same for the fixed renders (needs a fixer; a hint fixer gets each view's
    LiDAR hint from the run's seed points, which hold training sweeps only).
  - ``lidar_share_rendered_nearer``: share of those points where the render's depth is more than 20%
    nearer than the point's: the render shows something in front of it. Off the path that is a floater or
    a splat standing out toward the camera, or a true occluder that the sparse LiDAR's z-buffer missed
    (a parked car the shifted camera sees in front of the road), so the two cannot be told apart here.
    ``lidar_psnr_not_rendered_nearer`` is ``lidar_psnr`` over the other points.
  - ``sharpness``: mean variance of the Laplacian of the renders (no reference);
    ``sharpness_ratio`` = shifted / recorded.
  - ``fixer_agreement_psnr`` and ``fixer_mean_abs_diff``: between fixer(render) and the render, i.e.
    how much the fixer had to change (needs a fixer).
  - ``fid``, ``kid_mean``, ``kid_std``: against the run's training photos of the camera (and
    ``*_fixed`` for the fixed renders), only with ``--inception-weights``.

The contact sheet (``contact_sheet.png``) has one column per sampled frame and these rows, top to
bottom: the recorded photo; then for each run (``--load-config``, then ``--compare-config``): its
render on the recorded path, its render shifted by ``--sheet-offset`` metres, and that shifted render
after the fixer (when a fixer is available).

Library use (e.g. the demo, for two runs)::

    settings = EvalSettings(frame_stride=10)
    fixer, why_not = FixerOptions().load_fixer()
    with progress_bar() as progress:
        a = evaluate_run(cfg_a, settings, label="baseline", fixer=fixer, fixer_skip_reason=why_not, progress=progress)
        b = evaluate_run(cfg_b, settings, label="refiner", fixer=fixer, fixer_skip_reason=why_not,
                         sheet_frames=a.sheet_frames, progress=progress)
    write_report(out_dir, {"baseline": a.metrics, "refiner": b.metrics}, build_contact_sheet([a, b]))

The pieces: :mod:`~difix_refiner.evaluation.settings` (the options), :mod:`~difix_refiner.evaluation.runs`
(loading the run, choosing views), :mod:`~difix_refiner.evaluation.photo_metrics` (held-out and
cross-camera scores), :mod:`~difix_refiner.evaluation.shifted` (the shifted drives against LiDAR),
:mod:`~difix_refiner.evaluation.contact_sheets` and :mod:`~difix_refiner.evaluation.report`.
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from difix_refiner.core import image_metrics as im
from difix_refiner.core.contact_sheet import LabelledRow, sample_positions
from difix_refiner.core.errors import InputError
from difix_refiner.core.progress import NoProgress
from difix_refiner.evaluation import lidar_protocol as lp
from difix_refiner.evaluation.drive_extras import DriveExtras
from difix_refiner.evaluation.photo_metrics import (
    ViewCells,
    score_heldout_and_cross_camera,
)
from difix_refiner.evaluation.runs import LoadedRun, load_run
from difix_refiner.evaluation.settings import EvalSettings
from difix_refiner.evaluation.shifted import (
    DrivePlan,
    DriveResult,
    drive_metrics,
    evaluate_drive,
)
from difix_refiner.fixer.render_fixing import read_photo, takes_hints


@dataclass
class RunEvaluation:
    """The result of :func:`evaluate_run`."""

    label: str
    """Name of the run (contact-sheet labels, ``metrics.json`` key when several runs are reported)."""
    metrics: Dict[str, Any]
    """JSON-ready metrics (see the module docstring)."""
    sheet_frames: List[int]
    """Frame indices of the contact-sheet columns."""
    photo_row: Dict[int, np.ndarray] = field(default_factory=dict)
    """Recorded photos of the sheet frames (thumbnails)."""
    rows: List[LabelledRow] = field(default_factory=list)
    """This run's contact-sheet rows (recorded render, shifted render, shifted + fixer)."""
    cross_camera: ViewCells = field(default_factory=dict)
    """Thumbnails of the sheet frames seen by each cross-camera view: ``{camera: {"photo" | "render": {frame: thumb}}}``."""
    extras: Optional[DriveExtras] = None
    """Depth contact sheet and moving-object data (``drive_extras.write_geometry_figures`` draws them)."""


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _inception_extractor(settings: EvalSettings, skipped: Dict[str, str]) -> Any:
    """The FID/KID feature extractor, or None (and why, under ``skipped``)."""
    from difix_refiner.core.optional_weights import inception_path

    weights = settings.inception_weights or (inception_path() if inception_path().is_file() else None)
    if weights is None:
        skipped["fid_kid"] = (
            "FID/KID need torch-fidelity's InceptionV3 weights (--inception-weights PATH, or "
            "`difix-refiner weights fetch inception`); nothing is downloaded"
        )
        return None
    try:
        return im.inception_extractor(weights)
    except im.InceptionWeightsError as err:
        raise InputError(str(err)) from err


def _real_features(run: LoadedRun, camera: Optional[str], extractor: Any) -> Any:
    """Inception features ``[N, D]`` of the camera's training photos, the real distribution of FID/KID."""
    recorded = run.recorded
    photos = [
        read_photo(run.train_paths[i], int(recorded.cameras.width[i]), int(recorded.cameras.height[i]))
        for i in recorded.select(camera).tolist()
    ]
    return im.inception_features(photos, extractor)


def _info(
    run: LoadedRun, settings: EvalSettings, camera: Optional[str], frames: np.ndarray, drive: DriveResult,
    fixer: Any, fixer_name: Optional[str],
) -> Dict[str, Any]:  # fmt: skip
    """The ``info`` entry of ``metrics.json``: what was evaluated, and how."""
    return {
        "load_config": str(run.config_path),
        "method": run.config.method_name,
        "camera": camera,
        "frames": [int(f) for f in frames],
        "positive_offset_means": "vehicle's left",
        "metres_per_scene_unit": run.recorded.metres_per_scene_unit,
        "lidar_data": str(drive.lidar_root),
        "lidar_window": settings.lidar_window,
        "lidar_sweeps": drive.extras.lidar_sweeps,
        "visibility": dataclasses.asdict(settings.visibility()),
        "min_accumulation": settings.min_accumulation,
        "max_depth_m": settings.max_depth_m,
        "fixer": None if fixer is None else (fixer_name or str(getattr(fixer, "base", None) or "given in-process")),
        "fixer_reference": bool(settings.fixer_reference and fixer is not None and fixer.config.supports_references),
    }


def _sheet_rows(label: str, drive: DriveResult, shown: float) -> List[LabelledRow]:
    """The run's contact-sheet rows: render on the recorded path, shifted render, shifted + fixer (with a fixer)."""
    rows = [
        LabelledRow(f"{label}\nrender, recorded path", drive.thumbs["recorded"]),
        LabelledRow(f"{label}\nrender, shifted {shown:+g} m", drive.thumbs["shifted"]),
    ]
    if drive.thumbs["fixed"]:
        rows.append(LabelledRow(f"{label}\nshifted {shown:+g} m + fixer", drive.thumbs["fixed"]))
    return rows


def evaluate_run(
    config_path: Path,
    settings: EvalSettings,
    *,
    label: str = "run",
    fixer: Any = None,
    fixer_skip_reason: Optional[str] = None,
    fixer_name: Optional[str] = None,
    sheet_frames: Optional[Sequence[int]] = None,
    progress: Any = None,
) -> RunEvaluation:
    """Evaluate one trained run (see the module docstring for every metric).

    Args:
        config_path: The run's ``config.yml``.
        settings: What to evaluate.
        label: Name of the run in the contact sheet (and as a key when several runs are reported).
        fixer: A loaded :class:`~difix_refiner.fixer.Fixer`, or None (agreement metrics skipped).
        fixer_skip_reason: Why there is no fixer (recorded under ``skipped``).
        fixer_name: What the fixer is (its base / adapter), recorded in ``info``.
        sheet_frames: Contact-sheet columns to use (to align several runs); default: sampled evenly.
        progress: A rich ``Progress`` (see :func:`~difix_refiner.core.progress.progress_bar`), or None for no bar.

    Raises:
        InputError: bad settings, missing files, unknown cameras, a run that is not a pandaset-data run.
    """
    offsets = settings.checked_offsets()
    progress = progress if progress is not None else NoProgress()
    _seed_everything(settings.seed)

    run = load_run(config_path, settings.data, seed_points=fixer is not None and takes_hints(fixer))
    recorded = run.recorded
    # Resolved first so that an unknown --camera fails before any rendering.
    camera = recorded.resolve_camera(settings.camera)
    dp = run.config.pipeline.datamanager.dataparser
    selection = lp.shifted_selection(recorded, camera, lp.frame_stride(settings.frame_stride, dp))  # [M] training-image indices
    frames = recorded.frame_indices[selection]  # [M]
    if sheet_frames is None:
        columns = [int(frames[p]) for p in sample_positions(len(frames), settings.sheet_frames)]
    else:
        columns = [int(f) for f in sheet_frames]

    photos = score_heldout_and_cross_camera(run, settings, columns, fixer, progress, label)
    skipped, notes = dict(photos.skipped), list(photos.notes)
    if fixer is None:
        skipped["fixer"] = fixer_skip_reason or "no fixer was given"
    extractor = _inception_extractor(settings, skipped)
    shown = settings.shown_offset(offsets)
    plan = DrivePlan(camera, selection, offsets, columns, shown, keep_renders=extractor is not None)
    drive = evaluate_drive(run, settings, plan, fixer, progress, label)
    notes += drive.notes
    if not any(drive.stats[o].colour for o in drive.stats):
        skipped["lidar"] = f"no LiDAR sweeps near the evaluated frames in {drive.lidar_root / 'lidar'}"
    real_features = None
    if extractor is not None:
        real_features = _real_features(run, camera, extractor)  # [N, D]
        if len(frames) < 2:
            skipped["fid_kid"] = "FID/KID need at least 2 rendered frames per offset (lower --frame-stride)"
    recorded_metrics, shifted = drive_metrics(drive, offsets, real_features, extractor, settings.seed)

    for note in notes:
        warnings.warn(f"{label}: {note}", stacklevel=2)
    metrics = {
        "heldout": photos.heldout,
        "cross_camera": photos.cross_camera,
        "shifted": shifted,
        "recorded": recorded_metrics,
        "skipped": skipped,
        "notes": notes,
        "info": _info(run, settings, camera, frames, drive, fixer, fixer_name),
    }
    return RunEvaluation(
        label=label, metrics=metrics, sheet_frames=columns, photo_row=drive.photo_row,
        rows=_sheet_rows(label, drive, shown), cross_camera=photos.cross_cells, extras=drive.extras,
    )  # fmt: skip
