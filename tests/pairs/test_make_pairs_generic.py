"""make-pairs with another dataparser (nerfstudio-data): underfit and sparse through its own split.

About a minute on 2 CPU cores: a nerfstudio-data folder of 10 quarter-size front-camera frames of
the bundled scene, one 4-iteration run with a small random initialisation, about 20 renders.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from difix_refiner.commands.make_pairs import MakePairsCommand
from difix_refiner.data.pandaset import load_camera
from difix_refiner.pairs.format import validate_pairs

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pandaset_002"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(not (BIN / "ns-train").exists(), reason="needs nerfstudio's ns-train next to this Python")


def nerfstudio_folder(out: Path) -> Path:
    """Front-camera frames 40-49 as a nerfstudio-data folder (world poses, OpenGL axes, quarter size)."""
    (out / "images").mkdir(parents=True)
    cam = load_camera(EXAMPLE, "front_camera", range(40, 50))
    frames = []
    for i, (path, c2w) in enumerate(zip(cam.image_paths, cam.c2w_opengl)):
        with Image.open(path) as im:
            im.convert("RGB").resize((cam.width // 4, cam.height // 4), Image.BOX).save(out / "images" / f"frame_{i:05d}.png")
        frames.append({"file_path": f"images/frame_{i:05d}.png", "transform_matrix": c2w.tolist()})
    meta = {"fl_x": cam.fx / 4, "fl_y": cam.fy / 4, "cx": cam.cx / 4, "cy": cam.cy / 4, "w": cam.width // 4,
            "h": cam.height // 4, "camera_model": "OPENCV", "frames": frames}  # fmt: skip
    (out / "transforms.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("generic")
    data = nerfstudio_folder(root / "scene")
    out = root / "out"
    MakePairsCommand(
        data=data, output_dir=out, dataparser="nerfstudio-data", strategy=("underfit", "sparse"),
        # Every 3rd image is held out (nerfstudio's interval split): sparse renders those.
        dataparser_args="--eval-mode interval --eval-interval 3", train_args="--pipeline.model.num-random 2000",
        test_frames=(7, 10), iterations=4, device="cpu", downscale_factor=1, seed=0,
    ).main()  # fmt: skip
    return out, json.loads((out / "manifest.json").read_text())


def test_generic_dataparser_pairs(made):
    out, manifest = made
    counts = validate_pairs(out / "pairs.json")
    assert counts["train"] > 0 and counts["test"] > 0
    pairs = manifest["pairs"]
    held_out = {0, 3, 6, 9}  # nerfstudio-data's interval split: i % 3 == 0
    assert {r["label"] for r in pairs.values()} == {"underfit-25", "underfit-50", "sparse"}
    for pid, rec in pairs.items():
        assert rec["split"] == ("test" if rec["frame"] >= 7 else "train"), pid
        if rec["strategy"] == "sparse":
            assert rec["frame"] in held_out, pid
        else:
            assert rec["frame"] not in held_out, pid
        # References: photos the run trained on, same split, never the target.
        assert rec["ref_frame"] is not None, pid
        assert rec["ref_frame"] not in held_out and rec["ref_frame"] != rec["frame"], pid
        assert (rec["ref_frame"] >= 7) == (rec["frame"] >= 7), pid
        assert rec["ref_metres_per_scene_unit"] is None  # no metric scale: scene units
        np.testing.assert_allclose(rec["render_camera"]["camera_to_world"], rec["target_camera"]["camera_to_world"])
        with Image.open(out / rec["image"]) as im, Image.open(out / rec["target_image"]) as photo:
            assert im.size == photo.size == (rec["target_camera"]["width"], rec["target_camera"]["height"])
