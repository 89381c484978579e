"""A 12-step ``difix-refiner`` run that densifies, makes pseudo views and trains on them, and a script that
SIGKILLs copies of it at chosen points (for the kill/resume fault tests).

Imported by tests (``pythonpath = ["tests"]``) for :func:`resume_config`; run as a script it trains
until the kill point and then kills itself with SIGKILL (no ``finally``, no atomic-write clean-up: what
a real kill leaves behind). One process per kill point: a forked copy would share torch's OpenMP pool,
which breaks once the parent has run parallel work::

    python tests/tiny_killed_run.py OUT train:7

Kill points (``<where>:<step>``):
- ``train:S``: at training step S (after that step's refine round, before its forward pass);
- ``round:S``: inside the refine round of step S, right after its first pseudo-view PNG is written;
- ``checkpoint:S``: half-way through writing the checkpoint of step S.

Each killed run goes to ``OUT/<where>/difix-refiner/run``.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import traceback
from pathlib import Path

STEPS = 12
"""Iterations of the run (steps 0..11)."""
STEPS_PER_SAVE = 4
"""Checkpoints after steps 4 and 8, and the final one after step 11."""


def resume_config(out: Path, name: str):
    """The run: refine rounds before steps 3, 6 and 9 (two novel cameras, -1 m and +1 m), half the batches
    pseudo views once there are any, random backgrounds (training draws from the torch RNG), densification
    at steps 8 and 10 from statistics gathered since step 0."""
    from tiny_refine_run import tiny_refine_config

    cfg = tiny_refine_config(
        out, name, STEPS, steps_per_save=STEPS_PER_SAVE,
        steps_per_fix=3, first_fix_step=3, offsets=(-1.0, 1.0), pseudo_view_fraction=0.5,
    )  # fmt: skip
    model = cfg.pipeline.model
    model.num_downscales, model.warmup_length, model.refine_every = 0, 1, 2
    model.densify_grad_thresh = 1e-9  # every Gaussian seen grows: densification surely happens
    model.background_color = "random"
    cfg.pipeline.datamanager.dataparser.lidar_max_points = 1000
    return cfg


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(where: str, kill_step: int) -> None:
    """Patch the one place where this run must die."""
    import torch

    from difix_refiner.distillation.pipeline import DifixRefinerPipeline
    from difix_refiner.distillation.pseudo_views import PseudoViewStore

    if where == "train":
        loss = DifixRefinerPipeline.get_train_loss_dict

        def killing_loss(self, step: int):
            if step == kill_step:
                _die()
            return loss(self, step)

        DifixRefinerPipeline.get_train_loss_dict = killing_loss
    elif where == "round":
        add = PseudoViewStore.add

        def killing_add(self, record, *args, **kwargs):
            add(self, record, *args, **kwargs)
            if record.step == kill_step:
                _die()

        PseudoViewStore.add = killing_add
    elif where == "checkpoint":
        save = torch.save

        def killing_save(obj, f, *args, **kwargs):
            if str(f).endswith(f"step-{kill_step:09d}.ckpt"):
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                with open(f, "wb") as out:
                    out.write(data[: len(data) // 2])
                    out.flush()
                    os.fsync(out.fileno())
                _die()
            return save(obj, f, *args, **kwargs)

        torch.save = killing_save
    else:
        raise SystemExit(f"unknown kill point {where!r}: use train, round or checkpoint")


def _killed_run(out: Path, point: str) -> None:
    """Train ``resume_config`` in this process until ``point``, where it SIGKILLs itself."""
    from nerfstudio.utils import writer
    from tiny_refine_run import seeded_trainer

    where, step = point.split(":")
    writer.EVENT_WRITERS.clear()  # none here, but never write to a parent's writer (its thread is not forked)
    _install_kill(where, int(step))
    trainer = seeded_trainer(resume_config(out, where))
    trainer.train()
    os._exit(3)  # the kill point was never reached


def main(argv) -> int:
    """``tiny_killed_run.py OUT POINT``: train until POINT and SIGKILL this process there."""
    import torch

    torch.set_num_threads(1)  # as the test process (conftest): same kernels, same bits
    import nerfstudio.engine.trainer  # noqa: F401  (first: nerfstudio's writer module imports circularly otherwise)

    out, point = Path(argv[0]), argv[1]
    try:
        _killed_run(out, point)
    except BaseException:
        traceback.print_exc()
        return 4  # an exception: the test sees exit code 4 instead of SIGKILL
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
