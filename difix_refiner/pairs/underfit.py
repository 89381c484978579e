"""The underfit and sparse strategies: renders of an under-trained or sparsely trained run.

- ``underfit``: one run of ``--iterations`` steps saves checkpoints at fractions of its schedule
  (``--underfit-fractions``); each renders the run's training views against their photos.
- ``sparse``: a run trained on every k-th frame (``pandaset-data --train-stride k``) renders the
  frames it skipped. Other dataparsers: the run renders its own eval split, so make that split sparse
  with the dataparser's options.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from difix_refiner.core.errors import InputError
from difix_refiner.pairs.collector import PairCollector
from difix_refiner.pairs.runs import RunTrainer
from difix_refiner.pairs.views import RunViews, View
from difix_refiner.scene.run_pipeline import checkpoint_steps, load_checkpoint

_MAX_CHECKPOINTS = 40  # more saved checkpoints than this and the nearest ones are used instead


def underfit_steps(iterations: int, fractions: Sequence[float]) -> List[int]:
    """Checkpoint steps wanted for ``fractions`` of a ``iterations``-step schedule (deduplicated, sorted).

    nerfstudio's ``step-k`` checkpoint holds the model after k + 1 updates and the last one is
    ``step-(iterations - 1)``, the finished run; steps are kept in ``[1, iterations - 2]`` so an
    underfit checkpoint is never the finished model.
    """
    if iterations < 3:
        return []
    return sorted({min(max(1, int(round(f * iterations))), iterations - 2) for f in fractions})


def save_period(iterations: int, wanted: Sequence[int]) -> int:
    """``--steps-per-save`` that saves every wanted step (their gcd), unless that saves too many."""
    if not wanted:
        return iterations  # only the final checkpoint
    period = 0
    for s in wanted:
        period = math.gcd(period, int(s))
    period = max(1, period)
    if iterations // period > _MAX_CHECKPOINTS:
        period = max(1, iterations // _MAX_CHECKPOINTS)
    return period


def nearest_steps(available: Sequence[int], wanted: Sequence[int]) -> List[int]:
    """The available checkpoint nearest to each wanted step (deduplicated, sorted)."""
    if not available:
        raise RuntimeError("the run saved no checkpoints")
    avail = np.asarray(sorted(available))
    return sorted({int(avail[np.argmin(np.abs(avail - w))]) for w in wanted})



def render_underfit(
    collector: PairCollector,
    progress: Any,
    config: Any,
    pipeline: Any,
    views: RunViews,
    iterations: int,
    fractions: Sequence[float],
) -> None:
    """Render the run's trained views at the saved checkpoints nearest to ``fractions`` of its schedule.

    The finished run's checkpoint is left out unless it is the only one. Leaves the last underfit
    checkpoint loaded.
    """
    steps = checkpoint_steps(config)
    final = steps[-1]
    wanted = [f * iterations for f in fractions]
    chosen = nearest_steps([s for s in steps if s != final] or steps, wanted)
    trained = [v for v in views.views if v.trained]
    for step in chosen:
        load_checkpoint(config, pipeline, step)
        label = f"underfit-{int(round(100 * step / iterations)):02d}"  # nominal share of the schedule
        collector.render_views(progress, f"render {label}", pipeline, trained, views, label, "underfit", views.name, step)


def render_held_out(collector: PairCollector, progress: Any, pipeline: Any, views: RunViews, dataparser: str, step: int) -> None:
    """sparse with any dataparser: render the run's eval split (its images not trained on).

    Raises:
        InputError: the run has no held-out image.
    """
    held = [v for v in views.views if not v.trained]
    if not held:
        raise InputError(f"sparse: the {dataparser} run has no held-out (eval) images; give the dataparser a sparse split")
    collector.render_views(progress, "render sparse", pipeline, held, views, "sparse", "sparse", views.name, step)


def render_sparse_stride(
    trainer: RunTrainer,
    collector: PairCollector,
    progress: Any,
    *,
    stride: int,
    data: Path,
    cameras: Sequence[str],
    frame_start: int,
    frame_end: Optional[int],
    downscale_factor: int,
    eval_args: Dict[str, Any],
    suffix: str = "",
) -> None:
    """pandaset-data: train on every ``stride``-th frame, render the skipped frames of the training cameras.

    ``suffix`` ends the run's name (the collector adds it to the label itself).
    """
    name = f"sparse-k{stride}"
    args = trainer.pandaset_args(
        data, cameras, frame_start, frame_end,
        downscale_factor=downscale_factor, train_stride=stride, **eval_args,
    )  # fmt: skip
    run = trainer.train(name + suffix, "pandaset-data", args, trainer.iterations, progress)
    start = time.perf_counter()
    config, pipeline, views = trainer.open(run)
    final = checkpoint_steps(config)[-1]
    load_checkpoint(config, pipeline, final)
    held: List[View] = [v for v in views.views if not v.trained and v.camera in cameras]
    collector.render_views(progress, f"render {run.name}", pipeline, held, views, name, "sparse", run.name, final)
    trainer.timings[f"render {run.name}"] = time.perf_counter() - start
