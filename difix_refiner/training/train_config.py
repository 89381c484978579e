"""The options of ``difix-refiner train-fixer``: :class:`TrainFixerConfig` and its nested groups.

The loop itself is :mod:`difix_refiner.training.train_fixer`; ``difix_refiner.commands.train_fixer``
is the command. Examples::

    # paired, tiny model on the CPU (a quick check that the loop learns)
    difix-refiner train-fixer --pairs pairs/pairs.json --output runs/tiny \\
        --base tiny --crop 256 256 --max-steps 300 --device cpu

    # paired, SD-Turbo with the Difix recipe on a GPU, several GPUs through accelerate
    accelerate launch -m difix_refiner.commands.train_fixer --pairs pairs/pairs.json \\
        --output runs/difix --base /models/sd-turbo --mixed-precision bf16 --crop 512 512 \\
        --objective.perceptual.vgg-weights /models/vgg16-397923af.pth

    # unpaired (renders -> real photos), validated on the test split of a pair file
    difix-refiner train-fixer --unpaired.renders renders/ --unpaired.real photos/ \\
        --pairs pairs/pairs.json --output runs/cycle --base tiny --crop 256 256
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from difix_refiner.core.errors import InputError
from difix_refiner.fixer.presets import DEFAULT_BASE
from difix_refiner.training.hint_training import HintOptions
from difix_refiner.training.objectives import (
    PairedObjectiveConfig,
    UnpairedObjectiveConfig,
)


class TrainFixerError(InputError):
    """A problem with the command's inputs or output folder; the message is meant for the user."""


@dataclass
class ModelOptions:
    """Which parts of the fixer train, the form of its output, and memory switches."""

    trainable: Literal["auto", "adapters", "all"] = "auto"
    """auto: everything for --base tiny (random weights have nothing to preserve), the variant's adapters
    otherwise; adapters: what the fixer config marks trainable (LoRA, skip convolutions, UNet conv_in for
    pix2pix-turbo, the whole UNet with --model.train-unet); all: every weight (VAE encoder included)."""

    train_unet: bool = False
    """Fine-tune the whole UNet (Difix's public recipe) instead of a UNet LoRA."""

    unet_lora_rank: int | None = None
    """Rank of the UNet LoRA (default: the fixer's, 8); 0 disables it."""

    vae_lora_rank: int | None = None
    """Rank of the VAE-decoder LoRA (default: the fixer's, 4); 0 disables it."""

    residual_output: bool = False
    """Train the fixer to output a correction added to the render (--base tiny only): it starts as the identity,
    so a good render stays as it is unless the pairs teach otherwise."""

    gradient_checkpointing: bool = False
    """Recompute UNet/VAE blocks in the backward pass: much less memory, about 30% slower."""

    memory_efficient: bool = False
    """Run the VAE per view and the UNet per batch item (lower peak memory at full resolution)."""


@dataclass
class OptimOptions:
    """AdamW, gradient clipping and the learning-rate schedule."""

    lr: float | None = None
    """Peak learning rate. Default: 1e-3 for --base tiny (random weights, trained whole), else the
    published one: 2e-5 (Difix README) for the difix preset, 5e-6 for pix2pix-turbo, 1e-5 for unpaired
    (CycleGAN-Turbo)."""

    disc_lr: float | None = None
    """Learning rate of the discriminator(s); default: the generator's."""

    weight_decay: float = 1e-2
    """AdamW weight decay (pix2pix-turbo's 1e-2)."""

    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""

    eps: float = 1e-8
    """AdamW epsilon."""

    grad_clip: float = 1.0
    """Clip the global gradient norm to this (Difix and pix2pix-turbo: 1.0); 0 disables clipping."""

    schedule: Literal["constant", "cosine"] = "constant"
    """After the warm-up: constant (pix2pix-turbo) or cosine decay to min_lr_ratio * lr at --max-steps."""

    warmup_steps: int | None = None
    """Linear warm-up steps; default: 5% of --max-steps, at most 500 (pix2pix-turbo warms up 500)."""

    min_lr_ratio: float = 0.0
    """Final learning rate of the cosine schedule, as a fraction of the peak."""


@dataclass
class CheckpointOptions:
    """Checkpoints for --resume (OUT/checkpoints/step_*)."""

    every: int = 500
    """Save a checkpoint every this many steps (and always at the last step); 0: only at the last step."""

    keep: int = 3
    """Keep the newest this many checkpoints; 0 keeps all."""


@dataclass
class ValidationOptions:
    """Validation on the pair file's test split: PSNR/SSIM before and after fixing, and image grids."""

    every: int = 500
    """Validate every this many steps (OUT/val/); 0: only the final evaluation."""

    split: str = "test"
    """Split of the pair file to validate and report on."""

    max_images: int | None = 16
    """Images used by the periodic validation (the first ones by id); None: all."""

    final_max_images: int | None = None
    """Images used by the final evaluation written to metrics.json; None: all."""

    grid_rows: int = 4
    """Rows (input | output | target) in the image grids."""

    tile_width: int = 384
    """Grid tiles wider than this are shrunk (the metrics use full-size images)."""


@dataclass
class UnpairedOptions:
    """Unpaired training (CycleGAN-Turbo): give both folders to switch it on."""

    renders: Path | None = None
    """Folder of renders (domain A, what the fixer gets)."""

    real: Path | None = None
    """Folder of real photos (domain B, what fixed images should look like)."""

    objective: UnpairedObjectiveConfig = field(default_factory=UnpairedObjectiveConfig)
    """CycleGAN-Turbo loss weights, discriminator and perceptual weight files."""


@dataclass
class TrainFixerConfig:
    """Train the one-step fixer: paired (Difix / pix2pix-turbo losses on a pairs JSON) or unpaired
    (CycleGAN-Turbo on two image folders). Writes checkpoints, tensorboard logs, validation grids, the
    trained fixer (OUT/fixer) and before/after PSNR/SSIM of the test split (OUT/metrics.json)."""

    output: Path
    """Run folder. Must be empty or new, unless --resume or --overwrite."""

    pairs: Path | None = None
    """Pair JSON (Difix format, e.g. from make-pairs): trains on its 'train' split, validates on its test
    split. In unpaired mode it is optional and only used for validation."""

    objective: PairedObjectiveConfig = field(default_factory=PairedObjectiveConfig)
    """Paired loss: --objective.preset difix|pix2pix-turbo and per-term weights (None: the preset's)."""

    unpaired: UnpairedOptions = field(default_factory=UnpairedOptions)
    """Unpaired training data and objective (used when --unpaired.renders and --unpaired.real are given)."""

    base: str = DEFAULT_BASE
    """Base model: 'tiny' (small random model, trained whole), a hub id, or a local diffusers folder."""

    adapter: Path | None = None
    """Start from trained fixer weights (a folder written by save_pretrained / a previous run's OUT/fixer)."""

    variant: Literal["difix", "pix2pix-turbo"] = "difix"
    """difix (t=199, reference views when the pairs have them) or pix2pix-turbo (t=999, single view)."""

    use_refs: Literal["auto", "yes", "no"] = "auto"
    """Reference views: auto uses them when every pair has the same number (> 0) and the variant is difix."""

    hint: HintOptions = field(default_factory=HintOptions)
    """LiDAR hints of the pairs: train a hint fixer on them (auto when every pair has one) and hint dropout."""

    identity_fraction: float = 0.0
    """Probability that a training sample's render is replaced by its photo (an identity sample: a view that
    needs no fixing, its own target), so the fixer learns to leave good renders alone. Paired training only."""

    crop: tuple[int, int] | None = (512, 512)
    """Random training crop H W (multiples of 8; Difix trains at 576x1024, pix2pix-turbo 512, CycleGAN-Turbo
    256); None trains on whole images (then all must share a size when --batch-size > 1)."""

    batch_size: int = 1
    """Images per step and process (with N processes a step sees N times as many)."""

    max_steps: int = 10000
    """Optimiser steps in total (a resumed run continues up to this)."""

    seed: int = 0
    """Seed of model initialisation (tiny), data order, crops and every RNG."""

    model: ModelOptions = field(default_factory=ModelOptions)
    """Trainable parts and memory switches."""

    optim: OptimOptions = field(default_factory=OptimOptions)
    """Optimiser and learning-rate schedule."""

    checkpoint: CheckpointOptions = field(default_factory=CheckpointOptions)
    """Checkpoint frequency."""

    validation: ValidationOptions = field(default_factory=ValidationOptions)
    """Validation frequency and size."""

    device: str = "auto"
    """auto (accelerate's choice: the GPU of this process when there is one), cpu, cuda or cuda:N."""

    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Autocast precision of forward passes (weights stay fp32; fp16 adds loss scaling). bf16 on GPUs."""

    resume: bool = False
    """Continue the run in --output from its newest checkpoint (bit-for-bit the same as not stopping, on
    the same machine and settings). Without a checkpoint, a folder holding only this command's files
    starts over."""

    resume_from: Path | None = None
    """Continue from this checkpoint folder (OUT/checkpoints/step_*) instead of the newest; implies --resume."""

    overwrite: bool = False
    """Start over in an existing --output: its train-fixer files are deleted (other files are left alone)."""

    num_workers: int = 2
    """Data-loading worker processes per training process (0: load in the main process)."""

    log_every: int = 10
    """Write losses and learning rate to tensorboard every this many steps (losses.jsonl gets every step)."""

    progress: bool = True
    """Show a progress bar."""

    threads: int | None = None
    """CPU threads for torch (default: torch's choice)."""
