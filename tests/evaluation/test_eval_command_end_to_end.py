"""End to end on CPU: train a tiny difix-refiner run, then ``difix-refiner eval`` on it.

A 3-iteration run on the bundled PandaSet excerpt at quarter resolution with few LiDAR seeds; the
evaluation uses large strides so that only 8 views are rendered (1 held-out frame, 1 frame of
each side camera, 1 frame at 5 offsets) and 5 go through the tiny random-weight fixer.
"""

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from difix_refiner.commands.cli import entrypoint

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(not (BIN / "ns-train").exists(), reason="needs ns-train next to this python")

SHIFTED_KEYS = {
    "lidar_psnr", "lidar_points", "depth_absrel", "depth_rmse", "depth_pixels", "sharpness", "sharpness_ratio",
    "fixer_agreement_psnr", "fixer_mean_abs_diff", "fid", "kid_mean", "kid_std", "fid_fixed", "kid_mean_fixed",
    "lidar_psnr_fixed",
}  # fmt: skip


def test_eval_writes_metrics_and_contact_sheet(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the run's data path is relative to the repository
    out = tmp_path / "eval"
    args = [
        "--load-config", str(tiny_run), "--output-dir", str(out), "--fixer-base", "tiny",
        "--frame-stride", "80", "--heldout-stride", "10", "--cross-camera-stride", "80",
        "--thumbnail-width", "80",
    ]  # fmt: skip
    entrypoint(["eval", *args])

    metrics = json.loads((out / "metrics.json").read_text())
    assert {"heldout", "cross_camera", "shifted", "recorded", "skipped", "info"} <= set(metrics)
    for kind in ("heldout", "cross_camera"):
        assert metrics[kind]["num_views"] >= 1
        assert 5.0 < metrics[kind]["psnr"] < 60.0 and 0.0 < metrics[kind]["ssim"] <= 1.0
    assert set(metrics["cross_camera"]["per_camera"]) == {"front_left_camera", "front_right_camera"}
    # The "+" step: every held-out view scored again after the (random tiny) fixer, which changes it.
    for kind in ("heldout", "cross_camera"):
        fixed = metrics[kind]["fixed"]
        assert fixed["num_views"] == metrics[kind]["num_views"]
        assert 0.0 < fixed["psnr"] < 60.0 and fixed["psnr"] != metrics[kind]["psnr"]
    assert set(metrics["shifted"]) == {"-2", "-1", "+1", "+2"}
    for key, entry in metrics["shifted"].items():
        assert SHIFTED_KEYS <= set(entry), key
        assert entry["lidar_points"] > 0 and entry["depth_pixels"] > 0
        assert entry["lidar_psnr"] > 0 and entry["depth_absrel"] >= 0 and entry["depth_rmse"] >= 0
        assert entry["sharpness"] > 0 and entry["fixer_agreement_psnr"] is not None
        # The "+" step off the path: the same LiDAR points scored on the fixed render, which the fixer changed.
        assert entry["lidar_psnr_fixed"] > 0 and entry["lidar_psnr_fixed"] != entry["lidar_psnr"]
        assert entry["fid"] is None  # no Inception weights given
    assert metrics["recorded"]["sharpness"] > 0 and metrics["recorded"]["lidar_psnr"] > 0
    assert "fid_kid" in metrics["skipped"] and "fixer" not in metrics["skipped"]
    if metrics["heldout"]["lpips"] is None:
        assert "lpips" in metrics["skipped"]
    assert metrics["info"]["camera"] == "front_camera" and len(metrics["info"]["frames"]) == 1
    # LiDAR truth the run never trained on, without moving objects; the sweeps read are recorded.
    split = json.loads((tiny_run.parent / "lidar_sweep_split.json").read_text())
    sweeps = metrics["info"]["lidar_sweeps"]
    assert sweeps["sweeps"] and set(sweeps["sweeps"]) <= set(split["eval"]) and sweeps["moving_object_points_removed"] > 0
    for kind in ("heldout", "cross_camera"):  # whole image and moving objects left out, both reported
        assert 5.0 < metrics[kind]["psnr_static_pixels"] < 60.0 and 0 <= metrics[kind]["moving_pixel_fraction"] < 1
    assert all(e["fixer_change_static"] is not None for e in metrics["shifted"].values())
    assert Image.open(out / "depth_contact_sheet.png").height > 4 * 45  # photo + depth at 0, +2, -2 m
    assert Image.open(out / "moving_object_masks.png").height > 3 * 45  # one row per camera

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 80  # one frame column
    # Rows: photo, recorded render, shifted render, shifted + fixer.
    assert sheet.height > 4 * 45
    assert not list(out.glob(".*partial*"))  # atomic writes leave nothing behind

    # An existing output is refused unless --overwrite (checked before anything slow).
    with pytest.raises(SystemExit, match="^difix-refiner eval: error: .*--overwrite"):
        entrypoint(["eval", *args])
    with pytest.raises(SystemExit, match="^difix-refiner eval: error: .*offsets"):
        entrypoint(["eval", *args, "--overwrite", "--offsets", "0"])


def test_eval_compares_two_runs(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "compare"
    entrypoint(
        [
            "eval", "--load-config", str(tiny_run), "--compare-config", str(tiny_run), "--output-dir", str(out),
            "--label", "refiner", "--compare-label", "baseline", "--fixer-base", "none", "--offsets", "-1", "1",
            "--frame-stride", "80", "--heldout-stride", "10", "--cross-camera-stride", "80", "--thumbnail-width", "80",
        ]
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"refiner", "baseline"}
    for run in metrics.values():
        assert set(run["shifted"]) == {"-1", "+1"}
        assert run["shifted"]["+1"]["fixer_agreement_psnr"] is None and "fixer" in run["skipped"]
        assert run["shifted"]["+1"]["lidar_psnr_fixed"] is None
        assert run["heldout"]["fixed"] is None and run["cross_camera"]["fixed"] is None
    # The same run evaluated twice gives the same numbers (everything is deterministic).
    assert metrics["refiner"]["shifted"] == metrics["baseline"]["shifted"]
    assert metrics["refiner"]["heldout"]["psnr"] == metrics["baseline"]["heldout"]["psnr"]
    # Rows: photo + 2 runs x (recorded, shifted); no fixer rows.
    assert Image.open(out / "contact_sheet.png").height > 5 * 45


def test_cross_camera_sheet_shows_photo_and_each_runs_render(tiny_run, monkeypatch):
    import numpy as np

    from difix_refiner.evaluation.contact_sheets import build_cross_camera_sheet
    from difix_refiner.evaluation.evaluate_run import evaluate_run
    from difix_refiner.evaluation.settings import EvalSettings

    monkeypatch.chdir(REPO)
    settings = EvalSettings(offsets=(1.0,), frame_stride=80, heldout_stride=10, cross_camera_stride=80, thumbnail_width=40)
    # Frame 0 is one of the cross-camera frames (stride 80 from frame 0).
    runs = [evaluate_run(tiny_run, settings, label=name, sheet_frames=[0]) for name in ("a", "b")]
    cells = runs[0].cross_camera
    assert set(cells) == {"front_left_camera", "front_right_camera"}
    photo, render = cells["front_left_camera"]["photo"][0], cells["front_left_camera"]["render"][0]
    assert photo.shape == render.shape and photo.shape[1] == 40
    assert not np.array_equal(photo, render)  # a render of a 3-iteration model, not the photo
    sheet = build_cross_camera_sheet(runs)
    assert sheet is not None and sheet.height > 6 * photo.shape[0]  # 2 cameras x (photo, a, b)
    # Sheet frames that no cross-camera view has: no sheet.
    assert build_cross_camera_sheet([evaluate_run(tiny_run, settings, label="c", sheet_frames=[5])]) is None


def test_plus_step_uses_the_nearest_training_photo_as_reference(tiny_run, monkeypatch):
    """The fixed held-out score is fixer(render, nearest training photo) against the photo."""
    import numpy as np

    from difix_refiner.cameras.reference_views import nearest_reference
    from difix_refiner.core import image_metrics as im
    from difix_refiner.core.progress import NoProgress
    from difix_refiner.evaluation import photo_metrics as pm
    from difix_refiner.evaluation.runs import camera_matrix, load_run, pandaset_cameras
    from difix_refiner.fixer import Fixer
    from difix_refiner.fixer.render_fixing import read_photo
    from difix_refiner.scene.run_pipeline import render_camera

    monkeypatch.chdir(REPO)
    fixer = Fixer.tiny().eval()
    seen = []
    real_fix = pm.fix_render

    def recording_fix(f, image, reference, hint=None):
        assert hint is None  # a plain fixer gets no hint
        seen.append(reference)
        return real_fix(f, image, reference)

    monkeypatch.setattr(pm, "fix_render", recording_fix)
    run = load_run(tiny_run)
    views = [("front_left_camera", np.array([40]))]
    result, _ = pm.score_views(run, views, None, NoProgress(), "test", fixer=fixer)

    cams, paths = pandaset_cameras(run, "front_left_camera", np.array([40]))
    _, w, h = camera_matrix(cams, 0)
    ref = nearest_reference(cams.camera_to_worlds[0].double().numpy(), run.recorded.camera_to_worlds,
                            metres_per_scene_unit=run.recorded.metres_per_scene_unit)  # fmt: skip
    assert abs(int(run.recorded.frame_indices[ref]) - 40) <= 3  # a front-camera photo of about the same moment
    np.testing.assert_array_equal(seen[0], read_photo(run.train_paths[ref], w, h))
    render = render_camera(run.pipeline, cams[0:1], run.recorded.metres_per_scene_unit)
    photo = read_photo(paths[0], w, h)
    expected = im.psnr(im.as_float_image(real_fix(fixer, render.rgb, seen[0])), im.as_float_image(photo))
    assert result["fixed"]["psnr"] == pytest.approx(expected, abs=1e-6)


def test_a_hint_fixer_gets_each_shifted_views_lidar_hint(tiny_run, tmp_path, monkeypatch):
    """The "+" step off the path: a hint fixer is given the hint of the shifted camera, from the run's seed points."""
    import difix_refiner.evaluation.shifted as shifted
    from difix_refiner.fixer import Fixer

    monkeypatch.chdir(REPO)
    hint_fixer = Fixer.tiny("difix", seed=0, hint_channels=4).save_pretrained(tmp_path / "hint-fixer")
    given = []
    real_fix_render = shifted.fix_render

    def recording_fix_render(fixer, render, reference, hint=None):
        given.append((render.shape, None if hint is None else (tuple(hint.shape), float(hint[3].mean()))))
        return real_fix_render(fixer, render, reference, hint)

    monkeypatch.setattr(shifted, "fix_render", recording_fix_render)
    out = tmp_path / "eval"
    entrypoint(
        [
            "eval", "--load-config", str(tiny_run), "--output-dir", str(out), "--fixer-base", str(hint_fixer),
            "--offsets", "-1", "1", "--frame-stride", "80", "--heldout-stride", "10", "--cross-camera-stride", "80",
            "--thumbnail-width", "80",
        ]
    )  # fmt: skip
    assert len(given) == 3  # one frame at 0, -1 and +1 m
    for (h, w, _), hint in given:
        assert hint is not None, "the hint fixer ran without a hint"
        shape, valid = hint
        assert shape == (4, h, w) and 0.0 < valid < 1.0  # RGB + validity; some pixels hold a LiDAR point
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(e["lidar_psnr_fixed"] is not None for e in metrics["shifted"].values())
