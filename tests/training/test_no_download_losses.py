"""Losses that need no downloaded weights: MS-SSIM (against pytorch_msssim), the image-gradient loss, the
`local` preset, the fallback when LPIPS/VGG weights are missing, and a GAN with the from-scratch PatchGAN."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim as reference_ms_ssim

from difix_refiner.training.discriminator import DiscriminatorConfig
from difix_refiner.training.losses import gradient_loss, l1_loss, ms_ssim, ms_ssim_loss
from difix_refiner.training.objectives import (
    FallbackLossWarning,
    LossDisabledWarning,
    PairedObjective,
    PairedObjectiveConfig,
)
from difix_refiner.training.perceptual import PerceptualConfig

NO_WEIGHTS = PerceptualConfig(search_caches=False)


def _smooth(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(b, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear").clamp(0, 1)


def test_ms_ssim_matches_pytorch_msssim_on_large_images():
    target = _smooth(2, 176, 200)
    g = torch.Generator().manual_seed(1)
    output = (target + 0.08 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    torch.testing.assert_close(ms_ssim(output, target), reference_ms_ssim(output, target, data_range=1.0, size_average=False))
    assert torch.allclose(ms_ssim(target, target), torch.ones(2))


def test_ms_ssim_on_small_crops_falls_with_noise_and_keeps_finite_gradients():
    target = _smooth(1, 48, 64)
    values = []
    for sigma in (0.0, 0.05, 0.2):
        noisy = (target + sigma * torch.randn(target.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
        values.append(float(ms_ssim(noisy, target)))
    assert values[0] == pytest.approx(1.0) and values[0] > values[1] > values[2]
    # Unrelated images (negative contrast terms at coarse scales) still give finite gradients.
    output = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    ms_ssim_loss(output, 1.0 - target).backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


def test_gradient_loss_by_hand():
    target = torch.zeros(1, 3, 4, 5)
    ramp = torch.arange(5.0).reshape(1, 1, 1, 5).expand(1, 3, 4, 5) * 0.1  # d/dx = 0.1, d/dy = 0
    assert float(gradient_loss(ramp, target)) == pytest.approx(0.5 * 0.1)
    assert float(gradient_loss(ramp + 0.3, ramp)) == pytest.approx(0.0, abs=1e-7)  # a constant offset has no edges


def test_local_preset_needs_no_weights_and_sums_its_terms():
    objective = PairedObjective(PairedObjectiveConfig(preset="local", require_weights=True, perceptual=NO_WEIGHTS))
    assert objective.weights == {"l1": 1.0, "msssim": 1.0, "gradient": 1.0} and not objective.disabled
    target = _smooth(2, 64, 64)
    output = (target * 0.8 + 0.1).clamp(0, 1)
    total, terms = objective(output, target)
    expected = l1_loss(output, target) + ms_ssim_loss(output, target) + gradient_loss(output, target)
    torch.testing.assert_close(total, expected)
    assert set(terms) == {"l1", "msssim", "gradient"}


def test_missing_perceptual_weights_switch_the_no_download_losses_on():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        objective = PairedObjective(PairedObjectiveConfig(preset="difix", perceptual=NO_WEIGHTS))
    assert sum(issubclass(w.category, LossDisabledWarning) for w in caught) == 2
    fallback = [w for w in caught if issubclass(w.category, FallbackLossWarning)]
    assert len(fallback) == 1 and "l1, msssim, gradient" in str(fallback[0].message)
    assert objective.weights == {"l2": 1.0, "l1": 1.0, "msssim": 1.0, "gradient": 1.0}
    assert objective.fallback == ["l1", "msssim", "gradient"]
    # Explicit weights win over the fallback; the fallback can be switched off.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen = PairedObjective(PairedObjectiveConfig(msssim=0.0, gradient=2.0, perceptual=NO_WEIGHTS))
        off = PairedObjective(PairedObjectiveConfig(no_download_fallback=False, perceptual=NO_WEIGHTS))
    assert chosen.weights == {"l2": 1.0, "gradient": 2.0, "l1": 1.0}
    assert off.weights == {"l2": 1.0} and off.fallback == []


def test_patch_gan_from_scratch_trains_without_weights():
    config = PairedObjectiveConfig(
        preset="local", gan=0.5, perceptual=NO_WEIGHTS,
        discriminator=DiscriminatorConfig(kind="patch", patch_channels=8, patch_layers=2),
    )  # fmt: skip
    objective = PairedObjective(config)
    assert objective.has_gan and objective.discriminator_parameters()
    target = _smooth(2, 32, 32)
    fake = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    opt = torch.optim.Adam(objective.discriminator_parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        d_loss, _ = objective.discriminator_loss(fake, target)
        opt.zero_grad()
        d_loss.backward()
        opt.step()
        losses.append(float(d_loss.detach()))
    assert losses[-1] < losses[0]  # it learns to tell the targets from the fakes
