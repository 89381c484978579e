"""Whether the training split leaves the refine loop enough frames, said before any training is spent."""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional


def too_few_training_frames(train_outputs: Any, eval_dataset: Any) -> Optional[str]:
    """Why the novel cameras cannot be set up (a rig camera with fewer than 2 training images), or None.

    Offsets are lateral to the direction of travel, which takes two poses of a camera to know."""
    count = len(train_outputs.image_filenames)
    names = (train_outputs.metadata or {}).get("camera_names") or ["the camera"] * count
    short = [(name, k) for name, k in Counter(names).items() if k < 2]
    if not short:
        return None
    held = 0 if eval_dataset is None else len(eval_dataset)
    name, k = short[0]
    return (
        f"difix-refiner refine loop: {name} has {k} training image(s) after {held} image(s) were held out for "
        "evaluation, and the novel cameras need at least 2 per camera (for the direction of travel): use more "
        "frames, hold out fewer (pandaset-data --eval-interval / --eval-mode), or train without the loop "
        "(--pipeline.refine.enabled False)"
    )
