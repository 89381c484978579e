"""``difix-refiner render-shifted`` / ``render-recorded``: render (laterally shifted) drives with the
training intrinsics, and with ``--fix`` run the Difix fixer on every rendered frame (the Difix3D+ "+" step).

A fixer trained with LiDAR hints gets the hint of every rendered camera: the run's training sweeps (the
dataparser's seed points) rendered into it, exactly as the refine loop builds its pseudo views' hints
(:mod:`difix_refiner.distillation.pseudo_view_fidelity`)."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tyro

from difix_refiner.cameras.trajectory import DEFAULT_LOOK_AHEAD_M, DEFAULT_WINDOW_M
from difix_refiner.core import atomic
from difix_refiner.core.contact_sheet import (
    LabelledRow,
    make_row_sheet,
    offset_rows,
    sample_positions,
    thumbnail,
)
from difix_refiner.core.errors import InputError
from difix_refiner.core.progress import progress_bar
from difix_refiner.core.video import Mp4Writer, video_backend
from difix_refiner.distillation.pseudo_view_fidelity import camera_hint, fixer_hint_cloud
from difix_refiner.fixer.options import FixerOptions, resolve_device
from difix_refiner.scene.run_pipeline import (
    cameras_with_poses,
    load_pipeline,
    render_camera,
    training_cameras,
)
from difix_refiner.scene.run_scale import run_metres_per_scene_unit
from difix_refiner.scene.shift_options import ShiftOptions
from difix_refiner.scene.trained_run import (
    RecordedImages,
    check_outputs_free,
    load_run_config,
    offset_name,
    recorded_images,
)

CONTACT_SHEET = "contact_sheet.png"
CONTACT_SHEET_FIXED = "contact_sheet_fixed.png"
MANIFEST = "manifest.json"


def fixed_offset_name(offset_m: float) -> str:
    """File-name stem of an offset's fixed frames: ``offset_+2m_fixed``."""
    return f"{offset_name(offset_m)}_fixed"


def frame_file(frame_index: int) -> str:
    """File name of one frame: ``frame_00012.png``."""
    return f"frame_{frame_index:05d}.png"


@dataclass
class _FrameFixer:
    """The fixer, with the recorded photos it takes as reference views (None: no references) and the
    LiDAR points of its hints (None: no hints)."""

    fixer: Any
    photos: Optional[Sequence[Path]]
    """Photo of every training image (``image_filenames`` order)."""
    hint_cloud: Optional[Tuple[np.ndarray, np.ndarray]] = None
    """The run's seed points ([N, 3] scene units, [N, 3] uint8) for a hint fixer; None: no hints."""
    metres_per_scene_unit: float = 1.0
    """The run's scale (the hint's depth settings are in metres)."""

    def __call__(self, image: np.ndarray, image_index: int, camera: Any = None) -> np.ndarray:
        """Fix a ``uint8 [H, W, 3]`` render of training image ``image_index``'s camera and frame, rendered
        with ``camera`` (nerfstudio ``Cameras`` [1], scene frame: where the hint is rendered)."""
        from difix_refiner.fixer.render_fixing import fix_render, read_photo

        reference = None
        if self.photos is not None:
            h, w = image.shape[:2]
            reference = read_photo(self.photos[image_index], w, h)  # the same camera and frame, at render size
        hint = None if camera is None else camera_hint(self.hint_cloud, camera, 0, self.metres_per_scene_unit)
        return fix_render(self.fixer, image, reference, hint)


@dataclass
class _Drive:
    """What the renders of every offset share."""

    pipeline: Any
    recorded: RecordedImages
    selection: np.ndarray
    """[M] training-image indices to render, in frame order."""
    frames: np.ndarray
    """[M] their frame indices."""
    columns: List[int]
    """Positions in ``selection`` shown in the contact sheets."""
    fps: float
    backend: Optional[str]
    """mp4 encoder, or None (PNG frames only)."""
    fixer: Optional[_FrameFixer]
    """Only with --fix."""


@dataclass
class RenderShiftedCommand(FixerOptions, ShiftOptions):
    """Render the recorded drive shifted sideways by each offset, with the exact training intrinsics.

    For every offset, and for the recorded path (offset 0) as reference, writes to --output-dir:
    offset_<+x>m/frame_<NNNNN>.png, offset_<+x>m.mp4, plus contact_sheet.png (rows: offsets, most
    left on top, the recorded path in red; columns: sampled frames) and manifest.json (the poses
    used, in scene units, and the scale). Positive offsets move to the vehicle's left.

    With --fix, every rendered frame (the recorded path included) also goes through the Difix fixer
    (the Difix3D+ "+" step), given the recorded photo of the same camera and frame as its reference
    view (unless --no-fixer-reference): offset_<+x>m_fixed/frame_<NNNNN>.png, offset_<+x>m_fixed.mp4
    (unfixed left, fixed right, side by side) and contact_sheet_fixed.png (each offset's row followed
    by its fixed row); the manifest records the fixer.
    """


    frame_stride: int = 1
    """Render every n-th frame of the camera (the video keeps real-time playback: fps / n)."""
    resolution_scale: float = 1.0
    """Scale the training resolution and intrinsics for quicker previews (1 = exact training cameras)."""
    contact_sheet_frames: int = 6
    """Number of frames (columns) sampled evenly for the contact sheet."""
    thumbnail_width: int = 320
    """Width in pixels of each contact-sheet cell."""
    fix: bool = False
    """Also run the Difix fixer on every rendered frame, the recorded path included (the Difix3D+ "+" step); writes offset_<+x>m_fixed/, offset_<+x>m_fixed.mp4 (unfixed | fixed) and contact_sheet_fixed.png."""
    fixer_reference: bool = True
    """Give the fixer the recorded training photo of the same camera and frame as its reference view (the nearest real frame), when the fixer takes references."""
    fixer_hint: bool = True
    """With a fixer trained with LiDAR hints: give it the hint of every rendered camera, from the run's training sweeps (the dataparser's LiDAR seed points, coloured from the training photos). --no-fixer-hint runs it without."""

    def main(self) -> None:
        """Run the command (bad input raises ``InputError``; the console script prints it as one line)."""
        self.run()

    # ----------------------------------------------------------------------------------------
    # Steps that tests can replace.

    def _load_pipeline(self) -> Any:
        """Load the trained pipeline (latest checkpoint), with its seed points when --fix may need hints."""
        return load_pipeline(Path(self.load_config), seed_points=self.fix and self.fixer_hint)[1]

    def _load_fixer(self, device: str) -> Any:
        """Load the fixer for --fix (``device``: the default for --fixer-device auto)."""
        fixer, reason = self.load_fixer(default_device=device)
        if fixer is None:
            raise InputError(f"--fix needs a fixer: {reason}")
        return fixer

    def _postprocess_frame(self, image: np.ndarray, offset_m: float, frame_index: int) -> np.ndarray:
        """Hook applied to every rendered ``uint8 [H, W, 3]`` frame before it is written (and fixed).

        Identity; the fixed frames of --fix are written beside the unfixed ones, not in place of them.
        """
        return image

    # ----------------------------------------------------------------------------------------

    def _output_paths(self, all_offsets: List[float]) -> List[Path]:
        """Everything this run writes (checked before anything slow, so nothing is overwritten by surprise)."""
        out = Path(self.output_dir)
        paths = [out / CONTACT_SHEET, out / MANIFEST] + ([out / CONTACT_SHEET_FIXED] if self.fix else [])
        for offset in all_offsets:
            names = [offset_name(offset)] + ([fixed_offset_name(offset)] if self.fix else [])
            paths += [p for n in names for p in (out / n, out / f"{n}.mp4")]
        return paths

    def _shifted_cameras(self, recorded: RecordedImages, selection: np.ndarray, offset_m: float) -> Tuple[Any, np.ndarray]:
        """Cameras for the selected images shifted by ``offset_m``, and their poses ``[M, 3, 4]``."""
        import torch

        poses = self.shifted_poses(recorded, selection, offset_m)  # [M, 3, 4] float64
        cameras = cameras_with_poses(recorded.cameras[torch.from_numpy(selection)], poses)
        if self.resolution_scale != 1.0:
            cameras.rescale_output_resolution(self.resolution_scale)
        return cameras, poses

    def trajectory_offsets(self) -> List[float]:
        """Validate the options; the offsets to render, from most left to most right, 0 included."""
        # The recorded path (0) is always rendered as the reference row.
        return sorted(self.checked_offsets() + [0.0], reverse=True)

    def _check_options(self) -> List[float]:
        """Validate every option (before anything slow happens); returns :meth:`trajectory_offsets`."""
        all_offsets = self.trajectory_offsets()
        if self.frame_stride < 1:
            raise InputError(f"--frame-stride must be at least 1, got {self.frame_stride}")
        if not (np.isfinite(self.resolution_scale) and self.resolution_scale > 0):
            raise InputError(f"--resolution-scale must be positive, got {self.resolution_scale}")
        if self.contact_sheet_frames < 1 or self.thumbnail_width < 8:
            raise InputError("--contact-sheet-frames must be >= 1 and --thumbnail-width >= 8")
        if self.fix:
            resolve_device(self.fixer_device, "cpu")  # a bad --fixer-device fails before anything slow
        return all_offsets

    def _frame_fixer(self, pipeline: Any, selection: np.ndarray, metres_per_scene_unit: float) -> _FrameFixer:
        """Load the fixer (once, only with --fix), find the reference photos of the selected images and,
        for a hint fixer, the run's LiDAR points."""
        fixer = self._load_fixer(str(pipeline.device))
        from difix_refiner.fixer.render_fixing import takes_references

        cloud = fixer_hint_cloud(pipeline, fixer) if self.fixer_hint else None
        if not (self.fixer_reference and takes_references(fixer)):
            return _FrameFixer(fixer, None, cloud, metres_per_scene_unit)
        photos = [Path(p) for p in pipeline.datamanager.train_dataparser_outputs.image_filenames]
        missing = [str(photos[i]) for i in selection.tolist() if not photos[i].is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} recorded photo(s) for the fixer's reference view not found (first: {missing[0]}); "
                "pass --no-fixer-reference to fix without references"
            )
        return _FrameFixer(fixer, photos, cloud, metres_per_scene_unit)

    def _fixer_manifest(self, frame_fixer: Optional[_FrameFixer]) -> Optional[Dict[str, Any]]:
        """The manifest's ``fixer`` entry (None without --fix)."""
        if frame_fixer is None:
            return None
        base, _ = self.fixer_source()
        if base is None:
            base = getattr(frame_fixer.fixer, "base", None)
        return {
            "base": None if base is None else str(base),
            "adapter": None if self.fixer_adapter is None else str(self.fixer_adapter),
            "reference": frame_fixer.photos is not None,
            "hint": frame_fixer.hint_cloud is not None,
        }

    def run(self) -> Dict[str, Any]:
        """Render everything; returns the manifest (raises ``InputError`` on bad input)."""
        all_offsets = self._check_options()
        out = Path(self.output_dir)
        check_outputs_free(self._output_paths(all_offsets), self.overwrite)
        config = load_run_config(self.load_config)  # method check before the (slow) model load

        pipeline = self._load_pipeline()
        recorded = recorded_images(
            pipeline.datamanager.train_dataparser_outputs,
            training_cameras(pipeline),
            run_metres_per_scene_unit(config, self.metres_per_scene_unit),
        )
        camera = recorded.resolve_camera(self.camera)
        selection = recorded.select(camera)[:: self.frame_stride]
        if selection.size < 1:
            raise InputError("no frames left to render")
        frame_fixer = self._frame_fixer(pipeline, selection, recorded.metres_per_scene_unit) if self.fix else None
        backend = video_backend()
        if backend is None:
            warnings.warn("no mp4 encoder available (PyAV or ffmpeg); writing PNG frames only", stacklevel=2)
        drive = _Drive(
            pipeline=pipeline,
            recorded=recorded,
            selection=selection,
            frames=recorded.frame_indices[selection],
            columns=sample_positions(selection.size, self.contact_sheet_frames),
            fps=self.fps / self.frame_stride,
            backend=backend,
            fixer=frame_fixer,
        )

        manifest: Dict[str, Any] = {
            "load_config": str(self.load_config),
            "method": config.method_name,
            "camera": camera,
            "positive_offset_means": "vehicle's left",
            "metres_per_scene_unit": recorded.metres_per_scene_unit,
            "dataparser_transform": recorded.dataparser_transform.tolist(),
            "dataparser_scale": recorded.dataparser_scale,
            "frame_indices": drive.frames.tolist(),
            "yaw_toward_road": self.yaw_toward_road,
            "look_ahead_m": self.look_ahead_m if self.yaw_toward_road else None,
            "resolution_scale": self.resolution_scale,
            "fps": drive.fps,
            "contact_sheet": CONTACT_SHEET,
            "contact_sheet_fixed": CONTACT_SHEET_FIXED if self.fix else None,
            "fixer": self._fixer_manifest(frame_fixer),
            "offsets": [],
        }
        thumbs: Dict[float, Dict[int, np.ndarray]] = {}
        fixed_thumbs: Dict[float, Dict[int, np.ndarray]] = {}
        with progress_bar("Rendering offset {task.description}") as progress:
            for offset in all_offsets:
                entry = self._render_offset(drive, offset, progress, thumbs.setdefault(offset, {}), fixed_thumbs.setdefault(offset, {}))
                manifest["offsets"].append(entry)

        sheet_frames = [int(drive.frames[p]) for p in drive.columns]
        _save_sheet(out / CONTACT_SHEET, offset_rows(thumbs), sheet_frames)
        if self.fix:
            _save_sheet(out / CONTACT_SHEET_FIXED, offset_rows(thumbs, fixed_thumbs), sheet_frames)
        atomic.write_json(out / MANIFEST, manifest)
        fixed = " (and fixed)" if self.fix else ""
        print(f"Rendered{fixed} {len(all_offsets)} trajectories x {selection.size} frames of {camera or 'the camera'} to {out}")
        return manifest

    def _render_offset(
        self,
        drive: _Drive,
        offset: float,
        progress: Any,
        thumbs: Dict[int, np.ndarray],
        fixed_thumbs: Dict[int, np.ndarray],
    ) -> Dict[str, Any]:
        """Render (and fix) every selected frame at ``offset``; fills the thumbnails, returns the manifest entry."""
        out = Path(self.output_dir)
        cameras, poses = self._shifted_cameras(drive.recorded, drive.selection, offset)
        name, fixed_name = offset_name(offset), fixed_offset_name(offset)
        task = progress.add_task(f"{offset:+g} m", total=drive.selection.size)
        with contextlib.ExitStack() as stack:
            folder = stack.enter_context(atomic.atomic_dir(out / name, overwrite=self.overwrite))
            video = stack.enter_context(_atomic_mp4(out / f"{name}.mp4", drive.fps, drive.backend))
            if drive.fixer is not None:
                fixed_folder = stack.enter_context(atomic.atomic_dir(out / fixed_name, overwrite=self.overwrite))
                fixed_video = stack.enter_context(_atomic_mp4(out / f"{fixed_name}.mp4", drive.fps, drive.backend))
            for pos, (index, frame) in enumerate(zip(drive.selection.tolist(), drive.frames.tolist())):
                image = render_camera(drive.pipeline, cameras[pos : pos + 1]).rgb
                image = self._postprocess_frame(image, offset, frame)
                _save_png(folder / frame_file(frame), image)
                if video is not None:
                    video.write(image)
                if pos in drive.columns:
                    thumbs[frame] = thumbnail(image, self.thumbnail_width)
                if drive.fixer is not None:
                    fixed = drive.fixer(image, index, cameras[pos : pos + 1])
                    _save_png(fixed_folder / frame_file(frame), fixed)
                    if fixed_video is not None:
                        fixed_video.write(np.concatenate([image, fixed], axis=1))  # unfixed | fixed
                    if pos in drive.columns:
                        fixed_thumbs[frame] = thumbnail(fixed, self.thumbnail_width)
                progress.advance(task)
        has_video, fixing = drive.backend is not None, drive.fixer is not None
        return {
            "offset_m": offset,
            "folder": name,
            "video": f"{name}.mp4" if has_video else None,
            "fixed_folder": fixed_name if fixing else None,
            "fixed_video": f"{fixed_name}.mp4" if fixing and has_video else None,
            "camera_to_worlds": poses.tolist(),
        }



@contextlib.contextmanager
def _atomic_mp4(path: Path, fps: float, backend: Optional[str]) -> Iterator[Optional[Mp4Writer]]:
    """An mp4 writer whose file appears at ``path`` only once complete; None (and no file) without an encoder."""
    with atomic.atomic_path(path) as tmp:
        if backend is None:
            tmp.unlink()  # nothing to publish; atomic_path then moves nothing
            yield None
            return
        writer = Mp4Writer(tmp, fps)
        try:
            yield writer
        finally:
            writer.close()


def _save_sheet(path: Path, rows: Sequence[LabelledRow], frames: Sequence[int]) -> None:
    with atomic.atomic_path(path) as tmp:
        make_row_sheet(rows, frames).save(tmp, format="PNG")


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    # Inside a temporary folder already, so a plain write is atomic from the outside.
    Image.fromarray(image).save(path, format="PNG")


@dataclass
class RenderRecordedCommand(RenderShiftedCommand):
    """Render the recorded drive (no shift) with the exact training intrinsics, optionally fixed.

    Writes to --output-dir: offset_+0m/frame_<NNNNN>.png, offset_+0m.mp4, contact_sheet.png (sampled
    frames) and manifest.json (the poses used, in scene units, and the scale). With --fix, every frame
    also goes through the Difix fixer (the Difix3D+ "+" step), given the recorded photo of the same
    camera and frame as its reference view (unless --no-fixer-reference): offset_+0m_fixed/frame_<NNNNN>.png,
    offset_+0m_fixed.mp4 (unfixed left, fixed right, side by side) and contact_sheet_fixed.png
    (unfixed and fixed rows); the manifest records the fixer.
    """


    # Shifting options that mean nothing for the recorded path are hidden (and stay at their defaults).
    offsets: tyro.conf.Suppress[Tuple[float, ...]] = field(default=(), kw_only=True)
    yaw_toward_road: tyro.conf.Suppress[bool] = False
    look_ahead_m: tyro.conf.Suppress[float] = DEFAULT_LOOK_AHEAD_M
    window_m: tyro.conf.Suppress[float] = DEFAULT_WINDOW_M

    def trajectory_offsets(self) -> List[float]:
        """Only the recorded path."""
        if self.offsets or self.yaw_toward_road:
            raise InputError("render-recorded renders the recorded path only; use render-shifted for offsets")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise InputError(f"--fps must be positive, got {self.fps}")
        return [0.0]

    def shifted_poses(self, recorded: RecordedImages, selection: np.ndarray, offset_m: float) -> np.ndarray:
        """The recorded poses ``[M, 3, 4]`` themselves (no direction of travel needed, so a parked car works too)."""
        if offset_m != 0:
            raise ValueError(f"render-recorded has no offset {offset_m}")
        return np.array(recorded.camera_to_worlds[selection], dtype=np.float64)
