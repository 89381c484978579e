"""Fidelity in the refine loop: every pseudo view gets the LiDAR hint of its camera (given to a hint fixer),
rounds.jsonl records how much the fixer changed each view inside and outside the hint, fidelity weighting
lowers the loss weight of unsupported large changes, and a fixer that lowers PSNR on training views has its
pseudo views left out (kept for a fixer that does not).

The in-process tests set up the shared tiny run (examples/pandaset_002 frames 40-45 at a quarter size, 2000
LiDAR seeds) and call ``refine_round`` directly, before any training step, so the model that made a pseudo
view can render it again exactly.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_refine_run import seeded_trainer, tiny_refine_config

from difix_refiner.data.lidar_hint import HintSettings, LidarHint, render_lidar_hint
from difix_refiner.distillation.fixer_fit_check import check_view_indices, fit_check
from difix_refiner.distillation.pseudo_view_fidelity import (
    change_stats,
    fidelity_weight,
    view_hint,
)
from difix_refiner.fixer import Fixer, FixerConfig

# ----------------------------------------------------------------------------------------- units


def _hint(mask: np.ndarray, colour: float) -> LidarHint:
    rgb = np.where(mask[..., None], colour, 0.0).astype(np.float32)
    return LidarHint(rgb=rgb, mask=mask, depth=np.where(mask, 5.0, np.inf).astype(np.float32))


def test_change_statistics_by_hand():
    render = torch.full((3, 4, 6), 0.5)
    fixed = render.clone()
    fixed[:, :, :3] = 0.7  # left half changed by 0.2, right half untouched
    mask = np.zeros((4, 6), dtype=bool)
    mask[:, :2] = True  # hint in the two leftmost columns, colour 0.8
    stats = change_stats(render, fixed, _hint(mask, 0.8))
    assert stats["hint_coverage"] == pytest.approx(2 / 6)
    assert stats["change"] == pytest.approx(0.1)
    assert stats["change_in_hint"] == pytest.approx(0.2)
    assert stats["change_outside_hint"] == pytest.approx(0.2 * 1 / 4)
    assert stats["render_hint_error"] == pytest.approx(0.3) and stats["fixed_hint_error"] == pytest.approx(0.1)
    none = change_stats(render, fixed, None)
    assert none["hint_coverage"] == 0 and none["change_in_hint"] is None and none["fixed_hint_error"] is None


def test_weight_falls_where_the_fixer_changes_much_without_hint_support():
    render = torch.zeros(3, 5, 10)
    fixed = render.clone()
    fixed[:, :, 5:] = 0.4  # right half changed by 0.4
    fixed[:, :, 2] = 0.05  # a small change: trusted
    mask = np.zeros((5, 10), dtype=bool)
    mask[:, 9] = True  # a hint column at the right edge supports columns 7..9 (radius 2)
    weight = fidelity_weight(render, fixed, _hint(mask, 0.4), threshold=0.1, support_radius_px=2)
    np.testing.assert_allclose(weight[:, :5], 1.0)
    np.testing.assert_allclose(weight[:, 5:7], 0.1 / 0.4)
    np.testing.assert_allclose(weight[:, 7:], 1.0)
    np.testing.assert_allclose(fidelity_weight(render, fixed, None, 0.1, 2)[:, 5:], 0.25)


def test_fit_check_arithmetic_and_wording():
    photos = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    renders = (photos + 0.05).clamp(0, 1)
    same = fit_check(renders, renders.clone(), photos, [1, 2, 3])
    assert same.fits and same.pseudo_views_used and same.mean_fixed == same.mean_render
    worse = fit_check(renders, torch.rand(3, 3, 8, 8), photos, [1, 2, 3])
    assert not worse.fits and not worse.pseudo_views_used
    assert "LOWERS PSNR" in worse.message() and "--pipeline.refine.unfit-fixer keep" in worse.message()
    assert worse.to_json()["delta_db"] < 0 and worse.to_json()["views"] == 3
    kept = fit_check(renders, torch.rand(3, 3, 8, 8), photos, [1, 2, 3], action="keep")
    assert not kept.fits and kept.pseudo_views_used
    lenient = fit_check(renders, torch.rand(3, 3, 8, 8), photos, [1, 2, 3], tolerance_db=100.0)
    assert lenient.fits
    assert check_view_indices(10, 4) == [0, 3, 6, 9] and check_view_indices(2, 4) == [0, 1] and check_view_indices(5, 0) == []


def test_view_hint_in_scene_units_matches_the_metric_hint():
    rng = np.random.default_rng(0)
    points = rng.uniform([-5, -2, 3], [5, 2, 40], size=(3000, 3))  # metres, OpenCV camera at the origin
    colours = rng.integers(0, 256, size=(3000, 3), dtype=np.uint8)
    intr = {"fx": 60.0, "fy": 60.0, "cx": 40.0, "cy": 30.0, "width": 80, "height": 60}
    K = np.array([[60.0, 0, 40.0], [0, 60.0, 30.0], [0, 0, 1]])
    metric = render_lidar_hint(points, colours, K, np.eye(4), 80, 60, HintSettings())
    scale = 0.05  # scene units per metre
    gl_pose = np.diag([1.0, -1.0, -1.0, 1.0])[:3]  # the same camera with nerfstudio's OpenGL axes
    scene = view_hint((points * scale, colours), gl_pose, intr, metres_per_scene_unit=1.0 / scale)
    np.testing.assert_array_equal(scene.mask, metric.mask)
    np.testing.assert_array_equal(scene.rgb, metric.rgb)
    np.testing.assert_allclose(scene.depth[scene.mask], metric.depth[metric.mask] * scale, rtol=1e-5)


# ----------------------------------------------------------------------------------------- in the loop


class IdentityFixer:
    """Returns its input unchanged: a stand-in for a fixer that fits the scene (no trained fixer that provably
    does not lower PSNR can be made in a test's seconds). It has the fixer's ``config`` and ``fix``."""

    config = FixerConfig()

    def fix(self, images, refs=None, *, hint=None):
        return images.float().clone()


def _rounds(trainer) -> list:
    path = Path(trainer.base_dir) / "pseudo_views" / "rounds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def hint_fixer(tmp_path_factory) -> Path:
    """A tiny hint fixer whose hint convolution is not zero (so a hint visibly changes its output), saved whole."""
    fixer = Fixer.tiny("difix", seed=0, hint_channels=4)
    with torch.no_grad():
        fixer.hint_conv.conv.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    return Path(fixer.save_pretrained(tmp_path_factory.mktemp("hint_fixer") / "fixer"))


def test_refine_round_passes_hints_and_records_the_change(tmp_path, hint_fixer, caplog):
    cfg = tiny_refine_config(tmp_path, "hint", steps=2, fixer_base=str(hint_fixer), fidelity_weighting=True, save_renders=True)
    trainer = seeded_trainer(cfg)
    pipeline = trainer.pipeline
    st = pipeline.refine_state
    assert st.hint_cloud is not None and len(st.hint_cloud[0]) == 2000  # the dataparser's LiDAR seed points

    with caplog.at_level(logging.WARNING, logger="difix_refiner.fixer.hint"):
        records = pipeline.refine_round(1)
    assert len(records) == 1
    assert not any("got none" in r.getMessage() for r in caplog.records)  # every call had a hint (the check: zeros)
    record = records[0]
    rounds = _rounds(trainer)
    assert len(rounds) == 1 and rounds[0]["views"] == 1
    check = rounds[0]["fixer_check"]  # the random fixer does not fit; the tiny config keeps its views
    assert check["views"] == 4 and not check["fits"] and check["pseudo_views_used"]
    fidelity = rounds[0]["fidelity"]
    view = fidelity["views"][0]
    assert view["file"] == record.file and 0.05 < view["hint_coverage"] < 0.95
    assert view["change_in_hint"] > 0 and view["change_outside_hint"] > 0 and view["render_hint_error"] > 0
    assert 0 < view["mean_weight"] < 1 and 0 < view["downweighted"] < 1
    assert fidelity["mean"]["hint_coverage"] == pytest.approx(view["hint_coverage"])

    # The model has not moved since the round: render the view again and fix it with and without its hint.
    outputs = pipeline.render_pseudo_view(pipeline.make_camera(record.pose(), record.intrinsics))
    render = outputs["rgb"].permute(2, 0, 1).float()[None]  # [1, 3, H, W]
    refs = pipeline._reference_images([record.references[0]["index"]], *render.shape[-2:])[None]
    hint = pipeline._view_hint(record.pose(), record.intrinsics)
    assert hint.coverage == pytest.approx(view["hint_coverage"])
    fixer = st.fixer
    with_hint = (fixer.fix(render, refs, hint=hint.tensor()[None])[0].clamp(0, 1) * 255).round().to(torch.uint8)
    without = (fixer.fix(render, refs)[0].clamp(0, 1) * 255).round().to(torch.uint8)
    stored = torch.from_numpy(np.array(Image.open(st.store.root / record.file))).permute(2, 0, 1)
    assert torch.equal(stored, with_hint) and not torch.equal(stored, without)

    # The loss mask of the view is its opacity mask times the stored weight, moving objects' boxes left out.
    from difix_refiner.distillation.moving_object_masks import pseudo_view_moving_mask

    weight = np.asarray(Image.open(st.store.root / record.weight_file)).astype(np.float32) / 255.0
    alpha = np.asarray(Image.open(st.store.root / record.alpha_file)).astype(np.float32) / 255.0
    metadata = pipeline.datamanager.train_dataparser_outputs.metadata
    moving = pseudo_view_moving_mask(metadata, record.frame, record.pose(), record.intrinsics, st.metres_per_scene_unit)
    static = np.ones_like(alpha) if moving is None else (~moving).numpy().astype(np.float32)
    sample = pipeline.datamanager.pseudo_views[0]
    np.testing.assert_allclose(sample.mask[..., 0].numpy(), (alpha >= 0.5) * weight * static, rtol=0, atol=1e-6)


def test_unfit_fixer_has_its_pseudo_views_left_out(tmp_path):
    trainer = seeded_trainer(tiny_refine_config(tmp_path, "drop", steps=2, unfit_fixer="drop"))
    pipeline = trainer.pipeline
    assert pipeline.refine_round(1) == [] and pipeline.refine_round(2) == []
    assert pipeline.datamanager.pseudo_views == [] and pipeline.refine_state.fixer is None
    rounds = _rounds(trainer)
    assert len(rounds) == 1 and rounds[0]["views"] == 0  # one line, from the round that checked
    check = rounds[0]["fixer_check"]
    assert not check["fits"] and not check["pseudo_views_used"] and check["delta_db"] < 0
    assert check["mean_psnr_fixed"] < check["mean_psnr_render"] and len(check["psnr_render"]) == 4
    assert not (Path(trainer.base_dir) / "pseudo_views" / "step_000001").exists()


def test_fixer_that_does_not_lower_psnr_keeps_its_pseudo_views(tmp_path):
    trainer = seeded_trainer(tiny_refine_config(tmp_path, "keep", steps=2, unfit_fixer="drop"))
    pipeline = trainer.pipeline
    pipeline.refine_state.fixer = IdentityFixer()
    assert len(pipeline.refine_round(1)) == 1 and len(pipeline.datamanager.pseudo_views) == 1
    check = _rounds(trainer)[0]["fixer_check"]
    assert check["fits"] and check["delta_db"] == 0 and check["pseudo_views_used"]
    assert _rounds(trainer)[0]["fidelity"]["views"][0]["change"] == 0.0
    assert len(pipeline.refine_round(2)) == 1 and "fixer_check" not in _rounds(trainer)[1]  # checked once
