"""nerfstudio's trainer with two changes a resumable run needs.

- **Same final step on resume.** nerfstudio runs ``--max-num-iterations`` *more* steps after
  ``--load-dir`` / ``--load-checkpoint``, so repeating a killed run's command with ``--load-dir`` trained
  past the end (to step 160 of a 120-step run). Here ``--max-num-iterations`` is the run's total, counted
  from step 0, on resume as well (``--resume-to-final-step False`` restores nerfstudio's counting).
- **Atomic checkpoints.** A checkpoint is written under a hidden folder next to ``nerfstudio_models``
  and renamed into it when complete, so a run killed while saving leaves the previous checkpoint as the
  latest one (nerfstudio writes ``step-*.ckpt`` in place, and ``--load-dir`` then picks the torn file).

The pipeline saves the rest of what a resume needs with every checkpoint (``resume.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Type

from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE


@dataclass
class DifixRefinerTrainerConfig(TrainerConfig):
    """nerfstudio's trainer options, plus how a resumed run counts its steps."""

    _target: Type = field(default_factory=lambda: DifixRefinerTrainer)
    resume_to_final_step: bool = True
    """With --load-dir / --load-checkpoint, count --max-num-iterations from step 0 as the interrupted run did,
    so the same command plus --load-dir ends at the same final step; False: nerfstudio's counting (that many
    more steps after the loaded one)."""


def staging_dir(checkpoint_dir: Path) -> Path:
    """Hidden sibling of ``nerfstudio_models`` where a checkpoint is written before it is renamed into place
    (outside the folder, whose every file nerfstudio's ``--load-dir`` parses as ``step-*.ckpt``)."""
    return checkpoint_dir.parent / f".{checkpoint_dir.name}.partial"


class DifixRefinerTrainer(Trainer):
    """``Trainer`` with the final step kept on resume and atomic checkpoints (module docstring)."""

    config: DifixRefinerTrainerConfig

    def _resuming(self) -> bool:
        return self.config.load_dir is not None or self.config.load_checkpoint is not None

    def train(self) -> None:
        """Train up to step ``max_num_iterations - 1``, also when resumed from a checkpoint."""
        if not (self._resuming() and self.config.resume_to_final_step):
            super().train()
            return
        total = self.config.max_num_iterations
        remaining = max(0, total - self._start_step)
        if remaining == 0:
            CONSOLE.log(
                f"difix-refiner: the checkpoint is at step {self._start_step - 1}, the end of a "
                f"{total}-iteration run: nothing left to train"
            )
            self.step = self._start_step - 1  # the final save re-saves the loaded step, not step 0
        else:
            CONSOLE.log(
                f"difix-refiner: resuming at step {self._start_step} for the remaining {remaining} of "
                f"{total} iterations (--resume-to-final-step False: {total} more)"
            )
        # nerfstudio's loop runs config.max_num_iterations steps from the loaded one; the local writer
        # and config.yml keep the total.
        self.config.max_num_iterations = remaining
        try:
            super().train()
        finally:
            self.config.max_num_iterations = total

    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint, written next to ``nerfstudio_models`` and then renamed into it."""
        final_dir = self.checkpoint_dir
        staging = staging_dir(final_dir)
        name = f"step-{step:09d}.ckpt"
        self.checkpoint_dir = staging  # nerfstudio's save writes (and keeps only the latest) there
        try:
            super().save_checkpoint(step)
        finally:
            self.checkpoint_dir = final_dir
        final_dir.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, final_dir / name)
        if self.config.save_only_latest_checkpoint:
            for old in final_dir.glob("*.ckpt"):
                if old.name != name:
                    old.unlink()
        try:
            staging.rmdir()
        except OSError:
            pass  # not empty (someone else's file) or already gone: harmless
