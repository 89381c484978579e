"""Refine loop pieces without training: options, novel cameras, the pseudo-view store, presets, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.scene_box import SceneBox

from difix_refiner.cameras.reference_views import nearest_references, pose_costs
from difix_refiner.core.errors import InputError
from difix_refiner.distillation.pipeline import _check_fixer_source, recorded_for_refine
from difix_refiner.distillation.pseudo_views import (
    PseudoViewRecord,
    PseudoViewStore,
    format_metres,
    held_out_cameras,
    offset_cameras,
)
from difix_refiner.distillation.refine_config import RefineConfig
from difix_refiner.scene.trained_run import recorded_images

REPO = Path(__file__).resolve().parents[2]


def straight_drive(num: int = 6, spacing: float = 1.0, scale: float = 1.0) -> np.ndarray:
    """``[num, 3, 4]`` poses of a camera driving along +x (scene z up), looking forward (OpenGL axes)."""
    rot = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # columns: right=-y, up=+z, back=-x
    poses = np.zeros((num, 3, 4))
    poses[:, :, :3] = rot
    poses[:, 0, 3] = np.arange(num) * spacing * scale
    return poses


def fake_outputs(poses: np.ndarray, metadata: dict) -> DataparserOutputs:
    n = poses.shape[0]
    cameras = Cameras(
        camera_to_worlds=torch.from_numpy(poses).float(),
        fx=100.0, fy=100.0, cx=32.0, cy=24.0, width=64, height=48, camera_type=CameraType.PERSPECTIVE,
    )  # fmt: skip
    return DataparserOutputs(
        image_filenames=[Path(f"{i}.png") for i in range(n)],
        cameras=cameras,
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
        dataparser_scale=0.5,
        metadata=metadata,
    )


def test_config_defaults_follow_difix3d():
    cfg = RefineConfig()
    cfg.validate()
    assert (cfg.steps_per_fix, cfg.shift_step, cfg.pseudo_view_fraction) == (2000, 0.5, 0.3)
    assert (cfg.pseudo_view_loss_weight, cfg.alpha_mask_threshold) == (0.3, 0.5)
    assert sorted(cfg.offsets) == [-2.0, -1.0, 1.0, 2.0]
    assert cfg.fixer_base is None and cfg.enabled


def test_fix_steps():
    cfg = RefineConfig(steps_per_fix=200)
    assert [s for s in range(1001) if cfg.is_fix_step(s)] == [200, 400, 600, 800, 1000]
    cfg = RefineConfig(steps_per_fix=3, first_fix_step=2, last_fix_step=8)
    assert [s for s in range(20) if cfg.is_fix_step(s)] == [2, 5, 8]
    assert not any(RefineConfig(enabled=False, steps_per_fix=1).is_fix_step(s) for s in range(10))


@pytest.mark.parametrize(
    "changes, option",
    [
        ({"steps_per_fix": 0}, "steps-per-fix"),
        ({"offsets": ()}, "offsets"),
        ({"offsets": (1.0, 0.0)}, "offsets"),
        ({"offsets": (1.0, 1.0)}, "offsets"),
        ({"shift_step": 0.0}, "shift-step"),
        ({"pseudo_view_fraction": 1.5}, "pseudo-view-fraction"),
        ({"alpha_mask_threshold": -0.1}, "alpha-mask-threshold"),
        ({"metres_per_scene_unit": -1.0}, "metres-per-scene-unit"),
        ({"first_fix_step": 0}, "first-fix-step"),
        ({"num_references": -1}, "num-references"),
    ],
)
def test_config_errors_name_the_option(changes, option):
    with pytest.raises(ValueError, match=f"--pipeline.refine.{option}"):
        RefineConfig(**changes).validate()


def test_every_option_is_documented():
    import inspect

    for name in RefineConfig.__dataclass_fields__:
        owner = next(c for c in RefineConfig.__mro__ if name in c.__dict__.get("__annotations__", {}))
        source = inspect.getsource(owner)
        after = source.split(f"    {name}:", 1)[1].splitlines()[1].strip()
        assert after.startswith('"""'), f"RefineConfig.{name} ({owner.__name__}) has no docstring"


def test_non_metric_dataparser_needs_metres_per_scene_unit():
    outputs = fake_outputs(straight_drive(), metadata={})
    with pytest.raises(InputError, match="--pipeline.refine.metres-per-scene-unit") as info:
        recorded_for_refine(outputs, outputs.cameras, None)
    assert "--metres-per-scene-unit" not in str(info.value).replace("--pipeline.refine.metres-per-scene-unit", "")
    recorded = recorded_for_refine(outputs, outputs.cameras, 2.0)
    assert recorded.metres_per_scene_unit == 2.0


def test_offset_cameras_start_on_the_path_and_end_at_the_offsets():
    poses = straight_drive(num=9, spacing=1.0)
    outputs = fake_outputs(poses, metadata={"metres_per_scene_unit": 2.0})  # 1 scene unit = 2 m
    recorded = recorded_images(outputs, outputs.cameras)
    cams = offset_cameras(recorded, [1.0, -2.0], frame_stride=4)
    assert [c.frame for c in cams] == [0, 4, 8, 0, 4, 8]
    for cam in cams:
        np.testing.assert_allclose(cam.start, poses[cam.frame])
        np.testing.assert_allclose(cam.current, cam.start)
        lateral = (cam.target[:, 3] - cam.start[:, 3]) * 2.0  # metres
        # Driving along +x with z up, the vehicle's left is +y.
        np.testing.assert_allclose(lateral, [0.0, cam.target_offset_m, 0.0], atol=1e-9)
        np.testing.assert_allclose(cam.target[:, :3], cam.start[:, :3])
    assert cams[0].track == "offset_+1.0m/camera/frame_0000"
    cams[0].current = cams[0].start.copy()
    cams[0].current[1, 3] += 0.25  # 0.5 m to the left
    assert cams[0].file_stem(2.0, with_camera=False) == "offset_+0.5m_frame_0000"
    assert format_metres(-0.25) == "-0.25" and format_metres(2.0) == "+2.0"


def test_held_out_cameras_start_at_the_nearest_training_pose():
    train = straight_drive(num=5, spacing=1.0)
    held = straight_drive(num=3, spacing=2.0)
    held[:, 1, 3] += 0.5  # half a unit to the left of the path
    held[1] = train[2]  # a held-out pose equal to a training pose needs no novel camera
    cams = held_out_cameras(train, held, ["side", "side", "side"], np.array([0, 1, 2]), 1, 1.0, 0.1)
    assert [c.frame for c in cams] == [0, 2]
    np.testing.assert_allclose(cams[0].start, train[0])
    np.testing.assert_allclose(cams[1].start, train[4])
    assert cams[0].kind == "held-out" and cams[0].intrinsics_split == "eval"


def test_nearest_reference_counts_angle():
    poses = straight_drive(num=3, spacing=1.0)
    turned = poses[1].copy()
    yaw = np.deg2rad(90.0)
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    turned[:, :3] = rz @ turned[:, :3]
    poses = np.stack([poses[0], turned, poses[2]])
    query = straight_drive(num=2, spacing=1.0)[1]  # at poses[1]'s centre, looking forward
    d = pose_costs(query, poses, 5.0, 1.0)  # 1 m apart, or 90 degrees turned: 5 m/rad * pi/2
    np.testing.assert_allclose(d, [1.0, 5.0 * np.pi / 2, 1.0], atol=1e-6)
    assert nearest_references(query, poses, 2, None, 5.0, 1.0) == [0, 2]
    assert nearest_references(query, poses, 1, None, 0.0, 1.0) == [1]  # centre distance only


def make_record(step: int, track: str, x: float, name: str) -> PseudoViewRecord:
    pose = straight_drive(num=1)[0]
    pose[1, 3] = x
    return PseudoViewRecord(
        file=f"step_{step:06d}/{name}.png", alpha_file=f"step_{step:06d}/{name}.alpha.png", step=step, tracks=[track],
        kind="offset", camera_name=None, frame=0, offset_m=x, distance_from_start_m=abs(x),
        distance_to_target_m=1.0 - abs(x), reached=x == 1.0, camera_to_world=pose.tolist(),
        intrinsics={"fx": 10.0, "fy": 10.0, "cx": 4.0, "cy": 3.0, "width": 8, "height": 6}, references=[],
    )  # fmt: skip


def test_store_round_trip_active_views_and_resume_copy(tmp_path):
    store = PseudoViewStore(tmp_path / "run_a" / "pseudo_views")
    rng = np.random.default_rng(0)
    images = {}
    for step, x in [(10, 0.5), (20, 1.0), (30, 1.0)]:
        record = make_record(step, "offset_+1.0m/camera/frame_0000", x, f"offset_{x}")
        image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        alpha = rng.integers(0, 256, (6, 8), dtype=np.uint8)
        store.add(record, image, alpha)
        images[record.file] = (image, alpha)
    store.save_index(metres_per_scene_unit=1.0)
    index = json.loads((store.root / "index.json").read_text())
    assert index["version"] == 1 and len(index["views"]) == 3

    loaded = PseudoViewStore.load(store.root)
    assert [r.step for r in loaded.active(keep_previous_rounds=True)] == [10, 30]  # step 30 replaced step 20
    assert [r.step for r in loaded.active(keep_previous_rounds=False)] == [30]
    for record in loaded.records:
        np.testing.assert_array_equal(loaded.read_image(record), images[record.file][0])
        np.testing.assert_array_equal(loaded.read_alpha(record), images[record.file][1])
    assert loaded.latest_per_track()["offset_+1.0m/camera/frame_0000"].step == 30

    copied = loaded.copy_into(tmp_path / "run_b" / "pseudo_views", loaded.up_to(20))
    assert [r.step for r in copied.records] == [10, 20]
    assert (copied.root / "step_000020" / "offset_1.0.png").is_file()
    assert not (copied.root / "step_000030").exists()


def test_missing_local_fixer_fails_at_start_up(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(InputError, match="--pipeline.refine.fixer-base examples/no-such-fixer"):
        _check_fixer_source(RefineConfig(fixer_base="examples/no-such-fixer"))
    with pytest.raises(InputError, match="fixer-adapter"):
        _check_fixer_source(RefineConfig(fixer_adapter=str(tmp_path / "missing")))
    _check_fixer_source(RefineConfig(fixer_base="tiny"))


def test_an_uncached_hub_fixer_fails_before_training(tmp_path, monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached
    for offline in ("1", ""):  # with or without offline mode: nothing is downloaded outside `weights fetch`
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        start = time.perf_counter()
        with pytest.raises(InputError, match=r"--pipeline.refine.fixer-base stabilityai/sd-turbo: not in the local .*weights fetch sd-turbo") as info:
            _check_fixer_source(RefineConfig(fixer_base="stabilityai/sd-turbo"))
        assert time.perf_counter() - start < 2.0 and "\n" not in str(info.value)  # at once, one sentence

def test_presets():
    from difix_refiner.distillation.datamanager import DifixRefinerDatamanagerConfig
    from difix_refiner.distillation.pipeline import DifixRefinerPipelineConfig
    from difix_refiner.method_configs import (
        difix_refiner_cpu_method,
        difix_refiner_method,
    )

    gpu, cpu = difix_refiner_method.config, difix_refiner_cpu_method.config
    assert gpu.method_name == "difix-refiner" and cpu.method_name == "difix-refiner-cpu"
    for config in (gpu, cpu):
        assert isinstance(config.pipeline, DifixRefinerPipelineConfig)
        assert isinstance(config.pipeline.datamanager, DifixRefinerDatamanagerConfig)
        config.pipeline.refine.validate()
    assert gpu.pipeline.refine.steps_per_fix == 2000 and gpu.pipeline.refine.fixer_base is None
    assert cpu.machine.device_type == "cpu" and 100 <= cpu.pipeline.refine.steps_per_fix <= 200
    # From a checkout, the repository's own small fixer, whatever the working directory.
    fixer = Path(cpu.pipeline.refine.fixer_base)
    assert fixer.is_absolute() and fixer == Path(__file__).resolve().parents[2] / "examples" / "fixer-small"
    # The CPU schedule's refine rounds carry the novel cameras all the way to the +-2 m targets.
    refine = cpu.pipeline.refine
    rounds = len(range(refine.first_step(), cpu.max_num_iterations, refine.steps_per_fix))
    assert rounds * refine.shift_step >= max(abs(o) for o in refine.offsets)
    assert cpu.pipeline.datamanager.cache_images != "cpu"  # nerfstudio pins "cpu" caches, which needs CUDA
    assert "fixer" in difix_refiner_method.description and "CPU" in difix_refiner_cpu_method.description


def test_command_line_options():
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    args = ["difix-refiner", "--pipeline.refine.offsets", "-2", "-1.5", "3", "--pipeline.refine.enabled", "False",
            "--pipeline.refine.targets", "both", "--pipeline.refine.metres-per-scene-unit", "0.5", "pandaset-data"]  # fmt: skip
    refine = tyro.cli(AnnotatedBaseConfigUnion, args=args).pipeline.refine
    assert refine.offsets == (-2.0, -1.5, 3.0) and not refine.enabled
    assert (refine.targets, refine.metres_per_scene_unit) == ("both", 0.5)
