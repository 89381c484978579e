"""A fixer that takes the LiDAR hint: zero-initialised hint channels leave the base fixer's output exactly
as it was, trained ones are saved with the adapter, a hint fixer runs without a hint (and says so once),
and a hint given to a fixer trained without hints is a clear error."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from difix_refiner.core.errors import InputError
from difix_refiner.fixer import Fixer, FixerConfig, write_prompt_embeds
from difix_refiner.fixer.presets import tiny_components

H, W = 36, 52  # not multiples of 8: the hint is padded like the images


def _inputs(variant: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, H, W, generator=g)
    refs = torch.rand(2, 1, 3, H, W, generator=g) if variant == "difix" else None
    hint = torch.rand(2, 4, H, W, generator=g)
    hint[:, 3] = (hint[:, 3] > 0.6).float()
    hint[:, :3] *= hint[:, 3:4]
    return images, refs, hint


def _base_folder(folder: Path) -> Path:
    """The tiny model in the diffusers layout: the path an SD-Turbo base takes (base + adapter)."""
    vae, unet, scheduler, emb = tiny_components(0)
    vae.save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    write_prompt_embeds(folder / "prompt_embeds.safetensors", emb)
    return folder


def _train_a_little(fixer: Fixer, images, refs, hint, steps: int = 2) -> None:
    """Real gradient steps on the hint convolution (the only trained part here)."""
    fixer.train()
    opt = torch.optim.SGD([fixer.hint_conv.conv.weight], lr=5.0)
    for _ in range(steps):
        loss = (fixer(images, refs, hint) - images).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    fixer.eval()


@pytest.mark.parametrize("variant", ["difix", "pix2pix-turbo"])
def test_zero_initialised_hint_channels_give_exactly_the_base_output(variant):
    base = Fixer.tiny(variant, seed=0)
    hinted = Fixer.tiny(variant, seed=0, hint_channels=4)
    assert hinted.config.uses_hint and not base.config.uses_hint
    # Every base weight is the same; the hint convolution is the only addition, and it is zero.
    base_sd, hinted_sd = base.state_dict(), hinted.state_dict()
    assert set(hinted_sd) - set(base_sd) == {"hint_conv.conv.weight"}
    assert all(torch.equal(base_sd[k], hinted_sd[k]) for k in base_sd)
    assert torch.count_nonzero(hinted_sd["hint_conv.conv.weight"]) == 0
    images, refs, hint = _inputs(variant)
    expected = base.fix(images, refs)
    assert torch.equal(hinted.fix(images, refs, hint=hint), expected)
    assert torch.equal(hinted(images, refs, hint), expected)


def test_hint_channels_train_and_change_the_output():
    fixer = Fixer.tiny("difix", seed=0, hint_channels=4)
    assert "hint_conv" in fixer.trainable_parameter_groups()
    images, refs, hint = _inputs("difix")
    fixer.train()
    loss = (fixer(images, refs, hint) - images).abs().mean()
    loss.backward()
    assert fixer.hint_conv.conv.weight.grad.abs().sum() > 0  # zero weights still get a gradient
    _train_a_little(fixer, images, refs, hint)
    with_hint = fixer.fix(images, refs, hint=hint)
    assert not torch.equal(with_hint, fixer.fix(images, refs))
    # "No hint" is the all-unknown hint: no bias, so zeros add exactly nothing.
    assert torch.equal(fixer.fix(images, refs), fixer.fix(images, refs, hint=torch.zeros_like(hint)))
    # Another hint gives another output.
    other = hint.clone()
    other[:, :3] = 1.0 - other[:, :3]
    other[:, :3] *= other[:, 3:4]
    assert not torch.equal(with_hint, fixer.fix(images, refs, hint=other))


def test_hint_fixer_without_a_hint_runs_and_says_so_once(caplog):
    fixer = Fixer.tiny("pix2pix-turbo", seed=0, hint_channels=4)
    images, _, _ = _inputs("pix2pix-turbo")
    with caplog.at_level(logging.WARNING, logger="difix_refiner.fixer.hint"):
        first = fixer.fix(images)
        second = fixer.fix(images)
    notes = [r for r in caplog.records if "got none" in r.getMessage()]
    assert len(notes) == 1 and "trained with LiDAR hints" in notes[0].getMessage()
    assert torch.equal(first, second)
    assert torch.equal(first, Fixer.tiny("pix2pix-turbo", seed=0).fix(images))  # untrained: the base fixer


def test_hint_to_a_fixer_without_hints_is_a_clear_error():
    fixer = Fixer.tiny("difix", seed=0)
    images, refs, hint = _inputs("difix")
    with pytest.raises(InputError, match=r"^this fixer was trained without a LiDAR hint \(hint_channels 0"):
        fixer.fix(images, refs, hint=hint)
    hinted = Fixer.tiny("difix", seed=0, hint_channels=4)
    with pytest.raises(InputError, match=r"shape \[2, 4, 36, 52\]"):
        hinted.fix(images, refs, hint=hint[:, :3])
    with pytest.raises(InputError, match=r"values in \[0, 1\]"):
        hinted.fix(images, refs, hint=hint * 3.0)
    with pytest.raises(ValueError, match="hint_channels must be 0"):
        FixerConfig(hint_channels=3)


def test_whole_save_round_trip_keeps_the_hint_weights(tmp_path):
    fixer = Fixer.tiny("pix2pix-turbo", seed=1, hint_channels=4)
    images, refs, hint = _inputs("pix2pix-turbo", seed=2)
    _train_a_little(fixer, images, refs, hint)
    expected = fixer.fix(images, hint=hint)
    out = Path(fixer.save_pretrained(tmp_path / "whole"))
    assert json.loads((out / "fixer_config.json").read_text())["config"]["hint_channels"] == 4
    loaded = Fixer.from_pretrained(out)
    assert loaded.config.uses_hint
    assert torch.equal(loaded.hint_conv.conv.weight, fixer.hint_conv.conv.weight)
    torch.testing.assert_close(loaded.fix(images, hint=hint), expected, rtol=0, atol=1e-5)


def test_adapter_on_a_diffusers_base_carries_the_hint_convolution(tmp_path):
    base = _base_folder(tmp_path / "base")
    plain = Fixer.from_pretrained(base)
    fixer = Fixer.from_pretrained(base, config=FixerConfig(hint_channels=4))
    images, refs, hint = _inputs("difix")
    assert torch.equal(fixer.fix(images, refs, hint=hint), plain.fix(images, refs))  # same process, same tensors
    assert fixer.hint_conv.conv.weight.requires_grad  # trainable with the adapters (the VAE encoder is frozen)
    assert not any(p.requires_grad for p in fixer.vae.encoder.parameters())
    _train_a_little(fixer, images, refs, hint)
    expected = fixer.fix(images, refs, hint=hint)
    out = Path(fixer.save_pretrained(tmp_path / "adapter"))
    with safe_open(str(out / "fixer.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert "hint_conv.conv.weight" in keys and not any(k.startswith("vae.encoder.") for k in keys)
    loaded = Fixer.from_pretrained(base, adapter=out)
    assert loaded.config.hint_channels == 4
    assert torch.equal(loaded.hint_conv.conv.weight, fixer.hint_conv.conv.weight)
    torch.testing.assert_close(loaded.fix(images, refs, hint=hint), expected, rtol=0, atol=1e-5)
