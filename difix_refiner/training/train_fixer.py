"""The training loop of ``difix-refiner train-fixer`` (options: :mod:`difix_refiner.training.train_config`).

Two modes:

* **paired** (Difix3D+ / pix2pix-turbo): (render, photo[, reference]) pairs from a pair JSON; the
  fixer is trained with :class:`~difix_refiner.training.objectives.PairedObjective` (L2, LPIPS,
  Gram, CLIP, GAN per preset). Reference views are passed when the pairs have them (difix).
* **unpaired** (CycleGAN-Turbo): a folder of renders (domain A) and one of real photos (B).
  CycleGAN-Turbo keeps one UNet with two fixed captions and a VAE per direction. Our fixer holds
  one cached prompt embedding, and the tiny model has no text encoder to make a second caption
  from, so the two directions are **two Fixer instances** (``g_ab`` render -> real, the fixer
  that is saved; ``g_ba`` real -> render), each with its own UNet adapter, VAE-decoder LoRA and
  skip convolutions. That is more parameters than one shared UNet (2x the UNet memory with a real
  base) but the same losses, and it keeps the Fixer API untouched.

One step (paired)::

    batch: image [B,3,h,w], target [B,3,h,w], ref [B,R,3,h,w] (optional)
    output = fixer(image, ref)                      # [B,3,h,w], differentiable (fixer.train())
    total, terms = objective(output, target, step)  # generator loss
    generator update: backward, all-reduce grads across processes, unscale (fp16), clip, AdamW, LR step
    if GAN: discriminator update on (target, output.detach())

Plumbing:

* ``accelerate``'s :class:`~accelerate.Accelerator` gives the device of each process, autocast
  for ``--mixed-precision`` and the collective ops. Modules are not wrapped in DDP: gradients are
  averaged with one all-reduce per step (bucketed), which also covers the discriminators called
  through the objective and generators called several times per step (unpaired). Data is sharded
  by hand: a global batch of ``batch_size * num_processes`` items comes from one seeded stream,
  process ``r`` takes slice ``r``.
* Data order: the stream concatenates per-epoch permutations drawn from ``(seed, epoch)``, and
  crops depend on ``(seed, epoch, index)``. The position in the stream is ``step * global_batch``,
  so the data state of a checkpoint is its step (stored and checked anyway).
* Checkpoints (:mod:`~difix_refiner.training.checkpointing`) hold the trained tensors of every
  model, optimisers, schedulers, gradient scalers and every process's RNG states; ``--resume``
  continues bit for bit (tested on the CPU). ``losses.jsonl`` is cut back to the checkpoint's step
  and tensorboard purges later events, so the logs read as one run.
* Validation (:mod:`~difix_refiner.training.validation`) runs on the main process inside
  ``torch.random.fork_rng``, so validating does not change the training trajectory.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from difix_refiner.core import atomic
from difix_refiner.fixer import Fixer, FixerConfig, FixerWeightsError
from difix_refiner.fixer.folder_io import FixCommandError, list_images
from difix_refiner.pairs.format import (
    PairDataset,
    PairsError,
    validate_pairs,
)
from difix_refiner.training import trainer_checkpoints, trainer_reports
from difix_refiner.training.fixer_data import (
    EpochItems,
    ImageFolderDataset,
    StreamSampler,
    _check_crop,
    check_sizes,
)
from difix_refiner.training.hint_training import drop_hints
from difix_refiner.training.identity_samples import with_identity_samples
from difix_refiner.training.lr_schedule import default_lr, default_warmup, lr_factor
from difix_refiner.training.objectives import PairedObjective, UnpairedObjective
from difix_refiner.training.perceptual import PerceptualWeightsError
from difix_refiner.training.run_folder import (
    CONFIG_FILE,
    LOSSES_FILE,
    _to_jsonable,
    prepare_output,
)
from difix_refiner.training.train_config import TrainFixerConfig, TrainFixerError

logger = logging.getLogger(__name__)

# Options that may change between a run and its resumption without changing the trajectory.
_RESUME_FREE = {
    "output", "resume", "resume_from", "overwrite", "max_steps", "num_workers", "log_every", "progress",
    "threads", "device", "checkpoint", "validation",
}  # fmt: skip
_GRAD_BUCKET = 32 * 1024 * 1024  # elements per all-reduce bucket (128 MiB in fp32)


# --------------------------------------------------------------------------- the trainer


class FixerTrainer:
    """Paired or unpaired training of the fixer; see the module docstring.

    ``FixerTrainer(cmd).run()`` does everything. The pieces are public for tests and notebooks:
    :meth:`setup`, :meth:`training_step`, :meth:`save_checkpoint`, :meth:`validate`, :meth:`finish`.
    """

    def __init__(self, cmd: TrainFixerConfig) -> None:
        self.cmd = cmd
        self.out = Path(cmd.output)
        self.mode = ""
        self.start_step = 0
        self.step = 0
        self._is_setup = False
        self.fixer: Fixer | None = None  # paired: the fixer; unpaired: g_ab (render -> real)
        self.fixer_ba: Fixer | None = None  # unpaired only: real -> render
        self.objective: PairedObjective | UnpairedObjective | None = None
        self.val_dataset: PairDataset | None = None
        self.writer: Any = None

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Check inputs (before anything heavy), then build models, objective, optimisers and data, and
        load the checkpoint when resuming."""
        cmd = self.cmd
        if cmd.threads:
            torch.set_num_threads(cmd.threads)
        self._check_options()
        self._setup_data()  # files only: input errors come before the output folder or a model is touched
        # Every process checks (same answer, same errors); only the main one deletes for --overwrite.
        resume_path = prepare_output(cmd, dry_run=True)
        self._setup_accelerator()
        if self.is_main:
            resume_path = prepare_output(cmd)
        self.accelerator.wait_for_everyone()
        self._seed_everything(per_process=False)  # every process builds the same initial weights
        self._setup_models()
        self._setup_objective()
        self._setup_optimizers()
        self._broadcast_weights()
        self._seed_everything(per_process=True)
        if self.mode == "paired":
            self._check_prompts(self.train_sets["a"])
        if resume_path is not None:
            self.load_checkpoint(resume_path)
        self._setup_run_folder(resumed=resume_path is not None)
        self._is_setup = True

    def _check_options(self) -> None:
        cmd = self.cmd
        has_a, has_b = cmd.unpaired.renders is not None, cmd.unpaired.real is not None
        if has_a != has_b:
            raise TrainFixerError("unpaired training needs both --unpaired.renders and --unpaired.real")
        self.mode = "unpaired" if has_a else "paired"
        if self.mode == "paired" and cmd.pairs is None:
            raise TrainFixerError(
                "give --pairs PAIRS.json (paired training; make one with `difix-refiner make-pairs`) or "
                "--unpaired.renders DIR --unpaired.real DIR (unpaired training)"
            )
        if cmd.batch_size < 1:
            raise TrainFixerError("--batch-size must be >= 1")
        if cmd.max_steps < 1:
            raise TrainFixerError("--max-steps must be >= 1")
        if cmd.use_refs == "yes" and (cmd.variant != "difix" or self.mode == "unpaired"):
            raise TrainFixerError("--use-refs yes needs --variant difix and paired training")
        if cmd.checkpoint.every < 0 or cmd.validation.every < 0 or cmd.log_every < 1:
            raise TrainFixerError("--checkpoint.every and --validation.every must be >= 0, --log-every >= 1")
        try:
            cmd.hint.check()
        except ValueError as err:
            raise TrainFixerError(str(err)) from None
        if not 0.0 <= cmd.identity_fraction < 1.0:
            raise TrainFixerError(f"--identity-fraction must lie in [0, 1), got {cmd.identity_fraction}")
        if cmd.identity_fraction > 0 and self.mode == "unpaired":
            raise TrainFixerError("--identity-fraction is for paired training (the unpaired objective has its own identity loss)")
        self.crop = _check_crop(cmd.crop)

    def _setup_data(self) -> None:
        """Validate the pair JSON and image folders, build the datasets, check image sizes against the crop."""
        cmd = self.cmd
        self.pair_counts: dict[str, int] = {}
        if cmd.pairs is not None:
            pairs = Path(cmd.pairs)
            if not pairs.is_file():
                raise TrainFixerError(f"pairs JSON not found: '{pairs}' (make one with `difix-refiner make-pairs`)")
            try:
                self.pair_counts = validate_pairs(pairs)
            except PairsError as err:
                raise TrainFixerError(f"invalid pairs JSON: {err}") from None
            if self.mode == "paired" and not self.pair_counts.get("train"):
                raise TrainFixerError(f"'{pairs}' has no 'train' pairs (splits: {self.pair_counts})")
        if self.mode == "unpaired":
            for name, folder in (("renders", cmd.unpaired.renders), ("real", cmd.unpaired.real)):
                try:
                    files = list_images(Path(folder))
                except FixCommandError as err:
                    raise TrainFixerError(f"--unpaired.{name}: {err}") from None
                check_sizes(files, self.crop, cmd.batch_size, f"--unpaired.{name}")
        self._build_datasets()

    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator

        device = self.cmd.device
        if device.startswith("cuda:"):
            torch.cuda.set_device(torch.device(device))  # accelerate uses the current CUDA device
        elif device not in ("auto", "cpu", "cuda"):
            raise TrainFixerError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
        self.accelerator = Accelerator(cpu=device == "cpu", mixed_precision=self.cmd.mixed_precision)
        self.device = self.accelerator.device
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        if not self.is_main:
            logger.setLevel(logging.WARNING)  # one copy of the progress lines, from the main process

    def _broadcast_weights(self) -> None:
        """Start every process from the main process's trainable weights (they already agree when
        seeded alike; this makes sure, e.g. for initialisations that draw from other RNGs)."""
        if self.world == 1:
            return
        from accelerate.utils import broadcast

        for p in [*self.gen_params, *self.disc_params]:
            p.data.copy_(broadcast(p.data.clone(), from_process=0))

    def _seed_everything(self, per_process: bool) -> None:
        # Training: each process its own streams (different Gram crops etc. per shard), all derived
        # from --seed. Model construction: the same seed everywhere, so initial weights agree.
        seed = self.cmd.seed + (self.rank if per_process else 0)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _build_fixer(self) -> Fixer:
        cmd, opts = self.cmd, self.cmd.model
        fields: dict[str, Any] = {}
        if opts.train_unet:
            fields["train_unet"] = True
            fields["unet_lora_rank"] = 0  # Difix's public recipe: the UNet itself trains, no UNet LoRA
        if opts.unet_lora_rank is not None:
            fields["unet_lora_rank"] = opts.unet_lora_rank
        if opts.vae_lora_rank is not None:
            fields["vae_lora_rank"] = opts.vae_lora_rank
        if opts.residual_output:
            fields["residual_output"] = True
        if self.with_hint:  # a hint fixer; the dropout is recorded with it
            fields.update(hint_channels=4, extra={"hint_dropout": cmd.hint.dropout})
        try:
            if cmd.adapter is not None:
                if fields:
                    logger.warning(
                        "--adapter given: its saved config is used; --model options (LoRA ranks, --model.train-unet, "
                        "--model.residual-output) are ignored"
                    )
                base = None if cmd.base == "tiny" else cmd.base
                fixer = Fixer.from_pretrained(base, adapter=cmd.adapter, variant=cmd.variant)
            elif cmd.base == "tiny":
                fixer = Fixer.tiny(cmd.variant, seed=cmd.seed, **fields)
            else:
                fixer = Fixer.from_pretrained(cmd.base, variant=cmd.variant, config=FixerConfig(variant=cmd.variant, **fields))
        except FixerWeightsError as err:
            raise TrainFixerError(str(err)) from None
        trainable = opts.trainable
        if trainable == "auto":
            trainable = "all" if cmd.base == "tiny" else "adapters"
        if trainable == "all":
            fixer.requires_grad_(True)
        if opts.gradient_checkpointing:
            fixer.enable_gradient_checkpointing()
        if opts.memory_efficient:
            fixer.set_memory_efficient(True)
        return fixer.to(self.device).train()

    def _setup_models(self) -> None:
        self.fixer = self._build_fixer()
        if self.with_hint and not self.fixer.config.uses_hint:
            raise TrainFixerError(f"--adapter {self.cmd.adapter} has no hint channels but the pairs carry LiDAR hints; "
                                  "pass --hint.use no to train it without them")  # fmt: skip
        if self.mode == "unpaired":
            self.fixer_ba = self._build_fixer()
        self.models: dict[str, Fixer] = {"fixer": self.fixer}
        if self.fixer_ba is not None:
            self.models["fixer_reverse"] = self.fixer_ba
        n_train = sum(p.numel() for m in self.models.values() for p in m.trainable_parameters())
        n_all = sum(p.numel() for m in self.models.values() for p in m.parameters())
        logger.info(
            "model: base %s, variant %s, %s; %.2fM of %.2fM parameters train%s",
            self.cmd.base,
            self.cmd.variant,
            "two fixers (render->real, real->render)" if self.mode == "unpaired" else "one fixer",
            n_train / 1e6,
            n_all / 1e6,
            f" ({', '.join(self.fixer.trainable_parameter_groups())} + any others)" if self.cmd.base != "tiny" else "",
        )

    def _setup_objective(self) -> None:
        cmd = self.cmd
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if self.mode == "paired":
                    self.objective = PairedObjective(cmd.objective)
                else:
                    self.objective = UnpairedObjective(cmd.unpaired.objective)
        except (PerceptualWeightsError, ValueError) as err:
            raise TrainFixerError(f"objective: {err}") from None
        for w in caught:  # re-issue once, through logging, so they are seen next to the term list
            logger.warning("%s", w.message)
        self.objective.to(self.device).train()
        obj = self.objective
        terms = []
        for term, weight in obj.weights.items():
            note = ""
            if self.mode == "paired" and term == "gram" and obj.gram_warmup_steps > 0:
                note = f" (from step {obj.gram_warmup_steps})"
            terms.append(f"{term} x{weight:g}{note}")
        what = f"preset {cmd.objective.preset}" if self.mode == "paired" else "CycleGAN-Turbo"
        logger.info("objective (%s): active terms: %s", what, ", ".join(terms))
        if obj.disabled:
            where = "--objective.perceptual.*" if self.mode == "paired" else "--unpaired.objective.perceptual.*"
            logger.info(
                "objective: switched off (weights missing, see above; give the files with %s): %s",
                where,
                ", ".join(obj.disabled),
            )
        if obj.has_gan:
            disc_cfg = cmd.objective.discriminator if self.mode == "paired" else cmd.unpaired.objective.discriminator
            logger.info("objective: %s discriminator, %s loss", disc_cfg.kind, disc_cfg.loss)

    def _setup_optimizers(self) -> None:
        cmd, opt = self.cmd, self.cmd.optim
        self.lr = opt.lr if opt.lr is not None else default_lr(cmd.base, self.mode, cmd.objective.preset)
        self.disc_lr = opt.disc_lr if opt.disc_lr is not None else self.lr
        self.warmup = opt.warmup_steps if opt.warmup_steps is not None else default_warmup(cmd.max_steps)
        groups = []
        for prefix, model in self.models.items():
            named = model.trainable_parameter_groups()
            seen = {id(p) for ps in named.values() for p in ps}
            other = [p for p in model.trainable_parameters() if id(p) not in seen]
            if other:
                named["other"] = other
            tag = "" if len(self.models) == 1 else prefix + "/"
            groups += [{"params": ps, "name": tag + name} for name, ps in named.items()]
        self.gen_params = [p for g in groups for p in g["params"]]
        if not self.gen_params:
            raise TrainFixerError("nothing to train: every fixer weight is frozen (check the --model options)")
        adamw = dict(betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay)
        self.opt_g = torch.optim.AdamW(groups, lr=self.lr, **adamw)
        schedule = functools.partial(
            lr_factor, warmup=self.warmup, max_steps=cmd.max_steps, schedule=opt.schedule, min_ratio=opt.min_lr_ratio
        )
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, schedule)
        fp16 = cmd.mixed_precision == "fp16"
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.disc_params = self.objective.discriminator_parameters()
        self.opt_d = self.sched_d = self.scaler_d = None
        if self.disc_params:
            self.opt_d = torch.optim.AdamW(self.disc_params, lr=self.disc_lr, **adamw)
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, schedule)
            self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=fp16)
        logger.info(
            "optimiser: AdamW lr %.3g%s, warm-up %d steps, %s schedule, grad clip %g; batch %d x %d process(es), %d steps",
            self.lr,
            f" (discriminator {self.disc_lr:.3g})" if self.disc_params else "",
            self.warmup,
            opt.schedule,
            opt.grad_clip,
            cmd.batch_size,
            self.world,
            cmd.max_steps,
        )

    def _build_datasets(self) -> None:
        cmd = self.cmd
        self.with_ref = self.with_hint = False
        try:
            if self.mode == "paired":
                with_ref = {"auto": None, "yes": True, "no": False}[cmd.use_refs]
                if cmd.variant != "difix":
                    with_ref = False
                with_hint = cmd.hint.with_hint()
                train = PairDataset(cmd.pairs, "train", crop=self.crop, seed=cmd.seed, with_ref=with_ref, with_hint=with_hint)
                self.with_ref, self.with_hint = train.with_ref, train.with_hint
                check_sizes([e.image for e in train.entries], self.crop, cmd.batch_size, "training")
                self.train_sets = {"a": train}
            else:
                self.train_sets = {
                    "a": ImageFolderDataset(cmd.unpaired.renders, self.crop, cmd.seed),
                    "b": ImageFolderDataset(cmd.unpaired.real, self.crop, cmd.seed + 1),
                }
            split = cmd.validation.split
            if cmd.pairs is not None and self.pair_counts.get(split):
                self.val_dataset = PairDataset(
                    cmd.pairs, split, crop=None, seed=cmd.seed, with_ref=self.with_ref, with_hint=self.with_hint
                )
            elif cmd.pairs is not None:
                logger.warning("pairs JSON has no '%s' pairs: no validation and no before/after metrics", split)
        except PairsError as err:
            raise TrainFixerError(str(err)) from None
        sizes = ", ".join(f"{len(d)} {'pairs' if self.mode == 'paired' else k}" for k, d in self.train_sets.items())
        logger.info(
            "data: %s training (%s%s), crops %s, reference views: %s, LiDAR hints: %s; validation: %s",
            self.mode,
            sizes,
            f", {cmd.identity_fraction:.0%} identity samples" if cmd.identity_fraction > 0 else "",
            "none" if self.crop is None else f"{self.crop[0]}x{self.crop[1]}",
            "yes" if self.with_ref else "no",
            f"yes (dropout {cmd.hint.dropout:g})" if self.with_hint else "no",
            f"{len(self.val_dataset)} '{cmd.validation.split}' pairs" if self.val_dataset is not None else "none",
        )

    def _check_prompts(self, dataset: PairDataset) -> None:
        prompts = {e.prompt for e in dataset.entries}
        if prompts - {self.fixer.config.prompt}:
            logger.warning(
                "the pairs' prompts %s differ from the fixer's %r; the fixer uses its one cached prompt",
                sorted(prompts)[:3],
                self.fixer.config.prompt,
            )

    def _data_iterators(self) -> dict[str, Iterator[dict[str, Any]]]:
        iters = {}
        for i, (key, dataset) in enumerate(self.train_sets.items()):
            sampler = StreamSampler(
                len(dataset), self.cmd.seed + i, self.cmd.batch_size, self.rank, self.world, start_step=self.start_step
            )
            loader = DataLoader(
                EpochItems(dataset),
                batch_size=self.cmd.batch_size,
                sampler=sampler,
                num_workers=self.cmd.num_workers,
                persistent_workers=self.cmd.num_workers > 0,
                pin_memory=self.device.type == "cuda",
                # Its own generator: creating an iterator draws a worker seed, which must not come from
                # the global RNG (a resumed run creates its iterators after restoring that RNG).
                generator=torch.Generator().manual_seed(self.cmd.seed + i),
            )
            iters[key] = iter(loader)
        return iters

    def _setup_run_folder(self, resumed: bool) -> None:
        cmd = self.cmd
        config = _to_jsonable(cmd)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            config_path = self.out / CONFIG_FILE
            if resumed and config_path.is_file():
                self._compare_config(json.loads(config_path.read_text()), config)
            else:
                atomic.write_json(config_path, config)
            losses = self.out / LOSSES_FILE
            if resumed and losses.is_file():
                # Steps after the checkpoint are redone: drop their lines so the log reads as one run.
                keep = [ln for ln in losses.read_text().splitlines() if ln and json.loads(ln)["step"] <= self.start_step]
                atomic.write_text(losses, "".join(ln + "\n" for ln in keep))
            elif losses.exists():
                losses.unlink()
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.start_step if resumed else None)
            except ImportError:
                logger.warning("tensorboard is not installed: no tensorboard logs (losses.jsonl is still written)")
        self.accelerator.wait_for_everyone()

    def _compare_config(self, saved: dict[str, Any], now: dict[str, Any]) -> None:
        diffs = []

        def walk(a: Any, b: Any, path: str) -> None:
            if isinstance(a, dict) and isinstance(b, dict):
                for k in sorted(set(a) | set(b)):
                    walk(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            elif a != b:
                diffs.append(f"{path}: {a!r} -> {b!r}")

        for key in sorted(set(saved) | set(now)):
            if key not in _RESUME_FREE:
                walk(saved.get(key), now.get(key), key)
        if saved.get("max_steps") != now.get("max_steps"):
            old_warmup = default_warmup(int(saved.get("max_steps") or 0))
            if self.cmd.optim.schedule == "cosine":
                diffs.append(f"max_steps: {saved.get('max_steps')} -> {now.get('max_steps')} (changes the cosine schedule)")
            elif self.cmd.optim.warmup_steps is None and old_warmup != self.warmup and self.start_step < max(old_warmup, self.warmup):
                diffs.append(f"max_steps: {saved.get('max_steps')} -> {now.get('max_steps')} (changes the default warm-up)")
        if diffs:
            logger.warning(
                "resuming with options that differ from the run's (the continuation will not match an uninterrupted "
                "run): %s",
                "; ".join(diffs),
            )

    # ------------------------------------------------------------------ one step

    def training_step(self, step: int, batch: dict[str, dict[str, Any]]) -> dict[str, float]:
        """One optimisation step (generator, then discriminator when there is a GAN).

        ``batch`` maps stream keys ("a", and "b" when unpaired) to collated items. Returns the
        logged scalars (averaged over processes).
        """
        lr = self.opt_g.param_groups[0]["lr"]  # the rate this update uses (the scheduler steps inside)
        if self.mode == "paired":
            logs = self._paired_step(step, batch["a"])
        else:
            logs = self._unpaired_step(step, batch["a"], batch["b"])
        return {**self._reduce_logs(logs), "lr": lr}

    def _paired_step(self, step: int, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images = batch["image"].to(self.device, non_blocking=True)  # [B,3,h,w]
        target = batch["target"].to(self.device, non_blocking=True)  # [B,3,h,w]
        refs = batch["ref"].to(self.device, non_blocking=True) if self.with_ref else None  # [B,R,3,h,w]
        hint = batch["hint"].to(self.device, non_blocking=True) if self.with_hint else None  # [B,4,h,w]
        if hint is not None:
            hint = drop_hints(hint, self.cmd.hint.dropout, self.cmd.seed, step, self.rank)
        images = with_identity_samples(images, target, self.cmd.identity_fraction, self.cmd.seed, step, self.rank)
        prompts = list(batch["prompt"]) if self.cmd.objective.clip_mode == "prompt" else None
        with self.accelerator.autocast():
            output = self.fixer(images, refs, hint)  # [B,3,h,w]
            total, terms = self.objective(output.float(), target, step, prompts=prompts)
        logs: dict[str, torch.Tensor] = {"loss": total.detach(), **terms}
        logs["grad_norm"] = self._apply(total, self.opt_g, self.sched_g, self.scaler_g, self.gen_params, "generator", step)
        if self.objective.has_gan:
            with self.accelerator.autocast():
                d_loss, d_terms = self.objective.discriminator_loss(output.detach().float(), target)
            logs.update(d_terms)
            logs["d_grad_norm"] = self._apply(d_loss, self.opt_d, self.sched_d, self.scaler_d, self.disc_params, "discriminator", step)
        return logs

    def _unpaired_step(self, step: int, batch_a: dict[str, Any], batch_b: dict[str, Any]) -> dict[str, torch.Tensor]:
        real_a = batch_a["image"].to(self.device, non_blocking=True)  # [B,3,h,w] renders
        real_b = batch_b["image"].to(self.device, non_blocking=True)  # [B,3,h,w] photos
        with self.accelerator.autocast():
            total, terms, fakes = self.objective(self.fixer, self.fixer_ba, real_a, real_b)
        logs: dict[str, torch.Tensor] = {"loss": total.detach(), **terms}
        logs["grad_norm"] = self._apply(total, self.opt_g, self.sched_g, self.scaler_g, self.gen_params, "generator", step)
        if self.objective.has_gan:
            with self.accelerator.autocast():
                d_loss, d_terms = self.objective.discriminator_loss(real_a, real_b, fakes["fake_a"].float(), fakes["fake_b"].float())
            logs.update({"d_loss": d_loss.detach(), **d_terms})
            logs["d_grad_norm"] = self._apply(d_loss, self.opt_d, self.sched_d, self.scaler_d, self.disc_params, "discriminator", step)
        return logs

    def _apply(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: torch.amp.GradScaler,
        params: list[nn.Parameter],
        what: str,
        step: int,
    ) -> torch.Tensor:
        """Backward, average across processes, unscale, clip, step the optimiser and its schedule.

        Returns the gradient norm before clipping. Non-finite gradients stop the run before the
        weights are touched (with fp16 they are the scaler's business: it skips the step). The check
        runs after the all-reduce, so every process sees the same norm and stops together.
        """
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        self._all_reduce_grads(params)
        scaler.unscale_(optimizer)
        clip = self.cmd.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        if not scaler.is_enabled() and not torch.isfinite(norm):
            raise TrainFixerError(
                f"non-finite {what} gradients at step {step} (loss {float(loss.detach()):.4g}): training diverged. Lower "
                "--optim.lr (or use --mixed-precision no) and continue from the last checkpoint with --resume"
            )
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return norm.detach()

    def _all_reduce_grads(self, params: list[nn.Parameter]) -> None:
        """Average gradients over processes, flattened into buckets (no-op with one process)."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:  # every process must contribute the same tensors to each all-reduce
                p.grad = torch.zeros_like(p)
        bucket: list[nn.Parameter] = []
        size = 0
        for p in [*params, None]:
            if p is not None:
                bucket.append(p)
                size += p.numel()
            if bucket and (p is None or size >= _GRAD_BUCKET):
                flat = torch.cat([q.grad.flatten() for q in bucket])
                flat = self.accelerator.reduce(flat, reduction="mean")
                offset = 0
                for q in bucket:
                    q.grad.copy_(flat[offset : offset + q.numel()].view_as(q.grad))
                    offset += q.numel()
                bucket, size = [], 0

    def _reduce_logs(self, logs: dict[str, torch.Tensor]) -> dict[str, float]:
        keys = sorted(logs)
        values = torch.stack([torch.as_tensor(logs[k], dtype=torch.float32, device=self.device).reshape(()) for k in keys])
        if self.world > 1:
            values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(keys, values.tolist()))

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        """Set up (unless done), train up to ``--max-steps``, evaluate and save. Returns the final metrics."""
        if not self._is_setup:
            self.setup()
        cmd = self.cmd
        iters = self._data_iterators()
        self.step = self.start_step
        last_saved = self.start_step if self.start_step > 0 else -1
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cmd.max_steps,
            initial=self.step,
            desc="train-fixer",
            disable=not (self.is_main and cmd.progress),
            dynamic_ncols=True,
        )
        if self.step >= cmd.max_steps:
            logger.info("already at step %d of %d: nothing to train", self.step, cmd.max_steps)
        t0 = time.time()
        while self.step < cmd.max_steps:
            batch = {key: next(it) for key, it in iters.items()}
            logs = self.training_step(self.step, batch)
            self.step += 1
            self._record(self.step, logs)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", refresh=False)
            if bar.disable and self.is_main and self.step % (10 * cmd.log_every) == 0:  # log files need a pulse too
                rate = (time.time() - t0) / (self.step - self.start_step)
                logger.info("step %d/%d: loss %.5f, lr %.3g, %.2f s/step", self.step, cmd.max_steps, logs["loss"], logs["lr"], rate)
            if cmd.checkpoint.every and self.step % cmd.checkpoint.every == 0:
                self.save_checkpoint(self.step)
                last_saved = self.step
            if cmd.validation.every and self.step % cmd.validation.every == 0:
                self.validate(self.step)
        bar.close()
        if self.step > self.start_step:
            logger.info("trained %d steps in %.1f s", self.step - self.start_step, time.time() - t0)
        if last_saved != self.step:
            self.save_checkpoint(self.step)
        return self.finish()

    def _record(self, step: int, logs: dict[str, float]) -> None:
        if not self.is_main:
            return
        with open(self.out / LOSSES_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **logs}) + "\n")
        if self.writer is not None and (step % self.cmd.log_every == 0 or step == 1):
            for key, value in logs.items():
                tag = "lr/generator" if key == "lr" else f"train/{key}"
                self.writer.add_scalar(tag, value, step)

    # ------------------------------------------------------------------ checkpoints

    save_checkpoint = trainer_checkpoints.save_checkpoint
    load_checkpoint = trainer_checkpoints.load_checkpoint
    validate = trainer_reports.validate
    finish = trainer_reports.finish


def train_fixer(cmd: TrainFixerConfig) -> dict[str, Any]:
    """Run ``train-fixer`` with the given options; returns the final metrics (also in OUT/metrics.json)."""
    return FixerTrainer(cmd).run()


__all__ = [
    "FixerTrainer",
    "ImageFolderDataset",
    "StreamSampler",
    "TrainFixerError",
    "default_lr",
    "default_warmup",
    "lr_factor",
    "prepare_output",
    "train_fixer",
]
