"""make-pairs end to end on CPU: every strategy on a slice of the bundled scene with tiny budgets.

About 2-3 minutes on 2 CPU cores: three 4-iteration ns-train runs (base, sparse, the cycle's second
run) at quarter resolution with few LiDAR points on frames 40-47 (the car moves there; frames 46-47
are the test split), then about 50 renders.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from difix_refiner.cameras.reference_views import DEFAULT_ANGLE_WEIGHT, pose_costs
from difix_refiner.commands.make_pairs import MakePairsCommand
from difix_refiner.core.errors import InputError
from difix_refiner.pairs.format import read_pairs, validate_pairs
from difix_refiner.pairs.pair_hints import load_hint

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pandaset_002"
BIN = Path(sys.executable).parent
FRAMES = range(40, 48)
TEST = (46, 48)
STRIDE = 3

pytestmark = pytest.mark.skipif(not (BIN / "ns-train").exists(), reason="needs nerfstudio's ns-train next to this Python")


def listing(folder: Path):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "out"
    before = listing(EXAMPLE)
    command = MakePairsCommand(
        data=EXAMPLE, output_dir=out, strategy=("underfit", "sparse", "cross-camera", "cycle"),
        cameras=("front_camera",), cross_camera_targets=("front_left_camera",),
        frame_start=FRAMES[0], frame_end=FRAMES[-1] + 1, test_frames=TEST, iterations=4, device="cpu",
        downscale_factor=4, lidar_max_points=1500, sparse_stride=STRIDE, cycle_offsets=(2.0,), seed=0,
    )  # fmt: skip
    command.main()
    assert listing(EXAMPLE) == before, "make-pairs wrote into the dataset"
    manifest = json.loads((out / "manifest.json").read_text())
    return out, manifest


def test_valid_difix_json_with_every_strategy(made):
    out, manifest = made
    counts = validate_pairs(out / "pairs.json")
    assert counts["train"] > 0 and counts["test"] > 0
    splits = read_pairs(out / "pairs.json")
    raw = json.loads((out / "pairs.json").read_text())
    for split in raw.values():
        for entry in split.values():
            assert set(entry) == {"image", "target_image", "ref_image", "prompt", "hint_image", "hint_mask"}
            assert entry["prompt"] == "remove degradation"
            assert not Path(entry["image"]).is_absolute()  # relative to the JSON: the folder can move
    strategies = {r["strategy"] for r in manifest["pairs"].values()}
    assert strategies == {"underfit", "sparse", "cross-camera", "cycle"}
    assert {r["label"] for r in manifest["pairs"].values()} >= {"underfit-25", "underfit-50", "cross-camera", "sparse-k3", "cycle+2m"}
    assert sum(len(s) for s in splits.values()) == len(manifest["pairs"])
    # The bundled scene has boxes: moving objects are masked out of targets and references by default.
    assert manifest["moving_object_masks"] is True
    assert any((out / "images" / "moving-masks").rglob("*.png"))
    # Runs are kept, including the cycle's rendered dataset (renders only, no photos).
    for run in manifest["runs"].values():
        assert (out / run["config"]).is_file() and (out / run["log"]).is_file()
    assert (out / "runs" / "cycle+2m-data" / "camera" / "front_camera" / "00.jpg").is_file()


def test_pairs_are_aligned(made):
    out, manifest = made
    for pid, rec in manifest["pairs"].items():
        render, target = rec["render_camera"], rec["target_camera"]
        np.testing.assert_allclose(render["camera_to_world"], target["camera_to_world"], atol=1e-5, err_msg=pid)
        for k in ("fx", "fy", "cx", "cy", "width", "height"):
            assert render[k] == target[k], (pid, k)
        with Image.open(out / rec["image"]) as im, Image.open(out / rec["target_image"]) as photo:
            assert im.size == photo.size == (target["width"], target["height"]), pid
        assert rec["camera"] in ("front_camera", "front_left_camera")
        if rec["strategy"] == "cross-camera":
            assert rec["camera"] == "front_left_camera"
        else:
            assert rec["camera"] == "front_camera"


def test_train_and_test_frames_are_disjoint(made):
    _, manifest = made
    used = {"train": set(), "test": set()}
    for rec in manifest["pairs"].values():
        assert rec["split"] == ("test" if TEST[0] <= rec["frame"] < TEST[1] else "train")
        used[rec["split"]].add(rec["frame"])
        if rec["ref_frame"] is not None:
            used[rec["split"]].add(rec["ref_frame"])
    assert used["train"] and used["test"]
    assert not used["train"] & used["test"]
    assert used["test"] <= set(range(*TEST))


def test_references_are_the_nearest_training_frames(made):
    _, manifest = made
    pairs = manifest["pairs"]
    # Every front-camera frame the base run trained on is an underfit target: their poses are the
    # candidates (the sparse run shares the base run's scene frame: same cameras, range, eval cameras).
    poses = {(r["camera"], r["frame"]): np.array(r["target_camera"]["camera_to_world"])
             for r in pairs.values() if r["strategy"] == "underfit"}  # fmt: skip
    assert sorted(f for _, f in poses) == list(FRAMES)
    for pid, rec in pairs.items():
        assert rec["ref_image"] is not None, pid
        target_key = (rec["camera"], rec["frame"])
        ref_key = (rec["ref_camera"], rec["ref_frame"])
        assert ref_key != target_key, pid
        trained = {k for k in poses if rec["strategy"] != "sparse" or (k[1] - FRAMES[0]) % STRIDE == 0}
        assert ref_key in trained, pid  # a photo the producing run trained on
        split = rec["split"]
        allowed = [k for k in sorted(trained) if k != target_key and (TEST[0] <= k[1] < TEST[1]) == (split == "test")]
        costs = pose_costs(rec["target_camera"]["camera_to_world"], np.stack([poses[k] for k in allowed]),
                           DEFAULT_ANGLE_WEIGHT, metres_per_scene_unit=rec["ref_metres_per_scene_unit"])  # fmt: skip
        assert np.isclose(costs.min(), rec["ref_cost"], rtol=1e-6), pid
        assert allowed[int(np.argmin(costs))] == ref_key, pid


def test_refuses_existing_results(made):
    out, _ = made
    with pytest.raises(InputError, match="not empty; pass --overwrite"):
        MakePairsCommand(data=EXAMPLE, output_dir=out, iterations=3, device="cpu").main()


def test_cross_camera_and_cycle_pairs_carry_hints_references_and_the_split(made):
    out, manifest = made
    hints = manifest["hints"]
    assert hints["sweep_frames"] == [f for f in FRAMES if not TEST[0] <= f < TEST[1]]  # training sweeps only
    assert set(range(*TEST)) <= set(hints["excluded_sweep_frames"])
    assert hints["coloured_from"] == ["front_camera"] and hints["points"] > 0
    by_view = {}
    for strategy in ("cross-camera", "cycle"):
        recs = {pid: r for pid, r in manifest["pairs"].items() if r["strategy"] == strategy}
        assert {r["split"] for r in recs.values()} == {"train", "test"}, strategy
        for pid, rec in recs.items():
            assert rec["split"] == ("test" if TEST[0] <= rec["frame"] < TEST[1] else "train"), pid
            assert rec["ref_image"] is not None, pid
            assert (rec["ref_camera"], rec["ref_frame"]) != (rec["camera"], rec["frame"]), pid
            assert (TEST[0] <= rec["ref_frame"] < TEST[1]) == (rec["split"] == "test"), pid
            hint = load_hint(out / rec["hint_image"], out / rec["hint_mask"])  # [4, H, W]
            assert tuple(hint.shape[1:]) == (rec["target_camera"]["height"], rec["target_camera"]["width"]), pid
            assert abs(rec["hint_coverage"] - float(hint[3].mean())) < 1e-6, pid
            assert rec["hint_coverage"] > 0.005, pid  # the LiDAR reaches every camera of the rig
            by_view.setdefault((rec["camera"], rec["frame"]), set()).add(rec["hint_image"])
            # The hint shows the scene the photo shows: its colours are closer to this photo than to the
            # photo flipped left-right (the same colours, in the wrong places).
            with Image.open(out / rec["target_image"]) as im:
                photo = np.asarray(im.convert("RGB"), np.float32) / 255.0
            valid = hint[3].numpy() > 0.5
            rgb = hint[:3].permute(1, 2, 0).numpy()
            assert np.abs(rgb - photo)[valid].mean() < np.abs(rgb - photo[:, ::-1])[valid].mean(), pid
    assert all(len(paths) == 1 for paths in by_view.values())  # one hint per view, shared by its pairs
    raw = json.loads((out / "pairs.json").read_text())
    for split in raw.values():
        for entry in split.values():
            assert (out / entry["hint_image"]).is_file() and (out / entry["hint_mask"]).is_file()
