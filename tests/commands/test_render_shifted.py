"""``render-shifted`` with a stand-in pipeline (the generic nerfstudio API: model.get_outputs_for_camera)."""

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import tyro
from PIL import Image

from difix_refiner.commands import render as render_command
from difix_refiner.commands.cli import run_command
from difix_refiner.commands.render import RenderRecordedCommand, RenderShiftedCommand
from difix_refiner.fixer.options import FixerOptions
from difix_refiner.fixer.render_fixing import fix_render, read_photo

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


def run_cli(monkeypatch, pipeline, *args, command_class=RenderShiftedCommand):
    monkeypatch.setattr(RenderShiftedCommand, "_load_pipeline", lambda self: pipeline)
    command = tyro.cli(command_class, args=[str(a) for a in args])
    run_command("render-recorded" if command_class is RenderRecordedCommand else "render-shifted", command)
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


# ------------------------------------------------------------------------------------------------
# --fix: the fixer on the final renders


def with_photos(pipeline, folder):
    """Give the stand-in run real recorded photos (random, twice the render size so they get resized)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2 * NUM_FRAMES):
        paths.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (2 * HEIGHT, 2 * WIDTH, 3), dtype=np.uint8)).save(paths[-1])
    pipeline.datamanager.train_dataparser_outputs.image_filenames = paths
    return paths


class RecordingFixer:
    """A fixer wrapper that records every image and reference it was given."""

    def __init__(self, fixer):
        self.fixer = fixer
        self.config = fixer.config
        self.calls = []

    def fix(self, images, refs=None):
        self.calls.append((images.clone(), None if refs is None else refs.clone()))
        return self.fixer.fix(images, refs)


def record_fixers(monkeypatch):
    """Wrap every fixer the command loads; returns the list of wrappers."""
    loaded = []
    original = RenderShiftedCommand._load_fixer

    def load(self, device):
        loaded.append(RecordingFixer(original(self, device)))
        return loaded[-1]

    monkeypatch.setattr(RenderShiftedCommand, "_load_fixer", load)
    return loaded


def png(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_fix_writes_fixed_frames_videos_sheet_and_manifest(tmp_path, monkeypatch, config_file):
    pipeline, _ = stand_in_pipeline()
    photos = with_photos(pipeline, tmp_path / "photos")
    loaded = record_fixers(monkeypatch)
    out = tmp_path / "fixed"
    args = ["--load-config", config_file, "--offsets", 1, "--output-dir", out, "--camera", "front_left_camera",
            "--frame-stride", 2, "--contact-sheet-frames", 3, "--thumbnail-width", 32]
    run_cli(monkeypatch, pipeline, *args, "--fix", "--fixer-base", "tiny")

    frames = list(range(0, NUM_FRAMES, 2))
    names = ["offset_+1m", "offset_+0m"]
    expected = {n + suffix for n in names for suffix in ("", ".mp4", "_fixed", "_fixed.mp4")}
    assert {p.name for p in out.iterdir()} == expected | {"contact_sheet.png", "contact_sheet_fixed.png", "manifest.json"}
    for name in names:
        assert sorted(p.name for p in (out / f"{name}_fixed").iterdir()) == [f"frame_{f:05d}.png" for f in frames]
        assert not np.array_equal(png(out / f"{name}_fixed/frame_00002.png"), png(out / f"{name}/frame_00002.png"))

    # One fixer, loaded once; every frame of every trajectory went through it, with the photo of the
    # same camera (front_left: images 9..17) and frame as reference, resized to the render size.
    assert len(loaded) == 1
    calls = loaded[0].calls
    assert len(calls) == len(names) * len(frames)
    for k, (images, refs) in enumerate(calls):
        name, frame = names[k // len(frames)], frames[k % len(frames)]
        unfixed = png(out / name / f"frame_{frame:05d}.png")
        np.testing.assert_allclose(images[0].permute(1, 2, 0).numpy() * 255.0, unfixed, atol=1e-3)
        photo = read_photo(photos[NUM_FRAMES + frame], WIDTH, HEIGHT)
        assert refs.shape == (1, 1, 3, HEIGHT, WIDTH)
        np.testing.assert_allclose(refs[0, 0].permute(1, 2, 0).numpy() * 255.0, photo, atol=1e-3)

    # The fixed frame is exactly fix_render(fixer, unfixed frame, same-frame photo).
    fixer, _ = FixerOptions(fixer_base="tiny", fixer_device="cpu").load_fixer()
    unfixed = png(out / "offset_+1m/frame_00004.png")
    want = fix_render(fixer, unfixed, read_photo(photos[NUM_FRAMES + 4], WIDTH, HEIGHT))
    np.testing.assert_array_equal(png(out / "offset_+1m_fixed/frame_00004.png"), want)
    assert not np.array_equal(want, fix_render(fixer, unfixed, None))  # the reference matters

    if render_command.video_backend() is not None:
        import av

        with av.open(str(out / "offset_+1m_fixed.mp4")) as video:
            decoded = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
        assert len(decoded) == len(frames)
        assert decoded[0].shape == (HEIGHT, 2 * WIDTH, 3)  # unfixed | fixed
        left, right = decoded[2][:, :WIDTH].astype(float), decoded[2][:, WIDTH:].astype(float)
        assert np.abs(left - unfixed).mean() < np.abs(left - want).mean()
        assert np.abs(right - want).mean() < np.abs(right - unfixed).mean()

    sheet, fixed_sheet = Image.open(out / "contact_sheet.png"), Image.open(out / "contact_sheet_fixed.png")
    top = 28 + 4  # header + pad of 18-pixel-high thumbnails
    assert fixed_sheet.width == sheet.width
    assert fixed_sheet.height - top == 2 * (sheet.height - top)  # each offset, then its fixed row

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fixer"] == {"base": "tiny", "adapter": None, "reference": True, "hint": False}  # no hint channels
    assert manifest["contact_sheet_fixed"] == "contact_sheet_fixed.png"
    assert [(o["folder"], o["fixed_folder"]) for o in manifest["offsets"]] == [(n, n + "_fixed") for n in names]

    # Everything is refused without --overwrite, the fixed outputs included.
    with pytest.raises(SystemExit, match="already holds results"):
        run_cli(monkeypatch, pipeline, *args, "--fix", "--fixer-base", "tiny")
    for path in out.iterdir():  # keep only the fixed folders
        if path.is_file():
            path.unlink()
        elif not path.name.endswith("_fixed"):
            shutil.rmtree(path)
    assert {p.name for p in out.iterdir()} == {n + "_fixed" for n in names}
    with pytest.raises(SystemExit, match="offset_.*_fixed"):
        run_cli(monkeypatch, pipeline, *args, "--fix", "--fixer-base", "tiny")
    run_cli(monkeypatch, pipeline, *args)  # without --fix the fixed folders are not its outputs
    run_cli(monkeypatch, pipeline, *args, "--fix", "--fixer-base", "tiny", "--overwrite")
    np.testing.assert_array_equal(png(out / "offset_+1m_fixed/frame_00004.png"), want)


def test_fix_without_reference_and_without_fix(tmp_path, monkeypatch, config_file):
    pipeline, _ = stand_in_pipeline()  # its photos do not exist: fine without references
    loaded = record_fixers(monkeypatch)
    out = tmp_path / "noref"
    run_cli(monkeypatch, pipeline, "--load-config", config_file, "--offsets", -1, "--output-dir", out,
            "--frame-stride", 4, "--fix", "--fixer-base", "tiny", "--no-fixer-reference", "--fixer-device", "cpu")
    assert loaded and all(refs is None for _, refs in loaded[0].calls) and len(loaded[0].calls) == 2 * 3
    fixer, _ = FixerOptions(fixer_base="tiny", fixer_device="cpu").load_fixer()
    np.testing.assert_array_equal(png(out / "offset_-1m_fixed/frame_00008.png"),
                                  fix_render(fixer, png(out / "offset_-1m/frame_00008.png"), None))
    assert json.loads((out / "manifest.json").read_text())["fixer"]["reference"] is False

    plain = tmp_path / "plain"
    run_cli(monkeypatch, pipeline, "--load-config", config_file, "--offsets", -1, "--output-dir", plain, "--frame-stride", 4)
    assert len(loaded) == 1  # no fixer is loaded without --fix
    manifest = json.loads((plain / "manifest.json").read_text())
    assert manifest["fixer"] is None and manifest["contact_sheet_fixed"] is None
    assert all(o["fixed_folder"] is None for o in manifest["offsets"])
    assert not any("fixed" in p.name for p in plain.iterdir())


def test_fix_input_errors_are_one_line(tmp_path, monkeypatch, config_file):
    pipeline, _ = stand_in_pipeline()
    (tmp_path / "empty").mkdir()
    base = ["--load-config", config_file, "--offsets", 1, "--fix"]
    cases = [
        (["--fixer-base", tmp_path / "empty"], "render-shifted: error: cannot load the fixer"),
        (["--fixer-base", "tiny", "--fixer-adapter", tmp_path / "nope"], "--fixer-adapter not found"),
        (["--fixer-base", "none"], "--fix needs a fixer"),
        (["--fixer-base", "tiny", "--fixer-device", "nodevice"], "--fixer-device"),
        (["--fixer-base", "tiny"], "recorded photo.*not found.*--no-fixer-reference"),  # the stand-in's photos are missing
    ]
    for i, (extra, message) in enumerate(cases):
        out = tmp_path / f"bad{i}"
        with pytest.raises(SystemExit, match=message) as info:
            run_cli(monkeypatch, pipeline, *base, "--output-dir", out, *extra)
        assert "\n" not in str(info.value.code)
        assert not out.exists()  # nothing written


def with_seed_points(pipeline):
    """Give the stand-in run LiDAR seed points: a coloured wall 20 m ahead of the drive, in scene units."""
    outputs = pipeline.datamanager.train_dataparser_outputs
    ys, zs = np.meshgrid(np.arange(-8.0, 8.0, 0.2), np.arange(0.0, 3.2, 0.2), indexing="xy")
    world = np.stack([np.full(ys.size, 20.0), ys.ravel(), zs.ravel()], axis=1)  # [N, 3] metres
    transform, scale = outputs.dataparser_transform.double().numpy(), float(outputs.dataparser_scale)
    scene = scale * (world @ transform[:, :3].T + transform[:, 3])
    rgb = np.stack([(ys.ravel() + 8.0) * 15.0, zs.ravel() * 70.0, np.full(ys.size, 128.0)], axis=1)
    outputs.metadata["points3D_xyz"] = torch.from_numpy(scene).float()
    outputs.metadata["points3D_rgb"] = torch.from_numpy(rgb).float()
    from difix_refiner.distillation.pseudo_view_fidelity import hint_cloud_from_metadata

    return hint_cloud_from_metadata(outputs.metadata)  # as stored (float32), the way the refine loop reads it


@pytest.fixture(scope="module")
def hint_fixer_dir(tmp_path_factory):
    """A tiny fixer trained with hints (its hint convolution no longer zero), saved whole."""
    from difix_refiner.fixer import Fixer

    fixer = Fixer.tiny("difix", seed=0, hint_channels=4)
    weight = fixer.hint_conv.conv.weight
    with torch.no_grad():
        weight.copy_(0.5 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)))
    return fixer.save_pretrained(tmp_path_factory.mktemp("hint_fixer") / "model")


def test_fix_gives_a_hint_fixer_the_hint_of_each_shifted_camera(tmp_path, monkeypatch, config_file, hint_fixer_dir):
    from difix_refiner.data.lidar_hint import LidarHint
    from difix_refiner.distillation.pseudo_view_fidelity import view_hint
    from difix_refiner.fixer import Fixer

    pipeline, _ = stand_in_pipeline()
    cloud = with_seed_points(pipeline)
    given = []
    original = Fixer.fix

    def spy(self, images, refs=None, hint=None, **kw):
        given.append(None if hint is None else hint.clone())
        return original(self, images, refs, hint=hint, **kw)

    monkeypatch.setattr(Fixer, "fix", spy)
    out = tmp_path / "hinted"
    args = ["--load-config", config_file, "--offsets", 1, "--frame-stride", 4, "--fix", "--fixer-base", hint_fixer_dir,
            "--no-fixer-reference", "--fixer-device", "cpu", "--thumbnail-width", 32]  # fmt: skip
    run_cli(monkeypatch, pipeline, *args, "--output-dir", out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fixer"]["hint"] is True
    assert len(given) == 2 * 3 and all(h is not None for h in given)  # offsets +1 and 0, frames 0, 4, 8

    # The hint of the +1 m camera of frame 4: the seed points rendered into exactly that camera.
    entry = next(o for o in manifest["offsets"] if o["offset_m"] == 1.0)
    pose = np.array(entry["camera_to_worlds"][1])  # frame 4
    intrinsics = {"fx": 70.0, "fy": 71.0, "cx": 30.5, "cy": 17.0, "width": WIDTH, "height": HEIGHT}
    hint = view_hint(cloud, pose, intrinsics, manifest["metres_per_scene_unit"])
    assert isinstance(hint, LidarHint) and hint.coverage > 0.05
    torch.testing.assert_close(given[1][0], hint.tensor())  # offsets left to right: +1 m first; frame 4 second
    loaded = Fixer.from_pretrained(hint_fixer_dir)
    unfixed = png(out / "offset_+1m/frame_00004.png")
    want = fix_render(loaded, unfixed, None, hint.tensor())
    np.testing.assert_array_equal(png(out / "offset_+1m_fixed/frame_00004.png"), want)
    assert not np.array_equal(want, fix_render(loaded, unfixed, None))  # the hint matters

    # --no-fixer-hint runs the same fixer without hints.
    plain = tmp_path / "plain"
    run_cli(monkeypatch, pipeline, *args, "--no-fixer-hint", "--output-dir", plain)
    assert json.loads((plain / "manifest.json").read_text())["fixer"]["hint"] is False
    np.testing.assert_array_equal(png(plain / "offset_+1m_fixed/frame_00004.png"), fix_render(loaded, unfixed, None))


def test_render_recorded_renders_only_the_recorded_path(tmp_path, monkeypatch, config_file):
    pipeline, _ = stand_in_pipeline()
    with_photos(pipeline, tmp_path / "photos")
    out = tmp_path / "recorded"
    run_cli(monkeypatch, pipeline, "--load-config", config_file, "--output-dir", out, "--frame-stride", 3,
            "--fix", "--fixer-base", "tiny", "--thumbnail-width", 32, command_class=RenderRecordedCommand)
    folders = {"offset_+0m", "offset_+0m_fixed"}
    assert {p.name for p in out.iterdir()} == folders | {f + ".mp4" for f in folders} | {
        "contact_sheet.png", "contact_sheet_fixed.png", "manifest.json"}
    for folder in folders:
        assert sorted(p.name for p in (out / folder).iterdir()) == ["frame_00000.png", "frame_00003.png", "frame_00006.png"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [o["offset_m"] for o in manifest["offsets"]] == [0.0]
    recorded = pipeline.datamanager.train_dataset.cameras.camera_to_worlds[[0, 3, 6]].numpy()
    np.testing.assert_allclose(manifest["offsets"][0]["camera_to_worlds"], recorded, atol=1e-6)
    assert manifest["fixer"]["reference"] is True
    with pytest.raises(SystemExit):  # no --offsets option
        run_cli(monkeypatch, pipeline, "--load-config", config_file, "--output-dir", tmp_path / "o", "--offsets", 1,
                command_class=RenderRecordedCommand)
    with pytest.raises(SystemExit, match="render-recorded: error: the output folder already holds results"):
        run_cli(monkeypatch, pipeline, "--load-config", config_file, "--output-dir", out, command_class=RenderRecordedCommand)


@pytest.mark.skipif(not (Path(sys.executable).parent / "ns-train").exists(), reason="needs ns-train next to this python")
def test_fix_loads_a_real_run_with_its_seed_points(tiny_run, monkeypatch):
    """A hint fixer's hints come from the run's seed points, so --fix loads them (plain renders skip them)."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the run's data path is relative to the repository

    def seed_points(**options):
        pipeline = RenderShiftedCommand(load_config=tiny_run, offsets=(1.0,), output_dir=Path("unused"), **options)._load_pipeline()
        return pipeline.datamanager.train_dataparser_outputs.metadata.get("points3D_xyz")

    points = seed_points(fix=True)
    assert points is not None and points.shape[0] > 100 and points.shape[1] == 3
    assert seed_points() is None and seed_points(fix=True, fixer_hint=False) is None
