"""make-pairs' LiDAR hints, moving-object masks and variants, without training (seconds).

A synthetic view with known points checks that the collector stores each pair's hint at the input's
camera, shares it across labels, masks moving objects out of targets and references, and writes a
valid pair set; the bundled scene checks that the hints' sweeps are the training frames' only.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difix_refiner.core.errors import InputError
from difix_refiner.data.lidar_hint import HintSettings
from difix_refiner.distillation.refine_config import RefineConfig
from difix_refiner.pairs.collector import PairCollector
from difix_refiner.pairs.format import (
    PairDataset,
    validate_pairs,
    write_pairs,
)
from difix_refiner.pairs.frame_split import FrameSplit
from difix_refiner.pairs.hint_source import (
    HintSource,
    build_hint_source,
    hint_sweep_frames,
    view_geometry,
)
from difix_refiner.pairs.make_pairs import MakePairsConfig, make_pairs
from difix_refiner.pairs.moving_masks import MASKED_REFERENCE_GREY
from difix_refiner.pairs.pair_hints import load_hint
from difix_refiner.pairs.variants import make_variants
from difix_refiner.pairs.views import RunViews, View, camera_record

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pandaset_002"
W, H = 16, 12
SCALE = 0.5  # scene units per metre
TRANSFORM = np.array([[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 0.0, -1.0], [0.0, 0.0, 1.0, 0.5]])  # world -> scene shift


def cameras_at(world_x: float):
    """nerfstudio Cameras [1] in the scene frame of a camera at world (x, 0, 0) looking along world -z."""
    from nerfstudio.cameras.cameras import Cameras

    pose = np.eye(4)[:3]
    pose[:, 3] = SCALE * (np.array([world_x, 0.0, 0.0]) + TRANSFORM[:, 3])
    return Cameras(camera_to_worlds=torch.from_numpy(pose).float()[None], fx=10.0, fy=10.0, cx=8.0, cy=6.0, width=W, height=H)


def photo(value: int) -> np.ndarray:
    return np.full((H, W, 3), value, np.uint8)


def view(frame: int, trained: bool = True, camera: str = "front_camera") -> View:
    return View(camera, frame, cameras_at(0.1 * frame), trained, lambda: photo(20 + frame))


def pool(views) -> RunViews:
    return RunViews("base", Path("config.yml"), list(views), TRANSFORM, SCALE, 1.0 / SCALE)


def source() -> HintSource:
    """One red point 5 m straight ahead of the camera at x = 0 (world metres)."""
    return HintSource(np.array([[0.0, 0.0, -5.0]]), np.array([[255, 0, 0]], np.uint8), [0, 1], [2], ["front_camera"],
                      HintSettings(splat_radius_px=1, occlusion_radius_px=0))  # fmt: skip


def test_view_geometry_undoes_the_scene_frame():
    geometry = view_geometry(cameras_at(3.0), TRANSFORM, SCALE)
    np.testing.assert_allclose(geometry.c2w_world, np.concatenate([np.eye(3), [[3.0], [0.0], [0.0]]], axis=1), atol=1e-6)
    np.testing.assert_allclose(geometry.K, [[10, 0, 8], [0, 10, 6], [0, 0, 1]])
    assert (geometry.width, geometry.height) == (W, H)


def test_every_pair_stores_the_hint_of_its_camera(tmp_path):
    images = tmp_path / "images"
    collector = PairCollector(images, FrameSplit(2, 3), 5.0, "remove degradation", hints=source())
    views = [view(0), view(1), view(2)]
    run = pool(views)
    render = photo(200)
    for label in ("underfit-25", "cross-camera"):
        collector.add(label=label, strategy=label.split("-")[0], target=views[0], image=render,
                      render_camera=camera_record(views[0].cameras), pool=run, run="base", step=1)  # fmt: skip
    rec = collector.records["underfit-25_front_camera_00000"]
    assert rec["hint_image"] == collector.records["cross-camera_front_camera_00000"]["hint_image"]  # once per view
    hint = load_hint(images / rec["hint_image"].split("/", 1)[1], images / rec["hint_mask"].split("/", 1)[1])  # [4, H, W]
    assert hint.shape == (4, H, W)
    expected = np.zeros((H, W), bool)
    expected[5:8, 7:10] = True  # the point projects to pixel (8, 6); a 3x3 splat
    np.testing.assert_array_equal(hint[3].numpy() > 0.5, expected)
    np.testing.assert_allclose(hint[:3, 6, 8].numpy(), [1.0, 0.0, 0.0])
    assert hint[:3][:, ~torch.from_numpy(expected)].abs().max() == 0  # unknown, not black: the mask says so
    assert rec["hint_coverage"] == pytest.approx(9 / (W * H))
    entry = collector.pair_entries(images)["train"]["underfit-25_front_camera_00000"]
    assert entry.hint_image == images / "hints/front_camera/00000.png"
    assert entry.ref_images == (images / "photos/front_camera/00001.png",)  # nearest trained photo, same split


def test_pairs_json_with_hints_loads_in_the_dataset(tmp_path):
    images = tmp_path / "images"
    collector = PairCollector(images, FrameSplit(2, 3), 5.0, "remove degradation", hints=source())
    views = [view(0), view(1), view(2)]
    for v in views:
        collector.add(label="underfit-25", strategy="underfit", target=v, image=photo(200),
                      render_camera=camera_record(v.cameras), pool=pool(views), run="base", step=1)  # fmt: skip
    path = write_pairs(collector.pair_entries(images), tmp_path / "pairs.json")
    assert validate_pairs(path) == {"train": 2, "test": 1}
    raw = json.loads(path.read_text())
    assert all({"hint_image", "hint_mask"} <= set(e) for split in raw.values() for e in split.values())
    item = PairDataset(path, "train", with_hint=None)[0]
    assert item["hint"].shape[0] == 4


def test_variants_keep_labels_photos_and_hints_apart(tmp_path):
    images = tmp_path / "images"
    collector = PairCollector(images, FrameSplit(2, 3), 5.0, "remove degradation", hints=source())
    views = [view(0), view(1)]
    for suffix, folder in (("-d2", "d2"), ("-d1", "d1")):
        collector.set_variant(suffix, folder)
        collector.add(label="underfit-25", strategy="underfit", target=views[0], image=photo(200),
                      render_camera=camera_record(views[0].cameras), pool=pool(views), run="base" + suffix, step=1)  # fmt: skip
    assert set(collector.records) == {"underfit-25-d2_front_camera_00000", "underfit-25-d1_front_camera_00000"}
    rec = collector.records["underfit-25-d1_front_camera_00000"]
    assert rec["label"] == "underfit-25-d1"
    assert rec["target_image"] == "images/photos/d1/front_camera/00000.png"
    assert rec["hint_image"] == "images/hints/d1/front_camera/00000.png"
    assert (images / "photos/d2/front_camera/00000.png").is_file()


def test_variants_name_only_what_varies():
    one = make_variants([4], [300])
    assert [(v.downscale, v.iterations, v.suffix, v.folder) for v in one] == [(4, 300, "", "")]
    grid = make_variants([2, 1], [300, 1000])
    assert [v.suffix for v in grid] == ["-d2-i300", "-d2-i1000", "-d1-i300", "-d1-i1000"]
    assert [v.folder for v in grid] == ["d2", "d2", "d1", "d1"]
    assert [v.suffix for v in make_variants([2], [300, 1000])] == ["-i300", "-i1000"]
    with pytest.raises(InputError, match="repeats"):
        make_variants([2, 2], [300])


def test_moving_objects_are_masked_out_of_targets_and_references(tmp_path):
    images = tmp_path / "images"
    box = np.zeros((H, W), bool)
    box[2:5, 3:9] = True
    asked = []

    def masks(camera, frame, geometry):
        asked.append((camera, frame, geometry.width, geometry.height))
        return box if frame == 0 or frame == 1 else None

    collector = PairCollector(images, FrameSplit(5, 6), 5.0, "remove degradation", masks=masks)
    views = [view(0), view(1), view(3)]
    render = photo(200)
    collector.add(label="underfit-25", strategy="underfit", target=views[0], image=render,
                  render_camera=camera_record(views[0].cameras), pool=pool(views), run="base", step=1)  # fmt: skip
    entry = collector.pair_entries(images)["train"]["underfit-25_front_camera_00000"]
    target = np.asarray(Image.open(entry.target_image))
    np.testing.assert_array_equal(target[box], render[box])  # the render's colours: nothing asked there
    np.testing.assert_array_equal(target[~box], photo(20)[~box])
    reference = np.asarray(Image.open(entry.ref_images[0]))  # frame 1, nearest
    assert (reference[box] == MASKED_REFERENCE_GREY).all() and (reference[~box] == 21).all()
    np.testing.assert_array_equal(np.asarray(Image.open(images / "photos/front_camera/00000.png")), photo(20))  # plain photo kept
    rec = collector.records["underfit-25_front_camera_00000"]
    assert rec["moving_masked_target"].startswith("images/targets-masked/") and rec["moving_masked_reference"]
    assert asked == [("front_camera", 0, W, H), ("front_camera", 1, W, H)]


def test_hints_use_training_sweeps_only(monkeypatch):
    import difix_refiner.data.pandaset as pandaset

    requested = []
    real = pandaset.load_lidar_sweeps

    def spy(root, frames):
        requested.append(list(frames))
        return real(root, frames)

    monkeypatch.setattr(pandaset, "load_lidar_sweeps", spy)
    split = FrameSplit(46, 48)
    src = build_hint_source(EXAMPLE, ["front_camera"], range(40, 48), split, exclude_frames=(44,), voxel_size=0.3)
    assert requested == [[40, 41, 42, 43, 45]]
    assert src.sweep_frames == [40, 41, 42, 43, 45] and src.excluded_frames == [44, 46, 47]
    assert len(src.points) > 100 and src.colours.dtype == np.uint8 and src.colours.shape == src.points.shape
    assert src.record()["coloured_from"] == ["front_camera"]
    assert hint_sweep_frames(range(5), FrameSplit(3, 5)) == ([0, 1, 2], [3, 4])


def test_cycle_defaults_to_the_refine_loops_offsets():
    assert MakePairsConfig(data=EXAMPLE, output_dir=Path("x")).cycle_offsets == RefineConfig().offsets


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(downscale_factors=(2, 0)), "--downscale-factors must all be >= 1"),
        (dict(downscale_factors=(2, 2)), "repeats a factor"),
        (dict(downscale_factor=2, downscale_factors=(2, 1)), "either --downscale-factor or --downscale-factors"),
        (dict(iteration_counts=(300, 2)), "--iteration-counts must be at least 3"),
        (dict(hint_voxel_size=0.0), "--hint-voxel-size must be positive"),
        (dict(dataparser="nerfstudio-data", strategy=("underfit",), every_camera=True), "--every-camera needs"),
    ],
)
def test_bad_variant_and_hint_options(tmp_path, kw, message):
    args = dict(data=EXAMPLE, output_dir=tmp_path / "out", iterations=3, device="cpu")
    args.update(kw)
    with pytest.raises(InputError, match=message):
        make_pairs(MakePairsConfig(**args))
    assert not (tmp_path / "out").exists()


def plan_of(tmp_path, monkeypatch, **kw):
    """The runs and renders make-pairs would do (training and rendering replaced by records)."""
    import difix_refiner.pairs.make_pairs as module
    from difix_refiner.pairs.make_pairs import MakePairsJob

    options = dict(data=EXAMPLE, output_dir=tmp_path / "out", iterations=3, device="cpu", frame_start=40, frame_end=48, hints=False)
    job = MakePairsJob(MakePairsConfig(**{**options, **kw}))
    job.check()
    calls = []

    def train(self, trainer, variant, name, cameras, targets, underfit, progress):
        calls.append(("train", name + variant.suffix, list(cameras), list(targets), underfit, trainer.iterations))
        return name + variant.suffix

    def render(self, progress, trainer, run, strategies, variant):
        calls.append(("render", run, list(strategies)))
        return f"views of {run}", ["shifted"]

    monkeypatch.setattr(MakePairsJob, "_train", train)
    monkeypatch.setattr(MakePairsJob, "_render_run", render)
    monkeypatch.setattr(module, "render_sparse_stride", lambda trainer, collector, progress, **k: calls.append(
        ("sparse", k["cameras"], k["suffix"], k["downscale_factor"], k["eval_args"], trainer.iterations)))  # fmt: skip
    monkeypatch.setattr(module, "render_cycle", lambda trainer, collector, progress, views, shifted, cameras, suffix: calls.append(
        ("cycle", views, cameras, suffix, trainer.iterations)))  # fmt: skip
    job.collector = PairCollector(tmp_path / "images", job.split, 5.0, "remove degradation")
    for variant in job.variants:
        job._run_variant(None, variant)
    return calls


def test_every_camera_and_several_resolutions_plan_their_runs(tmp_path, monkeypatch):
    rig = ["front_camera", "front_left_camera", "front_right_camera"]
    sides = ["front_left_camera", "front_right_camera"]
    calls = plan_of(tmp_path, monkeypatch, strategy=("underfit", "cross-camera", "sparse", "cycle"), every_camera=True,
                    downscale_factors=(4, 8), cycle_offsets=(-1.0, 1.0))  # fmt: skip
    expected = []
    for factor in (4, 8):
        s = f"-d{factor}"
        expected += [
            ("train", f"base{s}", ["front_camera"], sides, False, 3),  # a front-only reconstruction for cross-camera
            ("render", f"base{s}", ["cross-camera"]),
            ("train", f"rig{s}", rig, [], True, 3),  # every camera for underfit and the cycle
            ("render", f"rig{s}", ["underfit", "cycle"]),
            ("sparse", rig, s, factor, {"eval_mode": "interval", "eval_interval": 8}, 3),
            ("cycle", f"views of rig{s}", rig, s, 3),
        ]
    assert calls == expected


def test_one_base_run_without_every_camera_at_several_lengths(tmp_path, monkeypatch):
    calls = plan_of(tmp_path, monkeypatch, strategy=("underfit", "cross-camera", "cycle"), iteration_counts=(3, 5),
                    cycle_offsets=(2.0,))  # fmt: skip
    sides = ["front_left_camera", "front_right_camera"]
    assert calls == [
        ("train", "base-i3", ["front_camera"], sides, True, 3),
        ("render", "base-i3", ["underfit", "cross-camera", "cycle"]),
        ("cycle", "views of base-i3", ["front_camera"], "-i3", 3),
        ("train", "base-i5", ["front_camera"], sides, True, 5),
        ("render", "base-i5", ["underfit", "cross-camera", "cycle"]),
        ("cycle", "views of base-i5", ["front_camera"], "-i5", 5),
    ]
