"""The optional pretrained weights: what each one enables, where the code looks for it, whether it is there.

This module is the single definition of those places. LPIPS in ``ns-eval`` and ``difix-refiner eval``
(:mod:`difix_refiner.core.lpips`), the fixer's perceptual losses
(:mod:`difix_refiner.training.perceptual`), FID/KID in ``eval`` and the fixer's default base
(:mod:`difix_refiner.fixer.presets`) all take their paths and hub ids from here, and
``difix-refiner weights fetch`` (:mod:`difix_refiner.core.weights_fetch`) downloads to exactly these
places. Nothing in this module downloads anything.

Places:

* torchvision-style files live in torch's hub cache, ``torch.hub.get_dir()/checkpoints``
  (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), under the file
  names torchvision and torch-fidelity use, so that their own loaders find them too;
* Hugging Face models live in the Hugging Face hub cache (``$HF_HUB_CACHE``, by default
  ``~/.cache/huggingface/hub``) and are loaded with ``local_files_only``;
* LPIPS' VGG linear layers ship inside the ``lpips`` pip package.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Literal, Optional, Tuple

SD_TURBO_HUB_ID = "stabilityai/sd-turbo"
"""The fixer's default base model (Difix3D+ and pix2pix-turbo both start from SD-Turbo)."""

CLIP_HUB_ID = "openai/clip-vit-base-patch32"
"""The CLIP ViT-B/32 that pix2pix-turbo's CLIP similarity loss uses."""

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
"""torch-fidelity's InceptionV3 (the FID network ported from TensorFlow), as torchmetrics' FID/KID load it."""

INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
"""SHA-256 of that file (its name carries the first 8 hex digits, torch.hub's convention)."""

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")
"""torch.hub's file-name convention ``name-<first hex digits of the sha256>.ext``."""

WeightKind = Literal["file", "hub", "package"]


# --------------------------------------------------------------------------- places


def torch_checkpoints_dir() -> Path:
    """torch's hub checkpoint folder, where torchvision and torch-fidelity cache weights (read at call time)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _torchvision_url(kind: Literal["alexnet", "vgg16"]) -> str:
    """The URL torchvision's ImageNet weights enum gives (its file name is the cached file's name)."""
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    return AlexNet_Weights.IMAGENET1K_V1.url if kind == "alexnet" else VGG16_Weights.IMAGENET1K_V1.url


def alexnet_path() -> Path:
    """torchvision's ImageNet AlexNet, the backbone of torchmetrics' LPIPS (``net_type='alex'``)."""
    return torch_checkpoints_dir() / os.path.basename(_torchvision_url("alexnet"))


def vgg16_path() -> Path:
    """torchvision's ImageNet VGG16 (``vgg16-397923af.pth``): the fixer's LPIPS, Gram loss and discriminator."""
    return torch_checkpoints_dir() / os.path.basename(_torchvision_url("vgg16"))


def inception_path() -> Path:
    """torch-fidelity's InceptionV3 file for FID/KID, where torch-fidelity itself caches it."""
    return torch_checkpoints_dir() / os.path.basename(INCEPTION_URL)


def lpips_vgg_linear_path() -> Optional[Path]:
    """LPIPS' VGG linear layers (``weights/v0.1/vgg.pth``) inside the ``lpips`` package, or None without it."""
    try:
        import lpips
    except ImportError:
        return None
    p = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    return p if p.is_file() else None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache that diffusers and transformers load from (honours HF_HOME/HF_HUB_CACHE)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_cached_file(repo_id: str, filename: str) -> Optional[Path]:
    """The cached copy of ``filename`` at the hub cache's ``main`` of ``repo_id``, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir()))
    return Path(found) if isinstance(found, str) else None


def hash_prefix_in_name(url_or_name: str) -> Optional[str]:
    """The sha256 prefix a torch.hub-style file name carries (``alexnet-owt-7be5be79.pth`` -> ``7be5be79``)."""
    match = _HASH_IN_NAME.search(os.path.basename(url_or_name))
    return match.group(1) if match else None


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class OptionalWeight:
    """One optional weight: what it is, what it enables and where the code looks for it."""

    name: str
    """Name used on the command line (``difix-refiner weights fetch NAME``)."""
    what: str
    """What the weights are."""
    enables: str
    """What works only with them (without them it is skipped or refused with a message)."""
    kind: WeightKind
    """'file': one file at a URL; 'hub': files of a Hugging Face model; 'package': shipped by a pip package."""
    size: str
    """Approximate download size."""
    location: Callable[[], Optional[Path]]
    """Where the code looks: the file ('file', 'package') or the hub cache ('hub'); read at call time."""
    url: Optional[str] = None
    """Download URL ('file')."""
    sha256: Optional[str] = None
    """Full SHA-256 of the file when published ('file')."""
    sha256_prefix: Optional[str] = None
    """Leading hex digits of the SHA-256 as published in the file name ('file'; checked when no full hash)."""
    repo_id: Optional[str] = None
    """Hugging Face model id ('hub')."""
    hub_files: Tuple[Tuple[str, ...], ...] = ()
    """Required files of the hub model: each entry lists alternatives, the first one the repo has is used."""
    hub_optional: Tuple[str, ...] = ()
    """Small files fetched too when the repo has them (not needed to count as present)."""
    needs: Tuple[str, ...] = field(default_factory=tuple)
    """Python modules that the feature also needs (reported when they cannot be imported)."""

    def where(self) -> str:
        """Human-readable place the code looks in."""
        if self.kind == "hub":
            return f"{self.repo_id} in the Hugging Face cache {hub_cache_dir()}"
        place = self.location()
        return str(place) if place is not None else "not installed (the lpips package is missing)"

    def missing_files(self) -> List[str]:
        """Required files that are not where the code looks (empty when present)."""
        if self.kind == "hub":
            assert self.repo_id is not None
            return [group[0] for group in self.hub_files if not any(hub_cached_file(self.repo_id, f) for f in group)]
        place = self.location()
        return [] if place is not None and place.is_file() else [self.where()]

    def present(self) -> bool:
        """Whether every required file is where the code looks."""
        return not self.missing_files()

    def missing_modules(self) -> List[str]:
        """Modules in ``needs`` that cannot be imported."""
        import importlib.util

        return [m for m in self.needs if importlib.util.find_spec(m) is None]


@functools.lru_cache(maxsize=1)
def registry() -> Tuple[OptionalWeight, ...]:
    """Every optional weight, in the order ``difix-refiner weights`` lists them."""
    alex_url, vgg_url = _torchvision_url("alexnet"), _torchvision_url("vgg16")
    return (
        OptionalWeight(
            name="lpips-alex",
            what="torchvision's ImageNet AlexNet (LPIPS backbone; its linear layers ship with torchmetrics)",
            enables="LPIPS in ns-eval, nerfstudio's eval metrics during training, and difix-refiner eval",
            kind="file",
            size="233 MB",
            location=alexnet_path,
            url=alex_url,
            sha256_prefix=hash_prefix_in_name(alex_url),
        ),
        OptionalWeight(
            name="vgg16",
            what="torchvision's ImageNet VGG16 (features only are used)",
            enables="the fixer's LPIPS loss, Gram (style) loss and VGG discriminator in train-fixer",
            kind="file",
            size="528 MB",
            location=vgg16_path,
            url=vgg_url,
            sha256_prefix=hash_prefix_in_name(vgg_url),
        ),
        OptionalWeight(
            name="lpips-vgg",
            what="LPIPS v0.1 linear layers for VGG (on top of vgg16)",
            enables="the fixer's LPIPS loss in train-fixer (with vgg16)",
            kind="package",
            size="7 KB, installed with the lpips package",
            location=lpips_vgg_linear_path,
        ),
        OptionalWeight(
            name="clip",
            what=f"CLIP ViT-B/32 ({CLIP_HUB_ID})",
            enables="pix2pix-turbo's CLIP similarity loss and CLIP discriminator in train-fixer",
            kind="hub",
            size="605 MB",
            location=hub_cache_dir,
            repo_id=CLIP_HUB_ID,
            hub_files=(("config.json",), ("model.safetensors", "pytorch_model.bin"), ("vocab.json",), ("merges.txt",)),
            hub_optional=("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "preprocessor_config.json"),
        ),
        OptionalWeight(
            name="inception",
            what="torch-fidelity's InceptionV3 for FID/KID",
            enables="FID and KID of shifted renders in difix-refiner eval (needs torch-fidelity: pip install -e '.[fid]')",
            kind="file",
            size="91 MB",
            location=inception_path,
            url=INCEPTION_URL,
            sha256=INCEPTION_SHA256,
            sha256_prefix=hash_prefix_in_name(INCEPTION_URL),
            needs=("torch_fidelity",),
        ),
        OptionalWeight(
            name="sd-turbo",
            what=f"SD-Turbo ({SD_TURBO_HUB_ID}): VAE, UNet, scheduler, text encoder and tokenizer",
            enables="the GPU fixer: its default base in train-fixer, fix, the refine loop and demo --device cuda",
            kind="hub",
            size="5.2 GB",
            location=hub_cache_dir,
            repo_id=SD_TURBO_HUB_ID,
            hub_files=(
                ("scheduler/scheduler_config.json",),
                ("unet/config.json",),
                ("unet/diffusion_pytorch_model.safetensors",),
                ("vae/config.json",),
                ("vae/diffusion_pytorch_model.safetensors",),
                ("text_encoder/config.json",),
                ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin"),
                ("tokenizer/vocab.json",),
                ("tokenizer/merges.txt",),
            ),
            hub_optional=("model_index.json", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"),
        ),
    )


def weight_names() -> List[str]:
    """Names of all optional weights."""
    return [w.name for w in registry()]


def get_weight(name: str) -> OptionalWeight:
    """The registry entry called ``name``; raises ``KeyError`` naming the known ones."""
    for weight in registry():
        if weight.name == name:
            return weight
    raise KeyError(f"unknown weight {name!r}; known: {', '.join(weight_names())}")


def fetch_hint(name: str) -> str:
    """The command that puts weight ``name`` in place, for error messages."""
    return f"difix-refiner weights fetch {name}"


def hub_offline() -> bool:
    """True when the environment asks for no hub access (read at call time, not import time)."""
    flags = ("HF_HUB_OFFLINE", "DIFFUSERS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(f, "").strip().lower() in {"1", "true", "yes", "on"} for f in flags)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
