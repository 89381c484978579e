"""``shift-path`` on a real nerfstudio run config (nerfstudio-data dataparser, PandaSet poses)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro
from nerfstudio.cameras.camera_paths import get_path_from_json
from nerfstudio.data.dataparsers.base_dataparser import (
    transform_poses_to_original_space,
)

from difix_refiner.commands import shift_path as shift_command
from difix_refiner.commands.cli import run_command
from difix_refiner.commands.shift_path import ShiftPathCommand

PANDASET = Path(__file__).resolve().parents[2] / "examples" / "pandaset_002"
WORLD_Z = np.array([0.0, 0.0, 1.0])


def world_drive(n=40):
    """Metric OpenGL poses of the bundled PandaSet front camera (a real start-stop drive)."""
    from scipy.spatial.transform import Rotation

    entries = json.loads((PANDASET / "camera/front_camera/poses.json").read_text())
    q = np.array([[e["heading"][k] for k in "xyzw"] for e in entries])
    p = np.array([[e["position"][k] for k in "xyz"] for e in entries])
    rot = Rotation.from_quat(q).as_matrix() @ np.diag([1.0, -1.0, -1.0])  # OpenCV -> OpenGL
    return np.concatenate([rot, p[:, :, None]], axis=2)


def write_run(tmp_path, method_name="splatfacto"):
    """A nerfstudio run folder with config.yml; the dataparser recentres, rotates and rescales."""
    from nerfstudio.data.datamanagers.full_images_datamanager import (
        FullImageDatamanagerConfig,
    )
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import (
        NerfstudioDataParserConfig,
    )
    from nerfstudio.engine.trainer import TrainerConfig
    from nerfstudio.models.splatfacto import SplatfactoModelConfig
    from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

    poses = world_drive()
    data = tmp_path / "data"
    data.mkdir()
    frames = [
        {"file_path": f"images/{i:05d}.jpg", "transform_matrix": np.vstack([p, [0, 0, 0, 1]]).tolist()}
        for i, p in enumerate(poses)
    ]
    meta = {"fl_x": 985.0, "fl_y": 985.0, "cx": 485.0, "cy": 241.6, "w": 960, "h": 540, "frames": frames}
    (data / "transforms.json").write_text(json.dumps(meta))
    config = TrainerConfig(
        method_name=method_name,
        output_dir=tmp_path / "outputs",
        experiment_name="drive",
        timestamp="run",
        pipeline=VanillaPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                dataparser=NerfstudioDataParserConfig(data=data, downscale_factor=1, eval_mode="interval")
            ),
            model=SplatfactoModelConfig(),
        ),
    )
    config.save_config()
    run_dir = config.get_base_dir()
    outputs = config.pipeline.datamanager.dataparser.setup().get_dataparser_outputs(split="train")
    outputs.save_dataparser_transform(run_dir / "dataparser_transforms.json")
    # Recover which world poses are the training images (same order as the dataparser's).
    names = [Path(f).stem for f in outputs.image_filenames]
    train_world = poses[[int(n) for n in names]]
    return run_dir / "config.yml", outputs, train_world


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("run"))


class _Cli:
    """A parsed shift-path command whose main() runs as the console script does (errors as one-line exits)."""

    def __init__(self, command):
        self.command = command

    def main(self):
        return run_command("shift-path", self.command)


def cli(*args):
    return _Cli(tyro.cli(ShiftPathCommand, args=[str(a) for a in args]))


def test_shifted_paths_are_at_offsets_in_world_metres(run, tmp_path):
    config, outputs, train_world = run
    scale = float(outputs.dataparser_scale)
    assert abs(scale - 1.0) > 0.01  # the dataparser really rescaled
    out = tmp_path / "paths"
    cli("--load-config", config, "--offsets", -2, -1, 1, 2, "--output-dir", out,
        "--metres-per-scene-unit", 1.0 / scale).main()
    files = sorted(p.name for p in out.iterdir())
    assert files == ["offset_+1m.json", "offset_+2m.json", "offset_-1m.json", "offset_-2m.json"]
    travel = train_world[-1, :, 3] - train_world[0, :, 3]
    world_left = np.cross(WORLD_Z, travel / np.linalg.norm(travel))
    for offset in (-2.0, -1.0, 1.0, 2.0):
        data = json.loads((out / f"offset_{offset:+g}m.json").read_text())
        cameras = get_path_from_json(data)
        assert len(cameras) == len(train_world)
        back = transform_poses_to_original_space(
            cameras.camera_to_worlds, outputs.dataparser_transform, scale, camera_convention="opengl"
        ).double().numpy()
        delta = back[:, :, 3] - train_world[:, :, 3]
        np.testing.assert_allclose(np.linalg.norm(delta, axis=1), abs(offset), atol=1e-3)  # 1 mm
        assert (delta @ world_left * np.sign(offset) > 0.99 * abs(offset)).all()  # + is left
        np.testing.assert_allclose(back[:, :, :3], train_world[:, :, :3], atol=1e-5)  # heading kept
        assert data["render_width"] == 960 and data["render_height"] == 540
        assert data["difix_refiner"]["offset_m"] == offset


def test_refuses_existing_results_unless_overwrite(run, tmp_path):
    config, outputs, _ = run
    args = ["--load-config", config, "--offsets", 1.5, "--output-dir", tmp_path,
            "--metres-per-scene-unit", 1.0 / float(outputs.dataparser_scale)]
    cli(*args).main()
    before = (tmp_path / "offset_+1.5m.json").read_text()
    with pytest.raises(SystemExit, match="already holds results"):
        cli(*args).main()
    cli(*args, "--overwrite", "--yaw-toward-road").main()
    assert (tmp_path / "offset_+1.5m.json").read_text() != before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--offsets"], "--offsets is empty"),
        (["--offsets", "1", "0"], "contains 0"),
        (["--offsets", "1", "--metres-per-scene-unit", "0.1", "--camera", "front_camera"], "does not name its cameras"),
        (["--offsets", "1"], "--metres-per-scene-unit.*lane"),
        (["--offsets", "1", "1.0"], "duplicate"),
    ],
)
def test_bad_input_messages(run, tmp_path, extra, message):
    config, _, _ = run
    with pytest.raises(SystemExit, match=message):
        cli("--load-config", config, "--output-dir", tmp_path, *extra).main()
    assert not any(tmp_path.iterdir())


def test_other_method_is_refused(tmp_path):
    config, _, _ = write_run(tmp_path, method_name="nerfacto")
    with pytest.raises(SystemExit, match="'nerfacto'.*difix-refiner"):
        cli("--load-config", config, "--offsets", 1, "--output-dir", tmp_path / "o").main()
    with pytest.raises(SystemExit, match="does not exist"):
        cli("--load-config", tmp_path / "missing.yml", "--offsets", 1, "--output-dir", tmp_path / "o").main()


def test_help_mentions_format_limits(capsys):
    with pytest.raises(SystemExit):
        cli("--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "principal point" in text and "vertical field of view" in text
    assert "vehicle's left" in text


def rig_outputs(num_frames=20):
    """DataparserOutputs like the pandaset-data dataparser's: three named cameras, metric scale 0.1."""
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs

    front = world_drive()[:num_frames]
    rot = np.array([[np.cos(1.0), 0, np.sin(1.0)], [0, 1, 0], [-np.sin(1.0), 0, np.cos(1.0)]])  # yaw in camera frame
    left = front.copy()
    left[:, :, :3] = front[:, :, :3] @ rot
    left[:, :, 3] += 0.6 * front[:, :, 0] * -1  # mounted to the left of the front camera
    right = front.copy()
    right[:, :, :3] = front[:, :, :3] @ rot.T
    right[:, :, 3] += 0.6 * front[:, :, 0]
    world = np.concatenate([front, left, right])
    scene = world.copy()
    scene[:, :, 3] *= 0.1
    names = ["front_camera"] * num_frames + ["front_left_camera"] * num_frames + ["front_right_camera"] * num_frames
    cameras = Cameras(
        camera_to_worlds=torch.from_numpy(scene).float(), fx=100.0, fy=100.0, cx=40.0, cy=30.0, width=80, height=60
    )
    outputs = DataparserOutputs(
        image_filenames=[Path(f"{i}.jpg") for i in range(len(world))],
        cameras=cameras,
        dataparser_scale=0.1,
        metadata={
            "metres_per_scene_unit": 10.0,
            "camera_names": names,
            "frame_indices": list(range(num_frames)) * 3,
        },
    )
    return outputs, cameras, world


def test_rig_camera_selection_via_metadata(tmp_path, monkeypatch):
    outputs, cameras, world = rig_outputs()
    monkeypatch.setattr(shift_command, "load_run_config", lambda path: None)
    monkeypatch.setattr(shift_command, "train_outputs_without_model", lambda config: (outputs, cameras))
    with pytest.raises(SystemExit, match="known cameras: front_camera, front_left_camera, front_right_camera"):
        cli("--load-config", "x.yml", "--offsets", 1, "--output-dir", tmp_path, "--camera", "rear_camera").main()
    written = {}
    for cam in ("front_camera", "front_left_camera"):
        out = tmp_path / cam
        cli("--load-config", "x.yml", "--offsets", 1, "--output-dir", out, "--camera", cam).main()
        data = json.loads((out / "offset_+1m.json").read_text())
        assert data["difix_refiner"]["camera"] == cam
        written[cam] = get_path_from_json(data).camera_to_worlds.double().numpy()
    n = len(world) // 3
    move_front = (written["front_camera"][:, :, 3] - world[:n, :, 3] * 0.1) * 10.0  # metres
    move_left = (written["front_left_camera"][:, :, 3] - world[n : 2 * n, :, 3] * 0.1) * 10.0
    np.testing.assert_allclose(np.linalg.norm(move_front, axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(move_left, move_front, atol=1e-3)  # same world vector for the side camera
    # Default camera is front_camera.
    cli("--load-config", "x.yml", "--offsets", 1, "--output-dir", tmp_path / "default").main()
    data = json.loads((tmp_path / "default/offset_+1m.json").read_text())
    assert data["difix_refiner"]["camera"] == "front_camera"
