"""Loading base components and reading/writing the fixer's own saved files.

Two things are loaded from disk or the hub:

* a **base** in the diffusers layout (``vae/``, ``unet/``, ``scheduler/``, ``text_encoder/``,
  ``tokenizer/``), either a local folder or a hub id such as ``stabilityai/sd-turbo``;
  a base folder without a text encoder may carry ``prompt_embeds.safetensors`` instead;
* our **saved fixer**: a folder with ``fixer_config.json`` and ``fixer.safetensors`` (the JSON
  is also stored in the safetensors metadata, so the file alone is enough). Its ``kind`` is
  ``adapter`` (only the trained tensors; the JSON names the base they expect) or ``whole``
  (every tensor plus the component configs; no base needed).

Every failure to find weights surfaces as :class:`FixerWeightsError`, whose message says what
is missing and how to point at a local copy, never as a raw hub traceback.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from difix_refiner.core import atomic
from difix_refiner.core.errors import InputError
from difix_refiner.core.optional_weights import hub_offline
from difix_refiner.fixer.presets import DEFAULT_BASE, sd_scheduler_config

CONFIG_NAME = "fixer_config.json"
WEIGHTS_NAME = "fixer.safetensors"
PROMPT_EMBEDS_NAME = "prompt_embeds.safetensors"
FORMAT = "difix_refiner.fixer"
FORMAT_VERSION = 1
BASE_LAYOUT = "vae/, unet/, scheduler/, text_encoder/, tokenizer/"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class FixerWeightsError(InputError):
    """Weights could not be found or do not fit; the message says what and how to fix it."""


def looks_like_hub_id(base: str) -> bool:
    """``org/name`` or ``name``; anything absolute, relative-dotted or deeper is a path."""
    return bool(_HUB_ID.match(base)) and not base.startswith((".", "~"))


def _how_to_give_local(base: str) -> str:
    from difix_refiner.core.optional_weights import SD_TURBO_HUB_ID, fetch_hint

    fetch = f"Fetch it into the cache with `{fetch_hint('sd-turbo')}`, or d" if base == SD_TURBO_HUB_ID else "D"
    return (
        f"{fetch}ownload it where there is network (e.g. `huggingface-cli download {base} --local-dir DIR`) "
        f"and pass the folder instead: Fixer.from_pretrained(base='DIR') or `--base DIR` "
        f"(a folder in the diffusers layout: {BASE_LAYOUT})."
    )


def check_base_available(base: str, option: str = "--base") -> None:
    """Fail at once, in one sentence, when ``base`` cannot be read.

    A local folder must exist; a hub id must be in the local Hugging Face cache (nothing is downloaded
    outside ``difix-refiner weights fetch``, so a hub id that is not there cannot load). Called before
    training starts, so a missing fixer does not surface at the first refine round.
    """
    if base == "tiny" or Path(base).expanduser().exists():
        return
    parts = Path(base).parts
    local = len(parts) > 1 and Path(parts[0]).is_dir()  # "examples/x" where examples/ is here: a path, not a hub id
    if local or not looks_like_hub_id(base):
        raise FixerWeightsError(f"{option} {base}: no such file or folder (relative to {Path.cwd()})")
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(base, "unet/config.json"), str):
        raise FixerWeightsError(f"{option} {base}: not in the local Hugging Face cache. " + _how_to_give_local(base))


def _short(err: BaseException) -> str:
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0] if first else ''}"[:300]


# --------------------------------------------------------------------------- base


@dataclass
class BaseComponents:
    """What a base provides. The text encoder is not loaded here: ``text_encoder_loader`` loads
    it on first use (the fixer encodes its prompt once and then drops it)."""

    vae: Any
    unet: Any
    scheduler: Any
    source: str
    prompt_embeds: torch.Tensor | None = None
    text_encoder_loader: Callable[[], tuple[Any, Any]] | None = None
    notes: list[str] = field(default_factory=list)


def _from_pretrained(cls: Any, what: str, base: str, subfolder: str, local_only: bool, **kwargs: Any) -> Any:
    """Call ``cls.from_pretrained`` and turn any failure into a :class:`FixerWeightsError`."""
    try:
        with warnings.catch_warnings():
            # diffusers passes a deprecated argument to huggingface_hub; the warning is noise here.
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return cls.from_pretrained(base, subfolder=subfolder, local_files_only=local_only, **kwargs)
    except Exception as err:  # hub, filesystem and parsing errors all mean "cannot use these weights"
        if Path(base).is_dir():
            msg = (
                f"Could not load the {what} ({subfolder}/) of the base folder '{base}' "
                f"({_short(err)}). Expected a folder in the diffusers layout: {BASE_LAYOUT}."
            )
        else:
            if not local_only:
                why = "it could not be fetched (no network?) and it is not in the local hub cache"
            elif hub_offline():
                why = "offline mode is on (HF_HUB_OFFLINE=1) and it is not in the local hub cache"
            else:
                why = "it is not in the local hub cache (nothing is downloaded while loading)"
            msg = (
                f"Could not load the {what} ({subfolder}/) of base model '{base}' from the Hugging Face hub: "
                f"{why} [{_short(err)}]. {_how_to_give_local(base)}"
            )
        raise FixerWeightsError(msg) from None


def read_prompt_embeds(path: Path) -> torch.Tensor:
    """A stored prompt embedding [1, L, D] (key ``prompt_embeds``)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            emb = f.get_tensor("prompt_embeds")
    except Exception as err:
        raise FixerWeightsError(f"Could not read the prompt embedding '{path}' ({_short(err)}).") from None
    if emb.ndim == 2:
        emb = emb[None]
    if emb.ndim != 3 or emb.shape[0] != 1:
        raise FixerWeightsError(f"'{path}' holds a prompt embedding of shape {tuple(emb.shape)}; expected [1, L, D].")
    return emb


def write_prompt_embeds(path: str | os.PathLike, embeds: torch.Tensor) -> None:
    """Store a prompt embedding so that a base folder can do without its text encoder."""
    _atomic_save({"prompt_embeds": embeds.detach().cpu().contiguous()}, Path(path), metadata=None)


def load_base(base: str, *, local_files_only: bool | None = None) -> BaseComponents:
    """Load VAE, UNet and scheduler of ``base`` (local diffusers folder or hub id).

    A hub id is read from the local Hugging Face cache only (``local_files_only`` defaults to True):
    downloads happen only through ``difix-refiner weights fetch`` or on an explicit ``False``.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    local_only = True if local_files_only is None else local_files_only
    base = str(base)
    folder = Path(base).expanduser()
    notes: list[str] = []
    if folder.is_dir():
        missing = [s for s in ("vae", "unet") if not (folder / s).is_dir()]
        if missing:
            raise FixerWeightsError(
                f"The base folder '{base}' lacks {', '.join(s + '/' for s in missing)}. "
                f"Expected a folder in the diffusers layout ({BASE_LAYOUT}), e.g. one written by a "
                f"diffusers pipeline's save_pretrained, or a saved fixer folder (with {CONFIG_NAME})."
            )
        source = str(folder.resolve())
    elif not looks_like_hub_id(base):
        raise FixerWeightsError(
            f"The base folder '{base}' does not exist. Pass an existing folder in the diffusers layout "
            f"({BASE_LAYOUT}), a hub id such as '{DEFAULT_BASE}', or 'tiny' for the small random model."
        )
    else:
        source = base

    vae = _from_pretrained(AutoencoderKL, "VAE", source, "vae", local_only)
    unet = _from_pretrained(UNet2DConditionModel, "UNet", source, "unet", local_only)
    if folder.is_dir() and not (folder / "scheduler").is_dir():
        # Only the noise schedule is read from the scheduler; SD's is the one every SD-derived base uses.
        notes.append(f"'{base}' has no scheduler/; using Stable Diffusion's DDPM schedule")
        scheduler = DDPMScheduler(**sd_scheduler_config())
    else:
        # Loading SD-Turbo's (Euler) scheduler config into DDPMScheduler is how pix2pix-turbo does it;
        # x0 clipping is switched off because it is meant for pixel-space models.
        scheduler = _from_pretrained(DDPMScheduler, "scheduler", source, "scheduler", local_only, clip_sample=False)

    prompt_embeds = None
    loader = None
    if folder.is_dir() and (folder / PROMPT_EMBEDS_NAME).is_file():
        prompt_embeds = read_prompt_embeds(folder / PROMPT_EMBEDS_NAME)
    if not folder.is_dir() or ((folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir()):

        def loader() -> tuple[Any, Any]:
            from transformers import CLIPTextModel, CLIPTokenizer

            tokenizer = _from_pretrained(CLIPTokenizer, "tokenizer", source, "tokenizer", local_only)
            text_encoder = _from_pretrained(CLIPTextModel, "text encoder", source, "text_encoder", local_only)
            return tokenizer, text_encoder

    return BaseComponents(
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        source=source,
        prompt_embeds=prompt_embeds,
        text_encoder_loader=loader,
        notes=notes,
    )


# --------------------------------------------------------------------------- saved fixer


@dataclass
class SavedFixer:
    """Contents of a saved fixer: ``meta`` is the JSON config, ``tensors`` the weights."""

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def base(self) -> str | None:
        return self.meta.get("base")


def is_saved_fixer(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder or file written by ``Fixer.save_pretrained``."""
    p = Path(path).expanduser()
    if p.is_dir():
        return (p / CONFIG_NAME).is_file() or (p / WEIGHTS_NAME).is_file()
    if p.is_file() and p.suffix == ".safetensors":
        try:
            with safe_open(str(p), framework="pt") as f:
                return (f.metadata() or {}).get("format") == FORMAT
        except Exception:
            return False
    return False


def read_saved(path: str | os.PathLike) -> SavedFixer:
    """Read a saved fixer folder, or its ``.safetensors`` file alone."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FixerWeightsError(
            f"The fixer weights '{path}' do not exist. Pass the folder written by Fixer.save_pretrained "
            f"(with {CONFIG_NAME} and {WEIGHTS_NAME}) or its {WEIGHTS_NAME} file."
        )
    if p.is_dir():
        weights = p / WEIGHTS_NAME
        if not weights.is_file():
            raise FixerWeightsError(
                f"'{path}' is not a saved fixer: {WEIGHTS_NAME} is missing (found: "
                f"{', '.join(sorted(x.name for x in p.iterdir())[:8]) or 'nothing'})."
            )
    else:
        weights = p
    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:
        raise FixerWeightsError(f"Could not read the fixer weights '{weights}' ({_short(err)}).") from None
    if p.is_dir() and (p / CONFIG_NAME).is_file():
        try:
            meta = json.loads((p / CONFIG_NAME).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise FixerWeightsError(f"Could not read '{p / CONFIG_NAME}' ({_short(err)}).") from None
    elif "fixer_config" in metadata:
        meta = json.loads(metadata["fixer_config"])
    else:
        raise FixerWeightsError(f"'{path}' has no {CONFIG_NAME} and its weights carry no fixer config.")
    if meta.get("format") != FORMAT:
        raise FixerWeightsError(f"'{path}' was not written by difix_refiner's Fixer.save_pretrained.")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise FixerWeightsError(
            f"'{path}' uses format version {meta['format_version']}; this code reads up to {FORMAT_VERSION}."
        )
    if meta.get("kind") not in ("adapter", "whole"):
        raise FixerWeightsError(f"'{path}': unknown kind {meta.get('kind')!r} (expected 'adapter' or 'whole').")
    return SavedFixer(meta=meta, tensors=tensors, path=p)


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None) -> None:
    with atomic.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def write_saved(folder: str | os.PathLike, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``fixer.safetensors`` (with the JSON in its metadata) and ``fixer_config.json``."""
    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic_save(cpu, out / WEIGHTS_NAME, metadata={"format": FORMAT, "fixer_config": text})
    atomic.write_text(out / CONFIG_NAME, text + "\n")
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def plain_config(config: Any) -> dict[str, Any]:
    """A diffusers ``FrozenDict`` config as a JSON-friendly dict (private keys dropped)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def summarise_load_error(err: BaseException, shown: int = 3) -> str:
    """torch's load_state_dict error (one line per mismatching tensor, often hundreds) in a few lines."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    details = [line for line in lines[1:] if line.startswith(("size mismatch", "Missing key", "Unexpected key"))]
    if not details:
        return lines[0] if lines else str(err)
    more = f"; and {len(details) - shown} more" if len(details) > shown else ""
    return (
        f"{len(details)} tensor(s) differ, e.g. " + "; ".join(d.rstrip(".") for d in details[:shown]) + more
        + ". Was it saved from another base, variant or LoRA rank?"
    )
