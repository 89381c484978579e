"""Plain nerfstudio / instant-ngp scenes (transforms.json + images): pre-flight checks, training, the run's scale."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.data.dataparsers.instant_ngp_dataparser import (
    InstantNGPDataParserConfig,
)
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from synthetic_scene import write_orbit_scene

from difix_refiner.core.errors import InputError
from difix_refiner.distillation.datamanager import DifixRefinerDatamanagerConfig


@pytest.fixture(scope="module")
def orbit(tmp_path_factory) -> Path:
    """10 renders of a Gaussian blob from an orbit, 64x48, in nerfstudio's format."""
    return write_orbit_scene(tmp_path_factory.mktemp("orbit") / "scene")


def _copy(scene: Path, dest: Path) -> Path:
    import shutil

    return Path(shutil.copytree(scene, dest))


def _datamanager(dataparser):
    return DifixRefinerDatamanagerConfig(dataparser=dataparser).setup(device="cpu", test_mode="val")


def test_missing_downscaled_folder_is_one_sentence_before_loading(orbit):
    with pytest.raises(InputError) as err:
        _datamanager(NerfstudioDataParserConfig(data=orbit, downscale_factor=8))
    message = str(err.value)
    assert "\n" not in message and message.count(". ") == 0
    assert f"{orbit / 'images_8'} does not exist" in message
    assert "--pipeline.datamanager.camera-res-scale-factor 0.125" in message and "ns-process-data" in message


def test_partly_missing_downscaled_images_are_counted(orbit, tmp_path):
    scene = _copy(orbit, tmp_path / "scene")
    (scene / "images_2").mkdir()
    for image in sorted((scene / "images").glob("*.png"))[:7]:
        (scene / "images_2" / image.name).write_bytes(image.read_bytes())
    with pytest.raises(InputError, match=r"3 of the 10 images in .*images_2 do not exist \(first: .*frame_00008.png\)"):
        _datamanager(NerfstudioDataParserConfig(data=scene, downscale_factor=2))


def test_frames_without_images(orbit, tmp_path):
    scene = _copy(orbit, tmp_path / "scene")
    (scene / "images" / "frame_00004.png").unlink()
    with pytest.raises(InputError) as err:
        _datamanager(NerfstudioDataParserConfig(data=scene))
    message = str(err.value)
    assert "1 of the 10 images listed in transforms.json do not exist (first: images/frame_00004.png)" in message
    assert "train with instant-ngp-data, which skips them" in message and "\n" not in message

    # instant-ngp-data skips them: a warning with the count, then 9 images.
    with pytest.warns(UserWarning, match=r"instant-ngp-data skips the 1 of 10 frames"):
        dm = _datamanager(InstantNGPDataParserConfig(data=scene, eval_mode="all"))
    assert len(dm.train_dataset) == 9

    (scene / "transforms.json").unlink()
    with pytest.raises(InputError, match=r"transforms.json does not exist; pass --data the folder"):
        _datamanager(NerfstudioDataParserConfig(data=scene))


def _orbit_config(out: Path, name: str, dataparser, steps: int):
    """The CPU preset on the orbit scene: held-out targets (the eval split's poses), 1 m = 1 scene unit."""
    from difix_refiner.method_configs import difix_refiner_cpu_trainer_config

    cfg = difix_refiner_cpu_trainer_config()
    cfg.machine.seed = 0
    cfg.output_dir, cfg.experiment_name, cfg.timestamp = out, name, "run"
    cfg.max_num_iterations, cfg.steps_per_save = steps, steps
    cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 10**6
    cfg.steps_per_eval_batch = 0
    cfg.logging.local_writer.enable = False
    cfg.pipeline.datamanager.dataparser = dataparser
    model = cfg.pipeline.model
    model.num_random, model.random_scale, model.num_downscales = 500, 1.5, 0
    refine = cfg.pipeline.refine
    refine.targets, refine.metres_per_scene_unit, refine.frame_stride = "held-out", 1.0, 1
    refine.first_fix_step, refine.steps_per_fix, refine.fixer_base = 15, 15, "tiny"
    refine.unfit_fixer = "keep"  # the random fixer does not fit the scene; keep its views to test the targets
    return cfg


def _psnr(pipeline, index: int) -> float:
    dm = pipeline.datamanager
    camera = dm.train_dataset.cameras[index : index + 1]
    image = dm.cached_train[index]["image"].float() / 255.0  # [H, W, 3]
    pipeline.model.eval()  # a training-mode forward would feed the densification statistics
    with torch.no_grad():
        rgb = pipeline.model.get_outputs_for_camera(camera)["rgb"]  # [H, W, 3]
    pipeline.model.train()
    return float(-10.0 * torch.log10(((rgb - image) ** 2).mean()))


@pytest.mark.parametrize(
    "dataparser",
    [
        lambda data: NerfstudioDataParserConfig(data=data, eval_mode="interval", eval_interval=4),
        lambda data: InstantNGPDataParserConfig(data=data, eval_mode="interval", eval_interval=4),
    ],
    ids=["nerfstudio-data", "instant-ngp-data"],
)
def test_training_on_an_orbit_capture_with_held_out_targets(orbit, tmp_path, dataparser):
    """30 steps with a refine round at step 15 that moves 3 novel cameras toward the held-out poses."""
    from tiny_refine_run import seeded_trainer

    cfg = _orbit_config(tmp_path, "orbit", dataparser(orbit), steps=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = seeded_trainer(cfg)
    pipeline = trainer.pipeline
    assert len(pipeline.datamanager.train_dataset) == 7  # every 4th of 10 frames is held out
    before = _psnr(pipeline, 0)
    trainer.train()
    after = _psnr(pipeline, 0)
    assert after > before + 1.5, (before, after)  # about +2.5 dB in 30-40 steps
    # One round moved 3 novel cameras from their nearest training poses 0.5 m (= 0.5 scene units at
    # --pipeline.refine.metres-per-scene-unit 1) toward the 3 held-out poses, and they were trained on.
    tracks = pipeline.novel_cameras
    assert len(tracks) == 3 and len(pipeline.datamanager.pseudo_views) == 3
    for track in tracks:
        assert track.travelled_m(1.0) == pytest.approx(0.5, abs=1e-6) or track.remaining_m(1.0) < 1e-9


def test_shift_path_uses_the_scale_the_run_trained_with(orbit, tmp_path):
    """No --metres-per-scene-unit: shift-path reads --pipeline.refine.metres-per-scene-unit from config.yml."""
    from difix_refiner.commands.shift_path import ShiftPathCommand

    cfg = _orbit_config(tmp_path, "orbit", NerfstudioDataParserConfig(data=orbit, eval_mode="interval", eval_interval=4), 1)
    cfg.pipeline.refine.metres_per_scene_unit = 0.5
    cfg.set_timestamp()
    cfg.save_config()
    config_path = cfg.get_base_dir() / "config.yml"

    out = tmp_path / "paths"
    ShiftPathCommand(load_config=config_path, offsets=(1.0,), output_dir=out).run()
    path = json.loads((out / "offset_+1m.json").read_text())
    assert path["difix_refiner"]["metres_per_scene_unit"] == 0.5
    shifted = np.array([e["camera_to_world"] for e in path["camera_path"]]).reshape(-1, 4, 4)[:, :3, 3]  # [7, 3]
    recorded = cfg.pipeline.datamanager.dataparser.setup().get_dataparser_outputs("train").cameras.camera_to_worlds
    moved = np.linalg.norm(shifted - recorded[:, :3, 3].double().numpy(), axis=1)  # [7] scene units
    np.testing.assert_allclose(moved, 1.0 / 0.5, rtol=1e-6)  # 1 m at 0.5 m per unit is 2 units

    # The option still wins over the value in config.yml.
    ShiftPathCommand(load_config=config_path, offsets=(1.0,), output_dir=out, metres_per_scene_unit=2.0, overwrite=True).run()
    assert json.loads((out / "offset_+1m.json").read_text())["difix_refiner"]["metres_per_scene_unit"] == 2.0

    cfg.pipeline.refine.metres_per_scene_unit = None
    cfg.save_config()
    with pytest.raises(InputError, match="pass --metres-per-scene-unit"):
        ShiftPathCommand(load_config=config_path, offsets=(1.0,), output_dir=tmp_path / "p2").run()
