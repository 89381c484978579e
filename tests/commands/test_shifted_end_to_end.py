"""End to end on CPU: train a tiny difix-refiner model, then render-shifted and shift-path + ns-render.

Slow-ish (about 1.5 minutes on 2 CPU cores): a 3-iteration training run on the bundled PandaSet
excerpt at quarter resolution with few LiDAR seeds, then a handful of renders.
"""

import json
import sys
from pathlib import Path

import numpy as np
import tyro
from PIL import Image

from difix_refiner.commands.render import RenderShiftedCommand
from difix_refiner.commands.shift_path import ShiftPathCommand

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pandaset_002"
BIN = Path(sys.executable).parent
WORLD_Z = np.array([0.0, 0.0, 1.0])



def world_front_poses():
    """Recorded front-camera centres, metres, world frame: ``[80, 3]``."""
    entries = json.loads((EXAMPLE / "camera/front_camera/poses.json").read_text())
    return np.array([[e["position"][k] for k in "xyz"] for e in entries])


def test_render_shifted_on_trained_model(tiny_run, tmp_path):
    out = tmp_path / "renders"
    tyro.cli(
        RenderShiftedCommand,
        args=["--load-config", str(tiny_run), "--offsets", "-1.5", "1.5", "--output-dir", str(out),
              "--frame-stride", "25", "--contact-sheet-frames", "3"],
    ).main()  # fmt: skip

    manifest = json.loads((out / "manifest.json").read_text())
    frames = manifest["frame_indices"]
    assert len(frames) >= 3
    assert (out / "contact_sheet.png").is_file()
    images = {}
    for entry in manifest["offsets"]:
        folder = out / entry["folder"]
        pngs = sorted(folder.glob("frame_*.png"))
        assert len(pngs) == len(frames)
        assert (out / entry["video"]).stat().st_size > 0
        images[entry["offset_m"]] = np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in pngs])
    for offset in (-1.5, 1.5):
        assert np.abs(images[offset] - images[0.0]).mean() > 1.0  # shifted renders differ

    # Shifted camera centres, mapped back to the world, lie at the offsets in metres (+ = left).
    transform = np.asarray(manifest["dataparser_transform"])  # [3, 4]
    scale = manifest["dataparser_scale"]
    recorded = world_front_poses()[frames]  # [M, 3]
    travel = recorded[-1] - recorded[0]
    world_left = np.cross(WORLD_Z, travel / np.linalg.norm(travel))
    for entry in manifest["offsets"]:
        scene = np.asarray(entry["camera_to_worlds"])[:, :, 3]
        world = (scene / scale - transform[:, 3]) @ transform[:, :3]  # inverse of a rigid transform
        delta = world - recorded
        np.testing.assert_allclose(np.linalg.norm(delta, axis=1), abs(entry["offset_m"]), atol=1e-3)
        if entry["offset_m"]:
            assert (delta @ world_left * np.sign(entry["offset_m"]) > 0.98 * abs(entry["offset_m"])).all()


def test_shift_path_renders_with_ns_render(tiny_run, tmp_path):
    """The written camera path goes through ``ns-render camera-path`` (nerfstudio's own code) as it is."""
    from nerfstudio.scripts import render as ns_render

    tyro.cli(
        ShiftPathCommand, args=["--load-config", str(tiny_run), "--offsets", "2", "--output-dir", str(tmp_path)]
    ).main()
    path = json.loads((tmp_path / "offset_+2m.json").read_text())
    # Render only two poses of the path to keep the test short.
    path["camera_path"] = path["camera_path"][:2]
    path["seconds"] = 0.2
    short = tmp_path / "short.json"
    short.write_text(json.dumps(path))
    ns_render.RenderCameraPath(
        load_config=tiny_run,
        camera_path_filename=short,
        output_path=tmp_path / "ns_render",
        output_format="images",
        image_format="png",
    ).main()
    rendered = sorted((tmp_path / "ns_render").glob("*.png"))
    assert len(rendered) == 2
    assert Image.open(rendered[0]).size == (path["render_width"], path["render_height"])
