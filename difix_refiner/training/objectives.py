"""Training objectives of the fixer: paired (Difix / pix2pix-turbo) and unpaired (CycleGAN-Turbo).

Weights and "explicit" requests
-------------------------------
Every weight field defaults to ``None``, meaning "the preset's (published) value". A number set
by the user is an explicit request. When a loss needs backbone weights that are missing:

* explicit request (or ``require_weights=True``): :class:`PerceptualWeightsError` at
  construction, naming the missing file and the option to set;
* preset value: the loss is switched off with one :class:`LossDisabledWarning` and recorded
  in ``objective.disabled``.

L2, L1, MS-SSIM and the gradient loss need nothing. Setting a weight to 0 switches a loss off without
any check.

No-download fallback: when a preset's perceptual terms (LPIPS, Gram, CLIP) are switched off for missing
weights, L1 + MS-SSIM + the image-gradient loss (the ``local`` preset's weights) are switched on in their
place, unless their weights were given (``no_download_fallback=False`` keeps the preset as it is).

Paired usage::

    objective = PairedObjective(PairedObjectiveConfig(preset="pix2pix-turbo"))
    total, terms = objective(output, target, step)        # output, target: [B, 3, H, W] in [0, 1]
    total.backward(); opt_g.step()
    if objective.has_gan:
        d_loss, d_terms = objective.discriminator_loss(output.detach(), target)
        d_loss.backward(); opt_d.step()                   # opt_d over objective.discriminator_parameters()

All terms are summed into one generator loss per step (the published scripts take separate
optimiser steps for the adversarial term; one sum is equivalent up to the order of updates and
costs one generator forward instead of two). The discriminator's loss is not scaled by the GAN
weight: that weight balances the generator's terms, the discriminator has its own optimiser.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from difix_refiner.training.discriminator import (
    DiscriminatorConfig,
    adversarial_discriminator_loss,
    adversarial_generator_loss,
    build_discriminator,
)
from difix_refiner.training.losses import (
    CLIPSimilarityLoss,
    GramLoss,
    check_images,
    gradient_loss,
    l1_loss,
    l2_loss,
    lpips_loss,
    ms_ssim_loss,
)
from difix_refiner.training.perceptual import (
    PerceptualBackbones,
    PerceptualConfig,
    PerceptualWeightsError,
)

PairedPreset = Literal["difix", "pix2pix-turbo", "local"]

_NO_DOWNLOAD_TERMS = {"l1": 0.0, "msssim": 0.0, "gradient": 0.0}
# Published loss weights (see shared/notes/published-facts.md), and "local", which needs no weights.
PAIRED_PRESETS: dict[str, dict[str, float]] = {
    # Difix3D+: L2 + LPIPS + 0.5 Gram, Gram switched on after 2,000 steps.
    "difix": {"l2": 1.0, "lpips": 1.0, "gram": 0.5, "clip": 0.0, "gan": 0.0, **_NO_DOWNLOAD_TERMS, "gram_warmup_steps": 2000},
    # pix2pix-turbo: lambda_l2 1, lambda_lpips 5, lambda_clipsim 5, lambda_gan 0.5.
    "pix2pix-turbo": {"l2": 1.0, "lpips": 5.0, "gram": 0.0, "clip": 5.0, "gan": 0.5, **_NO_DOWNLOAD_TERMS, "gram_warmup_steps": 0},
    # Ours, for machines without LPIPS/VGG/CLIP weights: L1 + (1 - MS-SSIM) + image gradients, equal weights
    # (not yet ablated); add --objective.gan with --objective.discriminator.kind patch for a GAN from scratch.
    "local": {"l2": 0.0, "lpips": 0.0, "gram": 0.0, "clip": 0.0, "gan": 0.0, "l1": 1.0, "msssim": 1.0, "gradient": 1.0, "gram_warmup_steps": 0},
}  # fmt: skip
PAIRED_TERMS: tuple[str, ...] = ("l2", "lpips", "gram", "clip", "gan", "l1", "msssim", "gradient")
PERCEPTUAL_TERMS: tuple[str, ...] = ("lpips", "gram", "clip")
"""Terms whose missing weights switch the no-download fallback on."""

# CycleGAN-Turbo: cycle L1 x1 + LPIPS x10, identity L1 x1 + LPIPS x1, GAN 0.5.
UNPAIRED_DEFAULTS: dict[str, float] = {
    "cycle_l1": 1.0,
    "cycle_lpips": 10.0,
    "identity_l1": 1.0,
    "identity_lpips": 1.0,
    "gan": 0.5,
}


class LossDisabledWarning(UserWarning):
    """A preset loss was switched off because its backbone weights are missing."""


class FallbackLossWarning(UserWarning):
    """No-download losses were switched on in place of perceptual ones whose weights are missing."""


def _disable(name: str, value: float, err: Exception, option: str) -> None:
    warnings.warn(
        f"The {name} loss (preset weight {value:g}) is switched OFF: {err} "
        f"Set {option} explicitly to make this an error, or 0 to silence this warning.",
        LossDisabledWarning,
        stacklevel=3,
    )


def _explicit_error(name: str, option: str, value: float, err: Exception) -> PerceptualWeightsError:
    return PerceptualWeightsError(f"The {name} loss was requested ({option}={value:g}) but cannot be built: {err}")


# --------------------------------------------------------------------------- paired


@dataclass
class PairedObjectiveConfig:
    """Loss weights of paired fixer training. ``None`` takes the preset's published value."""

    preset: PairedPreset = "difix"
    """difix: L2 1, LPIPS 1, Gram 0.5 after a warm-up; pix2pix-turbo: L2 1, LPIPS 5, CLIP 5, GAN 0.5;
    local: L1 1, MS-SSIM 1, gradient 1 (needs no downloaded weights)."""

    l2: float | None = None
    """Weight of the mean squared error."""

    lpips: float | None = None
    """Weight of LPIPS (VGG16 trunk)."""

    gram: float | None = None
    """Weight of the Gram (style) loss on VGG16 relu1_2..relu5_3."""

    gram_warmup_steps: int | None = None
    """Steps before the Gram loss switches on (Difix: 2000); None takes the preset's."""

    gram_crop: int | None = None
    """Compute the Gram loss on a random square crop of this side (memory; Difix crops 400). None: whole image."""

    clip: float | None = None
    """Weight of the CLIP similarity loss, 1 - cos(CLIP(output), reference)."""

    clip_mode: Literal["image", "prompt"] = "image"
    """Reference of the CLIP loss: image = the target's embedding (default: our prompts are instructions,
    not captions); prompt = the prompt's text embedding, as pix2pix-turbo does with captions."""

    gan: float | None = None
    """Weight of the generator's adversarial loss."""

    l1: float | None = None
    """Weight of the mean absolute error."""

    msssim: float | None = None
    """Weight of 1 - MS-SSIM (5 scales; fewer on crops under 160 px)."""

    gradient: float | None = None
    """Weight of the L1 distance between the image gradients (edges) of output and target."""

    no_download_fallback: bool = True
    """When the preset's LPIPS/Gram/CLIP terms are switched off for missing weights, switch on L1 + MS-SSIM +
    gradient (the local preset's weights) for every one of them not set explicitly."""

    require_weights: bool = False
    """Treat every preset loss as explicitly requested: missing weights raise instead of warning."""

    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    """Discriminator used when the GAN weight is above 0 (kind patch: trained from scratch, needs no weights)."""

    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    """Where LPIPS, VGG16 and CLIP weights come from."""

    def resolved(self) -> dict[str, tuple[float, bool]]:
        """{term: (weight, explicitly set)} after applying the preset."""
        if self.preset not in PAIRED_PRESETS:
            raise ValueError(f"Unknown preset {self.preset!r}; choose from {sorted(PAIRED_PRESETS)}.")
        preset = PAIRED_PRESETS[self.preset]
        out = {}
        for term in PAIRED_TERMS:
            value = getattr(self, term)
            explicit = value is not None
            weight = float(value if explicit else preset[term])
            if weight < 0:
                raise ValueError(f"Loss weight {term}={weight} is negative.")
            out[term] = (weight, explicit or self.require_weights)
        return out

    def warmup(self) -> int:
        """Resolved Gram warm-up in steps."""
        value = self.gram_warmup_steps
        return int(PAIRED_PRESETS[self.preset]["gram_warmup_steps"] if value is None else value)


class PairedObjective(nn.Module):
    """Paired loss: ``objective(output, target, step) -> (total, {term: unweighted value})``.

    ``weights`` holds the active weights after presets and missing-weight handling;
    ``disabled`` maps switched-off preset terms to the reason.
    """

    def __init__(self, config: PairedObjectiveConfig | None = None, backbones: PerceptualBackbones | None = None):
        super().__init__()
        self.config = config = config or PairedObjectiveConfig()
        self.backbones = backbones or PerceptualBackbones(config.perceptual)
        self.gram_warmup_steps = config.warmup()
        self.weights: dict[str, float] = {}
        self.disabled: dict[str, str] = {}
        self.lpips = None
        self.gram_loss = None
        self.clip_loss = None
        self.discriminator = None

        builders: dict[str, Callable[[], None]] = {
            "lpips": self._build_lpips,
            "gram": self._build_gram,
            "clip": self._build_clip,
            "gan": self._build_gan,
        }
        for term, (weight, explicit) in config.resolved().items():
            if weight == 0:
                continue
            if term in builders:
                try:
                    builders[term]()
                except PerceptualWeightsError as err:
                    if explicit:
                        raise _explicit_error(term, term, weight, err) from None
                    _disable(term, weight, err, f"--{term}")
                    self.disabled[term] = str(err)
                    continue
            self.weights[term] = weight
        self.fallback = self._no_download_fallback()
        if not self.weights:
            raise ValueError(f"No active loss terms (weights resolved to {config.resolved()}, disabled: {self.disabled}).")

    def _no_download_fallback(self) -> list[str]:
        """Switch on the local preset's terms not set explicitly when a perceptual term was switched off."""
        if not self.config.no_download_fallback or not set(self.disabled) & set(PERCEPTUAL_TERMS):
            return []
        added = [t for t, w in PAIRED_PRESETS["local"].items() if t in _NO_DOWNLOAD_TERMS and getattr(self.config, t) is None and w > 0]
        for term in added:
            self.weights[term] = PAIRED_PRESETS["local"][term]
        if added:
            warnings.warn(
                f"Without the weights of {', '.join(sorted(set(self.disabled) & set(PERCEPTUAL_TERMS)))}, the "
                f"no-download losses {', '.join(added)} are switched on (set their weights, or "
                "--objective.no-download-fallback False, to choose otherwise).",
                FallbackLossWarning,
                stacklevel=3,
            )
        return added

    def _build_lpips(self) -> None:
        self.lpips = self.backbones.lpips()

    def _build_gram(self) -> None:
        self.gram_loss = GramLoss(self.backbones.vgg(), crop=self.config.gram_crop)

    def _build_clip(self) -> None:
        self.clip_loss = CLIPSimilarityLoss(self.backbones.clip(text=self.config.clip_mode == "prompt"), self.config.clip_mode)

    def _build_gan(self) -> None:
        self.discriminator = build_discriminator(self.config.discriminator, self.backbones)

    @property
    def has_gan(self) -> bool:
        """Whether a discriminator is trained alongside (call :meth:`discriminator_loss`)."""
        return "gan" in self.weights

    def gram_active(self, step: int | None) -> bool:
        """The Gram loss counts from step ``gram_warmup_steps`` on (``None``: always)."""
        return "gram" in self.weights and (step is None or step >= self.gram_warmup_steps)

    def active_terms(self, step: int | None = None) -> list[str]:
        """Terms that contribute at ``step``."""
        return [t for t in self.weights if t != "gram" or self.gram_active(step)]

    def forward(
        self,
        output: torch.Tensor,
        target: torch.Tensor,
        step: int | None = None,
        prompts: str | Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Generator loss.

        output: [B, 3, H, W] in [0, 1], the fixer's prediction (with gradient).
        target: [B, 3, H, W] in [0, 1], the clean image.
        step: training step, for the Gram warm-up; ``None`` counts every term.
        prompts: needed only with ``clip_mode="prompt"`` (one string or one per image).
        Returns (weighted total, {term: unweighted detached value}); terms not active are absent.
        """
        check_images(output, target)
        raw: dict[str, torch.Tensor] = {}
        for term in self.active_terms(step):
            if term == "l2":
                raw[term] = l2_loss(output, target)
            elif term == "lpips":
                raw[term] = lpips_loss(self.lpips, output, target)
            elif term == "gram":
                raw[term] = self.gram_loss(output, target)
            elif term == "clip":
                raw[term] = self.clip_loss(output, target, prompts)
            elif term == "gan":
                raw[term] = adversarial_generator_loss(self.discriminator, output, self.config.discriminator.loss)
            elif term == "l1":
                raw[term] = l1_loss(output, target)
            elif term == "msssim":
                raw[term] = ms_ssim_loss(output, target)
            elif term == "gradient":
                raw[term] = gradient_loss(output, target)
        total = output.new_zeros((), dtype=torch.float32)  # a tensor even when no term is active yet
        for t, v in raw.items():
            total = total + self.weights[t] * v
        return total, {t: v.detach() for t, v in raw.items()}

    def discriminator_loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Discriminator's own loss (targets are real, outputs fake); outputs are detached here too.

        Returns (loss, {"d_loss", "d_real", "d_fake"}) with the mean logits for monitoring.
        """
        if not self.has_gan:
            raise RuntimeError("This objective has no GAN term (weight 0 or disabled); there is no discriminator to train.")
        check_images(output, target)
        loss, terms = adversarial_discriminator_loss(self.discriminator, target, output, self.config.discriminator.loss)
        return loss, {"d_loss": loss.detach(), **terms}

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Trainable discriminator parameters (empty without GAN)."""
        return list(self.discriminator.trainable_parameters()) if self.discriminator is not None else []


# --------------------------------------------------------------------------- unpaired


@dataclass
class UnpairedObjectiveConfig:
    """CycleGAN-Turbo loss weights. ``None`` takes the published value. Domain A is the render
    domain, B the real one: ``g_ab`` maps render -> real, ``g_ba`` real -> render."""

    cycle_l1: float | None = None
    """Weight of the L1 cycle-consistency loss, both directions (published 1)."""

    cycle_lpips: float | None = None
    """Weight of the LPIPS cycle-consistency loss, both directions (published 10)."""

    identity_l1: float | None = None
    """Weight of the L1 identity loss, g_ab(b) ~ b and g_ba(a) ~ a (published 1)."""

    identity_lpips: float | None = None
    """Weight of the LPIPS identity loss (published 1)."""

    gan: float | None = None
    """Weight of the adversarial loss in each direction (published 0.5)."""

    require_weights: bool = False
    """Treat the published LPIPS weights as explicit: missing LPIPS weights raise instead of warning."""

    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    """The two discriminators (one per domain); they share a frozen backbone but not their heads."""

    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    """Where LPIPS, VGG16 and CLIP weights come from."""

    def resolved(self) -> dict[str, tuple[float, bool]]:
        """{term: (weight, explicitly set)}."""
        out = {}
        for term, default in UNPAIRED_DEFAULTS.items():
            value = getattr(self, term)
            weight = float(default if value is None else value)
            if weight < 0:
                raise ValueError(f"Loss weight {term}={weight} is negative.")
            out[term] = (weight, value is not None or self.require_weights)
        return out


ImageToImage = Callable[[torch.Tensor], torch.Tensor]


class UnpairedObjective(nn.Module):
    """CycleGAN-Turbo objective over any two image-to-image callables.

    Generator step::

        total, terms, fakes = objective(g_ab, g_ba, real_a, real_b)   # [B, 3, H, W] in [0, 1]
        total.backward(); opt_g.step()
        d_loss, d_terms = objective.discriminator_loss(real_a, real_b, fakes["fake_a"], fakes["fake_b"])
        d_loss.backward(); opt_d.step()    # opt_d over objective.discriminator_parameters()

    The GAN is what makes the mapping translate at all (cycle and identity alone are solved by
    the identity map), so a missing discriminator backbone is always an error here; use
    ``discriminator.kind="patch"`` where no backbone weights exist, or set ``gan=0`` on purpose.
    """

    def __init__(self, config: UnpairedObjectiveConfig | None = None, backbones: PerceptualBackbones | None = None):
        super().__init__()
        self.config = config = config or UnpairedObjectiveConfig()
        self.backbones = backbones or PerceptualBackbones(config.perceptual)
        resolved = config.resolved()
        self.weights = {t: w for t, (w, _) in resolved.items() if w > 0}
        self.disabled: dict[str, str] = {}
        self.lpips = None
        self.disc_a = None
        self.disc_b = None

        lpips_terms = [t for t in ("cycle_lpips", "identity_lpips") if t in self.weights]
        if lpips_terms:
            try:
                self.lpips = self.backbones.lpips()
            except PerceptualWeightsError as err:
                explicit = [t for t in lpips_terms if resolved[t][1]]
                if explicit:
                    raise _explicit_error("LPIPS", explicit[0], resolved[explicit[0]][0], err) from None
                _disable(" and ".join(lpips_terms), max(self.weights[t] for t in lpips_terms), err, "--cycle-lpips/--identity-lpips")
                for t in lpips_terms:
                    self.disabled[t] = str(err)
                    del self.weights[t]
        if "gan" in self.weights:
            try:
                # Two discriminators: disc_a judges domain-A images, disc_b domain-B images.
                self.disc_a = build_discriminator(config.discriminator, self.backbones)
                self.disc_b = build_discriminator(config.discriminator, self.backbones)
            except PerceptualWeightsError as err:
                raise PerceptualWeightsError(
                    f"The unpaired objective's GAN needs the '{config.discriminator.kind}' discriminator backbone: {err} "
                    "Alternatively use --discriminator.kind patch (no weights needed)."
                ) from None
        if not self.weights:
            raise ValueError("No active loss terms in the unpaired objective.")

    @property
    def has_gan(self) -> bool:
        """Whether discriminators are trained alongside."""
        return "gan" in self.weights

    def _rec(self, prefix: str, pred: torch.Tensor, target: torch.Tensor, raw: dict[str, torch.Tensor]) -> None:
        """Add L1 and LPIPS reconstruction terms ``{prefix}_l1`` and ``{prefix}_lpips``."""
        if f"{prefix}_l1" in self.weights:
            raw[f"{prefix}_l1"] = raw.get(f"{prefix}_l1", 0) + l1_loss(pred, target)
        if f"{prefix}_lpips" in self.weights:
            raw[f"{prefix}_lpips"] = raw.get(f"{prefix}_lpips", 0) + lpips_loss(self.lpips, pred, target)

    def forward(
        self, g_ab: ImageToImage, g_ba: ImageToImage, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Generator loss of both directions.

        real_a: [B, 3, H, W] renders; real_b: [B', 3, H, W] real images; both in [0, 1].
        Returns (weighted total, {term: unweighted detached value}, {"fake_a", "fake_b"} detached
        for the discriminator step). Cycle and identity terms are sums over the two directions;
        ``gan_ab``/``gan_ba`` are reported separately and both weighted by ``gan``.
        """
        for name, x in (("real_a", real_a), ("real_b", real_b)):
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"Expected {name} as [B, 3, H, W], got {tuple(x.shape)}.")
        raw: dict[str, torch.Tensor] = {}
        fake_b = g_ab(real_a)  # [B, 3, H, W] render -> real
        fake_a = g_ba(real_b)  # [B', 3, H, W] real -> render
        if "cycle_l1" in self.weights or "cycle_lpips" in self.weights:
            self._rec("cycle", g_ba(fake_b), real_a, raw)  # A -> B -> A
            self._rec("cycle", g_ab(fake_a), real_b, raw)  # B -> A -> B
        if "identity_l1" in self.weights or "identity_lpips" in self.weights:
            self._rec("identity", g_ab(real_b), real_b, raw)  # a real image needs no fixing
            self._rec("identity", g_ba(real_a), real_a, raw)
        total = real_a.new_zeros((), dtype=torch.float32)
        for t, v in raw.items():
            total = total + self.weights[t] * v
        if self.has_gan:
            loss_type = self.config.discriminator.loss
            raw["gan_ab"] = adversarial_generator_loss(self.disc_b, fake_b, loss_type)
            raw["gan_ba"] = adversarial_generator_loss(self.disc_a, fake_a, loss_type)
            total = total + self.weights["gan"] * (raw["gan_ab"] + raw["gan_ba"])
        terms = {t: v.detach() for t, v in raw.items()}
        return total, terms, {"fake_a": fake_a.detach(), "fake_b": fake_b.detach()}

    def discriminator_loss(
        self, real_a: torch.Tensor, real_b: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Both discriminators' losses summed: disc_a on (real_a, fake_a), disc_b on (real_b, fake_b)."""
        if not self.has_gan:
            raise RuntimeError("This objective has no GAN term; there are no discriminators to train.")
        loss_type = self.config.discriminator.loss
        loss_a, ta = adversarial_discriminator_loss(self.disc_a, real_a, fake_a, loss_type)
        loss_b, tb = adversarial_discriminator_loss(self.disc_b, real_b, fake_b, loss_type)
        terms = {"d_a": loss_a.detach(), "d_b": loss_b.detach()}
        terms.update({f"{k}_a": v for k, v in ta.items()})
        terms.update({f"{k}_b": v for k, v in tb.items()})
        return loss_a + loss_b, terms

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of both discriminators (empty without GAN)."""
        if not self.has_gan:
            return []
        return list(self.disc_a.trainable_parameters()) + list(self.disc_b.trainable_parameters())
