"""A ``difix-refiner`` configuration shrunk to seconds, shared by the in-process refine-loop tests.

Imported by tests (``pythonpath = ["tests"]`` in pyproject.toml); not a test module itself.
"""

from pathlib import Path

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
