"""Validation and the final outputs of the fixer trainer (the trained fixer, metrics.json, the final grid).

Functions of :class:`~difix_refiner.training.train_fixer.FixerTrainer` (``self``), kept apart from the
training step; the trainer binds :func:`validate` and :func:`finish` as its methods.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from difix_refiner.core import atomic
from difix_refiner.fixer import Fixer
from difix_refiner.training import checkpointing as ckpt
from difix_refiner.training.run_folder import (
    FINAL_GRID,
    METRICS_FILE,
)
from difix_refiner.training.validation import (
    EvalResult,
    evaluate_pairs,
    grid_to_tensor,
    make_grid,
)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from difix_refiner.training.train_fixer import FixerTrainer


def _fix_for_eval(self: FixerTrainer, images: torch.Tensor, refs: torch.Tensor | None, hint: torch.Tensor | None = None) -> torch.Tensor:
    with self.accelerator.autocast():
        return self.fixer.fix(images, refs, hint=hint)

def _evaluate(self: FixerTrainer, max_images: int | None) -> EvalResult:
    devices = [self.device.index or 0] if self.device.type == "cuda" else []
    # fork_rng: validation must not shift the RNG streams of the training steps that follow.
    with torch.random.fork_rng(devices=devices):
        self.fixer.eval()
        try:
            return evaluate_pairs(
                functools.partial(_fix_for_eval, self),
                self.val_dataset,
                max_images=max_images,
                grid_rows=self.cmd.validation.grid_rows,
                device=self.device,
                use_refs=self.with_ref,
            )
        finally:
            self.fixer.train()

def validate(self: FixerTrainer, step: int) -> dict[str, Any] | None:
    """PSNR/SSIM before/after on the validation split, OUT/val/step_N.png, tensorboard (main process)."""
    summary = None
    if self.is_main and self.val_dataset is not None:
        result = _evaluate(self, self.cmd.validation.max_images)
        summary = {"step": step, **result.summary()}
        val_dir = self.out / "val"
        val_dir.mkdir(exist_ok=True)
        with open(val_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(summary) + "\n")
        grid = make_grid(result, self.cmd.validation.tile_width, title=f"step {step}: input | output | target")
        with atomic.atomic_path(val_dir / f"{ckpt.step_dir_name(step)}.png") as tmp:
            grid.save(tmp)
        if self.writer is not None:
            for when in ("before", "after"):
                for metric in ("psnr", "ssim"):
                    self.writer.add_scalar(f"val/{metric}_{when}", summary[when][metric], step)
            self.writer.add_image("val/input_output_target", grid_to_tensor(grid), step)
            self.writer.flush()
        logger.info(
            "step %d: %s PSNR %.2f -> %.2f dB, SSIM %.4f -> %.4f (%d images)",
            step,
            self.cmd.validation.split,
            summary["before"]["psnr"],
            summary["after"]["psnr"],
            summary["before"]["ssim"],
            summary["after"]["ssim"],
            summary["num_images"],
        )
    self.accelerator.wait_for_everyone()
    return summary

# ------------------------------------------------------------------ the end

def _save_fixer(self: FixerTrainer, model: Fixer, name: str) -> Path:
    """Atomically (temp folder, then rename) write ``model.save_pretrained`` to OUT/name."""
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    # Adapter files hold only what the config trains; anything else trained forces a whole save.
    whole = model.base is None or not trained <= set(model.trained_state_dict())
    with atomic.atomic_dir(self.out / name, overwrite=True) as tmp:
        model.save_pretrained(tmp, whole=whole)
    return self.out / name

def finish(self: FixerTrainer) -> dict[str, Any]:
    """Save the fixer (OUT/fixer, and OUT/fixer_reverse when unpaired), evaluate the validation split
    before/after (OUT/metrics.json, OUT/final_grid.png). Returns the metrics."""
    metrics: dict[str, Any] = {}
    if self.is_main:
        for name, model in self.models.items():
            _save_fixer(self, model, name)
        metrics = {
            "mode": self.mode,
            "step": self.step,
            "base": self.cmd.base,
            "variant": self.cmd.variant,
            "objective": {"weights": dict(self.objective.weights), "disabled": sorted(self.objective.disabled)},
            "fixer": str(self.out / "fixer"),
            "split": self.cmd.validation.split,
        }
        if self.val_dataset is not None:
            result = _evaluate(self, self.cmd.validation.final_max_images)
            metrics.update(result.summary())
            metrics["per_image"] = result.records
            grid = make_grid(result, self.cmd.validation.tile_width, title=f"final (step {self.step}): input | output | target")
            with atomic.atomic_path(self.out / FINAL_GRID) as tmp:
                grid.save(tmp)
            if self.writer is not None:
                self.writer.add_image("final/input_output_target", grid_to_tensor(grid), self.step)
            logger.info(
                "final: %s split, %d images: PSNR %.2f -> %.2f dB (%+.2f), SSIM %.4f -> %.4f (%+.4f)",
                self.cmd.validation.split,
                metrics["num_images"],
                metrics["before"]["psnr"],
                metrics["after"]["psnr"],
                metrics["delta"]["psnr"],
                metrics["before"]["ssim"],
                metrics["after"]["ssim"],
                metrics["delta"]["ssim"],
            )
        else:
            metrics["num_images"] = 0
            metrics["note"] = "no validation pairs (give --pairs with a test split): no before/after metrics"
        atomic.write_json(self.out / METRICS_FILE, metrics)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        logger.info("wrote %s and %s", self.out / "fixer", self.out / METRICS_FILE)
    self.accelerator.wait_for_everyone()
    return metrics
