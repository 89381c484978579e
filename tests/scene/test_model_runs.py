"""The difix-refiner model on the CPU: construction from LiDAR seeds, and nerfstudio's tools on a real run."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from difix_refiner.core.lpips import LazyLPIPS, alexnet_weights_path
from difix_refiner.scene.model import DifixRefinerModelConfig

REPO = Path(__file__).resolve().parents[2]
SCENE = REPO / "examples" / "pandaset_002"
BIN = Path(sys.executable).parent


def test_seed_colours_and_cpu_settings():
    """LiDAR colours become the Gaussians' colours; absgrad is off on the CPU; LPIPS is not a module."""
    from nerfstudio.data.scene_box import SceneBox

    pts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    rgb = torch.tensor([[255.0, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [10, 200, 30]])
    for sh_degree in (0, 3):
        model = DifixRefinerModelConfig(sh_degree=sh_degree).setup(
            scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
            num_train_data=4,
            seed_points=(pts, rgb),
            device="cpu",
        )
        assert model.num_points == 5 and not model.strategy.absgrad
        colours = model.colors if sh_degree > 0 else torch.sigmoid(model.features_dc)
        np.testing.assert_allclose(colours.detach().numpy(), (rgb / 255).numpy(), atol=1e-5)
        assert not any(k.startswith("lpips") for k in model.state_dict())


def test_lpips_skips_with_one_warning_when_weights_are_missing():
    if Path(alexnet_weights_path()).is_file():
        pytest.skip("AlexNet weights are present on this machine")
    metric = LazyLPIPS()
    images = torch.rand(1, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert metric(images, images) is None
        assert metric(images, images) is None
    assert len([w for w in caught if "LPIPS skipped" in str(w.message)]) == 1


def test_ns_eval_reports_heldout_psnr_and_ssim(tiny_run, tmp_path):
    out = tmp_path / "eval.json"
    result = subprocess.run(
        [str(BIN / "ns-eval"), "--load-config", str(tiny_run), "--output-path", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(out.read_text())["results"]
    assert 5.0 < metrics["psnr"] < 40.0 and 0.0 < metrics["ssim"] <= 1.0


def test_ns_export_writes_every_gaussian(tiny_run, tmp_path):
    result = subprocess.run(
        [str(BIN / "ns-export"), "gaussian-splat", "--load-config", str(tiny_run), "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    header = (tmp_path / "splat.ply").read_bytes()[:2000].decode("latin-1")
    count = int(header.split("element vertex ")[1].split()[0])
    ckpt = next((tiny_run.parent / "nerfstudio_models").glob("*.ckpt"))
    saved = torch.load(ckpt, map_location="cpu")["pipeline"]["_model.gauss_params.means"].shape[0]
    assert 0.9 * saved <= count <= saved  # ns-export drops only NaN and near-transparent Gaussians
