"""VAE encoding and decoding with encoder-to-decoder skip connections (pix2pix-turbo).

diffusers' ``AutoencoderKL`` has no skip path, so the encoder and decoder are walked
block by block here instead of patching their ``forward``: the VAE stays a stock
``AutoencoderKL`` that diffusers can save and load.

Skip ``i`` (i = 0 is the deepest) takes the input of encoder down-block ``n-1-i`` and adds
``conv_i(gamma * feature)`` to the input of decoder up-block ``i``; both sit at the same
resolution. With SD's VAE the convolutions are 512->512, 256->512, 128->512 and 128->256.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import nn
from torch.utils.checkpoint import checkpoint


def _block_in_channels(block: nn.Module) -> int:
    return int(block.resnets[0].in_channels)


def skip_channels(vae: AutoencoderKL) -> list[tuple[int, int]]:
    """``(in_channels, out_channels)`` of each skip convolution, deepest first."""
    enc_in = [_block_in_channels(b) for b in vae.encoder.down_blocks]
    dec_in = [_block_in_channels(b) for b in vae.decoder.up_blocks]
    if len(enc_in) != len(dec_in):
        raise ValueError("skip connections need as many encoder as decoder blocks")
    return [(enc_in[len(enc_in) - 1 - i], dec_in[i]) for i in range(len(dec_in))]


class SkipConvs(nn.Module):
    """The 1x1 skip convolutions, initialised to a small constant so the decoder starts
    (almost) unchanged and learns how much encoder detail to let through."""

    def __init__(self, channels: list[tuple[int, int]], init: float = 1e-5) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, kernel_size=1, bias=False) for c_in, c_out in channels)
        for conv in self.convs:
            nn.init.constant_(conv.weight, init)

    def __len__(self) -> int:
        return len(self.convs)


def _run(module: nn.Module, *args: torch.Tensor | None, use_checkpoint: bool) -> torch.Tensor:
    # Gradient checkpointing per block, as diffusers' own Encoder/Decoder do when enabled.
    if use_checkpoint and torch.is_grad_enabled():
        return checkpoint(module, *args, use_reentrant=False)
    return module(*args)


def encode_with_skips(
    vae: AutoencoderKL,
    images: torch.Tensor,
    *,
    sample: bool = False,
    generator: torch.Generator | None = None,
    input_residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Encode images in [-1, 1] to unscaled latents and the encoder's skip features.

    Args:
        images: [N, 3, H, W], H and W multiples of 8.
        sample: sample the posterior instead of taking its mean.
        input_residual: [N, C, H, W] added to the output of the encoder's ``conv_in`` (the LiDAR hint).
    Returns:
        latents [N, C_lat, H/8, W/8] (before ``scaling_factor``) and the skip features in
        encoder order (shallowest first), each [N, C_j, H/2^j, W/2^j].
    """
    enc = vae.encoder
    use_ckpt = bool(getattr(enc, "gradient_checkpointing", False))
    x = enc.conv_in(images)
    if input_residual is not None:
        x = x + input_residual
    skips: list[torch.Tensor] = []
    for block in enc.down_blocks:
        skips.append(x)
        x = _run(block, x, use_checkpoint=use_ckpt)
    x = _run(enc.mid_block, x, use_checkpoint=use_ckpt)
    x = enc.conv_out(enc.conv_act(enc.conv_norm_out(x)))
    if vae.quant_conv is not None:
        x = vae.quant_conv(x)
    # [N, 2*C_lat, h, w] -> mean / log-variance of a diagonal Gaussian
    mean, logvar = torch.chunk(x, 2, dim=1)
    if sample:
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise, skips
    return mean, skips


def decode_with_skips(
    vae: AutoencoderKL,
    latents: torch.Tensor,
    skips: list[torch.Tensor] | None,
    skip_convs: SkipConvs | None,
    gamma: float = 1.0,
) -> torch.Tensor:
    """Decode unscaled latents [N, C_lat, h, w] to images [N, 3, 8h, 8w] in about [-1, 1].

    ``skips`` are the target views' features from :func:`encode_with_skips` (encoder order);
    with ``skips`` or ``skip_convs`` None this is the plain VAE decoder.
    """
    dec = vae.decoder
    use_ckpt = bool(getattr(dec, "gradient_checkpointing", False))
    z = vae.post_quant_conv(latents) if vae.post_quant_conv is not None else latents
    x = dec.conv_in(z)
    x = _run(dec.mid_block, x, None, use_checkpoint=use_ckpt)
    use_skips = skips is not None and skip_convs is not None
    if use_skips and len(skips) != len(skip_convs):
        raise ValueError(f"got {len(skips)} skip features for {len(skip_convs)} skip convolutions")
    for i, block in enumerate(dec.up_blocks):
        if use_skips:
            feature = skips[len(skips) - 1 - i]
            x = x + skip_convs.convs[i](feature * gamma)
        x = _run(block, x, None, use_checkpoint=use_ckpt)
    x = dec.conv_out(dec.conv_act(dec.conv_norm_out(x)))
    return x
