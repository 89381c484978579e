"""Configuration of the one-step fixer.

One dataclass covers both published variants. Fields left at ``None`` take the
variant's published value in ``__post_init__``, so ``FixerConfig(variant="pix2pix-turbo")``
gives t=999 and a trainable UNet ``conv_in`` while ``FixerConfig()`` gives Difix (t=199).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Variant = Literal["difix", "pix2pix-turbo"]
VARIANTS: tuple[str, ...] = ("difix", "pix2pix-turbo")

DEFAULT_PROMPT = "remove degradation"

# Timestep of the single denoising step, per variant (Difix3D+: 199; pix2pix-turbo: 999).
VARIANT_TIMESTEPS: dict[str, int] = {"difix": 199, "pix2pix-turbo": 999}

# LoRA targets are module-name suffixes, matched the way peft matches them
# (``name == target`` or ``name.endswith("." + target)``).
DEFAULT_UNET_LORA_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv",
    "conv_out",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
)
# Only modules under ``vae.decoder`` are adapted: the encoder stays frozen so that the
# render's latent (x_t) and the skip features keep their meaning.
DEFAULT_VAE_LORA_TARGETS: tuple[str, ...] = (
    "conv_in",
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv",
    "conv_out",
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
)


@dataclass
class FixerConfig:
    """Everything that defines a fixer apart from the base weights.

    Saved next to trained weights (``fixer_config.json``) so that a folder reloads
    into the same architecture.
    """

    variant: Variant = "difix"
    """``difix`` (t=199, optional reference views) or ``pix2pix-turbo`` (t=999, one view)."""

    timestep: int | None = None
    """Timestep of the single step; ``None`` uses the variant's (199 or 999)."""

    prompt: str = DEFAULT_PROMPT
    """Text prompt, encoded once and cached."""

    unet_lora_rank: int = 8
    """Rank of the UNet LoRA; 0 disables it (e.g. with ``train_unet=True``)."""

    unet_lora_alpha: float | None = None
    """LoRA alpha of the UNet adapter; ``None`` means equal to the rank (scale 1)."""

    unet_lora_targets: tuple[str, ...] = DEFAULT_UNET_LORA_TARGETS
    """UNet module-name suffixes that get a LoRA adapter."""

    vae_lora_rank: int = 4
    """Rank of the VAE-decoder LoRA; 0 disables it."""

    vae_lora_alpha: float | None = None
    """LoRA alpha of the VAE-decoder adapter; ``None`` means equal to the rank."""

    vae_lora_targets: tuple[str, ...] = DEFAULT_VAE_LORA_TARGETS
    """VAE-decoder module-name suffixes that get a LoRA adapter."""

    train_unet: bool = False
    """Make the whole UNet trainable (Difix's public recipe); saved adapters then carry the UNet."""

    train_unet_conv_in: bool | None = None
    """Make the UNet's ``conv_in`` trainable; ``None``: True for pix2pix-turbo, False for difix."""

    skip_connections: bool = True
    """Run 1x1 skip convolutions from the VAE encoder to the decoder."""

    skip_init: float = 1e-5
    """Constant the skip convolutions' weights start at (near zero: the decoder starts unchanged)."""

    skip_gamma: float = 1.0
    """Scale applied to encoder activations before the skip convolutions."""

    residual_output: bool = False
    """Add the decoder's output to the input render (an image-space residual), so the fixer changes only what
    it has learnt to change and a good render passes through. For fixers trained from random weights (``tiny``):
    the decoder's output convolution then starts at zero, so a new fixer is exactly the identity. A pretrained
    VAE decodes whole images, not corrections, so it cannot be used with one."""

    sample_latent: bool = False
    """Sample the VAE posterior instead of taking its mean (the mean keeps inference deterministic)."""

    memory_efficient: bool = False
    """Trade speed for memory: VAE sliced one view at a time, UNet one batch item at a time."""

    hint_channels: int = 0
    """Extra input channels of the LiDAR hint (``fixer/hint.py``): 4 (RGB + validity mask) for a fixer trained
    with hints, 0 for one without. Saved with the weights, so a loaded fixer knows whether it takes hints."""

    lora_seed: int = 0
    """Seed of the LoRA ``A`` matrices' initialisation (``B`` starts at zero)."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes saved with the config (e.g. training data); not interpreted here."""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.timestep is None:
            self.timestep = VARIANT_TIMESTEPS[self.variant]
        if self.train_unet_conv_in is None:
            self.train_unet_conv_in = self.variant == "pix2pix-turbo"
        if not 0 <= int(self.timestep) <= 999:
            raise ValueError(f"timestep must lie in [0, 999], got {self.timestep}")
        if self.unet_lora_rank < 0 or self.vae_lora_rank < 0:
            raise ValueError("LoRA ranks must be >= 0")
        if self.hint_channels not in (0, 4):
            raise ValueError(f"hint_channels must be 0 (no hint) or 4 (RGB + mask), got {self.hint_channels}")
        self.unet_lora_targets = tuple(self.unet_lora_targets)
        self.vae_lora_targets = tuple(self.vae_lora_targets)

    @property
    def supports_references(self) -> bool:
        """Whether reference views may be given (only the Difix variant joins views)."""
        return self.variant == "difix"

    @property
    def uses_hint(self) -> bool:
        """Whether the fixer takes a LiDAR hint (it was built, and trained, with hint channels)."""
        return self.hint_channels > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["unet_lora_targets"] = list(self.unet_lora_targets)
        out["vae_lora_targets"] = list(self.vae_lora_targets)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FixerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected so typos do not pass silently."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown FixerConfig fields: {sorted(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> FixerConfig:
        """Copy with some fields changed.

        Fields already resolved from the variant (``timestep``, ``train_unet_conv_in``) keep
        their values; pass them as ``None`` too when switching the variant.
        """
        return dataclasses.replace(self, **changes)
