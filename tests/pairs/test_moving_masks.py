"""make-pairs' PandaSet moving-object masks: the non-stationary boxes of a frame, projected into a view."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from difix_refiner.data.boxes import load_boxes
from difix_refiner.pairs.hint_source import ViewGeometry
from difix_refiner.pairs.make_pairs import MakePairsConfig, MakePairsJob
from difix_refiner.pairs.moving_masks import PandasetBoxMasks

SCENE = Path(__file__).resolve().parents[2] / "examples" / "pandaset_002"
K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])
FRAME = 40


def looking_down_at(point: np.ndarray, height_m: float = 8.0) -> ViewGeometry:
    """A 100x100 camera ``height_m`` above ``point`` looking straight down (OpenGL axes: x right, y up, z back)."""
    c2w = np.zeros((3, 4))
    c2w[:, 0] = [1.0, 0.0, 0.0]
    c2w[:, 1] = [0.0, 1.0, 0.0]
    c2w[:, 2] = [0.0, 0.0, 1.0]  # looks along -z, down
    c2w[:, 3] = np.asarray(point, dtype=float) + [0.0, 0.0, height_m]
    return ViewGeometry(c2w, K, 100, 100)


def test_a_moving_object_is_masked_and_a_parked_one_is_not():
    boxes = load_boxes(SCENE, [FRAME])[FRAME]
    moving = [b for b in boxes if b.dynamic]
    parked = [b for b in boxes if not b.dynamic]
    # The parked box farthest from every moving one: nothing that moves is within the camera's 8 m view.
    far = max(parked, key=lambda b: min(np.linalg.norm(b.centre[:2] - m.centre[:2]) for m in moving))
    assert min(np.linalg.norm(far.centre[:2] - m.centre[:2]) for m in moving) > 10.0
    masks = PandasetBoxMasks(SCENE)
    above_moving = masks("front_camera", FRAME, looking_down_at(moving[0].centre))
    assert above_moving is not None and above_moving.shape == (100, 100) and above_moving[50, 50]
    assert masks("front_camera", FRAME, looking_down_at(far.centre)) is None  # parked: nothing to mask


def test_the_margin_grows_the_mask_and_a_camera_facing_away_masks_nothing():
    moving = [b for b in load_boxes(SCENE, [FRAME])[FRAME] if b.dynamic][0]
    view = looking_down_at(moving.centre)
    tight = PandasetBoxMasks(SCENE, margin_m=0.0)("front_camera", FRAME, view)
    wide = PandasetBoxMasks(SCENE, margin_m=1.0)("front_camera", FRAME, view)
    assert tight is not None and wide is not None and wide.sum() > tight.sum() and not (tight & ~wide).any()
    up = looking_down_at(moving.centre, height_m=-8.0)  # 8 m below the box, looking further down
    assert PandasetBoxMasks(SCENE)("front_camera", FRAME, up) is None


def test_make_pairs_masks_by_default_where_boxes_exist(tmp_path):
    job = MakePairsJob(MakePairsConfig(data=SCENE, output_dir=tmp_path / "out"))
    assert isinstance(job.masks, PandasetBoxMasks) and job.masks.margin_m == 0.3
    assert MakePairsJob(MakePairsConfig(data=SCENE, output_dir=tmp_path / "out", moving_objects="keep")).masks is None
    assert MakePairsJob(MakePairsConfig(data=tmp_path, output_dir=tmp_path / "out")).masks is None  # no boxes there
