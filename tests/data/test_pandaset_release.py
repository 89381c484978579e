"""The PandaSet release layout (pickled LiDAR and boxes): reading, cache, import-pandaset, six cameras.

Uses the shipped 2-frame fixture tests/fixtures/pandaset_release_002 (release format; 35,000 rows per
sweep, the rows that the converted pandaset_002 kept) and compares it with the converted layout:
examples/pandaset_002 (4,000 of those rows per training sweep, all of them in the evaluation sweeps) and tests/fixtures/pandaset_002_cuboids (JSON).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from release_fixture import BOXES, EXAMPLE, FIXTURE, FRAMES, REPO, user_cache  # noqa: F401  (user_cache: autouse)

from difix_refiner.commands.cli import run_command
from difix_refiner.commands.import_pandaset import ImportPandasetCommand
from difix_refiner.core.errors import InputError
from difix_refiner.data import pandaset_release as pr
from difix_refiner.data import release_cache
from difix_refiner.data.cuboids import load_cuboids
from difix_refiner.data.pandaset import (
    CAMERA_NAMES,
    PandasetFormatError,
    load_lidar_sweeps,
)
from difix_refiner.data.pandaset_import import import_pandaset


def release_copy(tmp_path: Path, name: str = "release") -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / name))


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("frame", FRAMES)
def test_release_sweep_gives_the_converted_points(frame):
    """The pickled sweep's rows are the converted sweep's points: examples/pandaset_002 kept 4,000 of them
    (all 35,000 in the evaluation sweeps) with examples/make_pandaset_example.py's rule (default_rng(seed=frame), sorted)."""
    sweep = pr.read_release_sweep(pr.release_file(FIXTURE, "lidar", frame))
    assert sweep["xyz"].dtype == np.float32 and sweep["xyz"].shape == (35000, 3)
    assert sweep["intensity"].dtype == np.uint8 and sweep["sensor"].dtype == np.uint8
    assert sweep["timestamp"].dtype == np.float64
    with np.load(EXAMPLE / "lidar" / f"{frame:02d}.npz") as converted:
        kept = converted["xyz"].shape[0]
        assert kept in (4000, 35000)
        keep = np.sort(np.random.default_rng(frame).choice(35000, size=kept, replace=False))
        np.testing.assert_array_equal(sweep["xyz"][keep], converted["xyz"])
        np.testing.assert_array_equal(sweep["intensity"][keep], converted["intensity"])
        np.testing.assert_array_equal(sweep["sensor"][keep], converted["sensor"])
    assert set(np.unique(sweep["sensor"])) == {0, 1}  # both LiDARs: Pandar64 and PandarGT
    sweep_time = json.loads((FIXTURE / "lidar" / "timestamps.json").read_text())[frame]
    assert np.abs(sweep["timestamp"] - sweep_time).max() < 0.15  # one 10 Hz sweep around its frame time
    ranges = np.linalg.norm(sweep["xyz"].astype(np.float64) - sweep["xyz"].astype(np.float64).mean(0), axis=1)
    assert 5.0 < np.median(ranges) < 60.0  # metres of a street scene


def test_lidar_sweeps_read_the_same_from_both_layouts(tmp_path):
    converted = tmp_path / "converted"
    import_pandaset(FIXTURE, converted, progress=False)
    from_release, from_npz = load_lidar_sweeps(FIXTURE, [0, 1, 2]), load_lidar_sweeps(converted, [0, 1, 2])
    assert sorted(from_release) == sorted(from_npz) == [0, 1]  # frame 2 has no sweep: skipped in both
    for f in FRAMES:
        assert from_release[f].dtype == np.float64
        np.testing.assert_array_equal(from_release[f], from_npz[f])


@pytest.mark.parametrize("frame", FRAMES)
def test_release_boxes_equal_the_converted_json(frame):
    boxes = load_cuboids(FIXTURE, frame)
    converted = json.loads((BOXES / f"{frame:02d}.json").read_text())
    assert len(boxes) == len(converted) > 100
    for box, ref in zip(boxes, converted):
        assert list(box) == list(ref) == list(pr.CUBOID_COLUMNS)
        for key, value in box.items():
            assert (round(value, 4) if isinstance(value, float) else value) == ref[key], key
    assert {b["label"] for b in boxes} >= {"Car", "Pedestrian"}
    moving = [b for b in boxes if not b["stationary"]]
    assert 0.3 < len(moving) / len(boxes) < 0.7  # the README's "about half ... are not stationary"
    car = next(b for b in boxes if b["label"] == "Car")
    assert 1.4 < car["dimensions.x"] < 2.5 and 3.5 < car["dimensions.y"] < 6.0  # width, length in metres


def test_load_cuboids_is_the_same_for_every_layout(tmp_path):
    imported = tmp_path / "imported"
    import_pandaset(FIXTURE, imported, progress=False)
    for f in FRAMES:
        assert load_cuboids(imported, f) == load_cuboids(FIXTURE, f)  # full precision both ways
    with pytest.raises(PandasetFormatError, match="no boxes for frame 5"):
        load_cuboids(FIXTURE, 5)


# ----------------------------------------------------------------------------- pickles are explicit


def test_only_release_names_are_unpickled(tmp_path):
    other = tmp_path / "data" / "00.pkl.gz"
    other.parent.mkdir()
    shutil.copyfile(pr.release_file(FIXTURE, "lidar", 0), other)
    with pytest.raises(PandasetFormatError, match="refusing to unpickle .*only the PandaSet release's"):
        pr.read_release_sweep(other)
    renamed = tmp_path / "lidar" / "sweep.pkl.gz"
    renamed.parent.mkdir()
    shutil.copyfile(other, renamed)
    with pytest.raises(PandasetFormatError, match="refusing to unpickle"):
        pr.read_release_table(renamed)


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_pickle_that_calls_anything_else_is_refused_without_running(tmp_path):
    root = release_copy(tmp_path)
    marker = tmp_path / "ran"
    with gzip.open(pr.release_file(root, "lidar", 0), "wb") as fh:
        pickle.dump(_RunsCommand(f"touch {marker}"), fh, protocol=3)
    with pytest.raises(PandasetFormatError, match=r"refers to (posix|nt)\.system.*refusing to unpickle"):
        load_lidar_sweeps(root, [0])
    assert not marker.exists()


# ----------------------------------------------------------------------------- user cache


def test_first_read_fills_the_cache_and_the_second_uses_it(tmp_path, user_cache, monkeypatch):
    root = release_copy(tmp_path)
    unpickled = []
    real_read = pr.read_release_table
    monkeypatch.setattr(pr, "read_release_table", lambda path: unpickled.append(Path(path).name) or real_read(path))
    source = pr.release_file(root, "lidar", 0)

    first = load_lidar_sweeps(root, [0])[0]
    entry = release_cache.cache_path(source, ".npz")
    assert unpickled == ["00.pkl.gz"] and entry.parent == user_cache and entry.is_file()
    assert not any(root.rglob("*.npz")) and tree_digest(root) == tree_digest(FIXTURE)  # nothing in the dataset
    stamp = entry.stat().st_mtime_ns

    second = load_lidar_sweeps(root, [0])[0]
    assert unpickled == ["00.pkl.gz"] and entry.stat().st_mtime_ns == stamp  # read from the cache only
    np.testing.assert_array_equal(first, second)

    boxes = load_cuboids(root, 1)
    assert load_cuboids(root, 1) == boxes and unpickled == ["00.pkl.gz", "01.pkl.gz"]


def test_a_changed_source_is_read_again(tmp_path, monkeypatch):
    root = release_copy(tmp_path)
    source = pr.release_file(root, "lidar", 0)
    before = release_cache.cached_release_sweep(source)
    old_entry = release_cache.cache_path(source, ".npz")
    shutil.copyfile(pr.release_file(root, "lidar", 1), source)  # the user replaced the file
    os.utime(source, ns=(old_entry.stat().st_mtime_ns + 10**9,) * 2)
    after = release_cache.cached_release_sweep(source)
    assert release_cache.cache_path(source, ".npz") != old_entry
    assert not np.array_equal(before["xyz"][:100], after["xyz"][:100])
    np.testing.assert_array_equal(after["xyz"], pr.read_release_sweep(pr.release_file(root, "lidar", 1))["xyz"])


def test_a_damaged_cache_entry_is_converted_again(tmp_path):
    root = release_copy(tmp_path)
    source = pr.release_file(root, "lidar", 0)
    good = release_cache.cached_release_sweep(source)
    release_cache.cache_path(source, ".npz").write_bytes(b"truncated")
    np.testing.assert_array_equal(release_cache.cached_release_sweep(source)["xyz"], good["xyz"])


# ----------------------------------------------------------------------------- the dataparser


def parse(data: Path, split: str, **kwargs):
    from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig

    kwargs = {"eval_mode": "cross-camera", "downscale_factor": 8, "lidar_max_points": 3000, **kwargs}
    return PandasetDataParserConfig(data=data, **kwargs).setup().get_dataparser_outputs(split)


def test_dataparser_trains_on_the_release_like_on_its_import(tmp_path, capsys, monkeypatch):
    """Seeds read from the pickles equal the seeds from the imported npz; the pickle notice comes once, in one line."""
    from nerfstudio.utils.rich_utils import CONSOLE

    monkeypatch.setattr(CONSOLE, "width", 1000)  # no wrapping: one log line is one line
    root = release_copy(tmp_path)
    train, test = parse(root, "train"), parse(root, "test")
    notices = [line for line in capsys.readouterr().out.splitlines() if "is a PandaSet release folder" in line]
    assert len(notices) == 1 and "lidar/NN.pkl.gz and annotations/cuboids/NN.pkl.gz" in notices[0]
    assert set(test.metadata["camera_names"]) == {"front_left_camera", "front_right_camera"}

    imported = tmp_path / "imported"
    import_pandaset(root, imported, progress=False)
    capsys.readouterr()
    ref = parse(imported, "train")
    assert "is a PandaSet release folder" not in capsys.readouterr().out
    assert 1000 < train.metadata["points3D_xyz"].shape[0] <= 3000
    np.testing.assert_array_equal(train.metadata["points3D_xyz"].numpy(), ref.metadata["points3D_xyz"].numpy())
    np.testing.assert_array_equal(train.metadata["points3D_rgb"].numpy(), ref.metadata["points3D_rgb"].numpy())
    assert train.dataparser_scale == ref.dataparser_scale


# ----------------------------------------------------------------------------- six cameras


def six_camera_copy(tmp_path: Path) -> Path:
    """The fixture with left, right and back cameras added (copies of front_left's files: only names are tested)."""
    root = release_copy(tmp_path, "six")
    for name in ("left_camera", "right_camera", "back_camera"):
        shutil.copytree(root / "camera" / "front_left_camera", root / "camera" / name)
    return root


def test_all_six_camera_names_are_accepted(tmp_path):
    from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig
    from difix_refiner.evaluation.runs import cross_camera_views

    assert CAMERA_NAMES == ("front_camera", "front_left_camera", "front_right_camera", "left_camera", "right_camera", "back_camera")
    root = six_camera_copy(tmp_path)
    trained, held = ("front_camera", "left_camera", "back_camera"), ("front_left_camera", "front_right_camera", "right_camera")
    train = parse(root, "train", cameras=trained, eval_cameras=held, load_lidar=False)
    test = parse(root, "test", cameras=trained, eval_cameras=held, load_lidar=False)
    assert train.metadata["camera_names"] == [n for n in trained for _ in FRAMES]
    assert test.metadata["camera_names"] == [n for n in held for _ in FRAMES]
    config = PandasetDataParserConfig(data=root, cameras=trained, eval_cameras=held)
    views, notes = cross_camera_views(config, np.arange(2), {(n, f) for n in trained for f in FRAMES}, root)
    assert [name for name, _ in views] == list(held) and not notes


def test_a_missing_rig_camera_and_an_unknown_name_both_list_what_there_is(tmp_path):
    has = r"it has: front_camera, front_left_camera, front_right_camera; PandaSet's are front_camera, .*back_camera"
    with pytest.raises(PandasetFormatError, match=rf"no camera 'back_camera' in .*\({has}\)"):
        parse(FIXTURE, "train", cameras=("back_camera",), load_lidar=False)
    with pytest.raises(PandasetFormatError, match=rf"no camera 'rear_camera' in .*\({has}\)"):
        parse(FIXTURE, "train", cameras=("rear_camera",), load_lidar=False)


# ----------------------------------------------------------------------------- import-pandaset


def test_import_pandaset_round_trip(tmp_path):
    src = release_copy(tmp_path)
    before = tree_digest(src)
    dst = tmp_path / "converted"
    ImportPandasetCommand(src=src, dst=dst).main()
    assert tree_digest(src) == before  # SRC never written to
    assert not any(dst.rglob("*.pkl.gz")) and not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    for f in FRAMES:
        want = pr.read_release_sweep(pr.release_file(src, "lidar", f))
        with np.load(dst / "lidar" / f"{f:02d}.npz") as got:
            assert sorted(got.files) == ["intensity", "sensor", "timestamp", "xyz"]
            for key, value in want.items():
                assert got[key].dtype == value.dtype
                np.testing.assert_array_equal(got[key], value)
        assert json.loads((dst / "annotations" / "cuboids" / f"{f:02d}.json").read_text()) == load_cuboids(src, f)
    after = tree_digest(dst)
    for name, digest in before.items():  # cameras, poses, timestamps, meta: copied byte for byte
        if not name.endswith(".pkl.gz"):
            assert after[name] == digest, name

    with pytest.raises(SystemExit, match="difix-refiner import-pandaset: error: .*already exists; pass --overwrite"):
        run_command("import-pandaset", ImportPandasetCommand(src=src, dst=dst))
    (dst / "lidar" / "00.npz").unlink()
    ImportPandasetCommand(src=src, dst=dst, overwrite=True).main()
    assert tree_digest(dst) == after


def test_import_pandaset_refusals(tmp_path):
    src = release_copy(tmp_path)
    with pytest.raises(InputError, match="must be outside SRC"):
        import_pandaset(src, src / "converted")
    with pytest.raises(InputError, match="must be outside SRC"):
        import_pandaset(src, src)
    converted = tmp_path / "converted"
    import_pandaset(src, converted, progress=False)
    with pytest.raises(InputError, match="already in this project's layout"):
        import_pandaset(converted, tmp_path / "again")
    with pytest.raises(InputError, match="not found"):
        import_pandaset(tmp_path / "missing", tmp_path / "out")
    assert not (src / "converted").exists() and not (tmp_path / "again").exists()
