"""``difix-refiner render-shifted``: render laterally shifted drives with the training intrinsics."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from difix_refiner.cameras import atomic
from difix_refiner.cameras.contact_sheet import make_contact_sheet, sample_positions, thumbnail
from difix_refiner.cameras.options import ShiftOptions
from difix_refiner.cameras.run_data import (
    InputError,
    RecordedImages,
    check_outputs_free,
    load_run_config,
    offset_name,
    recorded_images,
)
from difix_refiner.cameras.video import Mp4Writer, video_backend

CONTACT_SHEET = "contact_sheet.png"
MANIFEST = "manifest.json"


@dataclass
class RenderShiftedCommand(ShiftOptions):
    """Render the recorded drive shifted sideways by each offset, with the exact training intrinsics.

    For every offset, and for the recorded path (offset 0) as reference, writes to --output-dir:
    offset_<+x>m/frame_<NNNNN>.png, offset_<+x>m.mp4, plus contact_sheet.png (rows: offsets, most
    left on top, the recorded path in red; columns: sampled frames) and manifest.json (the poses
    used, in scene units, and the scale). Positive offsets move to the vehicle's left.
    """

    frame_stride: int = 1
    """Render every n-th frame of the camera (the video keeps real-time playback: fps / n)."""
    resolution_scale: float = 1.0
    """Scale the training resolution and intrinsics for quicker previews (1 = exact training cameras)."""
    contact_sheet_frames: int = 6
    """Number of frames (columns) sampled evenly for the contact sheet."""
    thumbnail_width: int = 320
    """Width in pixels of each contact-sheet cell."""

    def main(self) -> None:
        """Run the command; bad input exits with a one-line message."""
        try:
            self.run()
        except InputError as exc:
            raise SystemExit(f"render-shifted: error: {exc}") from None

    # ----------------------------------------------------------------------------------------
    # Steps that tests (and the later --fix) can replace.

    def _load_pipeline(self) -> Any:
        """Load the trained pipeline with nerfstudio's ``eval_setup`` (checkpoint included)."""
        from nerfstudio.utils.eval_utils import eval_setup

        import difix_refiner.nerfstudio  # noqa: F401  (lets torch load nerfstudio checkpoints)

        # "test" keeps the dataparser's downscale factor, so cameras match training exactly.
        _, pipeline, _, _ = eval_setup(Path(self.load_config), test_mode="test")
        return pipeline

    def _postprocess_frame(self, image: np.ndarray, offset_m: float, frame_index: int) -> np.ndarray:
        """Hook applied to every rendered ``uint8 [H, W, 3]`` frame before it is written.

        Identity for now; the later ``--fix`` option plugs the Difix fixer in here.
        """
        return image

    # ----------------------------------------------------------------------------------------

    def _output_paths(self, all_offsets: List[float]) -> List[Path]:
        out = Path(self.output_dir)
        paths = [out / CONTACT_SHEET, out / MANIFEST]
        for offset in all_offsets:
            paths += [out / offset_name(offset), out / f"{offset_name(offset)}.mp4"]
        return paths

    @staticmethod
    def _training_cameras(pipeline: Any) -> Any:
        """The training cameras exactly as the model was trained on them."""
        datamanager = pipeline.datamanager
        cameras = datamanager.train_dataset.cameras
        dist = cameras.distortion_params
        if dist is not None and bool((dist != 0).any()) and hasattr(datamanager, "cached_train"):
            # The full-image datamanager undistorts images on first access and rewrites the
            # intrinsics in place; the model was trained on those, so trigger it.
            _ = datamanager.cached_train
        return cameras

    def _shifted_cameras(self, recorded: RecordedImages, selection: np.ndarray, offset_m: float) -> Tuple[Any, np.ndarray]:
        """Cameras for the selected images shifted by ``offset_m``, and their poses ``[M, 3, 4]``."""
        import torch
        from nerfstudio.cameras.cameras import Cameras

        poses = self.shifted_poses(recorded, selection, offset_m)  # [M, 3, 4] float64
        train = recorded.cameras[torch.from_numpy(selection)]
        cameras = Cameras(
            camera_to_worlds=torch.from_numpy(poses).float(),
            fx=train.fx.clone(),
            fy=train.fy.clone(),
            cx=train.cx.clone(),
            cy=train.cy.clone(),
            width=train.width.clone(),
            height=train.height.clone(),
            distortion_params=None if train.distortion_params is None else train.distortion_params.clone(),
            camera_type=train.camera_type.clone(),
            times=None if train.times is None else train.times.clone(),
        )
        if self.resolution_scale != 1.0:
            cameras.rescale_output_resolution(self.resolution_scale)
        return cameras, poses

    def run(self) -> Dict[str, Any]:
        """Render everything; returns the manifest (raises ``InputError`` on bad input)."""
        offsets = self.checked_offsets()
        if self.frame_stride < 1:
            raise InputError(f"--frame-stride must be at least 1, got {self.frame_stride}")
        if not (np.isfinite(self.resolution_scale) and self.resolution_scale > 0):
            raise InputError(f"--resolution-scale must be positive, got {self.resolution_scale}")
        if self.contact_sheet_frames < 1 or self.thumbnail_width < 8:
            raise InputError("--contact-sheet-frames must be >= 1 and --thumbnail-width >= 8")
        # Rows from most left to most right; the recorded path (0) is always rendered as reference.
        all_offsets = sorted(offsets + [0.0], reverse=True)
        out = Path(self.output_dir)
        check_outputs_free(self._output_paths(all_offsets), self.overwrite)
        config = load_run_config(self.load_config)  # method check before the (slow) model load

        pipeline = self._load_pipeline()
        recorded = recorded_images(
            pipeline.datamanager.train_dataparser_outputs, self._training_cameras(pipeline), self.metres_per_scene_unit
        )
        camera = recorded.resolve_camera(self.camera)
        selection = recorded.select(camera)[:: self.frame_stride]
        if selection.size < 1:
            raise InputError("no frames left to render")
        frames = recorded.frame_indices[selection]  # [M]
        columns = sample_positions(selection.size, self.contact_sheet_frames)
        fps = self.fps / self.frame_stride
        backend = video_backend()
        if backend is None:
            warnings.warn("no mp4 encoder available (PyAV or ffmpeg); writing PNG frames only", stacklevel=2)

        manifest: Dict[str, Any] = {
            "load_config": str(self.load_config),
            "method": config.method_name,
            "camera": camera,
            "positive_offset_means": "vehicle's left",
            "metres_per_scene_unit": recorded.metres_per_scene_unit,
            "dataparser_transform": recorded.dataparser_transform.tolist(),
            "dataparser_scale": recorded.dataparser_scale,
            "frame_indices": frames.tolist(),
            "yaw_toward_road": self.yaw_toward_road,
            "look_ahead_m": self.look_ahead_m if self.yaw_toward_road else None,
            "resolution_scale": self.resolution_scale,
            "fps": fps,
            "contact_sheet": CONTACT_SHEET,
            "offsets": [],
        }
        thumbs: Dict[float, Dict[int, np.ndarray]] = {}
        progress = _progress()
        with progress:
            for offset in all_offsets:
                cameras, poses = self._shifted_cameras(recorded, selection, offset)
                name = offset_name(offset)
                task = progress.add_task(f"{offset:+g} m", total=selection.size)
                thumbs[offset] = {}
                video_path = out / f"{name}.mp4"
                with atomic.atomic_dir(out / name, overwrite=self.overwrite) as folder, atomic.atomic_path(
                    video_path
                ) as tmp_video:
                    writer = Mp4Writer(tmp_video, fps) if backend else None
                    try:
                        for pos, frame in enumerate(frames.tolist()):
                            image = self._render(pipeline, cameras[pos : pos + 1])
                            image = self._postprocess_frame(image, offset, frame)
                            _save_png(folder / f"frame_{frame:05d}.png", image)
                            if writer is not None:
                                writer.write(image)
                            if pos in columns:
                                thumbs[offset][frame] = thumbnail(image, self.thumbnail_width)
                            progress.advance(task)
                    finally:
                        if writer is not None:
                            writer.close()
                    if writer is None:
                        tmp_video.unlink()  # nothing to publish; atomic_path then moves nothing
                manifest["offsets"].append(
                    {
                        "offset_m": offset,
                        "folder": name,
                        "video": f"{name}.mp4" if backend else None,
                        "camera_to_worlds": poses.tolist(),
                    }
                )

        sheet = make_contact_sheet(thumbs, [int(frames[p]) for p in columns])
        with atomic.atomic_path(out / CONTACT_SHEET) as tmp:
            sheet.save(tmp, format="PNG")
        atomic.write_json(out / MANIFEST, manifest)
        print(f"Rendered {len(all_offsets)} trajectories x {selection.size} frames of {camera or 'the camera'} to {out}")
        return manifest

    @staticmethod
    def _render(pipeline: Any, camera: Any) -> np.ndarray:
        """Render one camera ``[1]`` with the model's generic camera API; returns ``uint8 [H, W, 3]``."""
        import torch

        with torch.no_grad():
            outputs = pipeline.model.get_outputs_for_camera(camera.to(pipeline.device))
        rgb = outputs["rgb"]
        while rgb.dim() > 3:  # some models keep a batch dimension of 1
            rgb = rgb[0]
        rgb = rgb[..., :3].clamp(0.0, 1.0)  # [H, W, 3]
        return (rgb * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    # Inside a temporary folder already, so a plain write is atomic from the outside.
    Image.fromarray(image).save(path, format="PNG")


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("Rendering offset {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
