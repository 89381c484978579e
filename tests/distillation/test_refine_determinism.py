"""Pseudo-view renders stay outside training: the densification statistics, the Gaussians and the random
streams are bit-identical with and without a refine round in between, and ``refine.enabled False`` is the
plain model (nerfstudio's VanillaPipeline + FullImageDatamanager) step for step.

Three seeded in-process runs of 10 iterations on a tiny scene. Densification grows every Gaussian seen at
step 8 (splatfacto pauses refinement for ``num_train_data + refine_every`` = 7 steps after each opacity reset,
and step 0 counts as one), so statistics gathered across the refine round (before step 4) are used.
"""

from pathlib import Path

import pytest
import torch
from tiny_refine_run import seeded_trainer, tiny_refine_config

STEPS = 10



def tiny_config(out: Path, name: str, **refine):
    """A 10-step ``difix-refiner`` run that densifies at step 8."""
    cfg = tiny_refine_config(out, name, STEPS, **{"steps_per_fix": 10**6, "first_fix_step": 4, **refine})
    model = cfg.pipeline.model
    model.num_downscales, model.warmup_length, model.refine_every = 0, 1, 2
    model.densify_grad_thresh = 1e-9  # every Gaussian seen grows: densification surely changes things
    model.background_color = "random"  # training renders draw from the RNG: a round must not shift it
    # nerfstudio's plain datamanager knows nothing of LiDAR depth targets and moving-object masks (our
    # datamanager adds them to batches, tests/nerfstudio/test_depth_loss.py): compare without them.
    dp = cfg.pipeline.datamanager.dataparser
    dp.depth_targets, dp.moving_objects = False, "keep"
    return cfg


def train(cfg):
    trainer = seeded_trainer(cfg)
    trainer.train()
    return trainer


def training_state(trainer) -> dict:
    """Everything densification and optimisation carry from step to step."""
    model = trainer.pipeline.model
    state = {f"param.{k}": v.detach().clone() for k, v in model.gauss_params.items()}
    for key in ("grad2d", "count", "radii"):
        value = model.strategy_state.get(key)
        state[f"strategy.{key}"] = None if value is None else value.clone()
    state["means2d.grad"] = model.info["means2d"].grad.clone()
    for name, optimizer in trainer.optimizers.optimizers.items():
        for i, s in optimizer.state_dict()["state"].items():
            for k, v in s.items():
                state[f"optim.{name}.{i}.{k}"] = v.clone() if torch.is_tensor(v) else v
    state["rng.torch"] = torch.get_rng_state()
    return state


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key] is None or b[key] is None:
            assert a[key] is None and b[key] is None, key
        elif torch.is_tensor(a[key]):
            assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), f"{key} differs"
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """``refine.enabled False``."""
    return train(tiny_config(tmp_path_factory.mktemp("baseline"), "off", enabled=False))


def test_pseudo_view_round_leaves_densification_state_alone(baseline, tmp_path):
    # Same run with a full refine round (render, fix, write) before step 4. Pseudo views are made but never
    # sampled (fraction 0), so everything else must match bit for bit.
    refined = train(tiny_config(tmp_path, "round", pseudo_view_fraction=0.0))
    assert len(refined.pipeline.datamanager.pseudo_views) == 1
    assert (Path(refined.base_dir) / "pseudo_views" / "index.json").is_file()
    a, b = training_state(baseline), training_state(refined)
    # Densification ran at step 8 (the Gaussian count changed) and statistics were gathered again after it.
    assert a["param.means"].shape[0] != baseline.pipeline.datamanager.train_dataparser_outputs.metadata["points3D_xyz"].shape[0]
    assert a["strategy.count"].sum() > 0
    assert_identical(a, b)

    # A pseudo render between backward and the strategy's post-backward step changes nothing either.
    pipeline, model = refined.pipeline, refined.pipeline.model
    step = refined.step + 1
    for callback in refined.callbacks:
        callback.run_callback_at_location(step, location=_location("BEFORE_TRAIN_ITERATION"))
    refined.train_iteration(step)
    info_before = model.info
    grads_before = model.info["means2d"].grad.clone()
    strategy_before = {k: v.clone() for k, v in model.strategy_state.items() if torch.is_tensor(v)}
    cam = pipeline.novel_cameras[0]
    out = pipeline.render_pseudo_view(pipeline.make_camera(cam.current, pipeline._intrinsics(cam)))
    assert out["rgb"].shape[-1] == 3 and not out["rgb"].requires_grad
    assert model.training and model.info is info_before
    assert torch.equal(model.info["means2d"].grad, grads_before)
    for key, value in strategy_before.items():
        assert torch.equal(model.strategy_state[key], value), key
    model.step_post_backward(step)  # the strategy still accepts the training step's statistics


def _location(name: str):
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    return getattr(TrainingCallbackLocation, name)


def test_refine_disabled_is_the_plain_model(baseline, tmp_path):
    from nerfstudio.data.datamanagers.full_images_datamanager import (
        FullImageDatamanagerConfig,
    )
    from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

    cfg = tiny_config(tmp_path, "plain")
    ours = cfg.pipeline
    plain = VanillaPipelineConfig(
        datamanager=FullImageDatamanagerConfig(dataparser=ours.datamanager.dataparser, cache_images_type="uint8"),
        model=ours.model,
    )
    cfg.pipeline = plain
    vanilla = train(cfg)
    assert not (Path(baseline.base_dir) / "pseudo_views").exists()
    assert baseline.pipeline.novel_cameras == [] and baseline.pipeline.refine_state.fixer is None
    assert_identical(training_state(baseline), training_state(vanilla))
