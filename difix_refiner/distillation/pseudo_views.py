"""Novel cameras of the refine loop and the on-disk store of their fixed renders (pseudo views).

Novel cameras ("tracks") start on the recorded path and move toward a target pose, one bounded step per
refine round (:func:`difix_refiner.cameras.step_toward`):

- offset tracks start at a training pose and go to that pose shifted sideways by ``offset_m`` metres
  (:func:`difix_refiner.cameras.shift_poses`, rig-aware; + = the vehicle's left);
- held-out tracks go to the pose of an eval-split image (e.g. a side camera that is never trained on) from
  the nearest training pose. Only the pose and intrinsics of that image are used, never its pixels.

Each round's fixed renders are written into the run folder::

    <run>/pseudo_views/index.json
    <run>/pseudo_views/step_000200/offset_+0.5m_frame_0012.png        fixed render (pseudo ground truth)
    <run>/pseudo_views/step_000200/offset_+0.5m_frame_0012.alpha.png  rendered opacity, 8 bit
    <run>/pseudo_views/step_000200/offset_+0.5m_frame_0012.render.png raw render (with save_renders)
    <run>/pseudo_views/step_000200/offset_+0.5m_frame_0012.weight.png per-pixel loss weight, 8 bit (with
                                                                      fidelity_weighting)

``index.json`` lists every view with its pose, intrinsics, step, offset, tracks and references, so a
resumed run (``--load-dir`` / ``--load-checkpoint``) gets its pseudo views and camera positions back.
Poses are nerfstudio camera-to-world ``[3, 4]`` matrices (OpenGL axes) in scene units.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence

import numpy as np
from PIL import Image

from difix_refiner.cameras.reference_views import nearest_references
from difix_refiner.cameras.trajectory import shift_poses
from difix_refiner.core.atomic import atomic_path, write_json, write_text
from difix_refiner.scene.trained_run import RecordedImages

INDEX_NAME = "index.json"
"""Index file of a pseudo-view folder."""
ROUNDS_LOG = "rounds.jsonl"
"""One JSON line per refine round: step, views fixed, seconds spent loading the fixer, rendering, fixing, in all;
the fixer-change statistics per view and their means (``fidelity``), and at the first round the fixer check
(``fixer_check``; see pseudo_view_fidelity.py and fixer_fit_check.py)."""
INDEX_VERSION = 1
"""Format version written into the index."""
POSE_DECIMALS = 6
"""Poses that agree to this many decimals (scene units) count as the same view."""


# ----------------------------------------------------------------------------------------- poses


def format_metres(value: float, signed: bool = True) -> str:
    """``+0.5``, ``-1.0``, ``+0.25`` (two decimals at most, at least one): file-name friendly metres."""
    text = f"{value:+.2f}" if signed else f"{value:.2f}"
    text = text.rstrip("0")
    return text + "0" if text.endswith(".") else text


@dataclass
class NovelCamera:
    """A novel camera moving from ``start`` toward ``target``, one step per refine round."""

    track: str
    """Stable id, e.g. ``offset_+2.0m/front_camera/frame_0012`` or ``held-out/front_left_camera/frame_0012``."""
    kind: Literal["offset", "held-out"]
    """Which kind of target."""
    start: np.ndarray
    """[3, 4] start pose (a recorded training pose)."""
    target: np.ndarray
    """[3, 4] target pose."""
    intrinsics_split: Literal["train", "eval"]
    """Dataset whose camera ``intrinsics_index`` gives the intrinsics (and image size)."""
    intrinsics_index: int
    """Image index in that dataset: the training image shifted, or the held-out image approached."""
    camera_name: Optional[str]
    """Rig camera whose pose is shifted (offset) or approached (held-out); None for unnamed cameras."""
    frame: int
    """Frame index of that image."""
    target_offset_m: Optional[float] = None
    """Lateral target offset in metres (offset tracks)."""
    current: np.ndarray = field(default=None)  # type: ignore[assignment]
    """[3, 4] current pose; starts at ``start``."""
    reached: bool = False
    """Whether ``current`` equals ``target``."""

    def __post_init__(self) -> None:
        if self.current is None:
            self.current = self.start.copy()

    def travelled_m(self, metres_per_scene_unit: float) -> float:
        """Distance in metres between the current pose's centre and the start's."""
        return float(np.linalg.norm(self.current[:, 3] - self.start[:, 3]) * metres_per_scene_unit)

    def remaining_m(self, metres_per_scene_unit: float) -> float:
        """Distance in metres between the current pose's centre and the target's."""
        return float(np.linalg.norm(self.target[:, 3] - self.current[:, 3]) * metres_per_scene_unit)

    def current_offset_m(self, metres_per_scene_unit: float) -> Optional[float]:
        """Current lateral offset in metres (offset tracks): signed like the target."""
        if self.target_offset_m is None:
            return None
        return float(np.sign(self.target_offset_m) * self.travelled_m(metres_per_scene_unit))

    def file_stem(self, metres_per_scene_unit: float, with_camera: bool) -> str:
        """File name (without suffix) of this camera's view at its current pose."""
        camera = f"{self.camera_name}_" if with_camera and self.camera_name else ""
        if self.kind == "offset":
            offset = self.current_offset_m(metres_per_scene_unit) or 0.0
            return f"offset_{format_metres(offset)}m_{camera}frame_{self.frame:04d}"
        name = self.camera_name or "camera"
        travelled = format_metres(self.travelled_m(metres_per_scene_unit), signed=False)
        return f"toward_{name}_frame_{self.frame:04d}_at_{travelled}m"


def _strided(indices: np.ndarray, frames: np.ndarray, stride: int) -> np.ndarray:
    """Every ``stride``-th of ``indices`` in frame order."""
    order = indices[np.argsort(frames[indices], kind="stable")]
    return order[::stride]


def offset_cameras(recorded: RecordedImages, offsets_m: Sequence[float], frame_stride: int) -> List[NovelCamera]:
    """Novel cameras from every ``frame_stride``-th training image of each rig camera to each lateral offset."""
    mpsu = recorded.metres_per_scene_unit
    axes = recorded.axes()  # rig-aware: all cameras of a frame move with the vehicle
    names = recorded.camera_names
    groups = recorded.known_cameras() or [None]
    chosen: List[int] = []
    for name in groups:
        idx = np.array([i for i in range(len(recorded.frame_indices)) if names is None or names[i] == name])
        chosen += _strided(idx, recorded.frame_indices, frame_stride).tolist()
    cams = []
    for offset in offsets_m:
        shifted = shift_poses(recorded.camera_to_worlds, offset, mpsu, axes=axes)  # [N, 3, 4]
        for i in chosen:
            camera = None if names is None else names[i]
            frame = int(recorded.frame_indices[i])
            cams.append(
                NovelCamera(
                    track=f"offset_{format_metres(offset)}m/{camera or 'camera'}/frame_{frame:04d}",
                    kind="offset",
                    start=recorded.camera_to_worlds[i].copy(),
                    target=shifted[i],
                    intrinsics_split="train",
                    intrinsics_index=i,
                    camera_name=camera,
                    frame=frame,
                    target_offset_m=float(offset),
                )
            )
    return cams


def held_out_cameras(
    train_poses: np.ndarray,
    eval_poses: np.ndarray,
    eval_camera_names: Optional[Sequence[str]],
    eval_frames: np.ndarray,
    frame_stride: int,
    metres_per_scene_unit: float,
    angle_weight: float,
) -> List[NovelCamera]:
    """Novel cameras toward every ``frame_stride``-th held-out pose (per camera), from the nearest training pose.

    Args:
        train_poses: ``[N, 3, 4]`` training poses.
        eval_poses: ``[M, 3, 4]`` held-out (eval split) poses; their images are not used.
        eval_camera_names: ``[M]`` rig camera per held-out image, or None.
        eval_frames: ``[M]`` frame index per held-out image.
    """
    groups = list(dict.fromkeys(eval_camera_names)) if eval_camera_names is not None else [None]
    cams = []
    for name in groups:
        idx = np.array([j for j in range(len(eval_frames)) if eval_camera_names is None or eval_camera_names[j] == name])
        for j in _strided(idx, eval_frames, frame_stride).tolist():
            nearest = nearest_references(eval_poses[j], train_poses, 1, None, angle_weight, metres_per_scene_unit)[0]
            start = train_poses[nearest]
            if np.allclose(start, eval_poses[j], atol=10.0**-POSE_DECIMALS):
                continue  # already a training pose: nothing to synthesise
            frame = int(eval_frames[j])
            cams.append(
                NovelCamera(
                    track=f"held-out/{name or 'camera'}/frame_{frame:04d}",
                    kind="held-out",
                    start=start.copy(),
                    target=eval_poses[j].copy(),
                    intrinsics_split="eval",
                    intrinsics_index=j,
                    camera_name=name,
                    frame=frame,
                )
            )
    return cams


def pose_key(pose: np.ndarray, width: int, height: int) -> tuple:
    """Hashable identity of a view: its pose (rounded) and image size."""
    return (width, height) + tuple(np.round(np.asarray(pose, dtype=np.float64), POSE_DECIMALS).ravel().tolist())


# ----------------------------------------------------------------------------------------- store


@dataclass
class PseudoViewRecord:
    """One pseudo view as listed in ``index.json``."""

    file: str
    """Fixed render (PNG), relative to the pseudo-view folder."""
    alpha_file: str
    """Rendered opacity (8-bit PNG), relative to the pseudo-view folder."""
    step: int
    """Training step of the refine round that made it."""
    tracks: List[str]
    """Novel cameras that were at this pose in that round."""
    kind: str
    """'offset' or 'held-out'."""
    camera_name: Optional[str]
    """Rig camera shifted (offset) or approached (held-out)."""
    frame: int
    """Frame index of the source (offset) or target (held-out) image."""
    offset_m: Optional[float]
    """Current lateral offset in metres from the recorded pose (offset views), + = left."""
    distance_from_start_m: float
    """Metres between the view's centre and its start pose."""
    distance_to_target_m: float
    """Metres still to go to the target."""
    reached: bool
    """Whether the view is at its target."""
    camera_to_world: List[List[float]]
    """[3][4] pose, scene units, OpenGL axes."""
    intrinsics: Dict[str, float]
    """fx, fy, cx, cy, width, height (pixels) of the view."""
    references: List[Dict]
    """Training images given to the fixer: index, camera_name, frame, distance_m."""
    render_file: Optional[str] = None
    """Raw render (PNG) when save_renders was on."""
    weight_file: Optional[str] = None
    """Per-pixel loss weight (8-bit PNG, 255 = 1) when fidelity_weighting was on."""

    def pose(self) -> np.ndarray:
        """``[3, 4]`` float64 pose."""
        return np.asarray(self.camera_to_world, dtype=np.float64)

    def key(self) -> tuple:
        """Identity of the view (pose and size)."""
        return pose_key(self.pose(), int(self.intrinsics["width"]), int(self.intrinsics["height"]))


def _write_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


class PseudoViewStore:
    """The pseudo views of a run, on disk under ``root`` (``<run>/pseudo_views``) and listed in its index."""

    def __init__(self, root: Path, records: Optional[List[PseudoViewRecord]] = None) -> None:
        self.root = Path(root)
        self.records: List[PseudoViewRecord] = list(records or [])

    @classmethod
    def load(cls, root: Path) -> "PseudoViewStore":
        """Read ``root/index.json``; an absent index is an empty store."""
        root = Path(root)
        index = root / INDEX_NAME
        if not index.is_file():
            return cls(root)
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            names = {f.name for f in dataclasses.fields(PseudoViewRecord)}
            records = [PseudoViewRecord(**{k: v for k, v in r.items() if k in names}) for r in data["views"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read the pseudo-view index {index}: {exc}") from exc
        return cls(root, records)

    def save_index(self, **info) -> None:
        """Write ``index.json`` (atomically) with ``info`` as extra top-level fields."""
        data = {"version": INDEX_VERSION, **info, "views": [dataclasses.asdict(r) for r in self.records]}
        write_json(self.root / INDEX_NAME, data)

    def log_round(self, **entry: float) -> None:
        """Append one refine round's line to ``rounds.jsonl`` (kept across resumes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ROUNDS_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")

    def read_rounds(self) -> List[Dict]:
        """The lines of ``rounds.jsonl`` (none when absent); a torn last line (a killed write) is dropped."""
        log = self.root / ROUNDS_LOG
        if not log.is_file():
            return []
        rounds = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                rounds.append(json.loads(line))
            except ValueError:
                continue
        return rounds

    def write_rounds(self, rounds: Sequence[Dict]) -> None:
        """Replace ``rounds.jsonl`` (atomically) with ``rounds``."""
        write_text(self.root / ROUNDS_LOG, "".join(json.dumps(r) + "\n" for r in rounds))

    def remove_after(self, step: int) -> None:
        """Delete the round folders of steps after ``step`` and the temporaries a killed write left behind
        (a run resumed in place redoes those rounds, so index and files agree again)."""
        if not self.root.is_dir():
            return
        for folder in self.root.glob("step_*"):
            suffix = folder.name[len("step_") :]
            if folder.is_dir() and suffix.isdigit() and int(suffix) > step:
                shutil.rmtree(folder)
        for leftover in list(self.root.glob(".*.partial*")) + list(self.root.glob("step_*/.*.partial*")):
            leftover.unlink(missing_ok=True)

    def add(
        self,
        record: PseudoViewRecord,
        image: np.ndarray,
        alpha: np.ndarray,
        render: Optional[np.ndarray] = None,
        weight: Optional[np.ndarray] = None,
    ) -> None:
        """Write a view's files and list it (call :meth:`save_index` after a round).

        Args:
            image: ``[H, W, 3]`` uint8 fixed render.
            alpha: ``[H, W]`` uint8 rendered opacity.
            render: ``[H, W, 3]`` uint8 raw render (written when ``record.render_file`` is set).
            weight: ``[H, W]`` uint8 loss weight (written when ``record.weight_file`` is set).
        """
        _write_png(self.root / record.file, image)
        _write_png(self.root / record.alpha_file, alpha)
        if render is not None and record.render_file is not None:
            _write_png(self.root / record.render_file, render)
        if weight is not None and record.weight_file is not None:
            _write_png(self.root / record.weight_file, weight)
        self.records = [r for r in self.records if r.file != record.file] + [record]

    def read_image(self, record: PseudoViewRecord) -> np.ndarray:
        """``[H, W, 3]`` uint8 fixed render."""
        with Image.open(self.root / record.file) as img:
            return np.asarray(img.convert("RGB")).copy()

    def read_alpha(self, record: PseudoViewRecord) -> np.ndarray:
        """``[H, W]`` uint8 rendered opacity."""
        with Image.open(self.root / record.alpha_file) as img:
            return np.asarray(img.convert("L")).copy()

    def read_weight(self, record: PseudoViewRecord) -> Optional[np.ndarray]:
        """``[H, W]`` uint8 loss weight, or None when the view has none."""
        if record.weight_file is None:
            return None
        with Image.open(self.root / record.weight_file) as img:
            return np.asarray(img.convert("L")).copy()

    def up_to(self, step: int) -> List[PseudoViewRecord]:
        """Records made at or before ``step``."""
        return [r for r in self.records if r.step <= step]

    def active(self, keep_previous_rounds: bool) -> List[PseudoViewRecord]:
        """The views to train on: the newest per pose (or only the latest round's), oldest first."""
        if not self.records:
            return []
        if not keep_previous_rounds:
            last = max(r.step for r in self.records)
            return [r for r in self.records if r.step == last]
        newest: Dict[tuple, PseudoViewRecord] = {}
        for r in sorted(self.records, key=lambda r: r.step):
            newest.pop(r.key(), None)  # re-insert so the order follows the newest version
            newest[r.key()] = r
        return list(newest.values())

    def latest_per_track(self) -> Dict[str, PseudoViewRecord]:
        """The newest record of each track (gives a resumed novel camera its position)."""
        latest: Dict[str, PseudoViewRecord] = {}
        for r in sorted(self.records, key=lambda r: r.step):
            for t in r.tracks:
                latest[t] = r
        return latest

    def copy_into(self, root: Path, records: Sequence[PseudoViewRecord]) -> "PseudoViewStore":
        """A store under ``root`` holding copies of ``records``' files (for resuming into a new run folder)."""
        out = PseudoViewStore(root)
        for r in records:
            for name in (r.file, r.alpha_file, r.render_file, r.weight_file):
                if name is None or not (self.root / name).is_file():
                    continue
                with atomic_path(out.root / name) as tmp:
                    shutil.copyfile(self.root / name, tmp)
            out.records.append(r)
        return out
