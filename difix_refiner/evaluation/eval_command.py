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
  - ``sharpness``: mean variance of the Laplacian of the renders (no reference);
    ``sharpness_ratio`` = shifted / recorded.
  - ``fixer_agreement_psnr`` and ``fixer_mean_abs_diff``: between fixer(render) and the render, i.e.
    how much the fixer had to change (needs a fixer).
  - ``fid``, ``kid_mean``, ``kid_std``: against the run's training photos of the camera (and
    ``*_fixed`` for the fixed renders), only with ``--inception-weights``.

LiDAR protocol and moving objects (``lidar_protocol``, ``moving_objects``, ``drive_extras``): the LiDAR
metrics read only the run's evaluation sweeps (never trained on; ``info.lidar_sweeps`` lists them) with the
points of moving objects removed; ``psnr`` of held-out and cross-camera views is the whole image and
``psnr_static_pixels`` leaves the pixels of moving objects' boxes out; ``fixer_change_moving`` /
``fixer_change_static`` (per offset) is the fixer's mean change inside / outside those boxes. Also written:
``depth_contact_sheet.png`` (rendered depth on the path and shifted, evaluation LiDAR drawn over it) and
``moving_object_masks.png`` (the masks of the middle sheet frame in every camera).

The contact sheet (``contact_sheet.png``) has one column per sampled frame and these rows, top to
bottom: the recorded photo; then for each run (``--load-config``, then ``--compare-config``): its
render on the recorded path, its render shifted by ``--sheet-offset`` metres, and that shifted render
after the fixer (when a fixer is available).

Library use (e.g. the demo, for two runs)::

    settings = EvalSettings(frame_stride=10)
    fixer, why_not = load_fixer(None, None)
    with eval_progress() as progress:
        a = evaluate_run(cfg_a, settings, label="baseline", fixer=fixer, fixer_skip_reason=why_not, progress=progress)
        b = evaluate_run(cfg_b, settings, label="refiner", fixer=fixer, fixer_skip_reason=why_not,
                         sheet_frames=a.sheet_frames, progress=progress)
    write_report(out_dir, {"baseline": a.metrics, "refiner": b.metrics}, build_contact_sheet([a, b]))
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from difix_refiner.cameras.contact_sheet import sample_positions, thumbnail
from difix_refiner.cameras.options import ShiftOptions
from difix_refiner.cameras.run_data import InputError, load_run_config, recorded_images, validate_offsets
from difix_refiner.evaluation import image_metrics as im
from difix_refiner.evaluation import lidar_metrics as lm
from difix_refiner.evaluation import lidar_protocol as lp
from difix_refiner.evaluation.drive_extras import DriveExtras, run_masks, write_geometry_figures
from difix_refiner.evaluation.moving_objects import StaticPixelScores
from difix_refiner.evaluation.report import SheetRow, check_free, make_grid, write_report
from difix_refiner.fixer.render_fixing import DEFAULT_FIXER, fix_render, load_fixer, read_photo


def offset_key(offset_m: float) -> str:
    """JSON key of an offset: ``+1``, ``-2``, ``+1.5``."""
    return f"{offset_m:+g}"


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(kw_only=True)
class EvalSettings:
    """What to evaluate and how (shared by the ``eval`` command and in-process callers such as the demo)."""

    offsets: Tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)
    """Lateral offsets in metres of the shifted drives; positive = the vehicle's left (e.g. --offsets -2 -1 1 2)."""
    camera: Optional[str] = None
    """Rig camera whose drive is shifted (default: front_camera)."""
    frame_stride: Optional[int] = None
    """Shifted/recorded metrics use every n-th training frame of the camera; default: the run's
    --lidar-eval-stride (the frames whose LiDAR sweeps it held back for evaluation), else 5."""
    heldout_stride: int = 1
    """Use every n-th of the held-out (every eval_interval-th) frames."""
    cross_camera_stride: int = 1
    """Use every n-th frame of each cross-camera view."""
    data: Optional[Path] = None
    """PandaSet folder of the run, if the path saved in its config.yml is not valid from here."""
    lidar_data: Optional[Path] = None
    """PandaSet folder whose lidar/ sweeps are used (same world frame), e.g. a copy with denser sweeps. Default: the run's folder."""
    lidar_window: int = 2
    """Aggregate the LiDAR sweeps of frames t-k..t+k (those that exist) for frame t; more points, but moving objects smear."""
    occlusion_radius_px: int = 1
    """A LiDAR point counts as occluded if a nearer point lies within this many pixels (0: same pixel only)."""
    occlusion_rel_tol: float = 0.05
    """Depth slack (fraction of depth) before a nearer point occludes another."""
    occlusion_abs_tol_m: float = 0.1
    """Depth slack in metres before a nearer point occludes another."""
    min_accumulation: float = 0.5
    """Depth errors only count pixels whose rendered accumulated opacity exceeds this."""
    max_depth_m: float = lm.DEFAULT_MAX_DEPTH_M
    """LiDAR points farther than this (z-depth, metres) are ignored."""
    inception_weights: Optional[Path] = None
    """torch-fidelity InceptionV3 weights file (weights-inception-2015-12-05-6726825d.pth) for FID/KID; without it they are skipped (nothing is downloaded)."""
    fixer_reference: bool = True
    """Give the fixer the recorded photo of the same frame as its reference view (when the fixer takes references)."""
    fix_heldout: bool = True
    """With a fixer, also score the held-out and cross-camera renders after the fixer (the Difix3D+ "+"
    step; the reference is the nearest training photo by pose), under ``fixed``."""
    sheet_frames: int = 4
    """Number of frames (columns) in the contact sheet."""
    sheet_offset: Optional[float] = None
    """Offset (metres) shown in the contact sheet; default: the largest one (left on ties)."""
    thumbnail_width: int = 240
    """Width in pixels of each contact-sheet cell."""
    seed: int = 0
    """Seed for everything random (KID subsets)."""

    def checked_offsets(self) -> List[float]:
        """Validate the settings; return the offsets."""
        offsets = validate_offsets(self.offsets)
        for name in ("frame_stride", "heldout_stride", "cross_camera_stride", "sheet_frames"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lidar_window < 0:
            raise InputError(f"--lidar-window must be >= 0, got {self.lidar_window}")
        if self.occlusion_radius_px < 0 or self.occlusion_rel_tol < 0 or self.occlusion_abs_tol_m < 0:
            raise InputError("--occlusion-radius-px, --occlusion-rel-tol and --occlusion-abs-tol-m must be >= 0")
        if not 0.0 <= self.min_accumulation < 1.0:
            raise InputError(f"--min-accumulation must be in [0, 1), got {self.min_accumulation}")
        if not (np.isfinite(self.max_depth_m) and self.max_depth_m > lm.DEFAULT_NEAR_M):
            raise InputError(f"--max-depth-m must be larger than {lm.DEFAULT_NEAR_M}, got {self.max_depth_m}")
        if self.thumbnail_width < 8:
            raise InputError("--thumbnail-width must be at least 8")
        if self.sheet_offset is not None and not any(np.isclose(self.sheet_offset, o) for o in offsets):
            raise InputError(f"--sheet-offset {self.sheet_offset} is not one of --offsets {offsets}")
        if self.inception_weights is not None and not Path(self.inception_weights).is_file():
            raise InputError(f"--inception-weights file not found: {self.inception_weights}")
        for name in ("data", "lidar_data"):
            folder = getattr(self, name)
            if folder is not None and not Path(folder).is_dir():
                raise InputError(f"--{name.replace('_', '-')} folder not found: {folder}")
        return offsets

    def visibility(self) -> lm.Visibility:
        """The z-buffer settings."""
        return lm.Visibility(self.occlusion_radius_px, self.occlusion_rel_tol, self.occlusion_abs_tol_m)

    def shown_offset(self, offsets: Sequence[float]) -> float:
        """The offset shown in the contact sheet."""
        if self.sheet_offset is not None:
            return float(self.sheet_offset)
        return max(offsets, key=lambda o: (abs(o), o))


# --------------------------------------------------------------------------------------------
# Run loading and views


@dataclass
class LoadedRun:
    """A trained pipeline plus what the evaluation needs from its dataparser."""

    config_path: Path
    config: Any
    pipeline: Any
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


def load_run(config_path: Path, data: Optional[Path] = None) -> LoadedRun:
    """Load a trained ``pandaset-data`` run (checkpoint included) for evaluation."""
    from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig

    config_path = Path(config_path)
    config = load_run_config(config_path)
    dm = config.pipeline.datamanager
    if not isinstance(dm.dataparser, PandasetDataParserConfig):
        raise InputError(
            f"{config_path} was trained with the {type(dm.dataparser).__name__} dataparser; eval needs a "
            "pandaset-data run (it reads cameras and LiDAR from the PandaSet folder)"
        )
    folder = Path(data) if data is not None else Path(dm.data if getattr(dm, "data", None) is not None else dm.dataparser.data)
    if not folder.is_dir():
        raise InputError(f"the run's PandaSet folder {folder} does not exist from here; pass --data PATH")

    import difix_refiner.nerfstudio  # noqa: F401  (lets torch load nerfstudio checkpoints)
    from nerfstudio.utils.eval_utils import eval_setup

    def use_folder(cfg: Any) -> Any:
        cfg.pipeline.datamanager.data = folder
        cfg.pipeline.datamanager.dataparser.data = folder
        return cfg

    ckpt_dir = config.get_checkpoint_dir()
    if not Path(ckpt_dir).is_dir() or not any(Path(ckpt_dir).glob("step-*.ckpt")):
        raise InputError(f"no checkpoint in {ckpt_dir}: the run has not saved one yet")
    # "test" keeps the dataparser's downscale factor, so cameras match training exactly.
    _, pipeline, _, _ = eval_setup(config_path, test_mode="test", update_config_callback=use_folder)
    dm_inst = pipeline.datamanager
    outputs = dm_inst.train_dataparser_outputs
    recorded = recorded_images(outputs, dm_inst.train_dataset.cameras)
    names = recorded.camera_names or []
    trained = {(n, int(f)) for n, f in zip(names, recorded.frame_indices.tolist())}
    return LoadedRun(
        config_path=config_path,
        config=config,
        pipeline=pipeline,
        recorded=recorded,
        data=folder,
        trained=trained,
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
    views, notes = [], []
    for name in dp_config.cameras:
        kept, dropped = untrained_frames(name, held, trained)
        if dropped:
            notes.append(f"{name}: {dropped} of the {len(held)} every-{dp_config.eval_interval}th frames were trained on and are not evaluated")
        if len(kept[::stride]):
            views.append((name, kept[::stride]))
    return views, notes


def cross_camera_views(
    dp_config: Any, frames: np.ndarray, trained: Set[Tuple[str, int]], data: Path, stride: int = 1
) -> Tuple[List[Tuple[str, np.ndarray]], List[str]]:
    """All frames of the run's ``eval_cameras`` that it did not train on. Returns ``([(camera, frames)], warnings)``."""
    views, notes = [], []
    for name in dp_config.eval_cameras:
        if not (Path(data) / "camera" / name).is_dir():
            raise InputError(f"unknown camera {name!r} in eval_cameras: {Path(data) / 'camera' / name} does not exist")
        kept, dropped = untrained_frames(name, frames, trained)
        if dropped:
            notes.append(f"{name}: the run trained on {dropped} of its frames; those are not evaluated as cross-camera views")
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


@dataclass
class Render:
    """One render: colour uint8 ``[H, W, 3]``, z-depth in metres and accumulation ``[H, W]``."""

    rgb: np.ndarray
    depth_m: Optional[np.ndarray]
    accumulation: Optional[np.ndarray]


def render_camera(pipeline: Any, camera: Any, metres_per_scene_unit: float) -> Render:
    """Render a single camera ``[1]`` with the model's camera API (no training state is touched)."""
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
    rgb8 = (np.clip(rgb[..., :3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    depth = plain("depth")
    acc = plain("accumulation")
    return Render(
        rgb=rgb8,
        depth_m=None if depth is None else depth[..., 0] * metres_per_scene_unit,
        accumulation=None if acc is None else acc[..., 0],
    )


def camera_matrix(cameras: Any, i: int) -> Tuple[np.ndarray, int, int]:
    """``K [3, 3]``, width and height of camera ``i`` of a ``Cameras`` batch."""
    fx, fy = float(cameras.fx[i]), float(cameras.fy[i])
    cx, cy = float(cameras.cx[i]), float(cameras.cy[i])
    return lm.intrinsics_matrix(fx, fy, cx, cy), int(cameras.width[i]), int(cameras.height[i])


# --------------------------------------------------------------------------------------------
# Evaluation of one run


@dataclass
class RunEvaluation:
    """The result of :func:`evaluate_run`."""

    label: str
    metrics: Dict[str, Any]
    """JSON-ready metrics (see the module docstring)."""
    sheet_frames: List[int]
    """Frame indices of the contact-sheet columns."""
    photo_row: Dict[int, np.ndarray] = field(default_factory=dict)
    """Recorded photos of the sheet frames (thumbnails)."""
    rows: List[SheetRow] = field(default_factory=list)
    """This run's contact-sheet rows (recorded render, shifted render, shifted + fixer)."""
    cross_camera: Dict[str, Dict[str, Dict[int, np.ndarray]]] = field(default_factory=dict)
    """Thumbnails of the sheet frames seen by each cross-camera view: ``{camera: {"photo" | "render": {frame: thumb}}}``."""
    extras: Optional[DriveExtras] = None
    """Depth contact sheet and moving-object data (``drive_extras.write_geometry_figures`` draws them)."""


@contextlib.contextmanager
def eval_progress() -> Iterator[Any]:
    """A rich progress bar for :func:`evaluate_run`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()
    )
    with progress:
        yield progress


class _NoProgress:
    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        pass


def _photo_metrics(
    run: LoadedRun,
    views: List[Tuple[str, np.ndarray]],
    lpips: Any,
    progress: Any,
    title: str,
    sheet: Optional[Tuple[Sequence[int], int, Dict[str, Dict[str, Dict[int, np.ndarray]]]]] = None,
    fixer: Any = None,
) -> Tuple[Dict[str, Any], bool]:
    """PSNR/SSIM/LPIPS over views; returns (summary with per-camera means, whether LPIPS was skipped).

    ``sheet = (frames, width, out)`` also keeps thumbnails of those frames: ``out[camera]["photo" |
    "render"][frame]``. With a ``fixer``, every render is also scored after the fixer (the Difix3D+ "+"
    step) under ``"fixed"``, its reference being the nearest training photo by pose.
    """
    from difix_refiner.training.reference_views import nearest_reference

    total = int(sum(len(f) for _, f in views))
    task = progress.add_task(title, total=total)
    overall = im.PhotoMetrics(lpips=lpips)
    fixed_metrics = im.PhotoMetrics(lpips=lpips) if fixer is not None else None
    per_camera = {}
    mpsu = run.recorded.metres_per_scene_unit
    train_poses = np.asarray(run.recorded.camera_to_worlds, dtype=np.float64)  # [N, 3, 4]
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
            if sheet is not None and int(frames[i]) in sheet[0]:
                cells = sheet[2].setdefault(name, {"photo": {}, "render": {}})
                cells["photo"][int(frames[i])] = thumbnail(photo, sheet[1])
                cells["render"][int(frames[i])] = thumbnail(render.rgb, sheet[1])
            overall.psnr.append(scores["psnr"])
            overall.ssim.append(scores["ssim"])
            if "lpips" in scores:
                overall.lpips_values.append(scores["lpips"])
            if fixed_metrics is not None:
                pose = cams.camera_to_worlds[i].double().numpy()  # [3, 4] scene units
                ref = nearest_reference(pose, train_poses, metres_per_scene_unit=mpsu)
                reference = read_photo(run.train_paths[ref], w, h) if ref is not None else None
                fixed_metrics.add(fix_render(fixer, render.rgb, reference), photo)
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


def _empty_photo_metrics() -> Dict[str, Any]:
    return {"psnr": None, "ssim": None, "lpips": None, "psnr_static_pixels": None, "moving_pixel_fraction": None, "num_views": 0, "per_camera": {}, "fixed": None}


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
        progress: A rich ``Progress`` (see :func:`eval_progress`), or None for no bar.

    Raises:
        InputError: bad settings, missing files, unknown cameras, a run that is not a pandaset-data run.
    """
    offsets = settings.checked_offsets()
    progress = progress if progress is not None else _NoProgress()
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    import torch

    torch.manual_seed(settings.seed)

    run = load_run(config_path, settings.data)
    dp = run.config.pipeline.datamanager.dataparser
    recorded = run.recorded
    mpsu = recorded.metres_per_scene_unit
    skipped: Dict[str, str] = {}
    notes: List[str] = []
    # Resolved first so that an unknown --camera fails before any rendering.
    camera = recorded.resolve_camera(settings.camera)
    selection = lp.shifted_selection(recorded, camera, lp.frame_stride(settings.frame_stride, dp))  # [M] training-image indices
    frames = recorded.frame_indices[selection]  # [M]

    # ---- held-out photos -------------------------------------------------------------------
    from difix_refiner.evaluation.lpips_metric import LazyLPIPS

    lpips = LazyLPIPS()
    if not lpips.available:
        skipped["lpips"] = im.lpips_skip_reason()
    plus_fixer = fixer if settings.fix_heldout else None
    frames_all = run_frame_range(dp, run.data)
    views, msgs = heldout_views(dp, frames_all, run.trained, settings.heldout_stride)
    notes += msgs
    if views:
        heldout, lp_skip = _photo_metrics(run, views, lpips, progress, f"{label}: held-out frames", fixer=plus_fixer)
    else:
        heldout, lp_skip = _empty_photo_metrics(), False
        skipped["heldout"] = (
            f"the run trained on every frame of {', '.join(dp.cameras)} (eval_mode {dp.eval_mode!r}), so no "
            f"every-{dp.eval_interval}th frame is held out"
        )
    if sheet_frames is None:
        columns = [int(frames[p]) for p in sample_positions(len(frames), settings.sheet_frames)]
    else:
        columns = [int(f) for f in sheet_frames]
    views, msgs = cross_camera_views(dp, frames_all, run.trained, run.data, settings.cross_camera_stride)
    notes += msgs
    cross_cells: Dict[str, Dict[str, Dict[int, np.ndarray]]] = {}
    if views:
        cross, lp_skip2 = _photo_metrics(
            run, views, lpips, progress, f"{label}: cross-camera views", (columns, settings.thumbnail_width, cross_cells),
            fixer=plus_fixer,
        )  # fmt: skip
        lp_skip |= lp_skip2
    else:
        cross = _empty_photo_metrics()
        skipped["cross_camera"] = f"no cross-camera view the run did not train on (eval_cameras {list(dp.eval_cameras)}, trained {list(dp.cameras)})"
    if lp_skip and "lpips" not in skipped:
        skipped["lpips"] = im.lpips_skip_reason()

    # ---- shifted drives --------------------------------------------------------------------
    if fixer is None:
        skipped["fixer"] = fixer_skip_reason or "no fixer was given"
    extractor = None
    if settings.inception_weights is not None:
        try:
            extractor = im.inception_extractor(settings.inception_weights)
        except im.InceptionWeightsError as err:
            raise InputError(str(err)) from err
    else:
        skipped["fid_kid"] = "FID/KID need --inception-weights PATH (torch-fidelity's InceptionV3 weights); nothing is downloaded"
    shown = settings.shown_offset(offsets)

    drive = _evaluate_drive(run, settings, camera, selection, offsets, fixer, extractor is not None, columns, shown, progress, label)
    notes += drive.notes
    if not any(drive.stats[o].colour for o in drive.stats):
        skipped["lidar"] = f"no LiDAR sweeps near the evaluated frames in {drive.lidar_root / 'lidar'}"

    real_features = None
    if extractor is not None:
        # The camera's training photos are the real distribution; their features are computed once.
        photos = [
            read_photo(run.train_paths[i], int(recorded.cameras.width[i]), int(recorded.cameras.height[i]))
            for i in recorded.select(camera).tolist()
        ]
        real_features = im.inception_features(photos, extractor)  # [N, D]
        if len(frames) < 2:
            skipped["fid_kid"] = "FID/KID need at least 2 rendered frames per offset (lower --frame-stride)"

    recorded_metrics = drive.stats[0.0].summary(real_features, extractor, settings.seed)
    recorded_metrics.update(drive.extras.offset_summary(0.0))
    recorded_metrics["photo_sharpness"] = im.mean_or_none(drive.photo_sharpness)
    shifted = {}
    for offset in sorted(offsets):
        entry = drive.stats[offset].summary(real_features, extractor, settings.seed)
        rec = recorded_metrics["sharpness"]
        entry["sharpness_ratio"] = None if not rec or entry["sharpness"] is None else entry["sharpness"] / rec
        entry.update(drive.extras.offset_summary(offset))
        shifted[offset_key(offset)] = entry

    for note in notes:
        warnings.warn(f"{label}: {note}", stacklevel=2)
    visibility = settings.visibility()
    metrics = {
        "heldout": heldout,
        "cross_camera": cross,
        "shifted": shifted,
        "recorded": recorded_metrics,
        "skipped": skipped,
        "notes": notes,
        "info": {
            "load_config": str(run.config_path),
            "method": run.config.method_name,
            "camera": camera,
            "frames": [int(f) for f in frames],
            "positive_offset_means": "vehicle's left",
            "metres_per_scene_unit": mpsu,
            "lidar_data": str(drive.lidar_root),
            "lidar_window": settings.lidar_window,
            "lidar_sweeps": drive.extras.lidar_sweeps,
            "visibility": dataclasses.asdict(visibility),
            "min_accumulation": settings.min_accumulation,
            "max_depth_m": settings.max_depth_m,
            "fixer": None if fixer is None else (fixer_name or str(getattr(fixer, "base", None) or "given in-process")),
            "fixer_reference": bool(settings.fixer_reference and fixer is not None and fixer.config.supports_references),
        },
    }
    rows: List[SheetRow] = [
        (f"{label}\nrender, recorded path", drive.thumbs["recorded"]),
        (f"{label}\nrender, shifted {shown:+g} m", drive.thumbs["shifted"]),
    ]
    if drive.thumbs["fixed"]:
        rows.append((f"{label}\nshifted {shown:+g} m + fixer", drive.thumbs["fixed"]))
    return RunEvaluation(
        label=label, metrics=metrics, sheet_frames=columns, photo_row=drive.photo_row, rows=rows, cross_camera=cross_cells,
        extras=drive.extras,
    )  # fmt: skip


@dataclass
class _OffsetStats:
    """What is gathered for one offset over the frames."""

    depth: List[lm.DepthSamples] = field(default_factory=list)
    colour: List[lm.ColourSamples] = field(default_factory=list)
    sharpness: List[float] = field(default_factory=list)
    agreement: List[Dict[str, float]] = field(default_factory=list)
    renders: List[np.ndarray] = field(default_factory=list)
    """Kept only for FID/KID."""
    fixed: List[np.ndarray] = field(default_factory=list)
    """Kept only for FID/KID."""

    def summary(self, real_features: Any, extractor: Any, seed: int) -> Dict[str, Any]:
        """The JSON entry of this offset (None where nothing could be measured)."""
        d = lm.depth_errors(lm.DepthSamples.concat(self.depth))
        c = lm.samples_psnr(lm.ColourSamples.concat(self.colour))
        out: Dict[str, Any] = {
            "lidar_psnr": c["psnr"],
            "lidar_points": c["num_points"],
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
class _DriveResult:
    stats: Dict[float, _OffsetStats]
    """Per offset, 0.0 being the recorded path."""
    photo_sharpness: List[float]
    photo_row: Dict[int, np.ndarray]
    thumbs: Dict[str, Dict[int, np.ndarray]]
    """``recorded`` / ``shifted`` / ``fixed`` thumbnails per sheet frame."""
    notes: List[str]
    lidar_root: Path
    extras: Optional[DriveExtras] = None
    """Evaluation-sweep protocol, moving objects and the depth contact sheet (``drive_extras``)."""


def _evaluate_drive(
    run: LoadedRun,
    settings: EvalSettings,
    camera: Optional[str],
    selection: np.ndarray,
    offsets: Sequence[float],
    fixer: Any,
    keep_renders: bool,
    columns: Sequence[int],
    shown: float,
    progress: Any,
    label: str,
) -> _DriveResult:
    """Render the recorded and shifted drives at the selected frames and gather LiDAR/sharpness/fixer data."""
    import torch
    from nerfstudio.cameras.cameras import Cameras

    from difix_refiner.data.pandaset import PandasetFormatError, load_lidar_positions, load_lidar_sweeps

    recorded = run.recorded
    mpsu = recorded.metres_per_scene_unit
    frames = recorded.frame_indices[selection]  # [M]
    all_offsets = [0.0] + sorted(offsets, reverse=True)
    shifter = ShiftOptions(load_config=run.config_path, offsets=tuple(offsets), output_dir=Path("."), camera=camera)
    # Shift the camera's whole drive (shift_poses needs >= 2 poses), then keep the selected frames.
    full = recorded.select(camera)  # [F] training-image indices, in frame order
    where = {int(i): p for p, i in enumerate(full.tolist())}
    take = np.array([where[int(i)] for i in selection], dtype=np.int64)  # [M]
    poses = {o: shifter.shifted_poses(recorded, full, o)[take] for o in all_offsets}  # {offset: [M, 3, 4]}
    train_cams = recorded.cameras[torch.from_numpy(selection)]

    lidar_root = Path(settings.lidar_data) if settings.lidar_data is not None else run.data
    k = settings.lidar_window
    try:
        sweeps = load_lidar_sweeps(lidar_root, sorted({int(f) + d for f in frames for d in range(-k, k + 1)}))
        sensors = load_lidar_positions(lidar_root)  # [F, 3]
    except PandasetFormatError as err:
        raise InputError(f"cannot read the LiDAR of {lidar_root}: {err}") from err
    # Only the run's evaluation sweeps, without moving objects (lidar_protocol).
    extras, sweeps = DriveExtras.start(run, sweeps, frames.tolist(), k, offsets, settings.thumbnail_width)
    visibility = settings.visibility()

    def to_world(pose: np.ndarray) -> np.ndarray:
        return lm.scene_to_world_opencv(pose, recorded.dataparser_transform, recorded.dataparser_scale)

    result = _DriveResult(
        stats={o: _OffsetStats() for o in all_offsets},
        photo_sharpness=[],
        photo_row={},
        thumbs={"recorded": {}, "shifted": {}, "fixed": {}},
        notes=[],
        lidar_root=lidar_root,
        extras=extras,
    )
    without_lidar: List[int] = []
    width = settings.thumbnail_width
    task = progress.add_task(f"{label}: shifted drives ({camera})", total=len(frames) * len(all_offsets))
    for m, (idx, frame) in enumerate(zip(selection.tolist(), frames.tolist())):
        K, w, h = camera_matrix(train_cams, m)
        photo = read_photo(run.train_paths[idx], w, h)  # [H, W, 3] the frame-t photo
        result.photo_sharpness.append(im.laplacian_variance(photo))
        if frame in columns:
            result.photo_row[frame] = thumbnail(photo, width)
        points, used = lm.points_near_frame(sweeps, sensors, frame, k)  # [N, 3] world metres
        if not used:
            without_lidar.append(frame)
        real_view = lm.project_points(points, to_world(recorded.camera_to_worlds[idx]), K, w, h, visibility, max_depth=settings.max_depth_m)
        for offset in all_offsets:
            pose = poses[offset][m]  # [3, 4] scene units, OpenGL axes
            cam = Cameras(
                camera_to_worlds=torch.from_numpy(pose[None]).float(),
                fx=train_cams.fx[m : m + 1].clone(), fy=train_cams.fy[m : m + 1].clone(),
                cx=train_cams.cx[m : m + 1].clone(), cy=train_cams.cy[m : m + 1].clone(),
                width=train_cams.width[m : m + 1].clone(), height=train_cams.height[m : m + 1].clone(),
                camera_type=train_cams.camera_type[m : m + 1].clone(),
            )  # fmt: skip
            render = render_camera(run.pipeline, cam, mpsu)
            if render.rgb.shape[:2] != (h, w):
                raise RuntimeError(f"the model rendered {render.rgb.shape[1]}x{render.rgb.shape[0]} for a {w}x{h} camera")
            extras.on_render(frame, offset, pose, K, render)
            stats = result.stats[offset]
            stats.sharpness.append(im.laplacian_variance(render.rgb))
            if used:
                view = lm.project_points(points, to_world(pose), K, w, h, visibility, max_depth=settings.max_depth_m)
                stats.colour.append(lm.lidar_colour_samples(real_view, photo, view, render.rgb))
                if render.depth_m is not None:
                    stats.depth.append(lm.depth_samples(view, render.depth_m, render.accumulation, settings.min_accumulation))
            fixed = None
            if fixer is not None:
                fixed = fix_render(fixer, render.rgb, extras.reference(photo, frame) if settings.fixer_reference else None)
                stats.agreement.append(im.fixer_agreement(fixed, render.rgb))
                extras.on_fixed(offset, fixed, render)
            if keep_renders:
                stats.renders.append(render.rgb)
                if fixed is not None:
                    stats.fixed.append(fixed)
            if frame in columns:
                extras.on_sheet(frame, offset, render, view if used else None)
                if offset == 0.0:
                    result.thumbs["recorded"][frame] = thumbnail(render.rgb, width)
                elif np.isclose(offset, shown):
                    result.thumbs["shifted"][frame] = thumbnail(render.rgb, width)
                    if fixed is not None:
                        result.thumbs["fixed"][frame] = thumbnail(fixed, width)
            progress.advance(task)
    if without_lidar:
        result.notes.append(f"no LiDAR sweep within ±{k} frames of frames {without_lidar}: no LiDAR metrics there")
    return result


def build_contact_sheet(runs: Sequence[RunEvaluation]) -> Any:
    """Contact sheet of one or more runs: the recorded photo, then each run's rows (see the module docstring)."""
    if not runs:
        raise ValueError("no runs to show")
    frames = runs[0].sheet_frames
    rows: List[SheetRow] = [("recorded photo", runs[0].photo_row)]
    for run in runs:
        rows += run.rows
    return make_grid(rows, frames)


def build_cross_camera_sheet(runs: Sequence[RunEvaluation]) -> Optional[Any]:
    """Contact sheet of the cross-camera views: per held-out camera, its photo, then each run's render
    (None when no run has cross-camera views)."""
    if not runs or not any(cells["photo"] for cells in runs[0].cross_camera.values()):
        return None
    rows: List[SheetRow] = []
    for camera, cells in runs[0].cross_camera.items():
        rows.append((f"{camera}\nphoto (never trained on)", cells["photo"]))
        for run in runs:
            rows.append((f"{camera}\n{run.label} render", run.cross_camera.get(camera, {}).get("render", {})))
    return make_grid(rows, runs[0].sheet_frames)


# --------------------------------------------------------------------------------------------
# Command


@dataclass
class EvalCommand(EvalSettings):
    """Evaluate a trained pandaset-data run; write metrics.json and contact_sheet.png to --output-dir.

    Held-out photos (every eval_interval-th frame, and the run's eval_cameras, e.g. front-left/right,
    whatever its eval_mode; views it trained on are skipped): PSNR, SSIM, and LPIPS when its weights are
    on disk. Drives shifted sideways by --offsets metres (positive = left), which have no photo: depth
    AbsRel/RMSE against LiDAR, LiDAR-anchored colour PSNR, sharpness (variance of the Laplacian) vs the
    recorded path, fixer agreement, and FID/KID with --inception-weights. Contact-sheet rows: the
    recorded photo; then per run, its render on the recorded path, its render shifted by --sheet-offset,
    and that render after the fixer.
    """

    load_config: Path
    """Path to the run's config.yml (written by ns-train)."""
    output_dir: Optional[Path] = None
    """Folder for metrics.json and contact_sheet.png (default: an 'eval' folder next to the config)."""
    compare_config: Optional[Path] = None
    """A second run's config.yml (e.g. the baseline vs the refiner); both are evaluated the same way and metrics.json is keyed by --label / --compare-label."""
    label: str = "run"
    """Name of the --load-config run in the contact sheet (and in metrics.json with --compare-config)."""
    compare_label: str = "compare"
    """Name of the --compare-config run."""
    fixer_base: Optional[str] = None
    """Fixer for the agreement metric and the contact sheet: 'tiny' (random weights, for tests), a hub id, a local folder (diffusers layout or a saved fixer), or 'none'. Default: examples/fixer-small if it exists, else the fixer metrics are skipped."""
    fixer_adapter: Optional[Path] = None
    """Trained fixer weights (Fixer.save_pretrained folder) applied to --fixer-base."""
    overwrite: bool = False
    """Replace metrics.json / contact_sheet.png already in --output-dir."""

    def main(self) -> None:
        """Run the command; bad input exits with a one-line message."""
        try:
            self.run()
        except InputError as exc:
            raise SystemExit(f"eval: error: {exc}") from None

    def run(self) -> Dict[str, Any]:
        """Evaluate and write the report; returns the metrics written (raises ``InputError`` on bad input)."""
        self.checked_offsets()
        out = Path(self.output_dir) if self.output_dir is not None else Path(self.load_config).parent / "eval"
        check_free(out, self.overwrite)  # before the slow part
        for path in (self.load_config, self.compare_config):
            if path is not None:
                load_run_config(path)  # missing file / wrong method fails fast
        if self.compare_config is not None and self.label == self.compare_label:
            raise InputError("--label and --compare-label must differ")
        fixer, reason = load_fixer(self.fixer_base, self.fixer_adapter)
        fixer_name = None
        if fixer is not None:
            fixer_name = f"base {self.fixer_base or DEFAULT_FIXER}" + (f", adapter {self.fixer_adapter}" if self.fixer_adapter else "")
        runs = []
        with eval_progress() as progress:
            runs.append(evaluate_run(self.load_config, self, label=self.label, fixer=fixer, fixer_skip_reason=reason, fixer_name=fixer_name, progress=progress))
            if self.compare_config is not None:
                runs.append(
                    evaluate_run(
                        self.compare_config, self, label=self.compare_label, fixer=fixer, fixer_skip_reason=reason, fixer_name=fixer_name,
                        sheet_frames=runs[0].sheet_frames, progress=progress,
                    )
                )  # fmt: skip
        metrics = runs[0].metrics if len(runs) == 1 else {r.label: r.metrics for r in runs}
        write_report(out, metrics, build_contact_sheet(runs), overwrite=self.overwrite)
        write_geometry_figures(out, runs)  # depth_contact_sheet.png, moving_object_masks.png
        _print_summary(runs, out)
        return metrics


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _print_summary(runs: Sequence[RunEvaluation], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for run in runs:
        m = run.metrics
        plus = "".join(
            f", {kind} + fixer {_fmt(m[key]['fixed']['psnr'])}"
            for key, kind in (("heldout", "held-out"), ("cross_camera", "cross-camera"))
            if m[key]["fixed"] is not None
        )
        table = Table(
            title=f"{run.label}: held-out PSNR {_fmt(m['heldout']['psnr'])}, cross-camera PSNR {_fmt(m['cross_camera']['psnr'])}{plus}"
        )
        for col in ("offset", "LiDAR PSNR", "depth AbsRel", "depth RMSE m", "sharpness", "fixer PSNR"):
            table.add_column(col)
        for key, e in [("0 (recorded)", m["recorded"])] + list(m["shifted"].items()):
            table.add_row(key, _fmt(e["lidar_psnr"]), _fmt(e["depth_absrel"], 3), _fmt(e["depth_rmse"]), _fmt(e["sharpness"], 1), _fmt(e["fixer_agreement_psnr"]))
        console.print(table)
        for what, why in m["skipped"].items():
            console.print(f"  skipped {what}: {why}")
    console.print(f"Wrote {out / 'metrics.json'} and {out / 'contact_sheet.png'}")


if __name__ == "__main__":
    import tyro

    tyro.cli(EvalCommand).main()
