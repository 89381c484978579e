"""Damaged or foreign inputs to ``pandaset-data`` end in one sentence that names the file (and the frame,
entry or field): truncated JPEGs and PNGs (found by decoding, with --verify-images on or off), missing
frames, bad pose entries, a nerfstudio folder given as a PandaSet folder, too few frames for the split.

Each test works on a 10-frame copy of the bundled scene's front camera (and its LiDAR).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from difix_refiner.core.errors import InputError
from difix_refiner.data.pandaset import PandasetFormatError, check_image
from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig

SCENE = Path(__file__).resolve().parents[2] / "examples" / "pandaset_002"
FRAMES = 10


def copy_scene(dst: Path, frames: int = FRAMES) -> Path:
    """The first ``frames`` frames of the front camera and the LiDAR of ``examples/pandaset_002``."""
    src = SCENE / "camera" / "front_camera"
    cam = dst / "camera" / "front_camera"
    cam.mkdir(parents=True)
    for i in range(frames):
        shutil.copy(src / f"{i:02d}.jpg", cam / f"{i:02d}.jpg")
    for name in ("poses.json", "timestamps.json"):
        (cam / name).write_text(json.dumps(json.loads((src / name).read_text())[:frames]))
    shutil.copy(src / "intrinsics.json", cam / "intrinsics.json")
    (dst / "lidar").mkdir()
    for i in range(frames):
        shutil.copy(SCENE / "lidar" / f"{i:02d}.npz", dst / "lidar" / f"{i:02d}.npz")
    poses = json.loads((SCENE / "lidar" / "poses.json").read_text())[:frames]
    (dst / "lidar" / "poses.json").write_text(json.dumps(poses))
    return dst


@pytest.fixture()
def scene(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # downscaled copies go here, not ~/.cache
    return copy_scene(tmp_path / "scene")


def parse(data: Path, split: str = "train", **kwargs):
    return PandasetDataParserConfig(data=data, **kwargs).setup().get_dataparser_outputs(split)


def truncate(path: Path) -> None:
    """Cut a file in the middle of its image data (headers intact)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def load_training_images(data: Path, **dataparser):
    """What ``ns-train`` does with the images: the datamanager caches them (nerfstudio's image reader)."""
    from difix_refiner.distillation.datamanager import DifixRefinerDatamanagerConfig

    config = DifixRefinerDatamanagerConfig(
        dataparser=PandasetDataParserConfig(data=data, load_lidar=False, **dataparser), cache_images_type="uint8"
    )
    return config.setup(device="cpu").cached_train


def test_truncated_jpeg_is_found_by_decoding_and_named(scene):
    bad = scene / "camera" / "front_camera" / "05.jpg"
    truncate(bad)
    with Image.open(bad) as img:
        img.verify()  # the header check (the old --verify-images) passes: only decoding finds it
    with pytest.raises(PandasetFormatError, match=rf"^cannot read image {bad}: image file is truncated"):
        parse(scene, load_lidar=False)


def test_truncated_jpeg_is_named_with_verify_images_off(scene):
    bad = scene / "camera" / "front_camera" / "05.jpg"
    truncate(bad)
    parse(scene, verify_images=False, load_lidar=False)  # the dataparser no longer decodes every image...
    with pytest.raises(InputError, match=rf"^cannot read image {bad}: "):
        load_training_images(scene, verify_images=False)  # ...so the read in training names it
    with pytest.raises(PandasetFormatError, match=rf"^cannot read image {bad}: "):
        parse(scene, verify_images=False)  # colouring the LiDAR seeds reads it too
    with pytest.raises(PandasetFormatError, match=rf"^cannot read image {bad}: "):
        parse(scene, verify_images=False, load_lidar=False, downscale_factor=2)  # as does downscaling


def test_truncated_png_is_named(scene):
    # Downscaled copies are PNGs in the cache; a damaged one fails in training, by name.
    outputs = parse(scene, load_lidar=False, downscale_factor=2)
    bad = Path(outputs.image_filenames[3])
    assert bad.suffix == ".png"
    truncate(bad)
    assert check_image(bad, decode=False) == (240, 135)  # its header is intact
    with pytest.raises(PandasetFormatError, match=rf"^cannot read image {bad}: "):
        check_image(bad)
    with pytest.raises(InputError, match=rf"^cannot read image {bad}: "):
        load_training_images(scene, downscale_factor=2)


def test_missing_frame_is_named(scene):
    (scene / "camera" / "front_camera" / "07.jpg").unlink()
    gone = scene / "camera" / "front_camera" / "07.jpg"
    message = rf"^frame 7 of front_camera has no image: {gone} \(poses.json lists 10 poses"
    with pytest.raises(PandasetFormatError, match=message):
        parse(scene, load_lidar=False)


def test_image_without_pose_is_named(scene):
    shutil.copy(SCENE / "camera" / "front_camera" / "10.jpg", scene / "camera" / "front_camera" / "10.jpg")
    with pytest.raises(PandasetFormatError, match=r"10.jpg has no pose: .*poses.json lists 10 poses"):
        parse(scene, load_lidar=False)


@pytest.mark.parametrize(
    "where, field, value, message",
    [
        ("camera/front_camera", ("heading", "x"), float("nan"), r"entry 3 \(frame 03\) has heading.x = nan"),
        ("camera/front_camera", ("position", "y"), float("inf"), r"entry 3 \(frame 03\) has position.y = inf"),
        ("camera/front_camera", ("position", "z"), "1.5", r'entry 3 \(frame 03\) has position.z = "1.5", not a number'),
        ("lidar", ("position", "x"), float("nan"), r"entry 3 \(frame 03\) has position.x = nan"),
    ],
)
def test_bad_pose_entry_is_named(scene, where, field, value, message):
    path = scene / where / "poses.json"
    poses = json.loads(path.read_text())
    poses[3][field[0]][field[1]] = value
    path.write_text(json.dumps(poses))  # NaN and Infinity as JSON allows them (Python's json writes them)
    with pytest.raises(PandasetFormatError, match=rf"^{path}: {message}"):
        parse(scene)


def test_missing_pose_field_is_named(scene):
    path = scene / "camera" / "front_camera" / "poses.json"
    poses = json.loads(path.read_text())
    del poses[6]["heading"]["w"]
    path.write_text(json.dumps(poses))
    with pytest.raises(PandasetFormatError, match=rf"^{path}: entry 6 \(frame 06\) needs heading \{{w, x, y, z\}}"):
        parse(scene, load_lidar=False)


def test_a_nerfstudio_folder_is_not_a_pandaset_folder(tmp_path):
    folder = tmp_path / "nerfstudio_scene"
    (folder / "images").mkdir(parents=True)
    (folder / "transforms.json").write_text(json.dumps({"camera_model": "OPENCV", "frames": []}))
    with pytest.raises(PandasetFormatError) as err:
        parse(folder)
    message = str(err.value)
    assert message.startswith(f"{folder} is not a PandaSet folder: it has no camera/ subfolder")
    assert "camera/<name>/NN.jpg" in message and "nerfstudio-data" in message
    assert "unknown camera" not in message and "front_camera" not in message


def test_unknown_camera_lists_what_the_folder_has(scene):
    message = r"^no camera 'front_left_camera' in .*camera \(it has: front_camera;"
    with pytest.raises(PandasetFormatError, match=message):
        parse(scene, cameras=("front_left_camera",), load_lidar=False)


def test_one_frame_scene_says_it_was_held_out(scene):
    with pytest.raises(PandasetFormatError) as err:
        parse(scene, frame_start=4, frame_end=5, load_lidar=False)
    assert str(err.value).startswith(
        f"the training split is empty: the frame range [4, 5) of {scene} has 1 frame(s), 1 held out for evaluation"
    )
    assert "0 left for training" in str(err.value)


def test_two_frame_scene_says_how_many_frames_are_left_for_the_refine_loop(tmp_path):
    from tiny_refine_run import seeded_trainer, tiny_refine_config

    cfg = tiny_refine_config(tmp_path, "two_frames", steps=1)
    cfg.pipeline.datamanager.dataparser.frame_start, cfg.pipeline.datamanager.dataparser.frame_end = 40, 42
    with pytest.raises(InputError) as err:
        seeded_trainer(cfg)
    assert str(err.value) == (
        "difix-refiner refine loop: front_camera has 1 training image(s) after 1 image(s) were held out for "
        "evaluation, and the novel cameras need at least 2 per camera (for the direction of travel): use more "
        "frames, hold out fewer (pandaset-data --eval-interval / --eval-mode), or train without the loop "
        "(--pipeline.refine.enabled False)"
    )
