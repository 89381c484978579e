"""Training pairs for the fixer from reconstructions: (degraded render, real photo, reference photo).

Strategies (after Difix3D+, see /work/shared/notes/published-facts.md):

- ``underfit``: one run of ``--iterations`` steps saves checkpoints at 25/50/75 % of its schedule
  (``--underfit-fractions``); each renders the run's training views against their photos.
- ``sparse``: a run trained on every k-th frame (``pandaset-data --train-stride k``) renders the
  frames it skipped. Other dataparsers: the run renders its own eval split, so make that split sparse
  with the dataparser's options (e.g. ``nerfstudio-data --eval-mode fraction --train-split-fraction 0.25``).
- ``cross-camera`` (pandaset-data only): the run trained on ``--cameras`` renders the poses of
  ``--cross-camera-targets`` against those cameras' photos.
- ``cycle`` (pandaset-data only: it shifts in metres and needs LiDAR): the run trained on the
  recorded path renders the path shifted sideways (``--cycle-offsets``, metres; by default the refine
  loop's -2, -1, 1, 2); a second run is trained on those renders only; it renders the recorded path
  back against the photos.

Which strategies need pandaset-data: ``cross-camera`` and ``cycle``. ``underfit`` and ``sparse`` work
with any nerfstudio dataparser through its own train/eval split.

**Pairs that look like what the fixer will see.** ``--downscale-factors`` and ``--iteration-counts``
repeat every strategy at several resolutions and training lengths (:mod:`.variants`; for the bundled
480x270 scene ``--downscale-factors 2 1`` gives the CPU preset's 240x135 and the full 480x270).
``--every-camera`` (pandaset-data) makes the underfit, sparse and cycle pairs of every camera of the rig
from runs trained on all of them, so side-camera artefacts are in the set too; cross-camera keeps its
own run trained on ``--cameras`` only (a front-only reconstruction rendered at the side cameras' poses).

**LiDAR hints** (pandaset-data, on by default): every pair stores the LiDAR hint of its input's camera
(``hint_image``/``hint_mask``, see :mod:`.hint_source`): the training frames' sweeps only (never the
test frames', nor ``--hint-exclude-frames``), coloured from the training photos of ``--cameras``.

**Moving objects**: a :class:`~difix_refiner.pairs.moving_masks.MovingObjectMasks` provider masks them out
of targets and references: for pandaset-data with boxes, by default (``--moving-objects mask``), the
projected non-stationary boxes (:class:`~difix_refiner.pairs.moving_masks.PandasetBoxMasks`); a caller
may pass its own (``make_pairs(config, masks=...)``).

This module checks the options (:class:`MakePairsConfig`) and drives the job; the pieces live next to
it: :mod:`.underfit` (underfit and sparse), :mod:`.cross_camera`, :mod:`.cycle` (with
:mod:`.pandaset_writer`), :mod:`.runs` (the ns-train runs), :mod:`.views` (a run's recorded images),
:mod:`.collector` (writing pairs, picking references), :mod:`.hint_source`, :mod:`.moving_masks`,
:mod:`.variants` and :mod:`.frame_split`.

**Alignment.** Every pair's render uses exactly the camera (pose, intrinsics, size) of its target
photo, in the scene frame of the run that produced the photo's camera. The cycle's second run lives
in a scene frame of its own (nerfstudio centres every run on its cameras); poses are mapped between
the two frames exactly through the world frame with both runs' saved dataparser transforms, and the
mapping is checked against the second run's own cameras before anything is rendered.

**Splits and leakage.** Pairs are split by frame: frames in ``--test-frames [start, end)`` (default:
the last quarter of the frame range) make ``test`` pairs, all other frames ``train`` pairs. No image
of a test frame appears in a train pair in any role (input, target or reference): references are
drawn from the pair's own split. The reconstructions themselves span the whole frame range, so a run
producing test pairs may have trained on photos of test frames (for ``underfit`` that is the point).
That is fine for a fixer: what it must not see in training is the (render, photo) pair of a test
frame, and it never does. Keep a separate scene for a fully unseen evaluation.

**References.** The reference of a pair is the real photo the producing run trained on that is
nearest to the target's pose (translation distance in metres plus ``--ref-angle-weight`` metres per
radian of viewing-direction difference, see :mod:`difix_refiner.cameras.reference_views`), from the
same split, never the target image itself. The cycle's references are the first run's photos (the
second run trained on renders only).

Output folder::

    OUT/pairs.json       Difix JSON {"train": {id: {image, target_image, ref_image, prompt, hint_image, hint_mask}}, "test": {...}}
    OUT/manifest.json    per pair: strategy, run, checkpoint, camera, frame, render and target cameras,
                         reference and its cost, PSNR of render vs photo, hint and its coverage;
                         the options, the variants, the hints' sweeps and the runs
    OUT/images/renders/<label>/<camera>/<frame>.png   degraded inputs
    OUT/images/photos/[d<f>/]<camera>/<frame>.png     targets and references (copies at run resolution)
    OUT/images/hints/[d<f>/]<camera>/<frame>.png, .mask.png   LiDAR hints (one per view and resolution)
    OUT/runs/<run>/...   the ns-train runs (kept for inspection), the cycle's rendered datasets

``images/`` is published atomically when everything rendered, then manifest.json, then pairs.json
(last, atomically): an existing pairs.json means a complete set. Runs stay where they are on failure.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.cameras.reference_views import DEFAULT_ANGLE_WEIGHT
from difix_refiner.core import atomic
from difix_refiner.core.errors import InputError
from difix_refiner.data.boxes import DEFAULT_MARGIN_M, has_boxes
from difix_refiner.pairs.collector import IMAGES, PairCollector
from difix_refiner.pairs.cross_camera import eval_split_args, render_cross_camera
from difix_refiner.pairs.cycle import (
    ShiftedDataset,
    check_can_shift,
    render_cycle,
    render_shifted_datasets,
)
from difix_refiner.pairs.format import DEFAULT_PROMPT, validate_pairs, write_pairs
from difix_refiner.pairs.frame_split import resolve_test_frames
from difix_refiner.pairs.hint_source import (
    DEFAULT_HINT_VOXEL_M,
    HintSource,
    build_hint_source,
)
from difix_refiner.pairs.moving_masks import MovingObjectMasks, PandasetBoxMasks
from difix_refiner.pairs.runs import RunTrainer, TrainedRun
from difix_refiner.pairs.underfit import (
    render_held_out,
    render_sparse_stride,
    render_underfit,
    save_period,
    underfit_steps,
)
from difix_refiner.pairs.variants import Variant, make_variants
from difix_refiner.pairs.views import RunViews
from difix_refiner.scene.run_pipeline import checkpoint_steps, load_checkpoint
from difix_refiner.scene.trained_run import check_method

Strategy = Literal["underfit", "sparse", "cross-camera", "cycle"]
STRATEGIES = ("underfit", "sparse", "cross-camera", "cycle")
"""Known pair strategies."""
PANDASET_ONLY = ("cross-camera", "cycle")
"""Strategies that need a camera rig in metres (the ``pandaset-data`` dataparser)."""
PANDASET = "pandaset-data"
REFINE_LOOP_OFFSETS = (-2.0, -1.0, 1.0, 2.0)
"""The refine loop's default lateral offsets (``RefineConfig.offsets``), the cycle's default: its pairs
show the artefacts of exactly the views the fixer is later asked to fix."""
PAIRS_JSON = "pairs.json"
MANIFEST = "manifest.json"
RUNS = "runs"
OWNED = (PAIRS_JSON, MANIFEST, IMAGES, RUNS)
"""Entries of the output folder that make-pairs writes (and --overwrite replaces)."""

# Flags make-pairs sets itself on pandaset-data runs; passing them in --dataparser-args would fight it.
_MANAGED_PANDASET_FLAGS = (
    "--data", "--cameras", "--frame-start", "--frame-end", "--downscale-factor", "--eval-mode",
    "--eval-interval", "--eval-cameras", "--train-stride", "--lidar-max-points", "--auto-scale-poses",
    "--scale-factor",
)  # fmt: skip


@dataclass
class MakePairsConfig:
    """Options of make-pairs: the scene, the strategies, the runs' budget, the split and the references."""

    data: Path
    """Scene folder (for pandaset-data: the layout of examples/pandaset_002, or a PandaSet release sequence folder). Never written to."""
    output_dir: Path
    """Folder for pairs.json, manifest.json, images/ and runs/. Must be empty unless --overwrite."""
    strategy: Tuple[Strategy, ...] = ()
    """Pair strategies, several allowed. Default: underfit and cross-camera for pandaset-data, underfit and sparse otherwise."""
    dataparser: str = "pandaset-data"
    """nerfstudio dataparser of the scene. Other dataparsers support underfit and sparse (their own train/eval split decides what sparse renders)."""
    dataparser_args: str = ""
    """Extra dataparser options as one string, given with '=': --dataparser-args="--lidar-voxel-size 0.2" or, for nerfstudio-data, --dataparser-args="--eval-mode fraction --train-split-fraction 0.25"."""
    method: str = "difix-refiner"
    """nerfstudio method to train (difix-refiner with its refine loop switched off, or splatfacto on CUDA)."""
    train_args: str = ""
    """Extra ns-train options as one string, given with '=': --train-args="--pipeline.model.sh-degree 1"."""
    cameras: Tuple[str, ...] = ("front_camera",)
    """pandaset-data: rig cameras the reconstructions train on (and whose frames give underfit, sparse and cycle pairs)."""
    cross_camera_targets: Tuple[str, ...] = ("front_left_camera", "front_right_camera")
    """pandaset-data: cameras rendered by cross-camera (never trained on); they are also the base run's eval split."""
    frame_start: int = 0
    """pandaset-data: first frame used (inclusive)."""
    frame_end: Optional[int] = None
    """pandaset-data: last frame used (exclusive); default: the last frame."""
    test_frames: Optional[Tuple[int, int]] = None
    """Frames START END (end exclusive) that make test pairs; no train pair uses them. Default: the last --test-fraction of the frames (bundled scene: 60 80)."""
    test_fraction: float = 0.25
    """Share of the frames, at the end of the range, held out for test pairs when --test-frames is not given (0: no test split)."""
    iterations: int = 3000
    """Training iterations of every run (the "normal schedule" that underfit takes fractions of). On 2 CPU cores about 2 s each at --downscale-factor 4 (120x67) and far more at full resolution: use cuda for real budgets."""
    iteration_counts: Tuple[int, ...] = ()
    """Several training lengths: every strategy is repeated with runs of each count (e.g. 300 1000); labels and runs get '-i<count>'. Default: --iterations alone."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device for training and rendering (auto: cuda when available)."""
    downscale_factor: Optional[int] = None
    """Image downscale factor of the runs (and so of the pairs). Default: 1 for pandaset-data, the dataparser's default otherwise."""
    downscale_factors: Tuple[int, ...] = ()
    """Several resolutions: every strategy is repeated with runs at each factor (bundled 480x270 scene: 2 1 gives 240x135 and 480x270); labels and runs get '-d<factor>', photos and hints sit under d<factor>/. Replaces --downscale-factor."""
    every_camera: bool = False
    """pandaset-data: underfit, sparse and cycle pairs of every camera in the data folder, from runs trained on all of them (the fixer then sees side-camera artefacts). cross-camera keeps its own run on --cameras."""
    lidar_max_points: int = 60000
    """pandaset-data: at most this many LiDAR seed points per run."""
    compress_schedule: bool = True
    """Scale splatfacto's resolution schedule and SH-degree interval to --iterations, so short runs also end at full resolution with all SH degrees."""
    underfit_fractions: Tuple[float, ...] = (0.25, 0.5, 0.75)
    """underfit: fractions of --iterations whose checkpoints render pairs."""
    sparse_stride: int = 4
    """sparse: train on every k-th frame (pandaset-data --train-stride), render the frames in between."""
    cycle_offsets: Tuple[float, ...] = REFINE_LOOP_OFFSETS
    """cycle: lateral offsets in metres (positive: the vehicle's left); one second run per offset. Default: the refine loop's offsets."""
    ref_angle_weight: float = DEFAULT_ANGLE_WEIGHT
    """Reference choice: metres of camera-centre distance that one radian of viewing-direction difference costs (5: about 11.5 degrees = 1 m)."""
    metres_per_scene_unit: Optional[float] = None
    """Other dataparsers: metres per scene unit for reference distances (otherwise scene units are used). pandaset-data knows its scale."""
    hints: bool = True
    """pandaset-data: store the LiDAR hint of every pair's camera (hint_image, hint_mask). Other dataparsers have no sweeps: their pairs carry none."""
    hint_exclude_frames: Tuple[int, ...] = ()
    """Frames whose LiDAR sweeps never enter a hint, besides the test frames (e.g. a dataparser's evaluation sweeps)."""
    hint_voxel_size: float = DEFAULT_HINT_VOXEL_M
    """Voxel size in metres of the hints' point cloud."""
    moving_objects: Literal["mask", "keep"] = "mask"
    """pandaset-data: mask the boxes of moving (non-stationary) objects out of every pair's target (it takes the render there) and reference (mid-grey there), so the fixer is never taught to paint an object the render lacks; keep: leave them. No effect without annotations/cuboids."""
    moving_object_margin: float = DEFAULT_MARGIN_M
    """Metres each moving object's box is grown by before it is projected."""
    prompt: str = DEFAULT_PROMPT
    """Prompt stored with every pair."""
    seed: int = 42
    """Random seed of every run."""
    overwrite: bool = False
    """Replace earlier make-pairs results in --output-dir (pairs.json, manifest.json, images/, runs/); other files are left alone."""


def _check_finite_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise InputError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value}")


def _is_within(inner: Path, outer: Path) -> bool:
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents


class MakePairsJob:
    """One ``make-pairs`` invocation: checks the options, trains, renders and writes the pair set."""

    def __init__(self, options: MakePairsConfig, masks: Optional[MovingObjectMasks] = None) -> None:
        self.o = options
        if masks is None and options.moving_objects == "mask" and options.dataparser == PANDASET and has_boxes(options.data):
            masks = PandasetBoxMasks(Path(options.data), options.moving_object_margin)
        self.masks = masks
        self.out = Path(options.output_dir)
        self.runs_dir = self.out / RUNS
        self.hint_source: Optional[HintSource] = None
        from rich.console import Console

        self.console = Console()

    # ------------------------------------------------------------------ checks

    def check(self) -> None:
        """Validate every option before anything is trained; raises :class:`InputError`."""
        o = self.o
        self.data = Path(o.data)
        if not self.data.is_dir():
            raise InputError(f"data folder not found: {self.data}")
        strategies = list(o.strategy) if o.strategy else None
        self.pandaset = o.dataparser == PANDASET
        if strategies is None:
            strategies = ["underfit", "cross-camera"] if self.pandaset else ["underfit", "sparse"]
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown:
            raise InputError(f"unknown strategy {', '.join(map(repr, unknown))}; known strategies: {', '.join(STRATEGIES)}")
        self.strategies = list(dict.fromkeys(strategies))
        if not self.pandaset:
            rig = [s for s in self.strategies if s in PANDASET_ONLY]
            if rig:
                raise InputError(
                    f"strategy {', '.join(rig)} needs the pandaset-data dataparser (a camera rig with poses in metres); "
                    f"with {o.dataparser} use --strategy underfit and/or sparse"
                )
        try:
            check_method(o.method)
        except InputError:
            raise InputError(f"--method {o.method!r} is not supported: make-pairs trains 'difix-refiner' or a splatfacto-family method") from None
        from nerfstudio.configs.method_configs import all_methods

        if o.method not in all_methods:
            raise InputError(f"--method {o.method!r} is not an installed nerfstudio method")
        # difix-refiner's own refine loop (fixer-made pseudo views) must stay off: the pairs have to show
        # the plain reconstruction's artefacts that the fixer is to learn to remove.
        self.has_refine_loop = hasattr(all_methods[o.method].pipeline, "refine")
        self.iteration_list = [int(n) for n in o.iteration_counts] or [o.iterations]
        least = 3 if "underfit" in self.strategies else 2
        if any(n < least for n in self.iteration_list):
            name, got = ("--iteration-counts", list(o.iteration_counts)) if o.iteration_counts else ("--iterations", o.iterations)
            raise InputError(f"{name} must be at least {least}, got {got}")
        if not o.underfit_fractions or any(not (0.0 < f < 1.0) for f in o.underfit_fractions):
            raise InputError(f"--underfit-fractions must be fractions strictly between 0 and 1, got {list(o.underfit_fractions)}")
        if o.sparse_stride < 2:
            raise InputError(f"--sparse-stride must be at least 2, got {o.sparse_stride}")
        if "cycle" in self.strategies:
            offsets = [float(x) for x in o.cycle_offsets]
            if not offsets or not all(np.isfinite(offsets)) or 0.0 in offsets or len(set(offsets)) != len(offsets):
                raise InputError(f"--cycle-offsets must be distinct, finite, non-zero metres (e.g. 2 or -2 2), got {offsets}")
            self.cycle_offsets = offsets
        _check_finite_positive("--ref-angle-weight", o.ref_angle_weight, allow_zero=True)
        if o.metres_per_scene_unit is not None:
            _check_finite_positive("--metres-per-scene-unit", o.metres_per_scene_unit)
        if o.downscale_factor is not None and o.downscale_factor < 1:
            raise InputError(f"--downscale-factor must be >= 1, got {o.downscale_factor}")
        if any(f < 1 for f in o.downscale_factors):
            raise InputError(f"--downscale-factors must all be >= 1, got {list(o.downscale_factors)}")
        if o.downscale_factors and o.downscale_factor is not None:
            raise InputError("give either --downscale-factor or --downscale-factors, not both")
        _check_finite_positive("--hint-voxel-size", o.hint_voxel_size)
        _check_finite_positive("--moving-object-margin", o.moving_object_margin, allow_zero=True)
        if o.lidar_max_points < 1:
            raise InputError(f"--lidar-max-points must be >= 1, got {o.lidar_max_points}")
        self.device = self._device()
        try:
            self.extra_dataparser_args = shlex.split(o.dataparser_args)
            self.extra_train_args = shlex.split(o.train_args)
        except ValueError as exc:
            raise InputError(f"cannot split --dataparser-args / --train-args: {exc}") from exc

        # Output folder: never inside the data, never holding it, empty unless --overwrite.
        if _is_within(self.out, self.data) or _is_within(self.data, self.out):
            raise InputError(f"--output-dir {self.out} and --data {self.data} must not contain each other (make-pairs never writes into the dataset)")
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--output-dir {self.out} is a file")
        if self.out.is_dir() and any(self.out.iterdir()) and not o.overwrite:
            raise InputError(f"--output-dir {self.out} is not empty; pass --overwrite to replace make-pairs results there")

        if self.pandaset:
            self._check_pandaset()
        else:
            if o.every_camera:
                raise InputError("--every-camera needs the pandaset-data dataparser (a camera rig)")
            self._check_generic()
        self.variants = make_variants(self.downscale_list, self.iteration_list)
        self.split = resolve_test_frames(self.frames, o.test_frames, o.test_fraction)
        self.use_hints = self.pandaset and o.hints
        self.trainer = RunTrainer(
            self.runs_dir, self.console, method=o.method, iterations=self.iteration_list[0], device=self.device, seed=o.seed,
            compress_schedule=o.compress_schedule, refine_loop=self.has_refine_loop,
            extra_train_args=self.extra_train_args, lidar_max_points=o.lidar_max_points,
            extra_dataparser_args=self.extra_dataparser_args, pandaset=self.pandaset,
            metres_per_scene_unit=o.metres_per_scene_unit,
        )  # fmt: skip

    def _device(self) -> str:
        import torch

        if self.o.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.o.device == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        if self.o.device not in ("cpu", "cuda"):
            raise InputError(f"--device must be auto, cpu or cuda, got {self.o.device!r}")
        return self.o.device

    def _check_pandaset(self) -> None:
        from difix_refiner.data.pandaset import list_frames

        o = self.o
        clash = [a.split("=")[0] for a in self.extra_dataparser_args if a.split("=")[0] in _MANAGED_PANDASET_FLAGS]
        if clash:
            raise InputError(
                f"--dataparser-args must not set {', '.join(clash)}: make-pairs sets those itself "
                "(use its --cameras, --frame-start/--frame-end, --downscale-factor, --lidar-max-points)"
            )
        available = sorted(p.name for p in (self.data / "camera").iterdir() if p.is_dir()) if (self.data / "camera").is_dir() else []
        if not o.cameras:
            raise InputError("--cameras must name at least one camera")
        missing = [c for c in list(o.cameras) + list(o.cross_camera_targets) if c not in available]
        if missing:
            raise InputError(f"unknown camera {', '.join(missing)} in {self.data / 'camera'} (found: {', '.join(available) or 'none'})")
        n = len(list_frames(self.data / "camera" / o.cameras[0]))
        end = n if o.frame_end is None else o.frame_end
        if not (0 <= o.frame_start < end <= n):
            raise InputError(f"--frame-start {o.frame_start} / --frame-end {o.frame_end} must satisfy 0 <= start < end <= {n} (frames of {o.cameras[0]})")
        if end - o.frame_start < 2:
            raise InputError(f"the frame range [{o.frame_start}, {end}) needs at least 2 frames (train and test)")
        self.frame_end = end
        self.frames = list(range(o.frame_start, end))
        self.targets = [c for c in o.cross_camera_targets if c not in o.cameras]
        if "cross-camera" in self.strategies and not self.targets:
            raise InputError("cross-camera needs --cross-camera-targets that are not among --cameras")
        if "sparse" in self.strategies and o.sparse_stride >= len(self.frames):
            raise InputError(f"--sparse-stride {o.sparse_stride} leaves one training frame of {len(self.frames)}; lower it")
        self.downscale_list = list(o.downscale_factors) or [1 if o.downscale_factor is None else o.downscale_factor]
        # The cameras whose frames give underfit, sparse and cycle pairs (and that their runs train on).
        self.rig_cameras = list(o.cameras) + ([c for c in available if c not in o.cameras] if o.every_camera else [])
        if "cycle" in self.strategies:
            check_can_shift(self.data, self.rig_cameras, self.frames)

    def _check_generic(self) -> None:
        import tyro
        from nerfstudio.configs.dataparser_configs import all_dataparsers

        o = self.o
        if o.dataparser not in all_dataparsers:
            raise InputError(f"unknown dataparser {o.dataparser!r}; known: {', '.join(sorted(all_dataparsers))}")
        if o.frame_start != 0 or o.frame_end is not None:
            raise InputError("--frame-start/--frame-end apply to pandaset-data; select images with the dataparser's own options")
        default = copy.deepcopy(all_dataparsers[o.dataparser])
        self.targets, self.rig_cameras = [], []  # no camera rig: the dataparser's own split decides
        self.downscale_list = list(o.downscale_factors) or [o.downscale_factor]
        if any(f is not None for f in self.downscale_list) and not hasattr(default, "downscale_factor"):
            raise InputError(f"{o.dataparser} has no --downscale-factor option")
        for factor in self.downscale_list:
            try:
                dp_config = tyro.cli(type(default), default=copy.deepcopy(default), args=self.generic_args(factor))
            except SystemExit as exc:
                raise InputError(f"{o.dataparser} rejected --dataparser-args {o.dataparser_args!r} (see the message above)") from exc
        # Frames are the images' ranks by file name over both splits (as dataset_views numbers them).
        parser = dp_config.setup()
        names = set()
        for split in ("train", "test"):
            try:
                names |= {str(f) for f in parser.get_dataparser_outputs(split=split).image_filenames}
            except Exception as exc:  # any dataparser failure: report it as bad input
                if split == "train":
                    raise InputError(f"{o.dataparser} cannot read {self.data}: {exc}") from exc
        self.frames = list(range(len(names)))

    def generic_args(self, downscale: Optional[int]) -> List[str]:
        """The dataparser options of a run of another dataparser at one downscale factor."""
        args = list(self.extra_dataparser_args) + ([] if downscale is None else ["--downscale-factor", str(downscale)])
        return ["--data", str(self.data.resolve()), *args]

    # ------------------------------------------------------------------ output folder

    def prepare_output(self) -> None:
        """Create the output folder; with --overwrite remove make-pairs' own earlier results only."""
        self.out.mkdir(parents=True, exist_ok=True)
        # Our entries, plus temporaries a killed run may have left: core.atomic names them
        # ".<folder>.*" for folders and ".<stem>.*.partial<suffix>" for files.
        patterns = [p for name in OWNED for p in (f".{name}.*", f".{Path(name).stem}.*.partial{Path(name).suffix}")]
        stale = [self.out / name for name in OWNED] + [p for pattern in dict.fromkeys(patterns) for p in self.out.glob(pattern)]
        for p in stale:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        self.runs_dir.mkdir()

    # ------------------------------------------------------------------ strategies

    def _train(
        self, trainer: RunTrainer, variant: Variant, name: str, cameras: Sequence[str], targets: Sequence[str],
        underfit: bool, progress: Any,
    ) -> TrainedRun:  # fmt: skip
        """One reconstruction of a variant: pandaset-data on ``cameras`` (``targets`` held out), or the other dataparser."""
        wanted = underfit_steps(trainer.iterations, self.o.underfit_fractions) if underfit else []
        period = save_period(trainer.iterations, wanted)
        if self.pandaset:
            args = trainer.pandaset_args(
                self.data, cameras, self.o.frame_start, self.frame_end,
                downscale_factor=variant.downscale, **eval_split_args(targets, len(self.frames)),
            )  # fmt: skip
            return trainer.train(name + variant.suffix, PANDASET, args, period, progress)
        return trainer.train(name + variant.suffix, self.o.dataparser, self.generic_args(variant.downscale), period, progress)

    def _render_run(
        self, progress: Any, trainer: RunTrainer, run: TrainedRun, strategies: Sequence[str], variant: Variant
    ) -> Tuple[RunViews, List[ShiftedDataset]]:
        """underfit, cross-camera, generic sparse and the cycle's shifted renders of one run (those of ``strategies``).

        Returns the run's views and the cycle's shifted datasets (empty without the cycle).
        """
        config, pipeline, views = trainer.open(run)
        start = time.perf_counter()
        if "underfit" in strategies:
            render_underfit(self.collector, progress, config, pipeline, views, trainer.iterations, self.o.underfit_fractions)
        final = checkpoint_steps(config)[-1]
        load_checkpoint(config, pipeline, final)
        if "cross-camera" in strategies:
            render_cross_camera(self.collector, progress, pipeline, views, self.targets, final)
        if "sparse" in strategies and not self.pandaset:
            render_held_out(self.collector, progress, pipeline, views, self.o.dataparser, final)
        datasets: List[ShiftedDataset] = []
        if "cycle" in strategies:
            datasets = render_shifted_datasets(
                progress, self.console, pipeline, views, cameras=self.rig_cameras, frames=self.frames,
                offsets=self.cycle_offsets, data=self.data, runs_dir=self.runs_dir, suffix=variant.suffix,
            )  # fmt: skip
        trainer.timings[f"render {run.name}"] = time.perf_counter() - start
        return views, datasets

    def _run_variant(self, progress: Any, variant: Variant) -> None:
        """Every strategy at one resolution and training length.

        One base run serves underfit, cross-camera, generic sparse and the cycle's first renders; with
        --every-camera the base run (on --cameras) serves cross-camera only and a "rig" run on every
        camera serves underfit and the cycle.
        """
        trainer = dataclasses.replace(self.trainer, iterations=variant.iterations)  # shares runs and timings
        self.collector.set_variant(variant.suffix, variant.folder)
        rig_strategies = [s for s in self.strategies if s in ("underfit", "cycle")]
        underfit = "underfit" in self.strategies
        if not self.o.every_camera:
            base = self._train(trainer, variant, "base", self.o.cameras, self.targets, underfit, progress)
            views, shifted = self._render_run(progress, trainer, base, self.strategies, variant)
        else:
            views, shifted = None, []
            if "cross-camera" in self.strategies:
                base = self._train(trainer, variant, "base", self.o.cameras, self.targets, False, progress)
                self._render_run(progress, trainer, base, ["cross-camera"], variant)
            if rig_strategies:
                rig = self._train(trainer, variant, "rig", self.rig_cameras, [], underfit, progress)
                views, shifted = self._render_run(progress, trainer, rig, rig_strategies, variant)
        if "sparse" in self.strategies and self.pandaset:
            render_sparse_stride(
                trainer, self.collector, progress, stride=self.o.sparse_stride, data=self.data,
                cameras=self.rig_cameras, frame_start=self.o.frame_start, frame_end=self.frame_end,
                downscale_factor=variant.downscale, suffix=variant.suffix,
                eval_args=eval_split_args([c for c in self.targets if c not in self.rig_cameras], len(self.frames)),
            )  # fmt: skip
        if "cycle" in self.strategies:
            render_cycle(trainer, self.collector, progress, views, shifted, self.rig_cameras, suffix=variant.suffix)

    def _hints(self) -> Optional[HintSource]:
        """The hints' coloured LiDAR cloud (pandaset-data with --hints), from the training frames' sweeps only."""
        if not self.use_hints:
            if self.o.hints and not self.pandaset:
                self.console.log(f"make-pairs: no LiDAR hints ({self.o.dataparser} has no LiDAR sweeps)")
            return None
        source = build_hint_source(
            self.data, self.o.cameras, self.frames, self.split, self.o.hint_exclude_frames, self.o.hint_voxel_size
        )
        self.console.log(
            f"make-pairs: LiDAR hints from {len(source.points)} points of the sweeps of {len(source.sweep_frames)} "
            f"training frames (kept out: {len(source.excluded_frames)} frames), coloured from {', '.join(source.colour_cameras)}"
        )
        return source

    # ------------------------------------------------------------------ driver

    def run(self) -> Dict[str, Any]:
        """Check, train, render, write; returns the summary ``{split: count, ...}``."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.check()
        self.hint_source = self._hints()  # before anything is written: missing sweeps fail here
        self.prepare_output()
        self.console.log(
            f"make-pairs: strategies {', '.join(self.strategies)}; frames {self.frames[0]}..{self.frames[-1]}, "
            f"test frames [{self.split.test_start}, {self.split.test_end}); {len(self.variants)} resolution/length "
            f"variant(s); runs are kept under {self.runs_dir}"
        )
        start = time.perf_counter()
        with atomic.atomic_dir(self.out / IMAGES, overwrite=self.o.overwrite) as images_tmp:
            self.collector = PairCollector(
                images_tmp, self.split, self.o.ref_angle_weight, self.o.prompt, hints=self.hint_source, masks=self.masks
            )
            progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=self.console)
            with progress:
                for variant in self.variants:
                    self._run_variant(progress, variant)
            if not self.collector.entries:
                raise RuntimeError("no pairs were produced")
        self.timings["total"] = time.perf_counter() - start
        images = self.out / IMAGES
        splits = self.collector.pair_entries(images)
        atomic.write_json(self.out / MANIFEST, self._manifest())
        json_path = write_pairs(splits, self.out / PAIRS_JSON, overwrite=True)
        counts = validate_pairs(json_path)
        self._print_summary(counts)
        return counts

    @property
    def runs(self) -> Dict[str, TrainedRun]:
        """Every run trained so far, by name."""
        return self.trainer.runs

    @property
    def timings(self) -> Dict[str, float]:
        """Wall times in seconds, by stage."""
        return self.trainer.timings

    def _manifest(self) -> Dict[str, Any]:
        o = self.o
        options = {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
        options = json.loads(json.dumps(options, default=str))
        return {
            "options": options,
            "strategies": self.strategies,
            "device": self.device,
            "frames": [self.frames[0], self.frames[-1] + 1],
            "test_frames": [self.split.test_start, self.split.test_end],
            "ref_angle_weight_m_per_rad": o.ref_angle_weight,
            "variants": [v.record() for v in self.variants],
            "rig_cameras": self.rig_cameras or None,
            "hints": None if self.hint_source is None else self.hint_source.record(),
            "moving_object_masks": self.masks is not None,
            "runs": {
                name: {
                    "config": str(r.config.relative_to(self.out)),
                    "log": str(r.log.relative_to(self.out)),
                    "wall_s": r.wall_s,
                    "iterations": r.iterations,
                    "dataparser": r.dataparser,
                    "dataparser_args": r.dataparser_args,
                }
                for name, r in self.runs.items()
            },
            "timings_s": self.timings,
            "pairs": self.collector.records,
        }

    def _print_summary(self, counts: Dict[str, int]) -> None:
        from rich.table import Table

        table = Table(title=f"make-pairs: {self.out / PAIRS_JSON}")
        for col in ("label", "train", "test", "mean PSNR (dB)", "with ref", "hint coverage"):
            table.add_column(col)
        by_label: Dict[str, List[Dict[str, Any]]] = {}
        for rec in self.collector.records.values():
            by_label.setdefault(rec["label"], []).append(rec)
        for label, recs in by_label.items():
            finite = [r["psnr"] for r in recs if np.isfinite(r["psnr"])]
            coverage = [r["hint_coverage"] for r in recs if r["hint_coverage"] is not None]
            table.add_row(
                label,
                str(sum(r["split"] == "train" for r in recs)),
                str(sum(r["split"] == "test" for r in recs)),
                f"{np.mean(finite):.2f}" if finite else "-",
                str(sum(r["ref_image"] is not None for r in recs)),
                f"{np.mean(coverage):.1%}" if coverage else "-",
            )
        self.console.print(table)
        self.console.log(
            f"{sum(counts.values())} pairs ({', '.join(f'{k}: {v}' for k, v in counts.items())}) in {self.timings['total']:.0f} s; "
            f"runs kept under {self.runs_dir}"
        )


def make_pairs(config: MakePairsConfig, masks: Optional[MovingObjectMasks] = None) -> Dict[str, int]:
    """Build the pair set described by ``config``; returns {split: count}.

    Args:
        config: The options.
        masks: Optional provider of moving-object masks, kept out of targets and references.

    Raises:
        InputError: bad options (nothing is written then).
    """
    return MakePairsJob(config, masks=masks).run()
