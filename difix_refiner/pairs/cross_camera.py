"""The cross-camera strategy (pandaset-data only): a run trained on some rig cameras renders the others.

The base run trains on ``--cameras`` and holds out ``--cross-camera-targets`` as its eval split; the
held-out cameras' poses are rendered against their photos. Their viewpoints are off the trained path
by the rig's baseline, the kind of novel view a shifted trajectory asks for.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

from difix_refiner.pairs.collector import PairCollector
from difix_refiner.pairs.views import RunViews


def eval_split_args(targets: Sequence[str], frame_count: int) -> Dict[str, Any]:
    """pandaset-data options of the base run's eval split, which must not be empty.

    The target cameras when there are any; otherwise only the first frame (every camera trains).
    """
    if targets:
        return {"eval_mode": "cross-camera", "eval_cameras": list(targets)}
    # Hold out only frame_start: (f - start) % interval == 0 for no other frame of the range.
    return {"eval_mode": "interval", "eval_interval": frame_count}


def render_cross_camera(
    collector: PairCollector, progress: Any, pipeline: Any, views: RunViews, targets: Sequence[str], step: int
) -> None:
    """Render every view of the ``targets`` cameras with the run (loaded at ``step``) against its photo."""
    chosen = [v for v in views.views if v.camera in targets]
    collector.render_views(progress, "render cross-camera", pipeline, chosen, views, "cross-camera", "cross-camera", views.name, step)
