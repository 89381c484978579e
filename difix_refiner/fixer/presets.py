"""Architecture configs for the diffusers components, written out in code.

Nothing can be downloaded in tests or on offline machines, so the SD-Turbo-sized configs
(used by the benchmark) and the tiny configs (tests, CPU demos, CPU training) are built
here from their published hyper-parameters.
"""

from __future__ import annotations

from typing import Any

from difix_refiner.core.optional_weights import SD_TURBO_HUB_ID

DEFAULT_BASE = SD_TURBO_HUB_ID

# Tokens per prompt of the CLIP text encoder; the stored embedding of the tiny model uses
# the same length so that every code path sees [1, 77, cross_attention_dim].
PROMPT_TOKENS = 77


def sd_scheduler_config() -> dict[str, Any]:
    """DDPM schedule of Stable Diffusion 2.x / SD-Turbo (scaled-linear betas, epsilon prediction).

    ``clip_sample`` is off: clipping x0 to [-1, 1] is meant for pixel-space models, and the
    one-step fixer predicts latents that legitimately leave that range.
    """
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "clip_sample": False,
        "steps_offset": 1,
        "timestep_spacing": "trailing",
    }


def sd_vae_config() -> dict[str, Any]:
    """``AutoencoderKL`` of Stable Diffusion 2.1 / SD-Turbo (83.7M parameters, down-factor 8)."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 768,
        "scaling_factor": 0.18215,
    }


def sd_turbo_unet_config() -> dict[str, Any]:
    """``UNet2DConditionModel`` of SD 2.1-base / SD-Turbo (865.9M parameters).

    ``attention_head_dim`` [5, 10, 20, 20] is, for this legacy config key, the number of heads
    per level (head width 64), as in the released configs.
    """
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "attention_head_dim": [5, 10, 20, 20],
        "cross_attention_dim": 1024,
        "use_linear_projection": True,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "downsample_padding": 1,
        "upcast_attention": False,
    }


def tiny_vae_config() -> dict[str, Any]:
    """A small ``AutoencoderKL`` with SD's layout: 4 levels (down-factor 8), 4 latent channels.

    Widths 16/32/64/64 (about 1.0M parameters) keep the full-resolution convolutions cheap
    on a CPU; fine detail reaches the decoder through the skip path rather than the latent.
    """
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [16, 32, 64, 64],
        "layers_per_block": 1,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 256,
        "scaling_factor": 0.18215,
    }


def tiny_unet_config() -> dict[str, Any]:
    """A small ``UNet2DConditionModel`` (about 2.7M parameters): 3 levels, transformer blocks
    on the two lower ones.

    Attention sits at 1/16 and 1/32 of the image (plus the mid block), where the joint
    multi-view self-attention is affordable on a CPU; the full-latent level is convolutional.
    """
    return {
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64, 96],
        "layers_per_block": 1,
        "attention_head_dim": 4,  # legacy key: 4 heads per level
        "cross_attention_dim": 64,
        "use_linear_projection": True,
        "norm_num_groups": 8,
        "act_fn": "silu",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }


def tiny_components(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """Seeded random tiny ``(vae, unet, scheduler, prompt_embeds)``, with no adapters attached.

    ``Fixer.tiny`` builds on these; saving them with diffusers' ``save_pretrained`` (plus
    ``write_prompt_embeds``) gives a base folder in the diffusers layout. The caller's global
    RNG is left untouched.
    """
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**tiny_vae_config())
        unet = UNet2DConditionModel(**tiny_unet_config())
        prompt_embeds = torch.randn(1, PROMPT_TOKENS, unet.config.cross_attention_dim)  # [1, 77, 64]
    return vae, unet, DDPMScheduler(**sd_scheduler_config()), prompt_embeds
