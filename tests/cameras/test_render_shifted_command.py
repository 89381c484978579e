"""``render-shifted`` with a stand-in pipeline (the generic nerfstudio API: model.get_outputs_for_camera)."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import tyro
from PIL import Image

from difix_refiner.cameras import render_command
from difix_refiner.cameras.render_command import RenderShiftedCommand

WORLD_Z = np.array([0.0, 0.0, 1.0])
NUM_FRAMES = 9
WIDTH, HEIGHT = 64, 36


def rig_world_poses():
    """Front camera driving along +x after a short standstill, and a left camera on the same rig."""
    x = np.concatenate([np.zeros(3), np.cumsum(np.full(NUM_FRAMES - 3, 0.8))])
    f, up = np.array([1.0, 0.0, 0.0]), WORLD_Z
    front = np.stack([np.column_stack([np.cross(f, up), up, -f, [xi, 0.0, 1.6]]) for xi in x])
    yaw = np.array([[np.cos(1.0), 0, np.sin(1.0)], [0, 1, 0], [-np.sin(1.0), 0, np.cos(1.0)]])
    left = front.copy()
    left[:, :, :3] = front[:, :, :3] @ yaw
    left[:, 1, 3] += 0.6
    return np.concatenate([front, left])


class StandInModel:
    """Renders a procedural picture that depends on the camera pose; records the cameras it saw."""

    def __init__(self):
        self.seen = []

    def get_outputs_for_camera(self, camera):
        assert camera.shape == (1,)
        self.seen.append(camera)
        h, w = int(camera.height[0, 0]), int(camera.width[0, 0])
        centre = camera.camera_to_worlds[0, :, 3]
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        base = 0.5 + 0.5 * torch.sin(0.3 * xx + 4.0 * centre[1] + 0.7 * centre[0])
        return {"rgb": torch.stack([base, 0.5 + 0.5 * torch.cos(0.2 * yy + 3.0 * centre[1]), base * 0.5], -1)}


def stand_in_pipeline(scale=0.25):
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs

    world = rig_world_poses()
    transform = np.array([[0.0, -1.0, 0.0, 3.0], [1.0, 0.0, 0.0, -1.0], [0.0, 0.0, 1.0, 0.5]])  # yaw 90 deg + shift
    scene = world.copy()
    scene[:, :, :3] = transform[:, :3] @ world[:, :, :3]
    scene[:, :, 3] = scale * (world[:, :, 3] @ transform[:, :3].T + transform[:, 3])
    n = NUM_FRAMES
    cameras = Cameras(
        camera_to_worlds=torch.from_numpy(scene).float(),
        fx=torch.tensor([[70.0]] * n + [[40.0]] * n),
        fy=torch.tensor([[71.0]] * n + [[41.0]] * n),
        cx=torch.tensor([[30.5]] * n + [[33.0]] * n),
        cy=torch.tensor([[17.0]] * n + [[19.0]] * n),
        width=WIDTH,
        height=HEIGHT,
    )
    outputs = DataparserOutputs(
        image_filenames=[Path(f"{i}.jpg") for i in range(2 * n)],
        cameras=cameras,
        dataparser_transform=torch.from_numpy(transform).float(),
        dataparser_scale=scale,
        metadata={
            "metres_per_scene_unit": 1.0 / scale,
            "camera_names": ["front_camera"] * n + ["front_left_camera"] * n,
            "frame_indices": list(range(n)) * 2,
        },
    )
    datamanager = SimpleNamespace(train_dataparser_outputs=outputs, train_dataset=SimpleNamespace(cameras=cameras))
    return SimpleNamespace(model=StandInModel(), datamanager=datamanager, device=torch.device("cpu")), world


@pytest.fixture
def config_file(tmp_path):
    """A difix-refiner run config (only the method name is read before the pipeline is loaded)."""
    from nerfstudio.engine.trainer import TrainerConfig

    config = TrainerConfig(method_name="difix-refiner", output_dir=tmp_path / "outputs", timestamp="run",
                           experiment_name="drive")
    config.save_config()
    return config.get_base_dir() / "config.yml"


def run_cli(monkeypatch, pipeline, *args):
    monkeypatch.setattr(RenderShiftedCommand, "_load_pipeline", lambda self: pipeline)
    command = tyro.cli(RenderShiftedCommand, args=[str(a) for a in args])
    command.main()
    return command


def test_renders_pngs_videos_contact_sheet_and_manifest(tmp_path, monkeypatch, config_file):
    import av

    pipeline, world = stand_in_pipeline()
    out = tmp_path / "renders"
    run_cli(monkeypatch, pipeline, "--load-config", config_file, "--offsets", -2, 1.5, "--output-dir", out,
            "--contact-sheet-frames", 4, "--thumbnail-width", 32)

    names = {"offset_+1.5m", "offset_+0m", "offset_-2m"}
    expected = names | {n + ".mp4" for n in names} | {"contact_sheet.png", "manifest.json"}
    assert {p.name for p in out.iterdir()} == expected  # and no temporary leftovers
    frames = {}
    for name in names:
        pngs = sorted((out / name).glob("frame_*.png"))
        assert [p.name for p in pngs] == [f"frame_{i:05d}.png" for i in range(NUM_FRAMES)]
        frames[name] = np.stack([np.asarray(Image.open(p)) for p in pngs])
        assert frames[name].shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
        with av.open(str(out / f"{name}.mp4")) as video:
            assert sum(1 for _ in video.decode(video=0)) == NUM_FRAMES
    assert not np.array_equal(frames["offset_+1.5m"], frames["offset_+0m"])
    assert not np.array_equal(frames["offset_-2m"], frames["offset_+0m"])

    # Exact training intrinsics of the front camera, whatever the offset.
    for camera in pipeline.model.seen:
        assert (float(camera.fx), float(camera.fy), float(camera.cx), float(camera.cy)) == (70.0, 71.0, 30.5, 17.0)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["camera"] == "front_camera"
    assert [o["offset_m"] for o in manifest["offsets"]] == [1.5, 0.0, -2.0]  # most left first
    transform = np.asarray(manifest["dataparser_transform"])
    scale = manifest["dataparser_scale"]
    front_world = world[:NUM_FRAMES]
    for entry in manifest["offsets"]:
        scene = np.asarray(entry["camera_to_worlds"])
        centres = (scene[:, :, 3] / scale - transform[:, 3]) @ transform[:, :3]  # back to world metres
        delta = centres - front_world[:, :, 3]
        np.testing.assert_allclose(np.linalg.norm(delta, axis=1), abs(entry["offset_m"]), atol=1e-3)
        np.testing.assert_allclose(delta[:, 1], entry["offset_m"], atol=1e-3)  # driving +x: left is +y

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 4 * 32 and sheet.height > 3 * 18


def test_side_camera_and_stride(tmp_path, monkeypatch, config_file):
    pipeline, world = stand_in_pipeline()
    out = tmp_path / "side"
    run_cli(monkeypatch, pipeline, "--load-config", config_file, "--offsets", 1, "--output-dir", out,
            "--camera", "front_left_camera", "--frame-stride", 2, "--resolution-scale", 0.5)
    pngs = sorted((out / "offset_+1m").glob("*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:05d}.png" for i in range(0, NUM_FRAMES, 2)]
    assert np.asarray(Image.open(pngs[0])).shape == (HEIGHT // 2, WIDTH // 2, 3)
    manifest = json.loads((out / "manifest.json").read_text())
    shifted = np.asarray(manifest["offsets"][0]["camera_to_worlds"])
    recorded = np.asarray(manifest["offsets"][1]["camera_to_worlds"])
    move = (shifted[:, :, 3] - recorded[:, :, 3]) / manifest["dataparser_scale"]
    # Scene = yaw 90 deg of world: world +y (left when driving +x) is scene -x.
    np.testing.assert_allclose(move, np.tile([-1.0, 0.0, 0.0], (len(move), 1)), atol=1e-5)


def test_refuses_existing_outputs_and_bad_input(tmp_path, monkeypatch, config_file):
    pipeline, _ = stand_in_pipeline()
    out = tmp_path / "r"
    args = ["--load-config", config_file, "--offsets", 1, "--output-dir", out, "--contact-sheet-frames", 2]
    run_cli(monkeypatch, pipeline, *args)
    with pytest.raises(SystemExit, match="already holds results"):
        run_cli(monkeypatch, pipeline, *args)
    run_cli(monkeypatch, pipeline, *args, "--overwrite")
    assert len(list((out / "offset_+1m").iterdir())) == NUM_FRAMES
    with pytest.raises(SystemExit, match="unknown camera 'rear'; known cameras: front_camera, front_left_camera"):
        run_cli(monkeypatch, pipeline, *args, "--overwrite", "--camera", "rear")
    with pytest.raises(SystemExit, match="contains 0"):
        run_cli(monkeypatch, pipeline, "--load-config", config_file, "--offsets", 0, "--output-dir", tmp_path / "z")


def test_non_finite_poses_are_refused(tmp_path, monkeypatch, config_file):
    pipeline, _ = stand_in_pipeline()
    pipeline.datamanager.train_dataset.cameras.camera_to_worlds[2, 0, 3] = float("nan")
    with pytest.raises(SystemExit, match="non-finite"):
        run_cli(monkeypatch, pipeline, "--load-config", config_file, "--offsets", 1, "--output-dir", tmp_path / "n")
    assert not (tmp_path / "n").exists() or not any((tmp_path / "n").iterdir())


def test_postprocess_hook_is_applied(tmp_path, monkeypatch, config_file):
    pipeline, _ = stand_in_pipeline()
    seen = []

    def hook(self, image, offset_m, frame_index):
        seen.append((offset_m, frame_index))
        return np.zeros_like(image)

    monkeypatch.setattr(render_command.RenderShiftedCommand, "_postprocess_frame", hook)
    run_cli(monkeypatch, pipeline, "--load-config", config_file, "--offsets", -1, "--output-dir", tmp_path / "h")
    assert len(seen) == 2 * NUM_FRAMES
    assert np.asarray(Image.open(tmp_path / "h/offset_-1m/frame_00000.png")).max() == 0
