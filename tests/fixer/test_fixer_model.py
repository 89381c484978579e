"""The tiny fixer's forward pass: shapes, determinism, references, gradients, attention."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from difix_refiner.fixer import Fixer, FixerConfig
from difix_refiner.fixer.attention import (
    MultiViewAttnProcessor,
    install_multiview_attention,
)
from difix_refiner.fixer.presets import tiny_components


def _images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


@pytest.fixture(scope="module")
def difix() -> Fixer:
    return Fixer.tiny("difix")


@pytest.fixture(scope="module")
def p2p() -> Fixer:
    return Fixer.tiny("pix2pix-turbo")


def test_variant_presets():
    assert FixerConfig().timestep == 199
    assert FixerConfig(variant="pix2pix-turbo").timestep == 999
    assert FixerConfig(variant="pix2pix-turbo").train_unet_conv_in is True
    assert FixerConfig().train_unet_conv_in is False
    with pytest.raises(ValueError):
        FixerConfig(variant="sdxl")  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", ["difix", "pix2pix-turbo"])
def test_shapes_and_range(variant, difix, p2p):
    fixer = difix if variant == "difix" else p2p
    x = _images(2, 32, 48)
    y = fixer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert fixer.scheduler.timesteps.tolist() == [fixer.config.timestep]


def test_tiny_is_small_and_has_cross_view_attention(difix):
    n_params = sum(p.numel() for p in difix.parameters())
    assert 1e6 < n_params < 6e6
    assert difix.vae.config.latent_channels == 4
    assert 2 ** (len(difix.vae.config.block_out_channels) - 1) == 8  # SD's down-factor
    assert len(difix.cross_view_attention_names()) >= 3
    assert len(difix.skip_convs) == 4


def test_deterministic_same_seed():
    x = _images(1, 32, 32)
    a, b = Fixer.tiny("difix", seed=3), Fixer.tiny("difix", seed=3)
    assert torch.equal(a(x), b(x))
    assert torch.equal(a(x), a(x))
    c = Fixer.tiny("difix", seed=4)
    assert not torch.equal(a(x), c(x))


def test_odd_size_round_trip(difix):
    x = _images(1, 37, 53)
    y = difix(x)
    assert y.shape == (1, 3, 37, 53)
    r = _images(1, 37, 53, seed=1)[:, None]
    assert difix(x, r).shape == (1, 3, 37, 53)


def test_reference_changes_output(difix):
    x = _images(1, 32, 32)
    r1 = _images(1, 32, 32, seed=1)[:, None]  # [B,1,3,H,W]
    r2 = _images(1, 32, 32, seed=2)[:, None]
    y0, y1, y2 = difix(x), difix(x, r1), difix(x, r2)
    assert (y0 - y1).abs().max() > 1e-4
    assert (y1 - y2).abs().max() > 1e-4


def test_several_references_and_batch_independence(difix):
    x = _images(2, 32, 32)
    refs = torch.stack([_images(2, 32, 32, seed=s) for s in (5, 6, 7)], dim=1)  # [2,3,3,H,W]
    both = difix(x, refs)
    assert both.shape == x.shape
    # Views are joined per batch item only: item 1's result does not depend on item 0.
    alone = difix(x[1:], refs[1:])
    assert torch.allclose(both[1:], alone, atol=1e-5)


def test_memory_efficient_matches():
    fixer = Fixer.tiny("difix")
    x, r = _images(2, 32, 40), _images(2, 32, 40, seed=9)[:, None]
    ref_out = fixer(x, r)
    fixer.set_memory_efficient(True)
    assert torch.allclose(fixer(x, r), ref_out, atol=1e-5)


def test_fix_matches_forward_and_chunks(difix):
    x, r = _images(3, 24, 24), _images(3, 24, 24, seed=2)[:, None]
    assert torch.allclose(difix.fix(x, r, batch_size=2), difix(x, r), atol=1e-5)


def test_eval_uses_inference_mode_train_is_differentiable():
    fixer = Fixer.tiny("difix")
    x = _images(1, 16, 16)
    assert fixer(x).is_inference()
    fixer.train()
    y = fixer(x)
    assert not y.is_inference() and y.requires_grad


def test_gradients_reach_cross_view_adapters():
    fixer = Fixer.tiny("difix").train()
    x = _images(1, 32, 32)
    r = _images(1, 32, 32, seed=1)[:, None].requires_grad_(True)
    fixer(x, r).square().mean().backward()
    assert r.grad is not None and r.grad.abs().sum() > 0  # the reference influences the target
    joint = fixer.cross_view_attention_names()
    lora_b = {n: p for n, p in fixer.unet.named_parameters() if "lora_B" in n and n.split(".to_")[0] in joint}
    assert lora_b, "no LoRA on the cross-view attention"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b.values())
    for p in fixer.skip_convs.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_x0_step_matches_ddpm_scheduler(difix):
    g = torch.Generator().manual_seed(0)
    pred, x_t = torch.randn(1, 4, 4, 4, generator=g), torch.randn(1, 4, 4, 4, generator=g)
    t = difix.config.timestep
    expected = difix.scheduler.step(pred, t, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.allclose(difix._x0_from_prediction(pred, x_t), expected, atol=1e-5)


def test_single_view_processor_equals_diffusers():
    _, unet, _, emb = tiny_components(0)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([199, 199])
    with torch.no_grad():
        unet.set_attn_processor(AttnProcessor2_0())
        expected = unet(x, t, emb.expand(2, -1, -1)).sample
        install_multiview_attention(unet)
        got = unet(x, t, emb.expand(2, -1, -1), cross_attention_kwargs={"num_views": 1}).sample
    assert torch.allclose(got, expected, atol=1e-5)


def test_joint_attention_is_attention_over_all_views():
    _, unet, _, _ = tiny_components(0)
    install_multiview_attention(unet)
    attn = unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    assert isinstance(attn.processor, MultiViewAttnProcessor) and attn.processor.joint
    h = torch.randn(4, 6, attn.query_dim, generator=torch.Generator().manual_seed(0))  # [(B V), N, C], V=2
    with torch.no_grad():
        got = attn(h, num_views=2)
        # Reference: plain attention on the concatenated tokens of each batch item.
        attn.set_processor(AttnProcessor2_0())
        want = attn(h.reshape(2, 12, -1)).reshape(4, 6, -1)
    assert torch.allclose(got, want, atol=1e-5)


def test_gradient_checkpointing_keeps_gradients():
    fixer = Fixer.tiny("difix").train()
    fixer.enable_gradient_checkpointing()
    x, r = _images(1, 16, 16), _images(1, 16, 16, seed=1)[:, None]
    fixer(x, r).mean().backward()
    groups = fixer.trainable_parameter_groups()
    assert all(p.grad is not None for p in groups["skip_convs"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["unet_lora"])


def test_residual_output_starts_as_the_identity_and_keeps_its_config(tmp_path):
    from difix_refiner.fixer import FixerWeightsError

    fixer = Fixer.tiny("difix", residual_output=True, hint_channels=4)
    x, r = _images(2, 20, 28), _images(2, 20, 28, seed=1)[:, None]  # odd size: padded and cropped back
    hint = torch.cat([_images(2, 20, 28, seed=2), torch.ones(2, 1, 20, 28)], dim=1)
    torch.testing.assert_close(fixer.fix(x, r, hint=hint), x, rtol=0, atol=1e-6)
    assert not torch.allclose(Fixer.tiny("difix").fix(x, r), x, atol=0.05)  # a plain fixer decodes a new image
    # Trained a little (the decoder's output is no longer zero) it changes the render, and a reload keeps that.
    with torch.no_grad():
        fixer.vae.decoder.conv_out.bias.fill_(0.1)
    torch.testing.assert_close(fixer.fix(x, r, hint=hint), x + 0.05, rtol=0, atol=1e-5)
    fixer.save_pretrained(tmp_path / "residual")
    again = Fixer.from_pretrained(tmp_path / "residual")
    assert again.config.residual_output
    torch.testing.assert_close(again.fix(x, r, hint=hint), fixer.fix(x, r, hint=hint), rtol=0, atol=1e-6)
    # A pretrained VAE decodes images, not corrections: refused before any download is tried.
    with pytest.raises(FixerWeightsError, match="random weights"):
        Fixer.from_pretrained("stabilityai/sd-turbo", config=FixerConfig(residual_output=True))
