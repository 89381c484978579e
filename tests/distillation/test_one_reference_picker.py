"""Pair building and the refine loop pick the same reference photo for the same view (one picker, one rule)."""

from __future__ import annotations

import numpy as np
from tiny_refine_run import seeded_trainer, tiny_refine_config

from difix_refiner.cameras.reference_views import DEFAULT_ANGLE_WEIGHT
from difix_refiner.distillation.refine_config import RefineConfig
from difix_refiner.pairs.collector import PairCollector
from difix_refiner.pairs.frame_split import FrameSplit
from difix_refiner.pairs.make_pairs import MakePairsConfig
from difix_refiner.pairs.views import RunViews, View


def _view(camera: str, frame: int, pose: np.ndarray, trained: bool) -> View:
    import torch
    from nerfstudio.cameras.cameras import Cameras

    cams = Cameras(camera_to_worlds=torch.from_numpy(pose).float()[None], fx=100.0, fy=100.0, cx=50.0, cy=50.0, width=100, height=100)
    return View(camera=camera, frame=frame, cameras=cams, trained=trained, load_photo=lambda: np.zeros((100, 100, 3), np.uint8))


def _turned(pose: np.ndarray, degrees: float) -> np.ndarray:
    """``pose`` [3, 4] turned about the scene's vertical (its y axis here) by ``degrees``."""
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    out = pose.copy()
    out[:, :3] = rot @ pose[:, :3]
    return out


def test_pairs_and_the_refine_loop_pick_the_same_reference(tmp_path):
    assert MakePairsConfig.__dataclass_fields__["ref_angle_weight"].default == DEFAULT_ANGLE_WEIGHT
    assert RefineConfig().reference_angle_weight == DEFAULT_ANGLE_WEIGHT

    trainer = seeded_trainer(tiny_refine_config(tmp_path, "picker", steps=1))
    pipeline = trainer.pipeline
    train = pipeline.refine_state.train_poses  # [N, 3, 4] scene units
    mpsu = pipeline.refine_state.metres_per_scene_unit
    assert len(train) >= 3
    views = [_view("front_camera", i, p, trained=True) for i, p in enumerate(train)]
    pool = RunViews(
        name="run", config_path=tmp_path / "config.yml", views=views, dataparser_transform=np.eye(3, 4),
        dataparser_scale=1.0, metres_per_scene_unit=mpsu,
    )  # fmt: skip
    collector = PairCollector(tmp_path / "images", FrameSplit(test_start=10**6, test_end=10**6), DEFAULT_ANGLE_WEIGHT, "prompt")

    rng = np.random.default_rng(0)
    for k in range(12):  # views off the path: shifted sideways and forwards, turned
        base = train[rng.integers(len(train))]
        query = _turned(base, rng.uniform(-40, 40))
        query[:, 3] += rng.normal(0.0, 1.0, 3) / mpsu  # about a metre away
        query = query.astype(np.float32).astype(np.float64)  # as a camera tensor holds it
        target = _view("front_left_camera", 10_000 + k, query, trained=False)
        picked, _ = collector.reference(target, pool)
        assert picked is not None
        assert pipeline.reference_indices(query, 1) == [picked.frame], k
