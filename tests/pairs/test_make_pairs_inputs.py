"""make-pairs without training: input checks, frame splits, references, pose maths, the cycle's
PandaSet folder, and merge-pairs. Fast (a few seconds plus imports).

Bad input raises :class:`InputError` from the engines; ``difix_refiner.commands.cli`` alone turns it
into the one-line ``difix-refiner <command>: error:`` exit, tested here through ``entrypoint``."""

import json
from pathlib import Path

import numpy as np
import pytest
import tyro
from PIL import Image

from difix_refiner.cameras.reference_views import nearest_reference, pose_costs
from difix_refiner.cameras.scene_frame import scene_to_world, world_to_scene
from difix_refiner.commands.cli import entrypoint
from difix_refiner.commands.make_pairs import MakePairsCommand, MergePairsCommand
from difix_refiner.core.errors import InputError
from difix_refiner.data.pandaset import matrix_to_quat_wxyz, quat_wxyz_to_matrix
from difix_refiner.pairs.format import (
    PairEntry,
    PairsError,
    read_pairs,
    validate_pairs,
    write_pairs,
)
from difix_refiner.pairs.frame_split import FrameSplit, resolve_test_frames
from difix_refiner.pairs.make_pairs import MakePairsConfig, MakePairsJob, make_pairs
from difix_refiner.pairs.pandaset_writer import write_pandaset_folder
from difix_refiner.pairs.underfit import nearest_steps, save_period, underfit_steps

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pandaset_002"


def random_rotations(n, seed=0):
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return quat_wxyz_to_matrix(q / np.linalg.norm(q, axis=1, keepdims=True))


def pose(position, yaw_deg=0.0):
    """OpenGL camera at ``position`` looking along -z rotated by yaw about world y."""
    a = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return np.concatenate([rot, np.asarray(position, float)[:, None]], axis=1)


# ----------------------------------------------------------------------------- frame splits


def test_default_test_frames_are_the_last_quarter():
    split = resolve_test_frames(range(80), None, 0.25)
    assert (split.test_start, split.test_end) == (60, 80)
    assert split.split(59) == "train" and split.split(60) == "test" and split.split(79) == "test"
    none = resolve_test_frames(range(10), None, 0.0)
    assert all(none.split(f) == "train" for f in range(10))


def test_explicit_test_frames_and_bad_ranges():
    assert resolve_test_frames(range(40, 50), (47, 50), 0.25) == FrameSplit(47, 50)
    with pytest.raises(InputError, match="empty"):
        resolve_test_frames(range(10), (5, 5), 0.25)
    with pytest.raises(InputError, match="empty"):
        resolve_test_frames(range(10), (7, 3), 0.25)
    with pytest.raises(InputError, match="outside"):
        resolve_test_frames(range(10), (8, 12), 0.25)
    with pytest.raises(InputError, match="covers every frame"):
        resolve_test_frames(range(10), (0, 10), 0.25)
    with pytest.raises(InputError, match="test-fraction"):
        resolve_test_frames(range(10), None, 1.0)


def test_underfit_checkpoints():
    assert underfit_steps(300, (0.25, 0.5, 0.75)) == [75, 150, 225]
    assert save_period(300, [75, 150, 225]) == 75
    assert underfit_steps(4, (0.25, 0.5, 0.75)) == [1, 2]  # step 3 is the finished run
    assert save_period(4, [1, 2]) == 1
    assert underfit_steps(2, (0.5,)) == []
    assert save_period(500, []) == 500  # final checkpoint only
    assert save_period(10000, [2501, 5000]) == 10000 // 40  # too many checkpoints: nearest ones instead
    assert nearest_steps([250, 2500, 2750, 5000], [2501, 5000]) == [2500, 5000]


# ----------------------------------------------------------------------------- references


def test_reference_is_nearest_by_distance_plus_weighted_angle():
    query = pose([0, 0, 0])
    candidates = np.stack([pose([0, 0, 0]), pose([0, 0, -1.0]), pose([0.2, 0, 0], yaw_deg=60), pose([0, 0, 3.0])])
    not_target = np.array([False, True, True, True])  # candidate 0 is the target itself
    costs = pose_costs(query, candidates, angle_weight=5.0)
    np.testing.assert_allclose(costs[1], 1.0)
    np.testing.assert_allclose(costs[2], 0.2 + 5.0 * np.deg2rad(60))
    assert nearest_reference(query, candidates, not_target, angle_weight=5.0) == 1
    # Heading barely matters with a tiny weight: the closer, turned camera wins.
    assert nearest_reference(query, candidates, not_target, angle_weight=0.01) == 2
    # Scene units are converted to metres before the angle term is added.
    assert nearest_reference(query, candidates, not_target, angle_weight=5.0, metres_per_scene_unit=10.0) == 2
    assert nearest_reference(query, candidates, np.zeros(4, bool)) is None


# ----------------------------------------------------------------------------- pose maths


def test_quaternions_round_trip():
    rot = random_rotations(200)
    rot[:4] = [np.eye(3), np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])]  # w = 0 cases
    q = matrix_to_quat_wxyz(rot)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quat_wxyz_to_matrix(q), rot, atol=1e-12)


def test_scene_world_round_trip():
    rng = np.random.default_rng(1)
    transform = np.concatenate([random_rotations(1, 2)[0], rng.normal(size=(3, 1))], axis=1)  # [3, 4]
    world = np.concatenate([random_rotations(5, 3), rng.normal(size=(5, 3, 1)) * 10], axis=2)  # [5, 3, 4]
    scene = world_to_scene(world, transform, 0.25)
    # Points: scene = s * (R x + t); rotations: R_T R.
    np.testing.assert_allclose(scene[:, :, 3], 0.25 * (world[:, :, 3] @ transform[:, :3].T + transform[:, 3]))
    np.testing.assert_allclose(scene[:, :, :3], transform[:, :3] @ world[:, :, :3])
    np.testing.assert_allclose(scene_to_world(scene, transform, 0.25), world, atol=1e-12)


def test_cycle_folder_keeps_cameras_exactly(tmp_path):
    """Poses and intrinsics written for the cycle's second run come back from pandaset-data unchanged."""
    from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig

    frames = list(range(40, 46))
    first = PandasetDataParserConfig(data=EXAMPLE, frame_start=40, frame_end=46, downscale_factor=4, load_lidar=False,
                                     eval_mode="cross-camera", eval_cameras=("front_left_camera",)).setup()  # fmt: skip
    out = first.get_dataparser_outputs("train")
    a_t, a_s = out.dataparser_transform.double().numpy(), float(out.dataparser_scale)
    cams = out.cameras
    shifted = cams.camera_to_worlds.double().numpy().copy()
    shifted[:, :, 3] += np.array([0.3, -0.2, 0.05])  # any other path, in the first run's scene frame
    world = scene_to_world(shifted, a_t, a_s)
    images = [np.full((int(cams.height[0]), int(cams.width[0]), 3), 10 * i, np.uint8) for i in range(len(frames))]
    spec = {"front_camera": {"images": images, "camera_to_world": world,
                             **{k: float(getattr(cams, k)[0, 0]) for k in ("fx", "fy", "cx", "cy")}}}  # fmt: skip
    folder = tmp_path / "cycle-data"
    info = write_pandaset_folder(folder, EXAMPLE, frames, spec, eval_copy_of="front_camera")
    assert info["eval_camera"] == "front_camera_eval"
    assert sorted(p.name for p in (folder / "lidar").glob("*.npz")) == [f"{j:02d}.npz" for j in range(6)]

    second = PandasetDataParserConfig(data=folder, downscale_factor=1, load_lidar=True, lidar_max_points=500,
                                      auto_scale_poses=False, scale_factor=a_s, eval_mode="cross-camera",
                                      eval_cameras=("front_camera_eval",)).setup()  # fmt: skip
    out_b = second.get_dataparser_outputs("train")
    assert out_b.metadata["frame_indices"] == list(range(6))  # every frame trains
    assert out_b.metadata["points3D_xyz"].shape[0] > 0  # LiDAR seeds came along
    b_t, b_s = out_b.dataparser_transform.double().numpy(), float(out_b.dataparser_scale)
    assert np.isclose(b_s, a_s)
    back = world_to_scene(scene_to_world(out_b.cameras.camera_to_worlds.double().numpy(), b_t, b_s), a_t, a_s)
    np.testing.assert_allclose(back, shifted, atol=1e-5)
    for k in ("fx", "fy", "cx", "cy", "width", "height"):
        np.testing.assert_allclose(getattr(out_b.cameras, k).numpy(), getattr(cams, k).numpy(), rtol=1e-6)


# ----------------------------------------------------------------------------- bad input


def config(tmp_path, **kw):
    args = dict(data=EXAMPLE, output_dir=tmp_path / "out", iterations=3, device="cpu", downscale_factor=4)
    args.update(kw)
    return MakePairsConfig(**args)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(strategy=("underfit", "blurry")), "unknown strategy 'blurry'"),
        (dict(test_frames=(70, 60)), "is empty"),
        (dict(test_frames=(60, 90)), "outside"),
        (dict(frame_start=40, frame_end=50, test_frames=(40, 50)), "covers every frame"),
        (dict(frame_end=81), "0 <= start < end <= 80"),
        (dict(frame_start=30, frame_end=30), "0 <= start < end"),
        (dict(cameras=("back_camera",)), "unknown camera back_camera"),
        (dict(strategy=("cross-camera",), cross_camera_targets=("front_camera",)), "not among --cameras"),
        (dict(strategy=("cycle",), frame_end=10), "cycle cannot shift"),  # the car stands still
        (dict(strategy=("cycle",), cycle_offsets=(0.0,)), "non-zero metres"),
        (dict(iterations=2), "--iterations must be at least 3"),
        (dict(underfit_fractions=(0.5, 1.0)), "strictly between 0 and 1"),
        (dict(sparse_stride=1), "at least 2"),
        (dict(dataparser_args="--frame-start 3"), "must not set --frame-start"),
        (dict(method="nerfacto"), "--method 'nerfacto' is not supported"),
        (dict(dataparser="nerfstudio-data", strategy=("underfit", "cycle")), "needs the pandaset-data dataparser"),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, kw, message):
    with pytest.raises(InputError, match=message):
        make_pairs(config(tmp_path, **kw))
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_input_exits_with_one_line(tmp_path):
    """On the command line, bad input is one line naming the command, before any training."""
    args = ["make-pairs", "--data", str(EXAMPLE), "--output-dir", str(tmp_path / "out"), "--iterations", "3",
            "--device", "cpu", "--test-frames", "70", "60"]  # fmt: skip
    with pytest.raises(SystemExit, match="is empty") as info:
        entrypoint(args)
    assert str(info.value).startswith("difix-refiner make-pairs: error: --test-frames 70 60 is empty")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_output_folder_conflicts(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty; pass --overwrite"):
        make_pairs(config(tmp_path))
    with pytest.raises(InputError, match="must not contain each other"):
        make_pairs(config(tmp_path, output_dir=EXAMPLE / "pairs"))
    assert not (EXAMPLE / "pairs").exists()
    with pytest.raises(InputError, match="data folder not found"):
        make_pairs(config(tmp_path, data=tmp_path / "missing"))


def test_overwrite_replaces_only_make_pairs_results(tmp_path):
    out = tmp_path / "out"
    (out / "runs" / "base").mkdir(parents=True)
    (out / "images").mkdir()
    (out / ".images.x1.partial").mkdir()  # left by a killed run
    (out / ".pairs.x2.partial.json").write_text("{")  # likewise (core.atomic's temporary file name)
    (out / "pairs.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    job = MakePairsJob(config(tmp_path, overwrite=True))
    job.check()
    job.prepare_output()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "runs"]
    assert not any((out / "runs").iterdir())


def test_unknown_strategy_on_the_command_line(tmp_path):
    with pytest.raises(SystemExit) as info:
        tyro.cli(MakePairsCommand, args=["--data", "x", "--output-dir", str(tmp_path), "--strategy", "blurry"])
    assert info.value.code == 2


# ----------------------------------------------------------------------------- merge-pairs


def pair_set(folder: Path, frames, size=(8, 6)) -> Path:
    folder.mkdir(parents=True)
    entries = {}
    for f in frames:
        paths = []
        for kind in ("render", "photo"):
            p = folder / f"{kind}_{f}.png"
            Image.new("RGB", size, (f, 0, 0)).save(p)
            paths.append(p)
        split = "test" if f >= 3 else "train"
        entries.setdefault(split, {})[f"underfit-25_front_camera_{f:05d}"] = PairEntry(f"x{f}", paths[0], paths[1], (paths[1],))
    return write_pairs(entries, folder / "pairs.json")


def test_merge_pairs_command(tmp_path):
    a = pair_set(tmp_path / "a", [0, 1, 3])
    b = pair_set(tmp_path / "b", [0, 4])
    out = tmp_path / "merged"
    tyro.cli(MergePairsCommand, args=["--inputs", f"scene1={a}", f"scene2={b}", "--output", str(out)]).main()
    merged = read_pairs(out / "pairs.json")
    assert sorted(merged["train"]) == ["scene1/underfit-25_front_camera_00000", "scene1/underfit-25_front_camera_00001",
                                       "scene2/underfit-25_front_camera_00000"]  # fmt: skip
    assert sorted(merged["test"]) == ["scene1/underfit-25_front_camera_00003", "scene2/underfit-25_front_camera_00004"]
    assert validate_pairs(out / "pairs.json") == {"train": 3, "test": 2}
    raw = json.loads((out / "pairs.json").read_text())
    assert raw["test"]["scene2/underfit-25_front_camera_00004"]["image"] == "../b/render_4.png"  # relative to the output

    with pytest.raises(InputError, match="already exists"):
        MergePairsCommand(inputs=(f"scene1={a}",), output=out).main()
    with pytest.raises(PairsError, match="scene name 'scene1' is used by both"):
        MergePairsCommand(inputs=(f"scene1={a}", f"scene1={b}"), output=tmp_path / "m2.json").main()
    with pytest.raises(PairsError, match="not found"):
        MergePairsCommand(inputs=(f"scene1={tmp_path / 'none.json'}",), output=tmp_path / "m3.json").main()
    with pytest.raises(InputError, match="at least one pair JSON"):
        MergePairsCommand(inputs=(), output=tmp_path / "m4.json").main()
    # On the command line: one line naming the command.
    with pytest.raises(SystemExit, match="^difix-refiner merge-pairs: error: .*already exists"):
        entrypoint(["merge-pairs", "--inputs", f"scene1={a}", "--output", str(out)])
