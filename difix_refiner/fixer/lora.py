"""LoRA adapters (peft) on the UNet and the VAE decoder."""

from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

ADAPTER_NAME = "fixer"
# peft names adapter tensors ``...lora_A.<adapter>.weight`` / ``...lora_B.<adapter>.weight``.
LORA_KEY_MARKER = "lora_"

_ADAPTABLE = (nn.Linear, nn.Conv2d)


def matching_module_names(model: nn.Module, suffixes: tuple[str, ...], prefix: str = "") -> list[str]:
    """Full names of Linear/Conv2d modules under ``prefix`` whose name ends with one of ``suffixes``.

    Resolving the names here (instead of handing peft the suffixes) lets the VAE adapter
    stay inside the decoder and makes an empty match an explicit error.
    """
    names = []
    for name, module in model.named_modules():
        if prefix and not name.startswith(prefix):
            continue
        if not isinstance(module, _ADAPTABLE):
            continue
        if any(name == s or name.endswith("." + s) for s in suffixes):
            names.append(name)
    return names


def add_lora(
    model: nn.Module,
    rank: int,
    alpha: float | None,
    suffixes: tuple[str, ...],
    *,
    prefix: str = "",
    seed: int = 0,
) -> list[str]:
    """Inject a LoRA adapter named :data:`ADAPTER_NAME` into ``model`` in place.

    ``A`` is drawn from a Gaussian with a fixed seed (without touching the global RNG) and
    ``B`` starts at zero, so the adapted model initially equals the base model.
    Returns the adapted module names.
    """
    if rank <= 0:
        return []
    targets = matching_module_names(model, suffixes, prefix)
    if not targets:
        raise ValueError(f"no modules match the LoRA targets {suffixes} (prefix {prefix!r})")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        init_lora_weights="gaussian",
        target_modules=targets,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    return targets


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of ``model`` (keys as in ``model.state_dict()``)."""
    return {k: v for k, v in model.state_dict().items() if LORA_KEY_MARKER in k}


def is_lora_parameter(name: str) -> bool:
    return LORA_KEY_MARKER in name
