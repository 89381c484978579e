"""A ``difix-refiner`` configuration shrunk to seconds and a tiny model, shared by the in-process tests.

Imported by tests (``pythonpath = ["tests"]`` in pyproject.toml); not a test module itself.
"""

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "pandaset_002"


def tiny_refine_config(out: Path, name: str, steps: int, steps_per_save: int = 10**6, **refine):
    """``difix-refiner`` on the CPU for ``steps`` steps: examples/pandaset_002 frames 40-45 at a quarter of
    their size, 2000 LiDAR seeds, no evaluation or local logging, the random ``tiny`` fixer and one novel
    camera per 8 frames toward +1 m. The random fixer does not fit the scene, so the fixer check is told to keep
    its pseudo views anyway (``unfit_fixer="keep"``). ``refine`` overrides ``pipeline.refine`` options."""
    from difix_refiner.method_configs import difix_refiner_trainer_config

    cfg = difix_refiner_trainer_config()
    cfg.machine.device_type, cfg.machine.seed = "cpu", 0
    cfg.vis = "tensorboard"
    cfg.output_dir, cfg.experiment_name, cfg.timestamp = out, name, "run"
    cfg.max_num_iterations, cfg.steps_per_save = steps, steps_per_save
    cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 10**6
    cfg.steps_per_eval_batch = 0
    cfg.logging.local_writer.enable = False
    dp = cfg.pipeline.datamanager.dataparser
    dp.data, dp.downscale_factor, dp.lidar_max_points, dp.frame_start, dp.frame_end = EXAMPLE, 4, 2000, 40, 46
    settings = dict(fixer_base="tiny", offsets=(1.0,), frame_stride=8, unfit_fixer="keep")
    settings.update(refine)
    for key, value in settings.items():
        setattr(cfg.pipeline.refine, key, value)
    return cfg


def seeded_trainer(cfg):
    """The trainer of ``cfg``, seeded like ns-train and set up (which also resumes when the config says so)."""
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(cfg.machine.seed)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def tiny_model():
    """A DifixRefinerModel on 200 seeded points 3 units down -z, with an (empty) LiDAR depth target, on the CPU."""
    from nerfstudio.data.scene_box import SceneBox

    from difix_refiner.scene.model import DifixRefinerModelConfig

    torch.manual_seed(0)
    pts = torch.randn(200, 3) * 0.3 + torch.tensor([0.0, 0.0, -3.0])
    rgb = torch.randint(0, 255, (200, 3)).float()
    meta = {"lidar_depth": [torch.zeros((0, 3))]}
    model = DifixRefinerModelConfig(sh_degree=0, num_downscales=0).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-5.0] * 3, [5.0] * 3])), num_train_data=1, seed_points=(pts, rgb), device="cpu", metadata=meta
    )
    model.optimizers = {}  # set by the trainer's callbacks; gsplat's pre-backward step does not use it
    return model


def short_pandaset_run(out: Path, name: str, steps: int, data: Path = EXAMPLE, configure=None, **dataparser):
    """Train the baseline (refine loop off) for ``steps`` over both resolutions of the schedule, in-process.

    ``configure(cfg)`` changes the trainer config first; ``dataparser`` sets ``pandaset-data`` options.
    """
    cfg = tiny_refine_config(out, name, steps, enabled=False)
    cfg.pipeline.model.num_downscales = 1
    cfg.pipeline.model.resolution_schedule = steps // 2  # both resolutions of the schedule
    if configure is not None:
        configure(cfg)
    dp = cfg.pipeline.datamanager.dataparser
    dp.data = data
    for key, value in dataparser.items():
        setattr(dp, key, value)
    trainer = seeded_trainer(cfg)
    trainer.train()
    return trainer
