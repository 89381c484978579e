"""The one-step diffusion fixer (Difix3D+ / pix2pix-turbo).

Pipeline of one call, each step a method so training code can reuse the pieces::

    images [B,3,H,W] in [0,1] (+ refs [B,R,3,H,W])
      -> pad to a multiple of 8, scale to [-1,1], stack views [(B V),3,H',W']   (V = 1+R)
      -> encode_images : VAE encoder -> latents [(B V),4,h,w] (+ target skip features)
      -> encode_prompt : cached text embedding [(B V),L,D]
      -> denoise_step  : one UNet evaluation at the variant's timestep -> x0 [(B V),4,h,w];
                         self-attention joined across the V views; reference outputs dropped
      -> decode        : VAE decoder + skip convolutions -> [B,3,H',W'] -> crop -> [0,1]

Gradients vs. inference: ``fixer(images, refs)`` (``forward``) is differentiable when the
module is in training mode (``fixer.train()``) and grad is enabled; in eval mode (the state
``from_pretrained``/``tiny`` return) it runs under ``torch.inference_mode``. ``fixer.fix(...)``
is the inference entry point: always ``inference_mode``, moves inputs to the model's
device/dtype, chunks the batch and returns float32 on the input's device.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn

from difix_refiner.fixer.attention import (
    cross_view_attention_names,
    install_multiview_attention,
)
from difix_refiner.fixer.config import FixerConfig, Variant
from difix_refiner.fixer.hint import (
    check_hint,
    make_hint_conv,
    no_hint_note,
    target_rows,
)
from difix_refiner.fixer.inputs import check_fixer_inputs
from difix_refiner.fixer.lora import ADAPTER_NAME, add_lora, is_lora_parameter
from difix_refiner.fixer.presets import (
    DEFAULT_BASE,
    sd_scheduler_config,
    tiny_components,
)
from difix_refiner.fixer.text import encode_prompt_clip
from difix_refiner.fixer.vae_skips import (
    SkipConvs,
    decode_with_skips,
    encode_with_skips,
    skip_channels,
)
from difix_refiner.fixer.weights import (
    FORMAT,
    FORMAT_VERSION,
    FixerWeightsError,
    is_saved_fixer,
    load_base,
    plain_config,
    read_saved,
    summarise_load_error,
    write_saved,
)

logger = logging.getLogger(__name__)

PAD_MULTIPLE = 8  # the VAE's down-factor; the UNet copes with any latent size

# Key fields of the component configs that an adapter must agree with.
_ARCH_KEYS = {
    "unet": ("block_out_channels", "cross_attention_dim", "in_channels", "layers_per_block", "down_block_types"),
    "vae": ("block_out_channels", "latent_channels", "layers_per_block"),
}


class Fixer(nn.Module):
    """One-step image fixer built from diffusers components.

    Args:
        vae: ``AutoencoderKL`` (any down-factor-8 VAE with SD's block layout).
        unet: ``UNet2DConditionModel``; its attention processors are replaced by multi-view ones.
        scheduler: ``DDPMScheduler`` supplying the noise schedule; set to the single timestep.
        config: :class:`FixerConfig`; defaults to the Difix variant.
        prompt_embeds: stored prompt embedding [1, L, D] (used when there is no text encoder).
        text_encoder_loader: callable returning ``(tokenizer, text_encoder)``; called at most once.
        base: the base the frozen weights come from (hub id or folder); ``None`` for a model
            without a base (e.g. :meth:`tiny`), which is then saved whole.
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        scheduler: DDPMScheduler | None = None,
        config: FixerConfig | None = None,
        *,
        prompt_embeds: torch.Tensor | None = None,
        text_encoder_loader: Any = None,
        base: str | None = None,
    ) -> None:
        super().__init__()
        # A private copy: runtime switches (set_memory_efficient) must not leak into other fixers.
        self.config = dataclasses.replace(config) if config is not None else FixerConfig()
        self.base = base
        self.vae = vae
        self.unet = unet
        if vae.config.latent_channels != unet.config.in_channels:
            raise ValueError(
                f"VAE latent channels ({vae.config.latent_channels}) != UNet in_channels ({unet.config.in_channels})"
            )

        # Single-step DDPM: the chain is the one configured timestep, whose "previous" step is the
        # clean sample, so the step reduces to the x0 prediction (see denoise_step).
        self.scheduler = scheduler if scheduler is not None else DDPMScheduler(**sd_scheduler_config())
        self.scheduler.set_timesteps(timesteps=[int(self.config.timestep)])
        alpha_bar = float(self.scheduler.alphas_cumprod[int(self.config.timestep)])
        self._sqrt_alpha = alpha_bar**0.5
        self._sqrt_one_minus_alpha = (1.0 - alpha_bar) ** 0.5

        self.skip_convs = SkipConvs(skip_channels(vae), self.config.skip_init) if self.config.skip_connections else None

        n_joint = install_multiview_attention(unet)
        if self.config.supports_references and n_joint == 0:
            raise ValueError("the UNet has no self-attention layers, so reference views cannot be joined")

        self.unet_lora_modules = add_lora(
            unet,
            self.config.unet_lora_rank,
            self.config.unet_lora_alpha,
            self.config.unet_lora_targets,
            seed=self.config.lora_seed,
        )
        self.vae_lora_modules = add_lora(
            vae,
            self.config.vae_lora_rank,
            self.config.vae_lora_alpha,
            self.config.vae_lora_targets,
            prefix="decoder.",
            seed=self.config.lora_seed + 1,
        )
        self.hint_conv = make_hint_conv(self.config.hint_channels, vae)  # None without hint channels

        if prompt_embeds is not None:
            prompt_embeds = self._check_prompt_embeds(prompt_embeds)
        # Not persistent: saving goes through save_pretrained, which stores it explicitly.
        self.register_buffer("prompt_embeds", prompt_embeds, persistent=False)
        self._text_encoder_loader = text_encoder_loader
        if prompt_embeds is None and text_encoder_loader is None:
            raise FixerWeightsError(
                "No text encoder and no stored prompt embedding: give a base with text_encoder/ and tokenizer/, "
                "or a prompt_embeds.safetensors ([1, L, cross_attention_dim]) in the base folder."
            )

        self.configure_trainable()
        self.eval()

    # ------------------------------------------------------------------ construction

    @classmethod
    def tiny(
        cls, variant: Variant = "difix", *, seed: int = 0, config: FixerConfig | None = None, **config_fields: Any
    ) -> Fixer:
        """The same architecture from small configs with seeded random weights (no download).

        About 1.0M (VAE) + 2.7M (UNet) parameters plus adapters; the prompt is a stored random
        embedding [1, 77, 64]. ``config_fields`` override :class:`FixerConfig` fields.
        """
        if config is None:
            config = FixerConfig(variant=variant, **config_fields)
        elif config_fields:
            config = config.replace(**config_fields)
        vae, unet, scheduler, prompt = tiny_components(seed)
        if config.residual_output:
            # The decoder predicts a correction that starts at zero: a new residual fixer is the identity.
            nn.init.zeros_(vae.decoder.conv_out.weight)
            nn.init.zeros_(vae.decoder.conv_out.bias)
        return cls(vae, unet, scheduler, config, prompt_embeds=prompt, base=None)

    @classmethod
    def from_pretrained(
        cls,
        base: str | os.PathLike | None = None,
        adapter: str | os.PathLike | None = None,
        variant: Variant | None = None,
        *,
        config: FixerConfig | None = None,
        local_files_only: bool | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> Fixer:
        """Build a fixer from a base and optionally our saved weights.

        Args:
            base: hub id or local diffusers folder; ``"tiny"`` for :meth:`tiny`; or a folder
                written by :meth:`save_pretrained` (then it is the ``adapter``). ``None``: the
                base recorded in ``adapter``, else ``stabilityai/sd-turbo``.
            adapter: folder (or its ``fixer.safetensors``) written by :meth:`save_pretrained`,
                of either kind (adapter-only or whole).
            variant: ``difix`` or ``pix2pix-turbo``; with ``adapter`` it must match the saved one.
            config: config for a fresh (untrained) fixer; not allowed with ``adapter``.
            local_files_only: never touch the network; default: on (a hub base must be in the local
                cache: ``difix-refiner weights fetch sd-turbo`` puts SD-Turbo there).
            device, dtype: where to put the model.
        Raises:
            FixerWeightsError: weights missing, offline without a cached copy, or not fitting.
        """
        if adapter is None and base is not None and is_saved_fixer(base):
            adapter, base = base, None
        base_str = None if base is None else str(base)

        if adapter is not None:
            if config is not None:
                raise ValueError("pass either `config` (fresh model) or `adapter` (trained one), not both")
            fixer = cls._from_saved(adapter, base_str, variant, local_files_only)
        else:
            if config is None:
                config = FixerConfig(variant=variant or "difix")
            elif variant is not None and variant != config.variant:
                raise ValueError(f"variant {variant!r} contradicts config.variant {config.variant!r}")
            base_str = base_str or DEFAULT_BASE
            if config.residual_output and base_str != "tiny":
                raise FixerWeightsError(
                    f"residual_output is for fixers trained from random weights (base 'tiny'); the VAE of "
                    f"'{base_str}' decodes whole images, not corrections. Leave it off for a pretrained base."
                )
            if base_str == "tiny":
                fixer = cls.tiny(config=config)
            else:
                comps = load_base(base_str, local_files_only=local_files_only)
                for note in comps.notes:
                    logger.warning(note)
                fixer = cls(
                    comps.vae,
                    comps.unet,
                    comps.scheduler,
                    config,
                    prompt_embeds=comps.prompt_embeds,
                    text_encoder_loader=comps.text_encoder_loader,
                    base=comps.source,
                )
        if device is not None or dtype is not None:
            fixer.to(device=device, dtype=dtype)
        return fixer

    @classmethod
    def _from_saved(
        cls, path: str | os.PathLike, base: str | None, variant: str | None, local_files_only: bool | None
    ) -> Fixer:
        saved = read_saved(path)
        config = FixerConfig.from_dict(saved.meta["config"])
        if variant is not None and variant != config.variant:
            raise FixerWeightsError(
                f"'{path}' holds a {config.variant!r} fixer, but variant {variant!r} was asked for; "
                "drop the variant argument or load matching weights."
            )
        prompt = saved.tensors.get("prompt_embeds")

        if saved.kind == "whole":
            if base not in (None, "tiny"):
                logger.warning("'%s' is a whole saved model; the base '%s' is not used", path, base)
            try:
                vae = AutoencoderKL.from_config(saved.meta["vae_config"])
                unet = UNet2DConditionModel.from_config(saved.meta["unet_config"])
                scheduler = DDPMScheduler.from_config(saved.meta.get("scheduler_config") or sd_scheduler_config())
            except Exception as err:
                raise FixerWeightsError(f"'{path}': cannot rebuild the saved components ({err}).") from None
            fixer = cls(vae, unet, scheduler, config, prompt_embeds=prompt, base=None)
            fixer._load_tensors(saved.tensors, whole=True, source=str(path))
            return fixer

        base = base or saved.base
        if base is None:
            raise FixerWeightsError(f"'{path}' is an adapter but records no base; pass base=... (or --base).")
        if base == "tiny":
            raise FixerWeightsError(f"'{path}' is an adapter; the tiny model has no fixed base to apply it to.")
        comps = load_base(base, local_files_only=local_files_only)
        for note in comps.notes:
            logger.warning(note)
        for name, module in (("unet", comps.unet), ("vae", comps.vae)):
            want = saved.meta.get(f"{name}_config", {})
            for key in _ARCH_KEYS[name]:
                have = module.config.get(key)
                if key in want and _norm(want[key]) != _norm(have):
                    raise FixerWeightsError(
                        f"The adapter '{path}' does not fit base '{base}': {name}.{key} is {have!r} there but "
                        f"{want[key]!r} where the adapter was trained (base recorded: '{saved.base}')."
                    )
        if saved.base and str(saved.base) != comps.source:
            logger.info("adapter '%s' was trained on '%s'; applying it to '%s'", path, saved.base, comps.source)
        # The adapter's own copy of the prompt embedding saves loading the text encoder.
        if prompt is None:
            prompt = comps.prompt_embeds
        fixer = cls(
            comps.vae,
            comps.unet,
            comps.scheduler,
            config,
            prompt_embeds=prompt,
            text_encoder_loader=comps.text_encoder_loader,
            base=comps.source,
        )
        fixer._load_tensors(saved.tensors, whole=False, source=str(path))
        return fixer

    # ------------------------------------------------------------------ trainable parts

    def configure_trainable(self) -> None:
        """Set ``requires_grad`` from the config: LoRA adapters and skip convolutions; the whole
        UNet if ``train_unet``; the UNet's ``conv_in`` if ``train_unet_conv_in``. Everything
        else (VAE encoder, base decoder weights, ...) is frozen."""
        self.requires_grad_(False)
        for name, p in self.unet.named_parameters():
            if (
                self.config.train_unet
                or is_lora_parameter(name)
                or (self.config.train_unet_conv_in and name.startswith("conv_in."))
            ):
                p.requires_grad_(True)
        for name, p in self.vae.named_parameters():
            if is_lora_parameter(name):
                p.requires_grad_(True)
        for module in (self.skip_convs, self.hint_conv):
            if module is not None:
                module.requires_grad_(True)

    def trainable_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by role (only non-empty groups), for per-group learning rates.

        Keys: ``unet`` (the whole UNet incl. its LoRA when ``train_unet``), ``unet_lora``,
        ``unet_conv_in``, ``vae_lora``, ``skip_convs``, ``hint_conv``.
        """
        groups: dict[str, list[nn.Parameter]] = {}

        def add(key: str, p: nn.Parameter) -> None:
            if p.requires_grad:
                groups.setdefault(key, []).append(p)

        for name, p in self.unet.named_parameters():
            if self.config.train_unet:
                add("unet", p)
            elif is_lora_parameter(name):
                add("unet_lora", p)
            elif name.startswith("conv_in."):
                add("unet_conv_in", p)
        for name, p in self.vae.named_parameters():
            if is_lora_parameter(name):
                add("vae_lora", p)
        for key, module in (("skip_convs", self.skip_convs), ("hint_conv", self.hint_conv)):
            for p in module.parameters() if module is not None else ():
                add(key, p)
        return groups

    def trainable_parameters(self) -> list[nn.Parameter]:
        """All parameters with ``requires_grad`` (what an optimiser should get)."""
        return [p for p in self.parameters() if p.requires_grad]

    def cross_view_attention_names(self) -> list[str]:
        """UNet self-attention modules that join the target and reference views."""
        return cross_view_attention_names(self.unet)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute UNet and VAE blocks in backward to save training memory."""
        self.unet.enable_gradient_checkpointing()
        self.vae.encoder.gradient_checkpointing = True
        self.vae.decoder.gradient_checkpointing = True

    def set_memory_efficient(self, enabled: bool = True) -> None:
        """Slice the VAE per view and the UNet per batch item (slower, much lower peak memory)."""
        self.config.memory_efficient = bool(enabled)

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    # ------------------------------------------------------------------ pipeline steps

    def check_inputs(
        self, images: torch.Tensor, refs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate ``images`` [B,3,H,W] and ``refs`` [B,R,3,H,W] (see :func:`~difix_refiner.fixer.inputs.check_fixer_inputs`)."""
        return check_fixer_inputs(self.config, images, refs)

    def encode_prompt(self, batch_size: int = 1) -> torch.Tensor:
        """The cached prompt embedding, expanded to [batch_size, L, D].

        On first use without a stored embedding the text encoder is loaded, run once and
        dropped; the result is kept as a buffer (it follows ``.to()`` and is saved).
        """
        if self.prompt_embeds is None:
            if self._text_encoder_loader is None:
                raise FixerWeightsError("no text encoder and no stored prompt embedding")
            tokenizer, text_encoder = self._text_encoder_loader()
            # Outside inference mode so the cached tensor is usable in later training steps.
            with torch.inference_mode(False):
                emb = encode_prompt_clip(tokenizer, text_encoder, self.config.prompt)
                self.prompt_embeds = self._check_prompt_embeds(emb).to(self.device, self.dtype)
            self._text_encoder_loader = None
            del tokenizer, text_encoder
        return self.prompt_embeds.expand(batch_size, -1, -1)

    def encode_images(
        self, views: torch.Tensor, num_views: int = 1, hint_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """VAE-encode views in [-1, 1].

        Args:
            views: [(B V), 3, H, W], H and W multiples of 8, each group of ``num_views``
                starting with its target view.
            hint_features: [B, C, H, W] added after the encoder's ``conv_in`` of the target views.
        Returns:
            latents [(B V), 4, H/8, W/8] already multiplied by the VAE's scaling factor, and the
            skip features of the target views only (shallowest first, each [B, C_j, H/2^j, W/2^j]),
            or None without skip connections.
        """
        n = views.shape[0]
        chunk = 1 if self.config.memory_efficient else n
        residual = target_rows(hint_features, n, num_views)  # [(B V),C,H,W], zero for references
        latents, skips = [], []
        for start in range(0, n, chunk):
            res = None if residual is None else residual[start : start + chunk]
            lat, feats = encode_with_skips(
                self.vae, views[start : start + chunk], sample=self.config.sample_latent, input_residual=res
            )
            latents.append(lat * self.latent_scale)
            if self.skip_convs is not None:
                # Only the targets (global index % num_views == 0) feed the decoder; the
                # references' skip features are dropped right away.
                first = (-start) % num_views
                skips.append([f[first::num_views] for f in feats])
        latent = torch.cat(latents)
        if self.skip_convs is None:
            return latent, None
        return latent, [torch.cat([s[j] for s in skips]) for j in range(len(skips[0]))]

    def denoise_step(self, latents: torch.Tensor, prompt_embeds: torch.Tensor, num_views: int = 1) -> torch.Tensor:
        """One UNet evaluation at the configured timestep; returns the predicted clean latents.

        The input latent is used as x_t as it is (no noise is added: the render's artefacts play
        the part of the noise). With the previous step being the clean sample, DDPM's update
        reduces to the x0 prediction, written out here without the scheduler's zero-variance
        noise draw so that the result is deterministic.

        Args:
            latents: [(B V), 4, h, w] scaled latents, views grouped per batch item.
            prompt_embeds: [(B V), L, D].
        Returns:
            [(B V), 4, h, w] predicted x0 for every view (callers keep the targets).
        """
        if latents.shape[0] % num_views:
            raise ValueError(f"{latents.shape[0]} latents are not a multiple of num_views={num_views}")
        chunk = num_views if self.config.memory_efficient else latents.shape[0]
        outs = []
        for start in range(0, latents.shape[0], chunk):
            x_t = latents[start : start + chunk]
            t = torch.full((x_t.shape[0],), int(self.config.timestep), device=x_t.device, dtype=torch.long)
            pred = self.unet(
                x_t,
                t,
                encoder_hidden_states=prompt_embeds[start : start + chunk],
                cross_attention_kwargs={"num_views": num_views},
            ).sample
            outs.append(self._x0_from_prediction(pred, x_t))
        return torch.cat(outs)

    def decode(self, latents: torch.Tensor, skips: list[torch.Tensor] | None) -> torch.Tensor:
        """VAE-decode scaled latents [B, 4, h, w] with the target skip features -> [B, 3, 8h, 8w] in [-1, 1]."""
        chunk = 1 if self.config.memory_efficient else latents.shape[0]
        outs = []
        for start in range(0, latents.shape[0], chunk):
            feats = None if skips is None else [s[start : start + chunk] for s in skips]
            outs.append(
                decode_with_skips(
                    self.vae,
                    latents[start : start + chunk] / self.latent_scale,
                    feats,
                    self.skip_convs,
                    gamma=self.config.skip_gamma,
                )
            )
        return torch.cat(outs).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ forward / inference

    def forward(
        self, images: torch.Tensor, refs: torch.Tensor | None = None, hint: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fix ``images`` [B,3,H,W] in [0,1], optionally with ``refs`` [B,R,3,H,W] and a LiDAR ``hint``
        [B,4,H,W] (RGB + mask, see ``fixer/hint.py``; only for a fixer with ``hint_channels``); same shape out.

        Differentiable in training mode with grad enabled; otherwise runs under
        ``torch.inference_mode``.
        """
        if self.training and torch.is_grad_enabled():
            return self._forward(images, refs, hint)
        with torch.inference_mode():
            return self._forward(images, refs, hint)

    def _forward(self, images: torch.Tensor, refs: torch.Tensor | None, hint: torch.Tensor | None = None) -> torch.Tensor:
        images, refs = self.check_inputs(images, refs)
        hint = check_hint(hint, images, self.config.hint_channels)
        if hint is None and self.hint_conv is not None:
            no_hint_note(self)
        batch, _, height, width = images.shape
        dtype = self.dtype

        x = _pad_to_multiple(images.to(dtype), PAD_MULTIPLE) * 2.0 - 1.0  # [B,3,H',W'] in [-1,1]
        if refs is None:
            num_views = 1
            views = x
        else:
            num_views = 1 + refs.shape[1]
            r = _pad_to_multiple(refs.flatten(0, 1).to(dtype), PAD_MULTIPLE) * 2.0 - 1.0  # [(B R),3,H',W']
            r = r.unflatten(0, (batch, refs.shape[1]))  # [B,R,3,H',W']
            views = torch.cat([x[:, None], r], dim=1).flatten(0, 1)  # [(B V),3,H',W'], target first

        feats = None if hint is None else self.hint_conv(_pad_to_multiple(hint.to(dtype), PAD_MULTIPLE))  # [B,C,H',W']
        latents, skips = self.encode_images(views, num_views, feats)  # [(B V),4,h,w]
        prompt = self.encode_prompt(views.shape[0]).to(dtype)  # [(B V),L,D]
        x0 = self.denoise_step(latents, prompt, num_views)  # [(B V),4,h,w]
        x0 = x0[::num_views]  # reference outputs are dropped -> [B,4,h,w]
        out = self.decode(x0, skips)  # [B,3,H',W'] in [-1,1]
        if self.config.residual_output:
            out = out + x  # the decoder's output is a correction of the render
        out = out[..., :height, :width]
        return ((out + 1.0) * 0.5).to(images.dtype)

    @torch.inference_mode()
    def fix(
        self, images: torch.Tensor, refs: torch.Tensor | None = None, *,
        hint: torch.Tensor | None = None, batch_size: int | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Inference: fix ``images`` [B,3,H,W] in [0,1] (+ ``refs`` [B,R,3,H,W], ``hint`` [B,4,H,W]) on the model's device.

        Inputs may live anywhere; they are moved to the model's device and dtype in chunks of
        ``batch_size`` (default: all at once) and the result comes back as float32 on the
        input's device.
        """
        images, refs = self.check_inputs(images, refs)
        hint = check_hint(hint, images, self.config.hint_channels)
        step = batch_size or images.shape[0]
        outs = []
        for start in range(0, images.shape[0], step):
            img = images[start : start + step].to(self.device)
            ref = None if refs is None else refs[start : start + step].to(self.device)
            part = None if hint is None else hint[start : start + step].to(self.device)
            outs.append(self._forward(img, ref, part).to(images.device, torch.float32))
        return torch.cat(outs)

    # ------------------------------------------------------------------ saving

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors training changes, keyed ``unet.*``, ``vae.*``, ``skip_convs.*``.

        LoRA adapters, skip convolutions, the hint convolution, the UNet's ``conv_in`` when trained,
        and the whole UNet when ``train_unet``; decided by the config (not by current ``requires_grad``).
        """
        out: dict[str, torch.Tensor] = {}
        for k, v in self.unet.state_dict().items():
            if self.config.train_unet or is_lora_parameter(k) or (
                self.config.train_unet_conv_in and k.startswith("conv_in.")
            ):
                out["unet." + k] = v
        for k, v in self.vae.state_dict().items():
            if is_lora_parameter(k):
                out["vae." + k] = v
        return {**out, **self._own_state_dict()}

    def _own_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors of the fixer's own modules (skip and hint convolutions), which every save holds."""
        out = {}
        for prefix, module in (("skip_convs", self.skip_convs), ("hint_conv", self.hint_conv)):
            out.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()} if module is not None else {})
        return out

    def _whole_state_dict(self) -> dict[str, torch.Tensor]:
        out = {"unet." + k: v for k, v in self.unet.state_dict().items()}
        out.update({"vae." + k: v for k, v in self.vae.state_dict().items()})
        return {**out, **self._own_state_dict()}

    def save_pretrained(self, folder: str | os.PathLike, *, whole: bool | None = None) -> str:
        """Write ``fixer_config.json`` + ``fixer.safetensors`` into ``folder``.

        Adapter kind (default when the model has a base): only :meth:`trained_state_dict`, and
        the JSON records the base (hub id or absolute folder). Whole kind (default without a
        base, or ``whole=True``): every tensor plus the diffusers configs; loads with no base.
        The prompt embedding is stored in both kinds. Returns the folder.
        """
        whole = self.base is None if whole is None else whole
        if not whole and self.base is None:
            raise ValueError("this fixer has no base (e.g. the tiny model); save it whole")
        tensors = self._whole_state_dict() if whole else self.trained_state_dict()
        if self.prompt_embeds is not None or self._text_encoder_loader is not None:
            tensors["prompt_embeds"] = self.encode_prompt(1).detach()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": "whole" if whole else "adapter",
            "base": None if whole else self.base,
            "base_of_origin": self.base,
            "config": self.config.to_dict(),
            "unet_config": plain_config(self.unet.config),
            "vae_config": plain_config(self.vae.config),
            "scheduler_config": plain_config(self.scheduler.config),
            "parts": sorted({k.split(".", 1)[0] + (".lora" if is_lora_parameter(k) else "") for k in tensors}),
            "lora_adapter_name": ADAPTER_NAME,
        }
        return str(write_saved(folder, meta, tensors))

    def _load_tensors(self, tensors: dict[str, torch.Tensor], *, whole: bool, source: str) -> None:
        expected = set(self._whole_state_dict() if whole else self.trained_state_dict())
        got = set(tensors) - {"prompt_embeds"}
        missing, unexpected = sorted(expected - got), sorted(got - expected)
        if missing or unexpected:
            raise FixerWeightsError(
                f"'{source}' does not match this fixer's architecture/config: "
                f"{len(missing)} tensors missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                f"(e.g. {unexpected[:3]})."
            )
        parts = {"unet": self.unet, "vae": self.vae, "skip_convs": self.skip_convs, "hint_conv": self.hint_conv}
        for prefix, module in parts.items():
            sub = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            if not sub:
                continue
            try:
                module.load_state_dict(sub, strict=whole)
            except RuntimeError as err:
                raise FixerWeightsError(f"'{source}' does not fit this fixer's {prefix}: {summarise_load_error(err)}") from None

    # ------------------------------------------------------------------ helpers

    def _x0_from_prediction(self, pred: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        kind = self.scheduler.config.prediction_type
        a, s = self._sqrt_alpha, self._sqrt_one_minus_alpha
        if kind == "epsilon":
            return (x_t - s * pred) / a
        if kind == "v_prediction":
            return a * x_t - s * pred
        if kind == "sample":
            return pred
        raise ValueError(f"unsupported prediction_type {kind!r}")

    def _check_prompt_embeds(self, emb: torch.Tensor) -> torch.Tensor:
        if emb.ndim == 2:
            emb = emb[None]
        dim = self.unet.config.cross_attention_dim
        if emb.ndim != 3 or emb.shape[0] != 1 or emb.shape[-1] != dim:
            raise FixerWeightsError(
                f"prompt embedding has shape {tuple(emb.shape)}; this UNet needs [1, L, {dim}]"
            )
        return emb

    def extra_repr(self) -> str:
        return f"variant={self.config.variant}, timestep={self.config.timestep}, base={self.base}"


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad [N, C, H, W] at the bottom/right to multiples of ``multiple`` (reflection where it fits)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    # Reflection continues texture better than a constant; it needs the pad smaller than the side.
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
