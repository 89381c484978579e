"""The one-step diffusion fixer (Difix3D+ / pix2pix-turbo) and running it on folders and renders.

Public API::

    from difix_refiner.fixer import Fixer, FixerConfig, FixerWeightsError
    fixer = Fixer.tiny("difix")                       # or Fixer.from_pretrained(...)
    out = fixer.fix(images, refs)                     # inference, [B,3,H,W] in [0,1]
    out = fixer(images, refs)                         # forward; differentiable after fixer.train()

See ``docs/fixer.md``.
"""

from difix_refiner.fixer.config import DEFAULT_PROMPT, VARIANTS, FixerConfig
from difix_refiner.fixer.model import Fixer
from difix_refiner.fixer.presets import DEFAULT_BASE
from difix_refiner.fixer.weights import FixerWeightsError, write_prompt_embeds

__all__ = [
    "DEFAULT_BASE",
    "DEFAULT_PROMPT",
    "VARIANTS",
    "Fixer",
    "FixerConfig",
    "FixerWeightsError",
    "write_prompt_embeds",
]
