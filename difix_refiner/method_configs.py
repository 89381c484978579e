"""The ``difix-refiner`` and ``difix-refiner-cpu`` method specifications that nerfstudio discovers through
its entry points.

Only wiring lives here; the model, dataparser and refine loop are in the ``difix_refiner`` package.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from difix_refiner.core.errors import install_one_line_errors
from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig
from difix_refiner.distillation.datamanager import DifixRefinerDatamanagerConfig
from difix_refiner.distillation.pipeline import DifixRefinerPipelineConfig
from difix_refiner.distillation.refine_config import RefineConfig
from difix_refiner.distillation.trainer import DifixRefinerTrainerConfig
from difix_refiner.fixer.options import bundled_fixer_path
from difix_refiner.scene.model import DifixRefinerModelConfig


def _gaussian_optimizers(max_steps: int) -> dict:
    """Splatfacto's optimiser settings (learning rates per Gaussian attribute)."""

    def adam(lr: float) -> AdamOptimizerConfig:
        return AdamOptimizerConfig(lr=lr, eps=1e-15)

    return {
        "means": {
            "optimizer": adam(1.6e-4),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=max_steps),
        },
        "features_dc": {"optimizer": adam(0.0025), "scheduler": None},
        "features_rest": {"optimizer": adam(0.0025 / 20), "scheduler": None},
        "opacities": {"optimizer": adam(0.05), "scheduler": None},
        "scales": {"optimizer": adam(0.005), "scheduler": None},
        "quats": {"optimizer": adam(0.001), "scheduler": None},
        "camera_opt": {
            "optimizer": AdamOptimizerConfig(lr=1e-4, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=5e-7, max_steps=max_steps, warmup_steps=1000),
        },
        "bilateral_grid": {
            "optimizer": adam(2e-3),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps, warmup_steps=1000),
        },
    }


def difix_refiner_trainer_config() -> TrainerConfig:
    """The GPU-default configuration of the ``difix-refiner`` method (splatfacto's schedule, Difix3D's loop:
    a refine round every 2000 steps, novel cameras moving 0.5 m per round toward +-1 m and +-2 m lateral
    offsets, sd-turbo fixer, 70/30 real/pseudo sampling, pseudo-view loss weight 0.3)."""
    max_steps = 30000
    return DifixRefinerTrainerConfig(
        method_name="difix-refiner",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=max_steps,
        mixed_precision=False,
        pipeline=DifixRefinerPipelineConfig(
            datamanager=DifixRefinerDatamanagerConfig(
                dataparser=PandasetDataParserConfig(),
                cache_images_type="uint8",
            ),
            model=DifixRefinerModelConfig(),
            refine=RefineConfig(),
        ),
        optimizers=_gaussian_optimizers(max_steps),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


# ns-train (nerfstudio's entry point) shows our bad-input errors as one sentence, not a traceback.
install_one_line_errors("ns-train")

_BUNDLED_FIXER = bundled_fixer_path()
CPU_FIXER = str(_BUNDLED_FIXER) if _BUNDLED_FIXER is not None else "examples/fixer-small"
"""The small fixer the CPU preset uses (trained with ``difix-refiner train-fixer``): the bundled copy, found
relative to the installed package (a checkout's examples/fixer-small, or a wheel's share/difix-refiner/)."""


def difix_refiner_cpu_trainer_config() -> TrainerConfig:
    """A small CPU preset of ``difix-refiner``: the bundled PandaSet excerpt at half its size (240x135), 20k
    LiDAR seeds, a 1000-step schedule with a refine round every 150 steps from step 300 (so the novel cameras
    reach +-2 m at 0.5 m per round) on every 8th frame, and the small fixer ``examples/fixer-small`` on the CPU.
    ``difix-refiner demo`` trains it in about 7 minutes on two CPU cores."""
    max_steps = 1000
    config = difix_refiner_trainer_config()
    config.method_name = "difix-refiner-cpu"
    config.machine.device_type = "cpu"
    config.max_num_iterations = max_steps
    config.steps_per_save = 250
    config.steps_per_eval_image = 250
    config.steps_per_eval_all_images = max_steps
    config.vis = "tensorboard"  # a viewer would share the two CPU cores with training
    config.optimizers = _gaussian_optimizers(max_steps)
    pipeline = config.pipeline
    assert isinstance(pipeline, DifixRefinerPipelineConfig)
    # cache_images stays "gpu", which means "on the training device": nerfstudio's "cpu" pins memory, which needs CUDA.
    # examples/pandaset_002 is already a quarter of PandaSet's 1920x1080; use 8 for full-size sequences.
    pipeline.datamanager.dataparser = PandasetDataParserConfig(downscale_factor=2, lidar_max_points=20000)
    model = pipeline.model
    assert isinstance(model, DifixRefinerModelConfig)
    # splatfacto's schedule compressed to 1000 steps: half resolution for 250 steps, densify from 200 on.
    model.num_downscales = 1
    model.resolution_schedule = 250
    model.warmup_length = 200
    model.refine_every = 100
    model.stop_split_at = max_steps
    model.sh_degree_interval = 400
    pipeline.refine = RefineConfig(
        steps_per_fix=150,
        first_fix_step=300,
        frame_stride=8,
        fixer_base=CPU_FIXER,
        fixer_device="cpu",
        fixer_dtype="fp32",
    )
    return config


difix_refiner_method = MethodSpecification(
    config=difix_refiner_trainer_config(),
    description="Splatfacto for driving scenes, on CPU or GPU, refined off the recorded path with a one-step "
    "diffusion fixer (Difix3D-style progressive distillation; --pipeline.refine.enabled False for the baseline).",
)

difix_refiner_cpu_method = MethodSpecification(
    config=difix_refiner_cpu_trainer_config(),
    description="difix-refiner on the CPU: small scene, 1000-step schedule, refine rounds every 150 steps with the "
    "small fixer examples/fixer-small.",
)
