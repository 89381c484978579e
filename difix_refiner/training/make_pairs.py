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
  recorded path renders the path shifted sideways (``--cycle-offsets``, metres); a second run is
  trained on those renders only; it renders the recorded path back against the photos.

Which strategies need pandaset-data: ``cross-camera`` and ``cycle``. ``underfit`` and ``sparse`` work
with any nerfstudio dataparser through its own train/eval split.

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
radian of viewing-direction difference, see :mod:`difix_refiner.training.reference_views`), from the
same split, never the target image itself. The cycle's references are the first run's photos (the
second run trained on renders only).

Output folder::

    OUT/pairs.json       Difix JSON {"train": {id: {image, target_image, ref_image, prompt}}, "test": {...}}
    OUT/manifest.json    per pair: strategy, run, checkpoint, camera, frame, render and target cameras,
                         reference and its cost, PSNR of render vs photo; the options and the runs
    OUT/images/renders/<label>/<camera>/<frame>.png   degraded inputs
    OUT/images/photos/<camera>/<frame>.png            targets and references (copies at run resolution)
    OUT/runs/<run>/...   the ns-train runs (kept for inspection), the cycle's rendered datasets

``images/`` is published atomically when everything rendered, then manifest.json, then pairs.json
(last, atomically): an existing pairs.json means a complete set. Runs stay where they are on failure.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import shlex
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.cameras import atomic
from difix_refiner.cameras.run_data import InputError, check_method, load_run_config
from difix_refiner.cameras.scene_frame import scene_to_world, world_to_scene
from difix_refiner.training.pairs import PairEntry, validate_pairs, write_pairs
from difix_refiner.training.reference_views import nearest_reference, pose_costs

if TYPE_CHECKING:  # only for annotations: the command module imports this one
    from difix_refiner.training.pairs_command import MakePairsCommand

STRATEGIES = ("underfit", "sparse", "cross-camera", "cycle")
"""Known pair strategies."""
PANDASET_ONLY = ("cross-camera", "cycle")
"""Strategies that need a camera rig in metres (the ``pandaset-data`` dataparser)."""
PANDASET = "pandaset-data"
PAIRS_JSON = "pairs.json"
MANIFEST = "manifest.json"
IMAGES = "images"
RUNS = "runs"
OWNED = (PAIRS_JSON, MANIFEST, IMAGES, RUNS)
"""Entries of the output folder that make-pairs writes (and --overwrite replaces)."""

# Flags make-pairs sets itself on pandaset-data runs; passing them in --dataparser-args would fight it.
_MANAGED_PANDASET_FLAGS = (
    "--data", "--cameras", "--frame-start", "--frame-end", "--downscale-factor", "--eval-mode",
    "--eval-interval", "--eval-cameras", "--train-stride", "--lidar-max-points", "--auto-scale-poses",
    "--scale-factor",
)  # fmt: skip
# splatfacto's reference schedule: the resolution and SH-degree steps below are fractions of it.
_SPLATFACTO_STEPS = 30000
_SPLATFACTO_RESOLUTION_SCHEDULE = 3000
_SPLATFACTO_SH_DEGREE_INTERVAL = 1000
_MAX_CHECKPOINTS = 40  # more saved checkpoints than this and the nearest ones are used instead


# ============================================================================ small helpers


@dataclass(frozen=True)
class FrameSplit:
    """Frames ``[test_start, test_end)`` make test pairs; every other frame makes train pairs."""

    test_start: int
    test_end: int

    def split(self, frame: int) -> str:
        """``"test"`` or ``"train"``."""
        return "test" if self.test_start <= frame < self.test_end else "train"


def resolve_test_frames(
    frames: Sequence[int], test_frames: Optional[Tuple[int, int]], test_fraction: float
) -> FrameSplit:
    """Check the test frame range against the available frames, or derive it from the fraction.

    Args:
        frames: All frame indices the pairs can come from (sorted or not).
        test_frames: ``(start, end)``, end exclusive; ``None`` takes the last ``test_fraction``.
        test_fraction: Share of the frames, at the end of the range, held out when ``test_frames`` is None.

    Raises:
        InputError: an empty or reversed range, a range outside the frames, or one leaving no train frame.
    """
    frames = sorted(set(int(f) for f in frames))
    if not frames:
        raise InputError("no frames to make pairs from")
    lo, hi = frames[0], frames[-1] + 1
    if test_frames is None:
        if not (0.0 <= test_fraction < 1.0):
            raise InputError(f"--test-fraction must be in [0, 1), got {test_fraction}")
        count = int(round(len(frames) * test_fraction))
        if test_fraction > 0 and count == 0:
            count = 1
        if count >= len(frames):
            raise InputError(f"--test-fraction {test_fraction} leaves no training frame among {len(frames)}")
        if count == 0:
            return FrameSplit(hi, hi)  # no test pairs
        return FrameSplit(frames[len(frames) - count], hi)
    if len(test_frames) != 2:
        raise InputError(f"--test-frames takes two numbers START END (end exclusive), got {list(test_frames)}")
    start, end = int(test_frames[0]), int(test_frames[1])
    if start >= end:
        raise InputError(f"--test-frames {start} {end} is empty: START must be below END (END is exclusive)")
    if start < lo or end > hi:
        raise InputError(f"--test-frames {start} {end} is outside the frames in use [{lo}, {hi})")
    inside = [f for f in frames if start <= f < end]
    if not inside:
        raise InputError(f"--test-frames {start} {end} holds none of the frames in use")
    if len(inside) == len(frames):
        raise InputError(f"--test-frames {start} {end} covers every frame in use [{lo}, {hi}); no training pairs would remain")
    return FrameSplit(start, end)


def underfit_steps(iterations: int, fractions: Sequence[float]) -> List[int]:
    """Checkpoint steps wanted for ``fractions`` of a ``iterations``-step schedule (deduplicated, sorted).

    nerfstudio's ``step-k`` checkpoint holds the model after k + 1 updates and the last one is
    ``step-(iterations - 1)``, the finished run; steps are kept in ``[1, iterations - 2]`` so an
    underfit checkpoint is never the finished model.
    """
    if iterations < 3:
        return []
    return sorted({min(max(1, int(round(f * iterations))), iterations - 2) for f in fractions})


def save_period(iterations: int, wanted: Sequence[int]) -> int:
    """``--steps-per-save`` that saves every wanted step (their gcd), unless that saves too many."""
    if not wanted:
        return iterations  # only the final checkpoint
    period = 0
    for s in wanted:
        period = math.gcd(period, int(s))
    period = max(1, period)
    if iterations // period > _MAX_CHECKPOINTS:
        period = max(1, iterations // _MAX_CHECKPOINTS)
    return period


def checkpoint_steps(config: Any) -> List[int]:
    """Steps of the checkpoints a run saved (``step-NNNNNNNNN.ckpt``), sorted."""
    folder = Path(config.get_checkpoint_dir())
    steps = []
    for p in folder.glob("step-*.ckpt"):
        m = re.fullmatch(r"step-(\d+)\.ckpt", p.name)
        if m:
            steps.append(int(m.group(1)))
    return sorted(steps)


def nearest_steps(available: Sequence[int], wanted: Sequence[int]) -> List[int]:
    """The available checkpoint nearest to each wanted step (deduplicated, sorted)."""
    if not available:
        raise RuntimeError("the run saved no checkpoints")
    avail = np.asarray(sorted(available))
    return sorted({int(avail[np.argmin(np.abs(avail - w))]) for w in wanted})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of the same shape."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / 255.0**2
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def matrix_to_quat_wxyz(rotations: np.ndarray) -> np.ndarray:
    """Rotation matrices to unit quaternions (w, x, y, z) with w >= 0. # [N, 3, 3] -> [N, 4]"""
    out = np.empty((len(rotations), 4))
    for i, m in enumerate(np.asarray(rotations, dtype=np.float64)):
        # Shepperd's method: divide by the largest of the four candidates for stability.
        tr = m[0, 0] + m[1, 1] + m[2, 2]
        if tr > 0:
            s = 2.0 * math.sqrt(tr + 1.0)
            q = (0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
        elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
            s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
            q = ((m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s)
        elif m[1, 1] > m[2, 2]:
            s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
            q = ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s)
        else:
            s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
            q = ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s)
        q = np.asarray(q) / np.linalg.norm(q)
        out[i] = q if q[0] >= 0 else -q
    return out


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


def _save_png(path: Path, image: np.ndarray) -> None:
    """Atomic PNG write (a reader never sees half a file)."""
    from PIL import Image

    with atomic.atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


# ============================================================================ views of a run


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
        return (self.camera, self.frame)

    @property
    def pose(self) -> np.ndarray:
        """``[3, 4]`` camera-to-world, float64."""
        return self.cameras.camera_to_worlds[0].double().numpy()


@dataclass
class RunViews:
    """Every recorded image a run can render against, plus the run's scene frame."""

    name: str
    config_path: Path
    views: List[View]
    dataparser_transform: np.ndarray
    """[3, 4] world -> scene transform (before the scale)."""
    dataparser_scale: float
    metres_per_scene_unit: Optional[float]


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


# ============================================================================ runs


def load_pipeline(config_path: Path, device: str) -> Tuple[Any, Any]:
    """Set up a trained run's pipeline on ``device`` for rendering; returns ``(config, pipeline)``.

    Like nerfstudio's ``eval_setup`` but with the device chosen, no LiDAR seeding (the checkpoint
    replaces the Gaussians anyway) and no checkpoint loaded yet: see :func:`load_checkpoint`.
    """
    import difix_refiner.nerfstudio  # noqa: F401  (lets torch load nerfstudio checkpoints)
    from nerfstudio.configs.method_configs import all_methods

    from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig

    config = load_run_config(config_path)
    config.pipeline.datamanager._target = all_methods[config.method_name].pipeline.datamanager._target
    dp = config.pipeline.datamanager.dataparser
    if isinstance(dp, PandasetDataParserConfig):
        dp.load_lidar = False
    if hasattr(config.pipeline.model, "num_random"):
        config.pipeline.model.num_random = 1000  # the random initialisation is replaced by the checkpoint
    config.load_dir = config.get_checkpoint_dir()
    pipeline = config.pipeline.setup(device=device, test_mode="test")
    pipeline.eval()
    return config, pipeline


def load_checkpoint(config: Any, pipeline: Any, step: int) -> None:
    """Load the run's checkpoint of ``step`` into ``pipeline``."""
    import torch

    path = Path(config.get_checkpoint_dir()) / f"step-{step:09d}.ckpt"
    if not path.is_file():
        raise RuntimeError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu")
    pipeline.load_pipeline(state["pipeline"], state["step"])
    pipeline.eval()


def render(pipeline: Any, cameras: Any) -> np.ndarray:
    """Render one camera ``[1]``; ``uint8 [H, W, 3]``."""
    from difix_refiner.cameras.render_command import RenderShiftedCommand

    return RenderShiftedCommand._render(pipeline, cameras)


def _last_logged_step(log_path: Path) -> Optional[int]:
    """The last step nerfstudio's progress table printed into a training log (``"120 (40.00%)"``)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    steps = re.findall(r"(\d+) \(\d+\.\d+%\)", tail)
    return int(steps[-1]) if steps else None


# ============================================================================ pandaset folders for the cycle


def write_pandaset_folder(
    folder: Path,
    source: Path,
    frames: Sequence[int],
    cameras: Dict[str, Dict[str, Any]],
    eval_copy_of: Optional[str] = None,
    skip_sweeps: Sequence[int] = (),
) -> Dict[str, Any]:
    """Write rendered images as a PandaSet folder (the layout ``pandaset-data`` reads).

    Args:
        folder: New folder (must not exist).
        source: The original PandaSet folder (LiDAR sweeps and timestamps are taken from it).
        frames: ``[M]`` original frame indices; they become frames ``0..M-1`` of the new folder.
        cameras: ``{name: {"images": [M] uint8 [H, W, 3], "camera_to_world": [M, 3, 4] world metres,
            OpenGL axes, "fx", "fy", "cx", "cy"}}``.
        eval_copy_of: Also write a copy of this camera as ``<name>_eval`` so that the new folder has
            a held-out camera and the run can train on every frame (pandaset-data needs an eval split).
        skip_sweeps: Original frames whose LiDAR sweeps are not copied (the base run's evaluation sweeps).

    Returns:
        ``{"eval_camera": name or None, "frames": [...]}``.
    """
    from PIL import Image

    from difix_refiner.data.pandaset import OPENCV_TO_OPENGL, load_camera

    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} already exists")
    frames = [int(f) for f in frames]
    tmp = folder.with_name(f".{folder.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        # (folder name, spec, original camera whose timestamps it takes)
        jobs = [(name, cameras[name], name) for name in cameras]
        if eval_copy_of is not None:
            jobs.append((f"{eval_copy_of}_eval", cameras[eval_copy_of], eval_copy_of))
        for name, spec, source_name in jobs:
            cam_dir = tmp / "camera" / name
            cam_dir.mkdir(parents=True)
            images, c2w = spec["images"], np.asarray(spec["camera_to_world"], dtype=np.float64)
            if len(images) != len(frames) or c2w.shape != (len(frames), 3, 4):
                raise ValueError(f"camera {name}: {len(images)} images and poses {list(c2w.shape)} for {len(frames)} frames")
            for j, img in enumerate(images):
                # High-quality JPEG: pandaset-data reads *.jpg only (like the real photos).
                Image.fromarray(img).save(cam_dir / f"{j:02d}.jpg", format="JPEG", quality=97, subsampling=0)
            rot_cv = c2w[:, :, :3] @ OPENCV_TO_OPENGL  # OpenGL -> OpenCV camera axes (diag(1,-1,-1) is its own inverse)
            quats = matrix_to_quat_wxyz(rot_cv)
            poses = [
                {"position": dict(zip("xyz", map(float, c2w[j, :, 3]))), "heading": dict(zip("wxyz", map(float, quats[j])))}
                for j in range(len(frames))
            ]
            (cam_dir / "poses.json").write_text(json.dumps(poses, indent=1))
            if (Path(source) / "camera" / source_name).is_dir():
                stamps = load_camera(source, source_name, frames, verify_images=False).timestamps
            else:
                stamps = np.arange(len(frames)) * 0.1  # PandaSet's 10 Hz
            (cam_dir / "timestamps.json").write_text(json.dumps([float(t) for t in stamps]))
            (cam_dir / "intrinsics.json").write_text(
                json.dumps({k: float(spec[k]) for k in ("fx", "fy", "cx", "cy")}, indent=1)
            )
        lidar_dir = tmp / "lidar"
        lidar_dir.mkdir(parents=True)
        all_poses = json.loads((Path(source) / "lidar" / "poses.json").read_text())
        (lidar_dir / "poses.json").write_text(json.dumps([all_poses[f] for f in frames], indent=1))
        for j, f in enumerate(frames):
            sweep = Path(source) / "lidar" / f"{f:02d}.npz"
            if sweep.is_file() and f not in set(skip_sweeps):  # PandaSet drops some sweeps; the dataparser skips missing ones
                shutil.copyfile(sweep, lidar_dir / f"{j:02d}.npz")
        (tmp / "README.md").write_text(
            "Rendered by difix-refiner make-pairs (cycle strategy): shifted renders of a first run, in\n"
            f"PandaSet layout. Frames 0..{len(frames) - 1} are frames {frames[0]}..{frames[-1]} of {source}.\n"
            "No real photo is in this folder; the LiDAR sweeps are copies of the original ones.\n"
        )
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"eval_camera": f"{eval_copy_of}_eval" if eval_copy_of else None, "frames": frames}


# ============================================================================ collecting pairs


class PairCollector:
    """Writes renders and photos under an images folder and records the pairs and their metadata."""

    def __init__(self, images_root: Path, split: FrameSplit, angle_weight: float, prompt: str) -> None:
        self.root = Path(images_root)
        self.split = split
        self.angle_weight = float(angle_weight)
        self.prompt = prompt
        self.entries: Dict[str, Dict[str, Tuple[str, str, Optional[str]]]] = {}  # split -> id -> relative paths
        self.records: Dict[str, Dict[str, Any]] = {}
        self._photos: Dict[Tuple[str, int], Tuple[str, Tuple[int, int]]] = {}

    def photo(self, view: View) -> Tuple[str, Tuple[int, int]]:
        """Relative path of ``view``'s photo (written once) and its ``(H, W)``."""
        if view.key not in self._photos:
            image = view.load_photo()
            rel = f"photos/{view.camera}/{view.frame:05d}.png"
            _save_png(self.root / rel, image)
            self._photos[view.key] = (rel, image.shape[:2])
        return self._photos[view.key]

    def reference(self, target: View, pool: RunViews) -> Tuple[Optional[View], Optional[float]]:
        """The trained photo of ``pool`` nearest to ``target``'s pose, in the same split, not the target."""
        split = self.split.split(target.frame)
        allowed = np.array(
            [v.trained and v.key != target.key and self.split.split(v.frame) == split for v in pool.views], dtype=bool
        )
        if not allowed.any():
            return None, None
        poses = np.stack([v.pose for v in pool.views])  # [N, 3, 4]
        mpsu = pool.metres_per_scene_unit or 1.0
        idx = nearest_reference(target.pose, poses, allowed, self.angle_weight, mpsu)
        if idx is None:
            return None, None
        cost = float(pose_costs(target.pose, poses[idx : idx + 1], self.angle_weight, mpsu)[0])
        return pool.views[idx], cost

    def add(
        self,
        *,
        label: str,
        strategy: str,
        target: View,
        image: np.ndarray,
        render_camera: Dict[str, Any],
        pool: RunViews,
        run: str,
        step: int,
    ) -> str:
        """Record one pair: ``image`` is the render of ``target``'s camera; returns the pair id."""
        photo_rel, photo_hw = self.photo(target)
        if tuple(image.shape[:2]) != tuple(photo_hw):
            raise RuntimeError(
                f"{label} {target.camera} frame {target.frame}: render is {image.shape[1]}x{image.shape[0]} but the photo "
                f"is {photo_hw[1]}x{photo_hw[0]}; the pair would not be aligned"
            )
        pair_id = f"{label}_{target.camera}_{target.frame:05d}"
        render_rel = f"renders/{label}/{target.camera}/{target.frame:05d}.png"
        _save_png(self.root / render_rel, image)
        ref, cost = self.reference(target, pool)
        ref_rel = self.photo(ref)[0] if ref is not None else None
        split = self.split.split(target.frame)
        if any(pair_id in e for e in self.entries.values()):
            raise RuntimeError(f"duplicate pair id {pair_id}")
        self.entries.setdefault(split, {})[pair_id] = (render_rel, photo_rel, ref_rel)
        self.records[pair_id] = {
            "split": split,
            "strategy": strategy,
            "label": label,
            "run": run,
            "checkpoint_step": int(step),
            "camera": target.camera,
            "frame": target.frame,
            "image": f"{IMAGES}/{render_rel}",
            "target_image": f"{IMAGES}/{photo_rel}",
            "ref_image": None if ref_rel is None else f"{IMAGES}/{ref_rel}",
            "ref_camera": None if ref is None else ref.camera,
            "ref_frame": None if ref is None else ref.frame,
            "ref_cost": cost,
            "ref_metres_per_scene_unit": pool.metres_per_scene_unit,
            "ref_camera_to_world": None if ref is None else ref.pose.tolist(),
            "render_camera": render_camera,
            "target_camera": camera_record(target.cameras),
            "psnr": _psnr_against_file(image, self.root / photo_rel),  # the photo as written
        }
        return pair_id

    def pair_entries(self, final_root: Path) -> Dict[str, Dict[str, PairEntry]]:
        """``{split: {id: PairEntry}}`` with paths under ``final_root`` (where the images end up)."""
        out: Dict[str, Dict[str, PairEntry]] = {}
        for split in sorted(self.entries, key=lambda s: (s != "train", s)):
            out[split] = {
                pid: PairEntry(pid, final_root / img, final_root / tgt, () if ref is None else (final_root / ref,), self.prompt)
                for pid, (img, tgt, ref) in sorted(self.entries[split].items())
            }
        return out


def _psnr_against_file(image: np.ndarray, path: Path) -> float:
    from PIL import Image

    with Image.open(path) as im:
        return psnr(image, np.asarray(im.convert("RGB")))


# ============================================================================ the job


def _check_finite_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise InputError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value}")


def _is_within(inner: Path, outer: Path) -> bool:
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents


@dataclass
class _Run:
    name: str
    config: Path
    log: Path
    wall_s: float
    iterations: int
    dataparser: str
    dataparser_args: List[str]


class MakePairsJob:
    """One ``make-pairs`` invocation: checks the options, trains, renders and writes the pair set."""

    def __init__(self, options: "MakePairsCommand") -> None:
        self.o = options
        self.out = Path(options.output_dir)
        self.runs_dir = self.out / RUNS
        self.runs: Dict[str, _Run] = {}
        self.timings: Dict[str, float] = {}
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
        if o.iterations < 2 or ("underfit" in self.strategies and o.iterations < 3):
            raise InputError(f"--iterations must be at least {3 if 'underfit' in self.strategies else 2}, got {o.iterations}")
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
            self._check_generic()
        self.split = resolve_test_frames(self.frames, o.test_frames, o.test_fraction)

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
        self.downscale = 1 if o.downscale_factor is None else o.downscale_factor
        if "cycle" in self.strategies:
            # The lateral axis needs motion: check on the recorded (metric) poses before any training.
            from difix_refiner.cameras.trajectory import rig_axes
            from difix_refiner.data.pandaset import load_camera

            cams = [load_camera(self.data, c, self.frames, verify_images=False) for c in o.cameras]
            try:
                rig_axes(
                    np.concatenate([c.c2w_opengl[:, :3, :4] for c in cams]),
                    np.concatenate([c.frame_indices for c in cams]),
                    1.0,  # PandaSet poses are in metres
                    camera_names=[c.name for c in cams for _ in c.frame_indices],
                )
            except ValueError as exc:
                raise InputError(f"cycle cannot shift frames [{o.frame_start}, {end}) sideways: {exc}") from exc

    def _check_generic(self) -> None:
        import tyro
        from nerfstudio.configs.dataparser_configs import all_dataparsers

        o = self.o
        if o.dataparser not in all_dataparsers:
            raise InputError(f"unknown dataparser {o.dataparser!r}; known: {', '.join(sorted(all_dataparsers))}")
        if o.frame_start != 0 or o.frame_end is not None:
            raise InputError("--frame-start/--frame-end apply to pandaset-data; select images with the dataparser's own options")
        args = list(self.extra_dataparser_args)
        default = copy.deepcopy(all_dataparsers[o.dataparser])
        if o.downscale_factor is not None:
            if not hasattr(default, "downscale_factor"):
                raise InputError(f"{o.dataparser} has no --downscale-factor option")
            args += ["--downscale-factor", str(o.downscale_factor)]
        self.generic_args = ["--data", str(self.data.resolve()), *args]
        try:
            dp_config = tyro.cli(type(default), default=default, args=self.generic_args)
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

    # ------------------------------------------------------------------ output folder

    def prepare_output(self) -> None:
        """Create the output folder; with --overwrite remove make-pairs' own earlier results only."""
        self.out.mkdir(parents=True, exist_ok=True)
        # Our entries, plus temporaries a killed run may have left (atomic writes use ".<name>.*").
        stale = [self.out / name for name in OWNED] + [p for name in OWNED for p in self.out.glob(f".{name}.*")]
        for p in stale:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        self.runs_dir.mkdir()

    # ------------------------------------------------------------------ training

    def _train_args(self, save_every: int) -> List[str]:
        o = self.o
        args = [
            "--machine.device-type", self.device, "--machine.seed", str(o.seed),
            "--max-num-iterations", str(o.iterations), "--steps-per-save", str(save_every),
            "--save-only-latest-checkpoint", "False",
            # No evaluation during training: it only costs time here.
            "--steps-per-eval-image", "0", "--steps-per-eval-batch", "0", "--steps-per-eval-all-images", "0",
        ]  # fmt: skip
        if self.has_refine_loop:
            args += ["--pipeline.refine.enabled", "False"]
        if o.compress_schedule:
            # Reach full resolution and all SH degrees at the same fraction of a short run as splatfacto
            # does of its 30k steps (10 % / 20 % and every 1/30), instead of never on a small budget.
            ratio = o.iterations / _SPLATFACTO_STEPS
            args += [
                "--pipeline.model.resolution-schedule", str(max(1, round(_SPLATFACTO_RESOLUTION_SCHEDULE * ratio))),
                "--pipeline.model.sh-degree-interval", str(max(1, round(_SPLATFACTO_SH_DEGREE_INTERVAL * ratio))),
            ]  # fmt: skip
        return args + list(self.extra_train_args)

    def _pandaset_args(self, data: Path, cameras: Sequence[str], frame_start: int, frame_end: Optional[int], **extra: Any) -> List[str]:
        args = ["--data", str(Path(data).resolve()), "--cameras", *cameras, "--frame-start", str(frame_start)]
        if frame_end is not None:
            args += ["--frame-end", str(frame_end)]
        args += ["--lidar-max-points", str(self.o.lidar_max_points)]
        for key, value in extra.items():
            flag = "--" + key.replace("_", "-")
            args += [flag, *value] if isinstance(value, (list, tuple)) else [flag, str(value)]
        return args + list(self.extra_dataparser_args)

    def _base_eval_args(self) -> Dict[str, Any]:
        """pandaset-data needs a non-empty eval split: the target cameras, else only the first frame."""
        if self.targets:
            return {"eval_mode": "cross-camera", "eval_cameras": list(self.targets)}
        # Every camera trains: hold out only frame_start ((f - start) % interval == 0 for no other frame).
        return {"eval_mode": "interval", "eval_interval": len(self.frames)}

    def train(self, name: str, dataparser: str, dataparser_args: List[str], save_every: int, progress: Any) -> _Run:
        """``ns-train`` one run under runs/<name>, showing its progress; returns where it lies."""
        from difix_refiner.nerfstudio.runs import ns_train, run_config_path

        log = self.runs_dir / name / "train.log"
        self.console.log(f"[bold]{name}[/]: ns-train {self.o.method}, {self.o.iterations} iterations on {self.device}; log: {log}")
        task = progress.add_task(f"train {name}", total=self.o.iterations)
        result: Dict[str, Any] = {}

        def target() -> None:
            try:
                result["run"] = ns_train(self.o.method, self.runs_dir, name, self._train_args(save_every), dataparser, dataparser_args)
            except BaseException as exc:  # re-raised in the calling thread
                result["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
            step = _last_logged_step(log)
            if step is not None:
                progress.update(task, completed=step + 1)
        if "error" in result:
            raise result["error"]
        progress.update(task, completed=self.o.iterations)
        config = run_config_path(self.runs_dir, name, self.o.method)
        run = _Run(name, config, log, result["run"].wall_s, self.o.iterations, dataparser, list(dataparser_args))
        self.runs[name] = run
        self.timings[f"train {name}"] = run.wall_s
        self.console.log(f"{name}: trained in {run.wall_s:.0f} s; run folder: {config.parent}")
        return run

    # ------------------------------------------------------------------ rendering

    def _views(self, run: _Run, config: Any, pipeline: Any) -> RunViews:
        if self.pandaset:
            return pandaset_views(run.name, run.config, config, pipeline)
        return dataset_views(run.name, run.config, pipeline, self.o.metres_per_scene_unit)

    def _render_views(
        self,
        progress: Any,
        description: str,
        pipeline: Any,
        targets: Sequence[View],
        pool: RunViews,
        label: str,
        strategy: str,
        run: str,
        step: int,
        cameras_for: Optional[Callable[[View], Tuple[Any, Dict[str, Any]]]] = None,
    ) -> None:
        """Render each target view (``cameras_for`` may map it into another run's frame) and record pairs."""
        task = progress.add_task(description, total=len(targets))
        for view in targets:
            cams, record = cameras_for(view) if cameras_for else (view.cameras, camera_record(view.cameras))
            self.collector.add(
                label=label, strategy=strategy, target=view, image=render(pipeline, cams),
                render_camera=record, pool=pool, run=run, step=step,
            )  # fmt: skip
            progress.advance(task)

    def _base_run(self, progress: Any) -> _Run:
        wanted = underfit_steps(self.o.iterations, self.o.underfit_fractions) if "underfit" in self.strategies else []
        period = save_period(self.o.iterations, wanted)
        if self.pandaset:
            args = self._pandaset_args(
                self.data, self.o.cameras, self.o.frame_start, self.frame_end,
                downscale_factor=self.downscale, **self._base_eval_args(),
            )  # fmt: skip
            return self.train("base", PANDASET, args, period, progress)
        return self.train("base", self.o.dataparser, self.generic_args, period, progress)

    def _strategy_base(self, progress: Any, base: _Run) -> None:
        """underfit, cross-camera, generic sparse and the cycle's shifted renders all use the base run."""
        config, pipeline = load_pipeline(base.config, self.device)
        views = self._views(base, config, pipeline)
        steps = checkpoint_steps(config)
        final = steps[-1]
        o = self.o
        start = time.perf_counter()
        if "underfit" in self.strategies:
            wanted = [f * o.iterations for f in o.underfit_fractions]
            chosen = nearest_steps([s for s in steps if s != final] or steps, wanted)
            trained = [v for v in views.views if v.trained]
            for step in chosen:
                load_checkpoint(config, pipeline, step)
                label = f"underfit-{int(round(100 * step / o.iterations)):02d}"  # nominal share of the schedule
                self._render_views(progress, f"render {label}", pipeline, trained, views, label, "underfit", base.name, step)
        load_checkpoint(config, pipeline, final)
        if "cross-camera" in self.strategies:
            targets = [v for v in views.views if v.camera in self.targets]
            self._render_views(progress, "render cross-camera", pipeline, targets, views, "cross-camera", "cross-camera", base.name, final)
        if "sparse" in self.strategies and not self.pandaset:
            held = [v for v in views.views if not v.trained]
            if not held:
                raise InputError(f"sparse: the {o.dataparser} run has no held-out (eval) images; give the dataparser a sparse split")
            self._render_views(progress, "render sparse", pipeline, held, views, "sparse", "sparse", base.name, final)
        if "cycle" in self.strategies:
            self._cycle_shift_renders(progress, pipeline, views)
        self.base_views = views
        self.timings["render base"] = time.perf_counter() - start
        del pipeline

    def _strategy_sparse(self, progress: Any) -> None:
        """pandaset-data: train on every k-th frame, render the skipped frames of the training cameras."""
        k = self.o.sparse_stride
        name = f"sparse-k{k}"
        args = self._pandaset_args(
            self.data, self.o.cameras, self.o.frame_start, self.frame_end,
            downscale_factor=self.downscale, train_stride=k, **self._base_eval_args(),
        )  # fmt: skip
        run = self.train(name, PANDASET, args, self.o.iterations, progress)
        start = time.perf_counter()
        config, pipeline = load_pipeline(run.config, self.device)
        views = self._views(run, config, pipeline)
        final = checkpoint_steps(config)[-1]
        load_checkpoint(config, pipeline, final)
        held = [v for v in views.views if not v.trained and v.camera in self.o.cameras]
        self._render_views(progress, f"render {name}", pipeline, held, views, name, "sparse", name, final)
        self.timings[f"render {name}"] = time.perf_counter() - start
        del pipeline

    # ------------------------------------------------------------------ cycle

    def _cycle_shift_renders(self, progress: Any, pipeline: Any, views: RunViews) -> None:
        """Render the base run along the recorded path of --cameras shifted by each offset; write datasets."""
        from difix_refiner.cameras.trajectory import rig_axes, shift_poses

        recorded = sorted((v for v in views.views if v.camera in self.o.cameras), key=lambda v: (v.camera, v.frame))
        frames = sorted({v.frame for v in recorded})
        if frames != self.frames:
            raise RuntimeError("cycle: the recorded cameras do not cover every frame of the range")
        poses = np.stack([v.pose for v in recorded])  # [N, 3, 4]
        mpsu = views.metres_per_scene_unit
        axes = rig_axes(poses, [v.frame for v in recorded], mpsu, camera_names=[v.camera for v in recorded])
        self.cycle_data: Dict[float, Tuple[Path, List[View], Dict[str, Any]]] = {}
        for offset in self.cycle_offsets:
            label = f"cycle{offset:+g}m"
            shifted = shift_poses(poses, offset, mpsu, axes=axes)  # [N, 3, 4] scene units
            cams = cameras_with_poses(_stack_cameras(recorded), shifted)
            task = progress.add_task(f"render {label} shifted path", total=len(recorded))
            per_camera: Dict[str, Dict[str, Any]] = {}
            world = scene_to_world(shifted, views.dataparser_transform, views.dataparser_scale)  # [N, 3, 4] metres
            for i, v in enumerate(recorded):
                spec = per_camera.setdefault(
                    v.camera,
                    {"images": [], "camera_to_world": [], **{k: float(getattr(v.cameras, k)[0, 0]) for k in ("fx", "fy", "cx", "cy")}},
                )
                spec["images"].append(render(pipeline, cams[i : i + 1]))
                spec["camera_to_world"].append(world[i])
                progress.advance(task)
            for spec in per_camera.values():
                spec["camera_to_world"] = np.stack(spec["camera_to_world"])
            folder = self.runs_dir / f"{label}-data"
            held = (pipeline.datamanager.train_dataparser_outputs.metadata.get("lidar_sweep_split") or {}).get("eval", [])
            info = write_pandaset_folder(folder, self.data, frames, per_camera, eval_copy_of=self.o.cameras[0], skip_sweeps=held)
            self.console.log(f"{label}: shifted renders written as a pandaset-data folder: {folder}")
            self.cycle_data[offset] = (folder, recorded, {"shifted_scene_poses": shifted, **info})

    def _strategy_cycle(self, progress: Any) -> None:
        """Train a second run on each shifted dataset; render the recorded path with it."""
        base = self.base_views
        for offset in self.cycle_offsets:
            label = f"cycle{offset:+g}m"
            folder, recorded, info = self.cycle_data[offset]
            args = self._pandaset_args(
                folder, self.o.cameras, 0, None, downscale_factor=1, eval_mode="cross-camera",
                eval_cameras=[info["eval_camera"]], auto_scale_poses="False", scale_factor=repr(base.dataparser_scale),
            )  # fmt: skip
            run = self.train(label, PANDASET, args, self.o.iterations, progress)
            start = time.perf_counter()
            config, pipeline = load_pipeline(run.config, self.device)
            outputs = pipeline.datamanager.train_dataparser_outputs
            b_transform, b_scale = outputs.dataparser_transform.double().numpy(), float(outputs.dataparser_scale)
            self._check_cycle_frame(outputs, recorded, info["shifted_scene_poses"], base, b_transform, b_scale)
            final = checkpoint_steps(config)[-1]
            load_checkpoint(config, pipeline, final)

            def cameras_for(view: View) -> Tuple[Any, Dict[str, Any]]:
                world = scene_to_world(view.pose[None], base.dataparser_transform, base.dataparser_scale)
                in_b = world_to_scene(world, b_transform, b_scale)  # [1, 3, 4] in the second run's frame
                cams = cameras_with_poses(view.cameras, in_b)
                # Record the pose the second run rendered, mapped back into the first run's frame.
                back = world_to_scene(scene_to_world(cams.camera_to_worlds.double().numpy(), b_transform, b_scale),
                                      base.dataparser_transform, base.dataparser_scale)  # fmt: skip
                return cams, camera_record(cams, back[0])

            self._render_views(progress, f"render {label}", pipeline, recorded, base, label, "cycle", run.name, final, cameras_for)
            self.timings[f"render {label}"] = time.perf_counter() - start
            del pipeline

    @staticmethod
    def _check_cycle_frame(outputs: Any, recorded: List[View], shifted: np.ndarray, base: RunViews, b_transform: np.ndarray, b_scale: float) -> None:
        """The second run's cameras, mapped into the first run's frame, must be the shifted poses."""
        names = [str(n) for n in outputs.metadata["camera_names"]]
        frames = [int(f) for f in outputs.metadata["frame_indices"]]
        b_poses = outputs.cameras.camera_to_worlds.double().numpy()  # [M, 3, 4] second run's frame
        in_a = world_to_scene(scene_to_world(b_poses, b_transform, b_scale), base.dataparser_transform, base.dataparser_scale)
        first = min(v.frame for v in recorded)
        expected = {(v.camera, v.frame - first): shifted[i] for i, v in enumerate(recorded)}
        worst = 0.0
        for j, key in enumerate(zip(names, frames)):
            if key not in expected:
                raise RuntimeError(f"cycle: the second run has an unexpected image {key}")
            worst = max(worst, float(np.abs(in_a[j] - expected[key]).max()))
        if worst > 1e-4:
            raise RuntimeError(f"cycle: the second run's cameras are off by {worst:.2e} scene units from the shifted poses")

    # ------------------------------------------------------------------ driver

    def run(self) -> Dict[str, Any]:
        """Check, train, render, write; returns the summary ``{split: count, ...}``."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.check()
        self.prepare_output()
        self.console.log(
            f"make-pairs: strategies {', '.join(self.strategies)}; frames {self.frames[0]}..{self.frames[-1]}, "
            f"test frames [{self.split.test_start}, {self.split.test_end}); runs are kept under {self.runs_dir}"
        )
        start = time.perf_counter()
        with atomic.atomic_dir(self.out / IMAGES, overwrite=self.o.overwrite) as images_tmp:
            self.collector = PairCollector(images_tmp, self.split, self.o.ref_angle_weight, self.o.prompt)
            progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=self.console)
            with progress:
                base = self._base_run(progress)
                self._strategy_base(progress, base)
                if "sparse" in self.strategies and self.pandaset:
                    self._strategy_sparse(progress)
                if "cycle" in self.strategies:
                    self._strategy_cycle(progress)
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
        for col in ("label", "train", "test", "mean PSNR (dB)", "with ref"):
            table.add_column(col)
        by_label: Dict[str, List[Dict[str, Any]]] = {}
        for rec in self.collector.records.values():
            by_label.setdefault(rec["label"], []).append(rec)
        for label, recs in by_label.items():
            finite = [r["psnr"] for r in recs if np.isfinite(r["psnr"])]
            table.add_row(
                label,
                str(sum(r["split"] == "train" for r in recs)),
                str(sum(r["split"] == "test" for r in recs)),
                f"{np.mean(finite):.2f}" if finite else "-",
                str(sum(r["ref_image"] is not None for r in recs)),
            )
        self.console.print(table)
        self.console.log(
            f"{sum(counts.values())} pairs ({', '.join(f'{k}: {v}' for k, v in counts.items())}) in {self.timings['total']:.0f} s; "
            f"runs kept under {self.runs_dir}"
        )


def _stack_cameras(views: Sequence[View]) -> Any:
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


def make_pairs(options: "MakePairsCommand") -> Dict[str, int]:
    """Build the pair set described by ``options`` (a :class:`MakePairsCommand`); returns {split: count}.

    Raises:
        InputError: bad options (nothing is written then).
    """
    return MakePairsJob(options).run()
