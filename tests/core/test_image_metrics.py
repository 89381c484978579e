"""Image metrics, skip reporting (LPIPS, FID/KID, fixer), held-out view selection and the contact-sheet grid."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from difix_refiner.core import image_metrics as im
from difix_refiner.core import lpips as lpips_metric
from difix_refiner.core.contact_sheet import make_row_sheet as make_grid
from difix_refiner.core.errors import InputError
from difix_refiner.evaluation.runs import cross_camera_views, heldout_views
from difix_refiner.evaluation.settings import EvalSettings
from difix_refiner.evaluation.shifted import offset_key
from difix_refiner.fixer.options import FixerOptions


def textured(seed=0, h=64, w=96):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def box_blur(img, k=5):
    f = img.astype(np.float64)
    pad = np.pad(f, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)), mode="edge")
    out = np.zeros_like(f)
    for dy in range(k):
        for dx in range(k):
            out += pad[dy : dy + f.shape[0], dx : dx + f.shape[1]]
    return (out / k**2).astype(np.uint8)


def test_sharpness_is_larger_for_sharp_image():
    sharp = textured()
    assert im.laplacian_variance(sharp) > 5 * im.laplacian_variance(box_blur(sharp))
    assert im.laplacian_variance(np.full((10, 10, 3), 128, np.uint8)) == 0.0


def test_psnr_ssim_and_fixer_agreement_values():
    a = np.full((32, 32, 3), 0.5)
    assert im.psnr(a + 0.1, a) == pytest.approx(20.0)
    img = textured()
    assert im.ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    assert im.ssim(img, box_blur(img)) < 0.9
    same = im.fixer_agreement(img, img)
    assert same["mean_abs_diff"] == 0.0 and same["psnr"] == pytest.approx(100.0)
    diff = im.fixer_agreement(np.full((8, 8, 3), 0.6), np.full((8, 8, 3), 0.5))
    assert diff["mean_abs_diff"] == pytest.approx(0.1) and diff["psnr"] == pytest.approx(20.0)
    with pytest.raises(ValueError):
        im.psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))


def test_lpips_skip_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(lpips_metric, "alexnet_weights_path", lambda: str(tmp_path / "absent.pth"))
    metrics = im.PhotoMetrics(lpips=lpips_metric.LazyLPIPS())
    with pytest.warns(UserWarning, match="LPIPS skipped"):
        scores = metrics.add(textured(1), textured(2))
    assert "lpips" not in scores and metrics.lpips_skipped
    summary = metrics.summary()
    assert "lpips" not in summary and summary["num_views"] == 1 and summary["psnr"] is not None


def test_fid_kid_skipped_cleanly_without_weights(tmp_path):
    with pytest.raises(im.InceptionWeightsError, match="not found"):
        im.inception_extractor(tmp_path / "missing.pth")
    settings = EvalSettings(inception_weights=tmp_path / "missing.pth")
    with pytest.raises(InputError, match="inception-weights"):
        settings.checked_offsets()
    assert EvalSettings().inception_weights is None  # default: skipped, nothing downloaded


class MeanColour(torch.nn.Module):
    """A stand-in feature extractor (uint8 [B, 3, H, W] -> [B, 3])."""

    def forward(self, x):
        return x.float().mean(dim=(2, 3))


def test_fid_kid_with_a_given_extractor():
    rng = np.random.default_rng(0)
    real = [(rng.random((16, 16, 3)) * 255).astype(np.uint8) for _ in range(6)]
    out = im.fid_kid(real, real, MeanColour(), kid_subsets=5)
    assert out["fid"] == pytest.approx(0.0, abs=1e-3)
    far = im.fid_kid(real, [np.clip(r.astype(int) + 80, 0, 255).astype(np.uint8) for r in real], MeanColour(), kid_subsets=5)
    assert far["fid"] > 100 and far["kid_mean"] > out["kid_mean"]
    with pytest.raises(ValueError):
        im.fid_kid(real[:1], real, MeanColour())


def test_fixer_default_skip_and_bad_settings(monkeypatch, tmp_path):
    import difix_refiner.fixer.options as fixer_options

    monkeypatch.chdir(tmp_path)  # the working directory plays no part in finding the bundled fixer
    assert FixerOptions().fixer_source()[0] == str(fixer_options.bundled_fixer_path())
    monkeypatch.setattr(fixer_options, "bundled_fixer_path", lambda: None)  # as in an install without it
    fixer, reason = FixerOptions().load_fixer()
    assert fixer is None and "--fixer-base" in reason
    with pytest.raises(InputError, match="--fixer-adapter not found"):
        FixerOptions(fixer_base="tiny", fixer_adapter=str(tmp_path / "no-adapter")).load_fixer()
    for bad in ({"offsets": (0.0,)}, {"offsets": ()}, {"frame_stride": 0}, {"offsets": (1.0,), "sheet_offset": 2.0},
                {"min_accumulation": 1.5}, {"lidar_window": -1}):  # fmt: skip
        with pytest.raises(InputError):
            EvalSettings(**bad).checked_offsets()
    assert [offset_key(o) for o in (1.0, -2.0, 1.5)] == ["+1", "-2", "+1.5"]
    assert EvalSettings().shown_offset([-2.0, -1.0, 1.0, 2.0]) == 2.0


def test_heldout_and_cross_camera_views_never_include_trained_frames(tmp_path):
    frames = np.arange(0, 20)
    for name in ("front_camera", "front_left_camera", "front_right_camera"):
        (tmp_path / "camera" / name).mkdir(parents=True)
    dp = SimpleNamespace(
        cameras=("front_camera",), eval_cameras=("front_left_camera", "front_right_camera"),
        frame_start=0, eval_interval=8, eval_mode="interval",
    )  # fmt: skip
    trained = {("front_camera", int(f)) for f in frames if f % 8}
    views, notes = heldout_views(dp, frames, trained)
    assert [(n, f.tolist()) for n, f in views] == [("front_camera", [0, 8, 16])] and not notes

    # A run that trained on every frame (eval_mode cross-camera) has no interval frames left.
    everything = {("front_camera", int(f)) for f in frames}
    views, notes = heldout_views(dp, frames, everything)
    assert views == [] and "trained on" in notes[0]

    # A side camera the run trained on is not a cross-camera view.
    rig = everything | {("front_left_camera", int(f)) for f in frames}
    views, notes = cross_camera_views(dp, frames, rig, tmp_path, stride=5)
    assert [(n, f.tolist()) for n, f in views] == [("front_right_camera", [0, 5, 10, 15])]
    assert "front_left_camera" in notes[0]

    dp.eval_cameras = ("rear_camera",)
    with pytest.raises(InputError, match="unknown camera"):
        cross_camera_views(dp, frames, rig, tmp_path)


def test_contact_sheet_grid_layout():
    thumb = textured(h=20, w=30)
    rows = [("photo", {1: thumb, 5: thumb}), ("run\nshifted", {1: thumb}), ("empty", {})]
    sheet = make_grid(rows, [1, 5])
    # two non-empty rows, two columns; a missing cell is grey
    assert sheet.width > 2 * 30 and sheet.height > 2 * 20
    with pytest.raises(ValueError):
        make_grid([("empty", {})], [1])
