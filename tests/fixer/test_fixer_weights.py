"""Saving and loading: adapter-only and whole folders, bases, offline and missing-weight errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny_clip_tokenizer import save_letters_clip_tokenizer

from difix_refiner.fixer import (
    Fixer,
    FixerConfig,
    FixerWeightsError,
    write_prompt_embeds,
)
from difix_refiner.fixer.presets import tiny_components


def assert_same_outputs(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Model outputs of reloaded weights: equal up to float noise (kernels differ with memory layout and CPU)."""
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)

def _images(b: int = 1, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _save_tiny_base(folder: Path, *, seed: int = 0, text_encoder: bool = False, unet_config: dict | None = None) -> Path:
    """A base in the diffusers layout, written by diffusers' own save_pretrained."""
    vae, unet, scheduler, emb = tiny_components(seed)
    if unet_config is not None:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel(**unet_config)
    vae.save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    if text_encoder:
        _save_tiny_clip(folder, unet.config.cross_attention_dim)
    else:
        write_prompt_embeds(folder / "prompt_embeds.safetensors", emb)
    return folder


def _save_tiny_clip(folder: Path, dim: int) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab_size = save_letters_clip_tokenizer(folder, folder / "tokenizer", model_max_length=77)
    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=dim,
        intermediate_size=2 * dim,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    CLIPTextModel(cfg).save_pretrained(folder / "text_encoder")


def _perturb_trained(fixer: Fixer, seed: int = 0) -> None:
    """Stand-in for training: move every trained tensor away from its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in fixer.trainable_parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))


def test_missing_local_folder_is_clear():
    with pytest.raises(FixerWeightsError, match="does not exist") as info:
        Fixer.from_pretrained("/nonexistent")
    assert "diffusers layout" in str(info.value)


def test_hub_id_offline_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FixerWeightsError) as info:
        Fixer.from_pretrained("stabilityai/sd-turbo")
    msg = str(info.value)
    assert "stabilityai/sd-turbo" in msg and "HF_HUB_OFFLINE" in msg and "--base DIR" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no hub traceback attached


def test_base_folder_missing_parts(tmp_path):
    vae, *_ = tiny_components(0)
    vae.save_pretrained(tmp_path / "vae")
    with pytest.raises(FixerWeightsError, match="unet/"):
        Fixer.from_pretrained(tmp_path)


def test_missing_adapter_is_clear(tmp_path):
    base = _save_tiny_base(tmp_path / "base")
    with pytest.raises(FixerWeightsError, match="do not exist"):
        Fixer.from_pretrained(base, adapter=tmp_path / "nope")


def test_adapter_round_trip_on_diffusers_base(tmp_path):
    base = _save_tiny_base(tmp_path / "base")
    fixer = Fixer.from_pretrained(base)
    assert fixer.base == str(base.resolve())
    _perturb_trained(fixer)
    x, r = _images(), _images(seed=1)[:, None]
    expected = fixer(x, r)

    out = Path(fixer.save_pretrained(tmp_path / "adapter"))
    meta = json.loads((out / "fixer_config.json").read_text())
    assert meta["kind"] == "adapter" and meta["base"] == str(base.resolve())
    with safe_open(str(out / "fixer.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    # Only what was trained (plus the prompt embedding): no frozen base weight is copied.
    assert all("lora_" in k or k.startswith("skip_convs.") or k == "prompt_embeds" for k in keys)

    for loaded in (
        Fixer.from_pretrained(base, adapter=out),
        Fixer.from_pretrained(adapter=out),  # base taken from the JSON
        Fixer.from_pretrained(out),  # a saved folder given as base
        Fixer.from_pretrained(base, adapter=out / "fixer.safetensors"),  # the file alone
    ):
        assert_same_outputs(loaded(x, r), expected)


def test_full_unet_adapter_round_trip(tmp_path):
    base = _save_tiny_base(tmp_path / "base")
    fixer = Fixer.from_pretrained(base, config=FixerConfig(train_unet=True, unet_lora_rank=0))
    _perturb_trained(fixer)
    x = _images()
    expected = fixer(x)
    out = fixer.save_pretrained(tmp_path / "adapter")
    with safe_open(str(Path(out) / "fixer.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("unet.down_blocks") for k in keys)  # the UNet travels
    assert not any(k.startswith("vae.encoder") for k in keys)  # the frozen VAE does not
    assert_same_outputs(Fixer.from_pretrained(base, adapter=out)(x), expected)


def test_whole_round_trip(tmp_path):
    fixer = Fixer.tiny("pix2pix-turbo", seed=1)
    _perturb_trained(fixer)
    x = _images(1, 24, 40)
    expected = fixer(x)
    out = fixer.save_pretrained(tmp_path / "whole")
    meta = json.loads((Path(out) / "fixer_config.json").read_text())
    assert meta["kind"] == "whole" and meta["base"] is None
    for loaded in (Fixer.from_pretrained(out), Fixer.from_pretrained("tiny", adapter=out)):
        assert loaded.config.variant == "pix2pix-turbo"
        original, reloaded = fixer.state_dict(), loaded.state_dict()
        assert original.keys() == reloaded.keys()
        for name, value in original.items():  # weights: exactly
            assert torch.equal(reloaded[name], value), name
        assert_same_outputs(loaded(x), expected)
    with pytest.raises(FixerWeightsError, match="variant"):
        Fixer.from_pretrained(out, variant="difix")


def test_text_encoder_is_loaded_lazily_once(tmp_path):
    base = _save_tiny_base(tmp_path / "base", text_encoder=True)
    fixer = Fixer.from_pretrained(base)
    assert fixer.prompt_embeds is None  # nothing encoded yet
    y = fixer(_images())
    assert fixer.prompt_embeds is not None and fixer.prompt_embeds.shape == (1, 77, 64)
    assert fixer._text_encoder_loader is None  # encoder dropped after the one encoding
    assert not fixer.prompt_embeds.is_inference()  # usable by later training steps
    # The adapter carries the embedding, so a base without text encoder can take it.
    out = fixer.save_pretrained(tmp_path / "adapter")
    bare = tmp_path / "bare"
    bare.mkdir()
    for sub in ("vae", "unet", "scheduler"):
        (bare / sub).symlink_to(base / sub)
    assert_same_outputs(Fixer.from_pretrained(bare, adapter=out)(_images()), y)


def test_adapter_for_other_architecture_is_refused(tmp_path):
    base = _save_tiny_base(tmp_path / "base")
    out = Fixer.from_pretrained(base).save_pretrained(tmp_path / "adapter")
    _, unet, _, _ = tiny_components(0)
    other_cfg = dict(unet.config)
    other_cfg["block_out_channels"] = [32, 64, 128]
    other_cfg = {k: v for k, v in other_cfg.items() if not k.startswith("_")}
    other = _save_tiny_base(tmp_path / "other", unet_config=other_cfg)
    with pytest.raises(FixerWeightsError, match="does not fit") as info:
        Fixer.from_pretrained(other, adapter=out)
    assert "\n" not in str(info.value)


def test_load_errors_are_summarised_in_a_few_lines():
    from difix_refiner.fixer.weights import summarise_load_error

    saved = torch.nn.Sequential(*[torch.nn.Linear(4, 8) for _ in range(40)]).state_dict()
    target = torch.nn.Sequential(*[torch.nn.Linear(4, 6) for _ in range(40)])
    with pytest.raises(RuntimeError) as info:
        target.load_state_dict(saved)
    assert str(info.value).count("size mismatch") == 80  # torch: one line per tensor
    summary = summarise_load_error(info.value)
    assert summary.startswith("80 tensor(s) differ, e.g. size mismatch for 0.weight") and "and 77 more" in summary
    assert "\n" not in summary and summary.count("size mismatch") == 3


def test_base_without_text_encoder_or_embedding(tmp_path):
    base = _save_tiny_base(tmp_path / "base")
    (base / "prompt_embeds.safetensors").unlink()
    with pytest.raises(FixerWeightsError, match="prompt"):
        Fixer.from_pretrained(base)
