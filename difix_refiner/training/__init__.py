"""Training objectives and paired data for the fixer.

- ``objectives``: :class:`PairedObjective` (presets ``difix`` and ``pix2pix-turbo``) and
  :class:`UnpairedObjective` (CycleGAN-Turbo over any two image-to-image callables).
- ``losses``: L2, L1, LPIPS, Gram (VGG16) and CLIP-similarity losses.
- ``perceptual``: frozen VGG16 / LPIPS / CLIP backbones from local weight files (never downloaded).
- ``discriminator``: CLIP-feature, VGG-feature and patch discriminators; BCE and hinge GAN losses.
- ``pairs``: the Difix pair JSON (read, validate, write, merge) and :class:`PairDataset`.

Heavy imports (transformers) happen only when a CLIP backbone is built.
"""

from difix_refiner.training.discriminator import DiscriminatorConfig
from difix_refiner.training.objectives import (
    LossDisabledWarning,
    PairedObjective,
    PairedObjectiveConfig,
    UnpairedObjective,
    UnpairedObjectiveConfig,
)
from difix_refiner.training.pairs import (
    PairDataset,
    PairEntry,
    PairsError,
    merge_pairs,
    read_pairs,
    validate_pairs,
    write_pairs,
)
from difix_refiner.training.perceptual import (
    PerceptualBackbones,
    PerceptualConfig,
    PerceptualWeightsError,
    RandomInitWarning,
)

__all__ = [
    "DiscriminatorConfig",
    "LossDisabledWarning",
    "PairDataset",
    "PairEntry",
    "PairedObjective",
    "PairedObjectiveConfig",
    "PairsError",
    "PerceptualBackbones",
    "PerceptualConfig",
    "PerceptualWeightsError",
    "RandomInitWarning",
    "UnpairedObjective",
    "UnpairedObjectiveConfig",
    "merge_pairs",
    "read_pairs",
    "validate_pairs",
    "write_pairs",
]
