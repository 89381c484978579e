"""Which parameters train, and the groups handed to an optimiser."""

from __future__ import annotations

from difix_refiner.fixer import Fixer


def _trainable_names(fixer: Fixer) -> set[str]:
    return {n for n, p in fixer.named_parameters() if p.requires_grad}


def test_lora_training_only_adapters_and_skips():
    fixer = Fixer.tiny("difix")
    names = _trainable_names(fixer)
    assert names
    for n in names:
        assert "lora_" in n or n.startswith("skip_convs."), n
    # Adapters exist on both the UNet and the VAE decoder, never on the VAE encoder.
    assert any(n.startswith("unet.") for n in names)
    assert any(n.startswith("vae.decoder.") for n in names)
    assert not any(n.startswith("vae.encoder.") for n in names)
    groups = fixer.trainable_parameter_groups()
    assert set(groups) == {"unet_lora", "vae_lora", "skip_convs"}
    assert sum(len(v) for v in groups.values()) == len(names)


def test_full_unet_training():
    fixer = Fixer.tiny("difix", train_unet=True)
    unet_params = {"unet." + n for n, _ in fixer.unet.named_parameters()}
    names = _trainable_names(fixer)
    assert unet_params <= names
    assert all(n in unet_params or "lora_" in n or n.startswith("skip_convs.") for n in names)
    assert set(fixer.trainable_parameter_groups()) == {"unet", "vae_lora", "skip_convs"}


def test_pix2pix_trains_conv_in_and_ranks_are_configurable():
    fixer = Fixer.tiny("pix2pix-turbo", unet_lora_rank=2, vae_lora_rank=0)
    groups = fixer.trainable_parameter_groups()
    assert set(groups) == {"unet_lora", "unet_conv_in", "skip_convs"}
    a = [p for n, p in fixer.unet.named_parameters() if n.endswith("attn1.to_q.lora_A.fixer.weight")]
    assert a and a[0].shape[0] == 2
    only_attn = Fixer.tiny("difix", unet_lora_targets=("to_q", "to_k", "to_v", "to_out.0"))
    assert only_attn.unet_lora_modules
    assert all(n.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")) for n in only_attn.unet_lora_modules)


def test_no_skip_connections_option():
    fixer = Fixer.tiny("difix", skip_connections=False)
    assert fixer.skip_convs is None
    assert "skip_convs" not in fixer.trainable_parameter_groups()
