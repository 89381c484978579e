"""``difix-refiner shift-path``: write nerfstudio camera paths of laterally shifted drives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np

from difix_refiner.cameras.camera_path import camera_path_dict, write_camera_path
from difix_refiner.core.errors import InputError
from difix_refiner.scene.run_scale import run_metres_per_scene_unit
from difix_refiner.scene.shift_options import ShiftOptions
from difix_refiner.scene.trained_run import (
    check_outputs_free,
    load_run_config,
    offset_name,
    recorded_images,
    train_outputs_without_model,
    warn_if_transform_differs,
)


@dataclass
class ShiftPathCommand(ShiftOptions):
    """Write one nerfstudio camera-path JSON per lateral offset (offset_<+x>m.json in --output-dir).

    Render one with: ns-render camera-path --load-config CONFIG --camera-path-filename FILE.
    Positive offsets move to the vehicle's left. The recorded training poses of one camera are
    shifted sideways in metres; the model is not loaded. Caveat: nerfstudio's camera-path format
    keeps a single vertical field of view (fx = fy) and forces the principal point to the image
    centre, so these renders approximate the training intrinsics; use render-shifted for the exact
    ones.
    """

    def main(self) -> None:
        """Write the camera paths (bad input raises ``InputError``; the console script prints it as one line)."""
        self.run()

    def run(self) -> List[Path]:
        """Write the camera paths and return their paths (raises ``InputError`` on bad input)."""
        offsets = self.checked_offsets()
        targets = [Path(self.output_dir) / f"{offset_name(o)}.json" for o in offsets]
        check_outputs_free(targets, self.overwrite)

        config = load_run_config(self.load_config)
        outputs, cameras = train_outputs_without_model(config)
        warn_if_transform_differs(Path(self.load_config).parent, outputs)
        recorded = recorded_images(outputs, cameras, run_metres_per_scene_unit(config, self.metres_per_scene_unit))
        camera = recorded.resolve_camera(self.camera)
        selection = recorded.select(camera)

        import torch
        from nerfstudio.cameras.cameras import CameraType

        cams = recorded.cameras[torch.from_numpy(selection)]
        types = set(cams.camera_type.reshape(-1).tolist())
        if types != {CameraType.PERSPECTIVE.value}:
            raise InputError("camera paths can only be written for perspective cameras")
        widths = set(cams.width.reshape(-1).tolist())
        heights = set(cams.height.reshape(-1).tolist())
        if len(widths) != 1 or len(heights) != 1:
            raise InputError(
                f"camera {camera!r} has images of several sizes; a camera path has one render size (pick one --camera)"
            )
        width, height = widths.pop(), heights.pop()
        fx = cams.fx.reshape(-1).double().numpy()  # [M]
        fy = cams.fy.reshape(-1).double().numpy()  # [M]
        cx = cams.cx.reshape(-1).double().numpy()  # [M]
        cy = cams.cy.reshape(-1).double().numpy()  # [M]
        approximation = {
            "max_fx_minus_fy_px": float(np.abs(fx - fy).max()),
            "max_principal_point_off_centre_px": float(
                np.hypot(cx - width / 2.0, cy - height / 2.0).max()
            ),
        }
        frames = recorded.frame_indices[selection]
        for offset, target in zip(offsets, targets):
            poses = self.shifted_poses(recorded, selection, offset)  # [M, 3, 4]
            path = camera_path_dict(
                poses,
                width=width,
                height=height,
                fy=fy,
                fps=self.fps,
                metadata={
                    "offset_m": offset,
                    "positive_offset_means": "vehicle's left",
                    "camera": camera,
                    "frame_indices": frames.tolist(),
                    "metres_per_scene_unit": recorded.metres_per_scene_unit,
                    "yaw_toward_road": self.yaw_toward_road,
                    "look_ahead_m": self.look_ahead_m if self.yaw_toward_road else None,
                    "load_config": str(self.load_config),
                    "intrinsics_approximation": approximation,
                },
            )
            write_camera_path(target, path)

        print(f"Wrote {len(targets)} camera path(s) for camera {camera or '(all images)'} to {self.output_dir}")
        if approximation["max_fx_minus_fy_px"] > 0.5 or approximation["max_principal_point_off_centre_px"] > 0.5:
            print(
                "Note: the camera-path format uses fx = fy and a centred principal point; the training camera "
                f"differs by up to {approximation['max_fx_minus_fy_px']:.1f} px (fx - fy) and "
                f"{approximation['max_principal_point_off_centre_px']:.1f} px (principal point). "
                "render-shifted uses the exact intrinsics."
            )
        print(f"Render with: ns-render camera-path --load-config {self.load_config} --camera-path-filename {targets[0]}")
        return targets
