"""Paired and unpaired objectives train tiny convolutional generators (random-init backbones)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from difix_refiner.training.discriminator import DiscriminatorConfig
from difix_refiner.training.objectives import (
    PairedObjective,
    PairedObjectiveConfig,
    UnpairedObjective,
    UnpairedObjectiveConfig,
)
from difix_refiner.training.perceptual import (
    PerceptualBackbones,
    PerceptualConfig,
    RandomInitWarning,
)

TINY_CLIP = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16
)
RANDOM = PerceptualConfig(random_init=True, search_caches=False)


@pytest.fixture(scope="module")
def backbones() -> PerceptualBackbones:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        b = PerceptualBackbones(RANDOM, clip_random_overrides=TINY_CLIP)
        b.lpips()
        b.clip()
    return b


class TinyGenerator(nn.Module):
    """Residual two-layer conv net, output in [0, 1]."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.body(x)).clamp(0, 1)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, 32, 32, generator=g)
    degraded = (0.6 * target + 0.2 + 0.05 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    return degraded, target


def test_presets_resolve_to_published_weights():
    difix = PairedObjectiveConfig(preset="difix").resolved()
    none = {"l1": 0.0, "msssim": 0.0, "gradient": 0.0}  # the no-download terms are off in the published presets
    assert {k: w for k, (w, _) in difix.items()} == {"l2": 1.0, "lpips": 1.0, "gram": 0.5, "clip": 0.0, "gan": 0.0, **none}
    assert PairedObjectiveConfig(preset="difix").warmup() == 2000
    p2p = PairedObjectiveConfig(preset="pix2pix-turbo").resolved()
    assert {k: w for k, (w, _) in p2p.items()} == {"l2": 1.0, "lpips": 5.0, "gram": 0.0, "clip": 5.0, "gan": 0.5, **none}
    # preset values are implicit; a number set by the user is explicit
    assert not p2p["lpips"][1]
    assert PairedObjectiveConfig(preset="pix2pix-turbo", lpips=2.0).resolved()["lpips"] == (2.0, True)


def test_gram_switches_on_after_warmup(backbones):
    objective = PairedObjective(PairedObjectiveConfig(preset="difix", gram_warmup_steps=5, perceptual=RANDOM), backbones)
    out, tgt = _batch()
    _, before = objective(out, tgt, step=4)
    total, after = objective(out, tgt, step=5)
    assert set(before) == {"l2", "lpips"} and set(after) == {"l2", "lpips", "gram"}
    expected = after["l2"] + after["lpips"] + 0.5 * after["gram"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_difix_objective_lowers_loss_on_fixed_batch(backbones):
    objective = PairedObjective(PairedObjectiveConfig(preset="difix", gram_warmup_steps=0, perceptual=RANDOM), backbones)
    gen = TinyGenerator(seed=0)
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    degraded, target = _batch()
    losses = []
    for step in range(8):
        total, terms = objective(gen(degraded), target, step)
        assert set(terms) == {"l2", "lpips", "gram"}
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_pix2pix_objective_with_clip_gan_trains_both_sides(backbones):
    cfg = PairedObjectiveConfig(preset="pix2pix-turbo", discriminator=DiscriminatorConfig(kind="clip", head_width=16), perceptual=RANDOM)
    objective = PairedObjective(cfg, backbones)
    assert objective.has_gan and objective.weights == {"l2": 1.0, "lpips": 5.0, "clip": 5.0, "gan": 0.5}
    gen = TinyGenerator(seed=1)
    opt_g = torch.optim.Adam(gen.parameters(), lr=3e-3)
    opt_d = torch.optim.Adam(objective.discriminator_parameters(), lr=1e-3)
    # Only the heads train: the frozen CLIP backbone is not among the discriminator's parameters.
    assert all(p.requires_grad for p in objective.discriminator_parameters())
    assert sum(p.numel() for p in objective.discriminator_parameters()) < 10_000
    degraded, target = _batch(1)
    rec = []
    for step in range(6):
        output = gen(degraded)
        total, terms = objective(output, target, step)
        opt_g.zero_grad()
        opt_d.zero_grad()
        total.backward()
        # the generator step leaves no gradient on the discriminator
        assert all(p.grad is None for p in objective.discriminator_parameters())
        opt_g.step()
        d_loss, d_terms = objective.discriminator_loss(output.detach(), target)
        opt_d.zero_grad()
        d_loss.backward()
        grads = [p.grad for p in objective.discriminator_parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        opt_d.step()
        assert set(d_terms) == {"d_loss", "d_real", "d_fake"}
        rec.append((terms["l2"] + 5 * terms["lpips"] + 5 * terms["clip"]).item())
    assert rec[-1] < rec[0], rec


def test_prompt_mode_and_bad_inputs(backbones):
    cfg = PairedObjectiveConfig(preset="pix2pix-turbo", gan=0.0, clip_mode="prompt", perceptual=RANDOM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        objective = PairedObjective(cfg, PerceptualBackbones(RANDOM, clip_random_overrides=TINY_CLIP))
    out, tgt = _batch()
    _, terms = objective(out, tgt, 0, prompts=["remove degradation", "a street"])
    assert 0.0 <= terms["clip"].item() <= 2.0
    with pytest.raises(ValueError, match="differ in shape"):
        objective(out, tgt[:, :, :16], 0)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        objective(out[:, :1], tgt[:, :1], 0)


def test_unpaired_objective_trains_generators_and_discriminators(backbones):
    cfg = UnpairedObjectiveConfig(discriminator=DiscriminatorConfig(kind="patch", patch_channels=8, patch_layers=2), perceptual=RANDOM)
    objective = UnpairedObjective(cfg, backbones)
    assert objective.weights == {"cycle_l1": 1.0, "cycle_lpips": 10.0, "identity_l1": 1.0, "identity_lpips": 1.0, "gan": 0.5}
    g_ab, g_ba = TinyGenerator(seed=2), TinyGenerator(seed=3)
    opt_g = torch.optim.Adam([*g_ab.parameters(), *g_ba.parameters()], lr=3e-3)
    opt_d = torch.optim.Adam(objective.discriminator_parameters(), lr=1e-3)
    real_a, _ = _batch(2)  # "renders"
    _, real_b = _batch(3)  # "real images", unpaired
    totals = []
    for _ in range(6):
        total, terms, fakes = objective(g_ab, g_ba, real_a, real_b)
        assert set(terms) == {"cycle_l1", "cycle_lpips", "identity_l1", "identity_lpips", "gan_ab", "gan_ba"}
        opt_g.zero_grad()
        opt_d.zero_grad()
        total.backward()
        for gen in (g_ab, g_ba):
            grads = [p.grad for p in gen.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert all(p.grad is None for p in objective.discriminator_parameters())
        opt_g.step()
        d_loss, d_terms = objective.discriminator_loss(real_a, real_b, fakes["fake_a"], fakes["fake_b"])
        opt_d.zero_grad()
        d_loss.backward()
        for disc in (objective.disc_a, objective.disc_b):
            grads = [p.grad for p in disc.trainable_parameters()]
            assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
            assert any(g.abs().sum() > 0 for g in grads)
        opt_d.step()
        assert torch.isfinite(d_loss) and {"d_a", "d_b", "d_real_a", "d_fake_b"} <= set(d_terms)
        totals.append(total.item())
    assert totals[-1] < totals[0], totals


def test_unpaired_without_gan_needs_no_discriminator(backbones):
    objective = UnpairedObjective(UnpairedObjectiveConfig(gan=0.0, perceptual=RANDOM), backbones)
    assert not objective.has_gan and objective.discriminator_parameters() == []
    real_a, real_b = _batch(4)
    total, terms, _ = objective(nn.Identity(), nn.Identity(), real_a, real_b)
    # identity generators reconstruct perfectly
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    assert "gan_ab" not in terms
