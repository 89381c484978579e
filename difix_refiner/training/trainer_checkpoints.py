"""Saving and loading the fixer trainer's checkpoints (every model, optimiser, scaler and RNG state).

Functions of :class:`~difix_refiner.training.train_fixer.FixerTrainer` (``self``), which binds them as
its methods; the checkpoint format itself is :mod:`difix_refiner.training.checkpointing`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from difix_refiner.training import checkpointing as ckpt
from difix_refiner.training.checkpointing import CheckpointError
from difix_refiner.training.train_config import TrainFixerError

if TYPE_CHECKING:
    from difix_refiner.training.train_fixer import FixerTrainer

logger = logging.getLogger(__name__)


def save_checkpoint(self: FixerTrainer, step: int) -> Path:
    """Write OUT/checkpoints/step_N (see :mod:`~difix_refiner.training.checkpointing`)."""
    folder = self.out / "checkpoints"
    if self.is_main:
        ckpt.begin_checkpoint(folder, step)
    self.accelerator.wait_for_everyone()
    tmp = ckpt.partial_dir(folder, step)
    if self.is_main:
        state = {
            "step": step,
            "consumed_samples": step * self.cmd.batch_size * self.world,
            "global_batch": self.cmd.batch_size * self.world,
            "world": self.world,
            "mode": self.mode,
            "models": {name: ckpt.trained_state(m) for name, m in self.models.items()},
            "objective": ckpt.trained_state(self.objective),
            "opt_g": self.opt_g.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "opt_d": None if self.opt_d is None else self.opt_d.state_dict(),
            "sched_d": None if self.sched_d is None else self.sched_d.state_dict(),
            "scaler_d": None if self.scaler_d is None else self.scaler_d.state_dict(),
        }
        ckpt.write_state(tmp, state)
    ckpt.write_rng(tmp, self.rank)
    self.accelerator.wait_for_everyone()
    final = folder / ckpt.step_dir_name(step)
    if self.is_main:
        ckpt.publish_checkpoint(folder, step, self.cmd.checkpoint.keep or None)
    self.accelerator.wait_for_everyone()
    return final

def load_checkpoint(self: FixerTrainer, path: Path) -> None:
    """Restore everything :meth:`save_checkpoint` wrote; training continues at its step."""
    try:
        state, rng = ckpt.read_checkpoint(path, self.rank)
        if state["mode"] != self.mode:
            raise CheckpointError(f"'{path}' is from {state['mode']} training, this run is {self.mode}")
        for name, model in self.models.items():
            if name not in state["models"]:
                raise CheckpointError(f"'{path}' has no weights for '{name}'")
            ckpt.load_trained_state(model, state["models"][name], name)
        ckpt.load_trained_state(self.objective, state["objective"], "objective (discriminators)")
        if (state["opt_d"] is None) != (self.opt_d is None):
            raise CheckpointError(f"'{path}' and this run disagree on whether there is a GAN discriminator")
        try:
            self.opt_g.load_state_dict(state["opt_g"])
            if self.opt_d is not None:
                self.opt_d.load_state_dict(state["opt_d"])
        except ValueError as err:
            raise CheckpointError(f"the optimiser state in '{path}' does not fit: {err}") from None
        self.sched_g.load_state_dict(state["sched_g"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        if self.opt_d is not None:
            self.sched_d.load_state_dict(state["sched_d"])
            self.scaler_d.load_state_dict(state["scaler_d"])
    except CheckpointError as err:
        raise TrainFixerError(str(err)) from None
    self.start_step = int(state["step"])
    if state["global_batch"] != self.cmd.batch_size * self.world:
        logger.warning(
            "global batch changed from %d to %d: the data order continues at step %d of the new batch size",
            state["global_batch"],
            self.cmd.batch_size * self.world,
            self.start_step,
        )
    if rng is not None:
        ckpt.set_rng_state(rng)
    else:
        logger.warning("'%s' has no RNG state for process %d (different process count?); RNGs are reseeded", path, self.rank)
        self._seed_everything(per_process=True)
    logger.info("resumed from '%s' at step %d", path, self.start_step)

# ------------------------------------------------------------------ validation
