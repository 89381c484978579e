"""Choosing a fixer: the one set of ``--fixer-*`` options, the bundled small fixer, precision.

:class:`FixerOptions` is declared once and mixed into every config that picks a fixer (the
``render-shifted``, ``render-recorded``, ``eval`` and ``demo`` commands and the refine loop's
``--pipeline.refine.*``), so the options read the same everywhere. It is a base dataclass rather
than a nested one so the flat option names (``--fixer-base``, ``--pipeline.refine.fixer-base``)
stay as users know them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Tuple

from difix_refiner.core.errors import InputError

BUNDLED_FIXER_NAME = "fixer-small"
"""Folder name of the small fixer shipped in ``examples/`` (and installed under ``share/difix-refiner/``)."""


def bundled_fixer_path() -> Optional[Path]:
    """The small fixer shipped with the project, wherever the package runs from; None if absent.

    A checkout (or editable install) has it at ``<repository>/examples/fixer-small``; a wheel installs
    it as data under ``<prefix>/share/difix-refiner/fixer-small``. The working directory plays no part.
    """
    package_root = Path(__file__).resolve().parents[2]
    for candidate in (
        package_root / "examples" / BUNDLED_FIXER_NAME,
        Path(sys.prefix) / "share" / "difix-refiner" / BUNDLED_FIXER_NAME,
    ):
        if (candidate / "fixer_config.json").is_file():
            return candidate
    return None


def resolve_dtype(name: str, device: Any) -> Any:
    """'auto' -> bf16 (fp16 where bf16 is unsupported) on CUDA, fp32 elsewhere; else the named dtype."""
    import torch

    device = torch.device(device)
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def resolve_device(name: str, default: Optional[str] = None) -> Any:
    """The torch device named by ``--fixer-device`` ('auto': ``default``, else CUDA when available)."""
    import torch

    if name == "auto":
        return torch.device(default or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InputError(f"--fixer-device {name!r} is not a torch device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--fixer-device {name}: CUDA is not available here")
    return device


@dataclass(kw_only=True)
class FixerOptions:
    """Which fixer to run, on which device and in which precision."""

    fixer_base: Optional[str] = None
    """Fixer base: a saved fixer folder, a diffusers folder or hub id (e.g. stabilityai/sd-turbo), 'tiny'
    (random weights, for tests), or 'none' (no fixer). Default: the base recorded in --fixer-adapter, else
    the bundled small fixer examples/fixer-small (the refine loop of the GPU preset: stabilityai/sd-turbo)."""
    fixer_adapter: Optional[str] = None
    """Trained fixer weights (a folder written by train-fixer or Fixer.save_pretrained) applied to the base."""
    fixer_variant: Optional[Literal["difix", "pix2pix-turbo"]] = None
    """Fixer variant; default: the adapter's or the saved fixer's, else 'difix'. 'pix2pix-turbo' takes no reference views."""
    fixer_device: str = "auto"
    """Torch device of the fixer (cuda, cuda:1, cpu); 'auto': the model's device (CUDA when available)."""
    fixer_dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """Fixer precision; 'auto': bf16 (fp16 without bf16 support) on CUDA, fp32 on the CPU."""

    def fixer_disabled(self) -> bool:
        """Whether the options say 'no fixer' (--fixer-base none)."""
        return self.fixer_base is not None and self.fixer_base.lower() == "none"

    def fixer_source(self, default_base: Optional[str] = None) -> Tuple[Optional[str], Optional[str]]:
        """``(base, None)`` to load, or ``(None, reason)`` when there is no fixer to load.

        Args:
            default_base: Base used when neither --fixer-base nor --fixer-adapter is given; None: the
                bundled small fixer.
        """
        if self.fixer_disabled():
            if self.fixer_adapter is not None:
                raise InputError("--fixer-base none disables the fixer; drop --fixer-adapter")
            return None, "the fixer was disabled (--fixer-base none)"
        if self.fixer_adapter is not None and not Path(self.fixer_adapter).exists():
            raise InputError(f"--fixer-adapter not found: {self.fixer_adapter}")
        if self.fixer_base is not None or self.fixer_adapter is not None:
            return self.fixer_base, None
        if default_base is not None:
            return default_base, None
        bundled = bundled_fixer_path()
        if bundled is None:
            return None, "no fixer: the bundled examples/fixer-small is not installed; pass --fixer-base (tiny, a hub id or a local folder)"
        return str(bundled), None

    def check_fixer_available(self, default_base: Optional[str] = None, option_prefix: str = "--") -> None:
        """Fail now (one sentence naming the option) if the chosen fixer's files can be neither read nor fetched."""
        from difix_refiner.fixer.weights import check_base_available

        if self.fixer_adapter is not None and not Path(self.fixer_adapter).exists():
            raise InputError(f"{option_prefix}fixer-adapter {self.fixer_adapter}: no such file or folder (relative to {Path.cwd()})")
        base, _ = self.fixer_source(default_base)
        if base is not None:
            check_base_available(base, option=f"{option_prefix}fixer-base")

    def fixer_label(self, default_base: Optional[str] = None) -> str:
        """A short human-readable name of the chosen fixer (for logs and manifests)."""
        base, _ = self.fixer_source(default_base)
        return f"base {base or 'from adapter'}" + (f", adapter {self.fixer_adapter}" if self.fixer_adapter else "")

    def load_fixer(self, default_device: Optional[str] = None, default_base: Optional[str] = None) -> Tuple[Any, Optional[str]]:
        """Load the chosen fixer in eval mode, frozen, on its device and dtype.

        Returns:
            ``(fixer, None)``, or ``(None, reason)`` when no fixer was asked for and none is bundled.
            A fixer that was asked for and fails to load raises ``InputError`` naming the option.
        """
        import torch

        from difix_refiner.fixer.model import Fixer
        from difix_refiner.fixer.weights import FixerWeightsError

        device = resolve_device(self.fixer_device, default_device)
        base, reason = self.fixer_source(default_base)
        if base is None and self.fixer_adapter is None:
            return None, reason
        dtype = resolve_dtype(self.fixer_dtype, device)
        try:
            if base == "tiny" and self.fixer_adapter is None:
                torch.manual_seed(0)  # the same random test fixer every time
                fixer = Fixer.tiny(self.fixer_variant) if self.fixer_variant else Fixer.tiny()
            else:
                fixer = Fixer.from_pretrained(base, adapter=self.fixer_adapter, variant=self.fixer_variant)
        except (FixerWeightsError, OSError, ValueError) as err:
            raise InputError(f"cannot load the fixer (base {base!r}, adapter {self.fixer_adapter}): {err}") from err
        fixer = fixer.to(device=device, dtype=dtype).eval()
        for p in fixer.parameters():
            p.requires_grad_(False)
        return fixer, None
