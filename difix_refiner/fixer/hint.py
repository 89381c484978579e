"""The LiDAR hint as extra input channels of the fixer.

A hint is ``[B, 4, H, W]``: RGB in [0, 1] (0 where unknown) and a validity mask in {0, 1}
(:func:`difix_refiner.data.lidar_hint.hint_tensor` builds one). It enters the VAE encoder of the
*target* view: a 3x3 convolution of the hint, with no bias and weights initialised at zero, is added to
the output of the encoder's ``conv_in``::

    x = vae.encoder.conv_in(image) + hint_conv([(rgb * 2 - 1) * mask, mask])   # [B, C_in, H, W]

From there it reaches the latent the UNet denoises and, through the skip convolutions, the decoder at
full resolution. Reference views get no hint. With zero weights the added term is exactly 0, so an
untrained hint fixer gives exactly the base fixer's output. Without bias, an all-unknown hint (mask 0)
adds exactly 0 as well: "no LiDAR" is the all-zero hint, in training (hint dropout) and in use.

The same module serves both variants (difix, pix2pix-turbo) and both sizes (tiny, SD-Turbo): it only
needs the encoder's ``conv_in`` width. Its weights are saved with the adapter (``hint_conv.weight``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from difix_refiner.core.errors import InputError
from difix_refiner.data.lidar_hint import HINT_CHANNELS

logger = logging.getLogger(__name__)

__all__ = ["HINT_CHANNELS", "HintConv", "check_hint", "make_hint_conv", "no_hint_note", "target_rows"]


class HintConv(nn.Module):
    """Zero-initialised, bias-free 3x3 convolution from the hint to the VAE encoder's first features."""

    def __init__(self, hint_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(hint_channels, out_channels, kernel_size=3, padding=1, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, hint: torch.Tensor) -> torch.Tensor:
        """hint [N, 4, H, W] (RGB in [0, 1], mask) -> [N, C, H, W]."""
        rgb, mask = hint[:, :3], hint[:, 3:4]
        return self.conv(torch.cat([(rgb * 2.0 - 1.0) * mask, mask], dim=1))


def make_hint_conv(hint_channels: int, vae: nn.Module) -> HintConv | None:
    """The hint convolution of a fixer with ``hint_channels`` (None for 0), sized to the VAE encoder's
    ``conv_in``; built under its own RNG state so the other modules' initialisation is unchanged."""
    if hint_channels == 0:
        return None
    with torch.random.fork_rng(devices=[]):
        return HintConv(hint_channels, int(vae.encoder.conv_in.out_channels))


def target_rows(features: torch.Tensor | None, num_rows: int, num_views: int) -> torch.Tensor | None:
    """Hint features of the targets [B, C, H, W] spread over views grouped per item, [(B V), C, H, W]:
    the target (first) row of each group gets them, the references zeros."""
    if features is None or num_views == 1:
        return features
    rows = features.new_zeros((num_rows, *features.shape[1:]))
    rows[::num_views] = features
    return rows


def check_hint(hint: torch.Tensor | None, images: torch.Tensor, hint_channels: int) -> torch.Tensor | None:
    """Validate a hint against the images [B, 3, H, W] and the fixer's ``hint_channels``.

    Raises:
        InputError: a hint for a fixer trained without hints, or a hint of the wrong shape or range.
    """
    if hint is None:
        return None
    if hint_channels == 0:
        raise InputError(
            "this fixer was trained without a LiDAR hint (hint_channels 0 in its fixer_config.json); call it without "
            "a hint, or train one with hints (difix-refiner train-fixer on pairs with hint_image/hint_mask)"
        )
    if not isinstance(hint, torch.Tensor) or not hint.is_floating_point():
        raise InputError(f"the LiDAR hint must be a floating-point torch.Tensor, got {type(hint).__name__}")
    want = (images.shape[0], hint_channels, *images.shape[-2:])
    if tuple(hint.shape) != want:
        raise InputError(f"the LiDAR hint must have shape {list(want)} (RGB + mask at the images' size), got {list(hint.shape)}")
    lo, hi = (float(v) for v in torch.aminmax(hint.detach()))
    if not (lo >= -1e-3 and hi <= 1.0 + 1e-3):  # NaN fails too
        raise InputError(f"the LiDAR hint must hold values in [0, 1], got min {lo:.4g}, max {hi:.4g}")
    return hint


def no_hint_note(fixer: nn.Module) -> None:
    """Say once per fixer that a hint fixer runs without its hint (as with hint dropout in training)."""
    if not getattr(fixer, "_told_no_hint", False):
        logger.warning(
            "this fixer was trained with LiDAR hints but got none: it runs without (as trained with hint dropout)"
        )
        fixer._told_no_hint = True
