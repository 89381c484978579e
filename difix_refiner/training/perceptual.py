"""Frozen perceptual backbones: VGG16 features, LPIPS (VGG variant) and a CLIP encoder.

Nothing here downloads. Weights come from:

* ``vgg_weights``: a torchvision VGG16 ``state_dict`` file (``vgg16-397923af.pth``, the
  ImageNet weights torchvision would fetch). Used by LPIPS, the Gram loss and the VGG
  discriminator. With ``search_caches`` torchvision's own cache
  (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``) is also looked at.
* ``lpips_weights``: LPIPS' linear layers (``vgg.pth``, v0.1). The ``lpips`` pip package
  ships this file, and it is the default when ``search_caches`` is on. The package's own
  ``LPIPS`` class is not used because it builds its trunk through torchvision's
  ``pretrained=True`` path, which downloads the ImageNet VGG16 weights.
* ``clip_model``: a local folder that ``transformers`` can load as ``CLIPModel`` or
  ``CLIPVisionModelWithProjection`` (e.g. a download of ``openai/clip-vit-base-patch32``,
  the ViT-B/32 pix2pix-turbo uses). With ``search_caches`` the Hugging Face cache is also
  tried for ``clip_hub_id`` with ``local_files_only=True``.

A backbone that cannot be built raises :class:`PerceptualWeightsError`, whose message names
the missing file and the option to set. The objectives decide whether that is fatal (the
loss was asked for explicitly) or turns the loss off with a warning.

``random_init=True`` builds the same architectures with seeded random weights wherever no
file was given explicitly (caches are then not searched). It is meant for tests and warns
once per backbone, so it can never pass unnoticed in a real run.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from difix_refiner.core import optional_weights
from difix_refiner.core.errors import InputError

# torchvision's file name for the ImageNet VGG16 weights (VGG16_Weights.IMAGENET1K_V1).
TORCHVISION_VGG16_FILE = optional_weights.vgg16_path().name
DEFAULT_CLIP_HUB_ID = optional_weights.CLIP_HUB_ID

# Index of each ReLU in torchvision's ``vgg16().features`` (configuration "D").
VGG16_LAYER_INDEX: dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
VGG16_LAYERS: tuple[str, ...] = tuple(VGG16_LAYER_INDEX)
VGG16_CHANNELS: dict[str, int] = {"relu1_2": 64, "relu2_2": 128, "relu3_3": 256, "relu4_3": 512, "relu5_3": 512}
# VGG16 configuration "D": channel counts, "M" is a 2x2 max-pool.
_VGG16_PLAN: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# LPIPS v0.1 input scaling, applied to images in [-1, 1] (part of the metric's definition).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class PerceptualWeightsError(InputError):
    """A perceptual backbone's weights are missing or unusable; the message says which file
    and which option to set."""


class RandomInitWarning(UserWarning):
    """A backbone was built with random weights (``random_init=True``): fine for tests only."""


@dataclass
class PerceptualConfig:
    """Where the frozen perceptual backbones get their weights (never downloaded)."""

    vgg_weights: str | None = None
    """torchvision VGG16 state_dict file (vgg16-397923af.pth). Needed by LPIPS, the Gram loss and
    the VGG discriminator."""

    lpips_weights: str | None = None
    """LPIPS linear-layer weights (vgg.pth, v0.1). Default: the copy shipped in the ``lpips`` package."""

    clip_model: str | None = None
    """Local folder loadable by transformers as CLIPModel or CLIPVisionModelWithProjection (e.g. a
    download of openai/clip-vit-base-patch32). Needed by the CLIP similarity loss and the CLIP
    discriminator."""

    clip_hub_id: str = DEFAULT_CLIP_HUB_ID
    """Hub id looked up in the local Hugging Face cache (no download) when ``clip_model`` is unset."""

    search_caches: bool = True
    """Also look in torchvision's and Hugging Face's local caches and the lpips package (never downloads)."""

    random_init: bool = False
    """Build backbones without a given weight file with seeded random weights. For tests only: it warns."""

    random_init_seed: int = 0
    """Seed of the random weights when ``random_init`` is on (independent of the global RNG)."""


# --------------------------------------------------------------------------- helpers


def _freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    return module.eval()


class _Frozen(nn.Module):
    """Base of the frozen backbones: parameters never train and ``train()`` keeps eval mode,
    so that wrapping objectives can call ``.train()`` freely."""

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)


def _warn_random(what: str) -> None:
    warnings.warn(
        f"{what} uses RANDOM weights (random_init=True). This is for tests only; "
        "give real weights for training.",
        RandomInitWarning,
        stacklevel=3,
    )


def _short(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


def _load_torch_file(path: Path, option: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, wrong format: all mean "unusable"
        raise PerceptualWeightsError(f"Could not read '{path}' ({_short(err)}). Set {option} to a valid file.") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise PerceptualWeightsError(f"'{path}' does not hold a state_dict (got {type(obj).__name__}). Set {option}.")
    return obj


def _given_file(path: str | None, option: str, what: str) -> Path | None:
    """An explicitly given path must exist: a typo never silently disables a loss."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise PerceptualWeightsError(f"{what}: the file given by {option} does not exist: '{p}'.")
    return p


# --------------------------------------------------------------------------- VGG16


def torchvision_vgg16_cache_path() -> Path:
    """Where torchvision would have cached the ImageNet VGG16 weights (the registry's path)."""
    return optional_weights.vgg16_path()


def resolve_vgg_weights(config: PerceptualConfig) -> Path | None:
    """The VGG16 weight file to use, or ``None`` when there is none (caller decides)."""
    given = _given_file(config.vgg_weights, "perceptual.vgg_weights", "VGG16 weights")
    if given is not None:
        return given
    if config.search_caches and not config.random_init:
        cached = torchvision_vgg16_cache_path()
        if cached.is_file():
            return cached
    return None


def _missing_vgg_message() -> str:
    return (
        f"VGG16 weights not found: perceptual.vgg_weights is not set and torchvision's cache "
        f"'{torchvision_vgg16_cache_path()}' does not exist or is not searched (nothing is downloaded). "
        f"Set perceptual.vgg_weights (--perceptual.vgg-weights) to a torchvision VGG16 state_dict "
        f"file ({TORCHVISION_VGG16_FILE}), or fetch it there with `{optional_weights.fetch_hint('vgg16')}`."
    )


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> ImageNet-normalised, the input VGG16 was trained on."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


class VGG16Features(_Frozen):
    """Frozen VGG16 convolutional trunk up to ``relu5_3``.

    Module indices equal torchvision's ``vgg16().features`` so its state_dict keys
    (``features.{i}.weight``) load directly; the fully connected classifier is never built.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16_PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*layers)  # indices 0..29, the last is relu5_3
        self._init_random()
        _freeze(self)

    def _init_random(self) -> None:
        # He initialisation like torchvision's, so random-init features keep a sane scale.
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def load_weights(self, path: Path, option: str = "perceptual.vgg_weights") -> None:
        """Load a torchvision VGG16 state_dict (full model or features only)."""
        state = _load_torch_file(path, option)
        own = self.features.state_dict()
        picked: dict[str, torch.Tensor] = {}
        for key in own:
            for candidate in (f"features.{key}", key):
                if candidate in state:
                    picked[key] = state[candidate]
                    break
        missing = [k for k in own if k not in picked]
        if missing:
            raise PerceptualWeightsError(
                f"'{path}' is not a torchvision VGG16 state_dict: missing {missing[:4]}"
                f"{'...' if len(missing) > 4 else ''}. Set {option} to vgg16-397923af.pth or equivalent."
            )
        bad = [k for k, v in picked.items() if tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise PerceptualWeightsError(f"'{path}' has VGG16 tensors of the wrong shape ({bad[:4]}). Set {option}.")
        self.features.load_state_dict(picked)

    def forward(self, x: torch.Tensor, layers: Sequence[str] = VGG16_LAYERS) -> dict[str, torch.Tensor]:
        """Features at ``layers`` (names in :data:`VGG16_LAYERS`) of an already-normalised input.

        x: [B, 3, H, W]. Returns {name: [B, C, H / 2^k, W / 2^k]}; stops at the deepest layer asked for.
        """
        unknown = [n for n in layers if n not in VGG16_LAYER_INDEX]
        if unknown:
            raise ValueError(f"Unknown VGG16 layers {unknown}; choose from {VGG16_LAYERS}.")
        wanted = {VGG16_LAYER_INDEX[n]: n for n in layers}
        out: dict[str, torch.Tensor] = {}
        h = x
        for i, module in enumerate(self.features):
            h = module(h)
            if i in wanted:
                out[wanted[i]] = h
                if len(out) == len(wanted):
                    break
        return out


def build_vgg16(config: PerceptualConfig) -> VGG16Features:
    """VGG16 trunk with weights from ``config``; raises :class:`PerceptualWeightsError` when none."""
    path = resolve_vgg_weights(config)
    if path is None and not config.random_init:
        raise PerceptualWeightsError(_missing_vgg_message())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.random_init_seed)
        model = VGG16Features()
    if path is not None:
        model.load_weights(path)
    else:
        _warn_random("VGG16")
    return model


# --------------------------------------------------------------------------- LPIPS


def lpips_package_weights() -> Path | None:
    """The VGG linear-layer file shipped inside the ``lpips`` pip package, if installed."""
    return optional_weights.lpips_vgg_linear_path()


def resolve_lpips_weights(config: PerceptualConfig) -> Path | None:
    """The LPIPS linear-layer file to use, or ``None``."""
    given = _given_file(config.lpips_weights, "perceptual.lpips_weights", "LPIPS linear weights")
    if given is not None:
        return given
    if config.search_caches and not config.random_init:
        return lpips_package_weights()
    return None


class LPIPS(_Frozen):
    """LPIPS distance (VGG16 trunk, v0.1), our implementation of the published definition.

    d(x, y) = sum_l mean_hw( w_l . (n(f_l(x)) - n(f_l(y)))^2 ), where f_l are the trunk's
    relu1_2..relu5_3 features of the scaled input, n() unit-normalises each position over
    channels and w_l >= 0 are the learned 1x1 linear weights.
    """

    def __init__(self, trunk: VGG16Features) -> None:
        super().__init__()
        self.trunk = trunk
        self.lins = nn.ModuleList(nn.Conv2d(VGG16_CHANNELS[n], 1, kernel_size=1, bias=False) for n in VGG16_LAYERS)
        # Random linear weights are kept non-negative so that the random metric stays a distance.
        for lin in self.lins:
            nn.init.uniform_(lin.weight, 0.0, 1.0 / lin.in_channels)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        _freeze(self)

    def load_linear_weights(self, path: Path, option: str = "perceptual.lpips_weights") -> None:
        """Load the linear layers from the lpips package format (``lin{k}.model.1.weight``) or ours."""
        state = _load_torch_file(path, option)
        for k, lin in enumerate(self.lins):
            tensor = None
            for key in (f"lin{k}.model.1.weight", f"lin{k}.model.0.weight", f"lins.{k}.weight"):
                if key in state:
                    tensor = state[key]
                    break
            if tensor is None or tuple(tensor.shape) != tuple(lin.weight.shape):
                raise PerceptualWeightsError(
                    f"'{path}' is not an LPIPS VGG linear-layer file (layer {k}: expected a tensor of shape "
                    f"{tuple(lin.weight.shape)}). Set {option} to the lpips package's weights/v0.1/vgg.pth."
                )
            lin.weight.data.copy_(tensor)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: [B, 3, H, W] in [0, 1]. Returns the per-image distance [B]."""
        fx = self._features(x)
        # A constant target (the usual case) needs no graph: halves the activation memory.
        with torch.set_grad_enabled(torch.is_grad_enabled() and y.requires_grad):
            fy = self._features(y)
        total = x.new_zeros(x.shape[0])
        for lin, name in zip(self.lins, VGG16_LAYERS):
            diff = (fx[name] - fy[name]).pow(2)  # [B, C, h, w]
            total = total + lin(diff).mean(dim=(1, 2, 3))
        return total

    def _features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Channel-normalised trunk features of [B, 3, H, W] images in [0, 1]."""
        scaled = (images * 2.0 - 1.0 - self.shift.to(images.dtype)) / self.scale.to(images.dtype)
        feats = self.trunk(scaled, VGG16_LAYERS)
        # unit length over channels at every position
        return {n: f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10) for n, f in feats.items()}


def _missing_lpips_message(config: PerceptualConfig) -> str:
    why = (
        "the lpips package (which ships weights/v0.1/vgg.pth) is not installed"
        if config.search_caches
        else "search_caches is off"
    )
    return (
        f"LPIPS linear weights not found: perceptual.lpips_weights is not set and {why}. "
        "Set perceptual.lpips_weights (--perceptual.lpips-weights) to the lpips package's "
        "weights/v0.1/vgg.pth file."
    )


def build_lpips(config: PerceptualConfig, trunk: VGG16Features | None = None) -> LPIPS:
    """LPIPS with weights from ``config`` (sharing ``trunk`` when given); raises when unavailable."""
    lin_path = resolve_lpips_weights(config)
    if lin_path is None and not config.random_init:
        raise PerceptualWeightsError(_missing_lpips_message(config))
    if trunk is None:
        trunk = build_vgg16(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.random_init_seed + 1)
        model = LPIPS(trunk)
    if lin_path is not None:
        model.load_linear_weights(lin_path)
    else:
        _warn_random("LPIPS linear layers")
    return model


# --------------------------------------------------------------------------- CLIP


class _ByteTokenizer:
    """Stand-in tokenizer for random-init CLIP text models (tests): bytes -> ids, with CLIP's
    begin/end ids so that the text model pools at the end token."""

    def __init__(self, bos: int, eos: int, max_len: int) -> None:
        self.bos, self.eos, self.max_len = bos, eos, max_len

    def __call__(self, prompt: str) -> torch.Tensor:
        ids = [b + 1 for b in prompt.encode("utf-8")][: self.max_len - 2]
        return torch.tensor([[self.bos, *ids, self.eos]])  # [1, L]


class CLIPEncoder(_Frozen):
    """Frozen CLIP image encoder (and optional text encoder) on [0, 1] images.

    Images are resized to the model's input size (bilinear with anti-aliasing, aspect not kept:
    both sides of a comparison are distorted alike) and normalised with CLIP's mean and std.
    """

    def __init__(self, vision: nn.Module, text: nn.Module | None = None, tokenizer: Any = None) -> None:
        super().__init__()
        self.vision = _freeze(vision)
        self.text = _freeze(text) if text is not None else None
        self.tokenizer = tokenizer
        self.image_size = int(vision.config.image_size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def embed_dim(self) -> int:
        """Size of the projected (joint image-text) embedding."""
        return int(self.vision.config.projection_dim)

    @property
    def hidden_size(self) -> int:
        """Width of the transformer's hidden states."""
        return int(self.vision.config.hidden_size)

    @property
    def num_layers(self) -> int:
        """Number of transformer layers."""
        return int(self.vision.config.num_hidden_layers)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 3, S, S] normalised for CLIP."""
        s = self.image_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> projected image embeddings [B, D] (not normalised)."""
        return self.vision(pixel_values=self.preprocess(images)).image_embeds

    def hidden_states(self, images: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Token features after the given transformer layers (1-based; 0 = patch embeddings).

        Returns a list of [B, 1 + N, hidden] (class token first).
        """
        bad = [i for i in layers if not 0 <= i <= self.num_layers]
        if bad:
            raise ValueError(f"CLIP layers {bad} out of range 0..{self.num_layers}.")
        out = self.vision(pixel_values=self.preprocess(images), output_hidden_states=True)
        return [out.hidden_states[i] for i in layers]

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Projected text embeddings [P, D] of ``prompts`` (no gradient: prompts are constants)."""
        if self.text is None or self.tokenizer is None:
            raise PerceptualWeightsError(
                "This CLIP encoder has no text model. Point perceptual.clip_model at a full CLIPModel "
                "folder (with text encoder and tokenizer) to compare images with prompts."
            )
        device = next(self.text.parameters()).device
        embeds = []
        for prompt in prompts:
            if isinstance(self.tokenizer, _ByteTokenizer):
                ids = self.tokenizer(prompt)
            else:
                max_len = int(self.text.config.max_position_embeddings)
                ids = self.tokenizer([prompt], truncation=True, max_length=max_len, return_tensors="pt").input_ids
            embeds.append(self.text(input_ids=ids.to(device)).text_embeds)
        return torch.cat(embeds, dim=0)


def _clip_source(config: PerceptualConfig) -> str | None:
    if config.clip_model is not None:
        p = Path(config.clip_model).expanduser()
        if not p.is_dir():
            raise PerceptualWeightsError(f"CLIP model: the folder given by perceptual.clip_model does not exist: '{p}'.")
        return str(p)
    if config.search_caches and not config.random_init:
        return config.clip_hub_id  # tried with local_files_only=True
    return None


def _missing_clip_message(config: PerceptualConfig, detail: str = "") -> str:
    where = (
        f"perceptual.clip_model is not set and '{config.clip_hub_id}' is not in the local Hugging Face cache"
        if config.search_caches
        else "perceptual.clip_model is not set"
    )
    return (
        f"CLIP weights not found: {where}; nothing is downloaded{detail}. Set perceptual.clip_model "
        f"(--perceptual.clip-model) to a local folder with a transformers CLIPModel, e.g. a download of "
        f"{DEFAULT_CLIP_HUB_ID} (`{optional_weights.fetch_hint('clip')}` puts it in the cache)."
    )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (we check the result ourselves)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _clip_configs(source: str) -> tuple[Any, Any]:
    """(vision config, text config or None) of a CLIPModel or CLIPVisionModelWithProjection source.

    A full CLIPModel keeps ``projection_dim`` at the top level; the sub-configs carry a default
    (512) that would silently re-initialise a differently sized projection, so it is copied down.
    """
    from transformers import AutoConfig

    with _quiet_transformers():
        cfg = AutoConfig.from_pretrained(source, local_files_only=True)
    if cfg.model_type == "clip":
        vision, text = cfg.vision_config, cfg.text_config
        vision.projection_dim = text.projection_dim = cfg.projection_dim
        return vision, text
    if cfg.model_type == "clip_vision_model":
        return cfg, None
    raise ValueError(f"'{source}' holds a '{cfg.model_type}' model, not CLIP")


def _load_checked(cls: Any, source: str, cfg: Any) -> nn.Module:
    """``cls.from_pretrained`` that fails instead of silently re-initialising missing tensors."""
    try:
        with _quiet_transformers():
            model, info = cls.from_pretrained(source, config=cfg, local_files_only=True, output_loading_info=True)
    except Exception as err:
        raise PerceptualWeightsError(f"Could not load {cls.__name__} from '{source}' ({_short(err)}). Check perceptual.clip_model.") from None
    bad = sorted(set(info.get("missing_keys", ())) | {k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys", ())})
    if bad:
        raise PerceptualWeightsError(
            f"'{source}' does not fully define {cls.__name__}: missing or mis-shaped {bad[:4]}"
            f"{'...' if len(bad) > 4 else ''}. Check perceptual.clip_model."
        )
    return model


def build_clip(
    config: PerceptualConfig,
    *,
    text: bool = False,
    random_overrides: dict[str, Any] | None = None,
) -> CLIPEncoder:
    """CLIP encoder from ``config``; raises :class:`PerceptualWeightsError` when unavailable.

    text: also load the text model and tokenizer (for image-prompt similarity).
    random_overrides: with ``random_init``, CLIPVisionConfig/CLIPTextConfig fields that replace the
      ViT-B/32 defaults (tests use it to build a tiny model; never used when loading weights).
    """
    from transformers import (
        AutoTokenizer,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    source = _clip_source(config)
    if source is None:
        if not config.random_init:
            raise PerceptualWeightsError(_missing_clip_message(config))
        overrides = dict(random_overrides or {})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.random_init_seed + 2)
            vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**overrides))  # defaults = ViT-B/32
            text_model, tokenizer = None, None
            if text:
                text_keys = {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "projection_dim"}
                tcfg = CLIPTextConfig(**{k: v for k, v in overrides.items() if k in text_keys})
                text_model = CLIPTextModelWithProjection(tcfg)
                tokenizer = _ByteTokenizer(tcfg.vocab_size - 2, tcfg.eos_token_id, tcfg.max_position_embeddings)
        _warn_random("CLIP")
        return CLIPEncoder(vision, text_model, tokenizer)

    try:
        vision_cfg, text_cfg = _clip_configs(source)
    except Exception as err:  # not cached / wrong folder: both mean "no usable weights"
        raise PerceptualWeightsError(_missing_clip_message(config, f" (loading '{source}' failed: {_short(err)})")) from None
    vision = _load_checked(CLIPVisionModelWithProjection, source, vision_cfg)
    text_model, tokenizer = None, None
    if text:
        try:
            if text_cfg is None:
                raise ValueError("the folder holds a vision model only")
            text_model = _load_checked(CLIPTextModelWithProjection, source, text_cfg)
            with _quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            # Without vocabulary files transformers builds an empty tokenizer instead of failing.
            if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_tokens)):
                raise ValueError("no tokenizer vocabulary in the folder (only special tokens)")
        except Exception as err:
            raise PerceptualWeightsError(
                f"CLIP text encoder or tokenizer could not be loaded from '{source}' ({_short(err)}). "
                "Image-prompt similarity needs a full CLIPModel folder (text model and tokenizer) in "
                "perceptual.clip_model."
            ) from None
    return CLIPEncoder(vision, text_model, tokenizer)


# --------------------------------------------------------------------------- shared container


class PerceptualBackbones:
    """Builds each backbone once and shares it (LPIPS and Gram use the same VGG16 trunk).

    Objectives take one of these so that several of them, or tests, can share or inject backbones.
    Each accessor raises :class:`PerceptualWeightsError` when the weights are unavailable.
    """

    def __init__(self, config: PerceptualConfig | None = None, *, clip_random_overrides: dict[str, Any] | None = None):
        self.config = config or PerceptualConfig()
        self.clip_random_overrides = clip_random_overrides
        self._vgg: VGG16Features | None = None
        self._lpips: LPIPS | None = None
        self._clip: CLIPEncoder | None = None

    def vgg(self) -> VGG16Features:
        """The shared VGG16 trunk."""
        if self._vgg is None:
            self._vgg = build_vgg16(self.config)
        return self._vgg

    def lpips(self) -> LPIPS:
        """LPIPS on the shared VGG16 trunk."""
        if self._lpips is None:
            # Report every missing file at once rather than one per attempt.
            problems, trunk = [], None
            try:
                trunk = self.vgg()
            except PerceptualWeightsError as err:
                problems.append(str(err))
            try:
                if resolve_lpips_weights(self.config) is None and not self.config.random_init:
                    problems.append(_missing_lpips_message(self.config))
            except PerceptualWeightsError as err:
                problems.append(str(err))
            if problems:
                raise PerceptualWeightsError(" ".join(problems))
            self._lpips = build_lpips(self.config, trunk=trunk)
        return self._lpips

    def clip(self, text: bool = False) -> CLIPEncoder:
        """The shared CLIP encoder; ``text=True`` makes sure it has a text model too."""
        if self._clip is None or (text and self._clip.text is None):
            self._clip = build_clip(self.config, text=text, random_overrides=self.clip_random_overrides)
        return self._clip
