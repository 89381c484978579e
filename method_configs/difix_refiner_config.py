"""The ``difix-refiner`` method specification that nerfstudio discovers through its entry point.

Only wiring lives here; the model, dataparser and refine loop are in the ``difix_refiner`` package.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig
from difix_refiner.nerfstudio.difix_refiner_model import DifixRefinerModelConfig


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
    """The GPU-default configuration of the ``difix-refiner`` method (splatfacto's schedule)."""
    max_steps = 30000
    return TrainerConfig(
        method_name="difix-refiner",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=max_steps,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                dataparser=PandasetDataParserConfig(),
                cache_images_type="uint8",
            ),
            model=DifixRefinerModelConfig(),
        ),
        optimizers=_gaussian_optimizers(max_steps),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


difix_refiner_method = MethodSpecification(
    config=difix_refiner_trainer_config(),
    description="Splatfacto for driving scenes, on CPU or GPU, refined off the recorded path with a one-step diffusion fixer.",
)
