"""GAN discriminators and adversarial losses.

Three discriminators, all mapping images [B, 3, H, W] in [0, 1] to logits [B, K] (K
independent real/fake decisions per image: tokens, feature-map positions or patches):

* ``clip`` (default): a frozen CLIP ViT image encoder with small trainable heads on the
  token features of several evenly spaced transformer layers. This follows the idea of the
  CLIP-feature ("vision-aided") discriminator pix2pix-turbo uses: a strong frozen backbone
  makes a small head a useful critic from the first steps. Needs CLIP weights.
* ``vgg``: the same idea on frozen VGG16 relu features (convolutional heads). Needs VGG16 weights.
* ``patch``: a PatchGAN trained from scratch (spectral-normalised convolutions). Needs no
  weights, so it works anywhere; weaker early in training.

The frozen backbones pass gradients to their input (the generator needs them) but have no
trainable parameters; ``trainable_parameters()`` lists only the heads.

Losses: ``bce`` is the non-saturating logistic loss (the "sigmoid" loss of the vision-aided
discriminator): D minimises softplus(-D(real)) + softplus(D(fake)), G minimises
softplus(-D(fake)). ``hinge``: D minimises relu(1 - D(real)) + relu(1 + D(fake)),
G minimises -D(fake). Every loss is a mean over batch and decisions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from difix_refiner.training.perceptual import (
    VGG16_CHANNELS,
    CLIPEncoder,
    PerceptualBackbones,
    VGG16Features,
    imagenet_normalize,
)

DiscriminatorKind = Literal["clip", "vgg", "patch"]
GanLossType = Literal["bce", "hinge"]


@dataclass
class DiscriminatorConfig:
    """Which discriminator judges the outputs and with which adversarial loss."""

    kind: DiscriminatorKind = "clip"
    """clip: frozen CLIP ViT + trainable heads (as pix2pix-turbo); vgg: frozen VGG16 + heads;
    patch: PatchGAN from scratch (needs no weights)."""

    loss: GanLossType = "bce"
    """bce: non-saturating logistic loss (pix2pix-turbo's sigmoid loss); hinge: hinge loss."""

    clip_levels: int = 4
    """Number of CLIP transformer layers (evenly spaced, last included) that get a head."""

    vgg_layers: tuple[str, ...] = ("relu2_2", "relu3_3", "relu4_3", "relu5_3")
    """VGG16 layers that get a head (kind=vgg)."""

    head_width: int = 256
    """Hidden width of each feature head."""

    patch_channels: int = 64
    """Channels of the first PatchGAN layer (doubled per layer, at most 8x)."""

    patch_layers: int = 3
    """Number of stride-2 PatchGAN layers (the receptive field grows with it)."""


# --------------------------------------------------------------------------- losses


def bce_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean softplus(-real) + mean softplus(fake): -log sigmoid(real) - log(1 - sigmoid(fake))."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def bce_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating: mean softplus(-fake) = -log sigmoid(fake)."""
    return F.softplus(-fake_logits.float()).mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean relu(1 - real) + mean relu(1 + fake)."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean fake."""
    return -fake_logits.float().mean()


def discriminator_loss_from_logits(loss: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss of the given type."""
    if loss == "bce":
        return bce_discriminator_loss(real_logits, fake_logits)
    if loss == "hinge":
        return hinge_discriminator_loss(real_logits, fake_logits)
    raise ValueError(f"Unknown GAN loss {loss!r}; use 'bce' or 'hinge'.")


def generator_loss_from_logits(loss: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial loss of the given type."""
    if loss == "bce":
        return bce_generator_loss(fake_logits)
    if loss == "hinge":
        return hinge_generator_loss(fake_logits)
    raise ValueError(f"Unknown GAN loss {loss!r}; use 'bce' or 'hinge'.")


# --------------------------------------------------------------------------- discriminators


class _Discriminator(nn.Module):
    """Common interface: ``forward(images) -> logits [B, K]`` and ``trainable_parameters()``."""

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the discriminator's optimiser should update (never a frozen backbone's)."""
        return (p for p in self.parameters() if p.requires_grad)


class CLIPFeatureDiscriminator(_Discriminator):
    """Frozen CLIP vision transformer; one token-wise MLP head per chosen layer.

    Logits: [B, levels * (1 + N)] for N patch tokens (the class token is judged too).
    """

    def __init__(self, clip: CLIPEncoder, levels: int = 4, width: int = 256) -> None:
        super().__init__()
        self.clip = clip
        n = clip.num_layers
        levels = max(1, min(levels, n))
        # Evenly spaced, ending at the last layer: mixes low-level and semantic features.
        self.layers = sorted({max(1, round(n * (i + 1) / levels)) for i in range(levels)})
        d = clip.hidden_size
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(d),
                spectral_norm(nn.Linear(d, width)),
                nn.LeakyReLU(0.2),
                spectral_norm(nn.Linear(width, 1)),
            )
            for _ in self.layers
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> logits [B, K]."""
        states = self.clip.hidden_states(images.float(), self.layers)  # each [B, 1 + N, D]
        return torch.cat([head(h).squeeze(-1) for head, h in zip(self.heads, states)], dim=1)


class VGGFeatureDiscriminator(_Discriminator):
    """Frozen VGG16; one small convolutional head per chosen relu layer.

    Logits: [B, sum_l h_l * w_l], one per feature-map position of every chosen layer.
    """

    def __init__(self, vgg: VGG16Features, layers: Sequence[str], width: int = 256) -> None:
        super().__init__()
        self.vgg = vgg
        self.layers = tuple(layers)
        self.heads = nn.ModuleList(
            nn.Sequential(
                spectral_norm(nn.Conv2d(VGG16_CHANNELS[name], width, kernel_size=3, padding=1)),
                nn.LeakyReLU(0.2),
                spectral_norm(nn.Conv2d(width, 1, kernel_size=1)),
            )
            for name in self.layers
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> logits [B, K]."""
        feats = self.vgg(imagenet_normalize(images.float()), self.layers)
        return torch.cat([head(feats[n]).flatten(1) for head, n in zip(self.heads, self.layers)], dim=1)


class PatchDiscriminator(_Discriminator):
    """PatchGAN with spectral-normalised convolutions, trained from scratch.

    ``layers`` stride-2 4x4 convolutions (channels ``channels * 2^i``, at most 8x), then a 3x3
    convolution to one logit per patch. Logits: [B, (H / 2^layers) * (W / 2^layers)].
    """

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        c_in = 3
        for i in range(layers):
            c_out = channels * min(2**i, 8)
            mods += [spectral_norm(nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        mods.append(spectral_norm(nn.Conv2d(c_in, 1, kernel_size=3, padding=1)))
        self.net = nn.Sequential(*mods)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> logits [B, K]."""
        return self.net(images.float() * 2.0 - 1.0).flatten(1)


def build_discriminator(config: DiscriminatorConfig, backbones: PerceptualBackbones) -> _Discriminator:
    """The configured discriminator; raises ``PerceptualWeightsError`` when its backbone is missing."""
    if config.kind == "clip":
        return CLIPFeatureDiscriminator(backbones.clip(), levels=config.clip_levels, width=config.head_width)
    if config.kind == "vgg":
        return VGGFeatureDiscriminator(backbones.vgg(), config.vgg_layers, width=config.head_width)
    if config.kind == "patch":
        return PatchDiscriminator(config.patch_channels, config.patch_layers)
    raise ValueError(f"Unknown discriminator kind {config.kind!r}; use 'clip', 'vgg' or 'patch'.")


def needs_weights(config: DiscriminatorConfig) -> bool:
    """Whether the discriminator depends on pretrained backbone weights."""
    return config.kind in ("clip", "vgg")


@contextlib.contextmanager
def frozen_heads(disc: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients to the discriminator's parameters (not to its input).

    The generator's adversarial loss runs through the discriminator; without this it would
    leave stale gradients on the heads that a later discriminator step would pick up.
    """
    params = [p for p in disc.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def adversarial_generator_loss(disc: nn.Module, fake: torch.Tensor, loss: str) -> torch.Tensor:
    """Generator side: how badly ``fake`` [B, 3, H, W] fails to pass as real (grads flow to ``fake`` only)."""
    with frozen_heads(disc):
        return generator_loss_from_logits(loss, disc(fake))


def adversarial_discriminator_loss(
    disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, loss: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Discriminator side on detached ``fake``; returns (loss, {"d_real": mean logit, "d_fake": mean logit})."""
    real_logits = disc(real.detach())
    fake_logits = disc(fake.detach())
    value = discriminator_loss_from_logits(loss, real_logits, fake_logits)
    return value, {"d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}
