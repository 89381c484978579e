"""The splatfacto-based model of the ``difix-refiner`` method, runnable on CUDA (gsplat) or CPU.

Differences from nerfstudio's ``SplatfactoModel``:
- rendering goes through :func:`difix_refiner.rendering.rasterize`, which hands CUDA tensors to gsplat
  and runs a torch rasteriser on the CPU; nothing calls ``.cuda()``;
- ``absgrad`` densification is switched off on the CPU (densify on the plain 2D gradient, gsplat's default);
- LPIPS is built lazily and skipped with a warning when its weights are not on disk;
- :meth:`render_view` can render a camera without touching the densification state, which the
  pseudo-view renders of the refine loop rely on;
- a LiDAR depth loss (:mod:`difix_refiner.scene.depth_loss`) on real views whose batch carries
  ``lidar_depth`` targets (``pandaset-data`` gives them); without targets nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Tuple, Type, Union

import torch
from gsplat.strategy import DefaultStrategy
from nerfstudio.cameras.camera_optimizers import CameraOptimizer
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.model_components.lib_bilagrid import BilateralGrid
from nerfstudio.models.splatfacto import (
    RGB2SH,
    SplatfactoModel,
    SplatfactoModelConfig,
    get_viewmat,
    num_sh_bases,
    random_quat_tensor,
)
from nerfstudio.utils.colors import get_color
from nerfstudio.utils.rich_utils import CONSOLE
from pytorch_msssim import SSIM
from torchmetrics.image import PeakSignalNoiseRatio

from difix_refiner.core.lpips import LazyLPIPS
from difix_refiner.rendering import rasterize
from difix_refiner.scene.depth_loss import depth_loss
from difix_refiner.scene.lidar_batch import DEPTH_KEY

DEPTH_LOSS = "depth_loss"
"""Loss-dict key of the (weighted) LiDAR depth loss."""


@dataclass
class DifixRefinerModelConfig(SplatfactoModelConfig):
    """Splatfacto with a CPU/GPU rasteriser. All splatfacto options apply."""

    _target: Type = field(default_factory=lambda: DifixRefinerModel)
    depth_loss_weight: float = 0.1
    """Weight of the LiDAR depth loss on real training images, at the pixels that hold one of the image's
    own sweep's returns (see depth_loss_form). Only where the dataparser gives depth targets (pandaset-data:
    --depth-targets); 0 switches it off."""
    depth_loss_form: Literal["log", "inverse"] = "log"
    """'log': mean |log rendered depth - log LiDAR depth|, the relative error (like depth AbsRel), unit-free;
    'inverse': mean |1/rendered - 1/LiDAR| in 1/metres, which weighs near surfaces most."""


class DifixRefinerModel(SplatfactoModel):
    """Splatfacto that runs on CPU or GPU; see the module docstring."""

    config: DifixRefinerModelConfig

    def populate_modules(self) -> None:
        # Written out rather than calling super(): splatfacto's version calls .cuda() on the seed colours
        # and builds torchmetrics' LPIPS, which downloads AlexNet at construction time.
        cfg = self.config
        if self.seed_points is not None and not cfg.random_init:
            means = self.seed_points[0].float()  # [N, 3]
        else:
            means = (torch.rand((cfg.num_random, 3)) - 0.5) * cfg.random_scale  # [N, 3]
        n = means.shape[0]
        neighbour_dist, _ = self.k_nearest_sklearn(means, 3)  # [N, 3]
        log_scale = torch.log(torch.from_numpy(neighbour_dist).mean(dim=-1, keepdim=True)).repeat(1, 3)
        n_sh = num_sh_bases(cfg.sh_degree)
        features_rest = torch.zeros((n, n_sh - 1, 3))
        if self.seed_points is not None and not cfg.random_init and self.seed_points[1].shape[0] > 0:
            rgb = self.seed_points[1].float() / 255.0  # [N, 3]
            features_dc = RGB2SH(rgb) if cfg.sh_degree > 0 else torch.logit(rgb, eps=1e-10)
        else:
            features_dc = torch.rand(n, 3)
        self.gauss_params = torch.nn.ParameterDict(
            {
                "means": torch.nn.Parameter(means),
                "scales": torch.nn.Parameter(log_scale),
                "quats": torch.nn.Parameter(random_quat_tensor(n)),
                "features_dc": torch.nn.Parameter(features_dc),
                "features_rest": torch.nn.Parameter(features_rest),
                "opacities": torch.nn.Parameter(torch.logit(torch.full((n, 1), 0.1))),
            }
        )
        self.camera_optimizer: CameraOptimizer = cfg.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.lpips = LazyLPIPS()  # a plain object, so it never enters checkpoints
        self.step = 0
        self.crop_box: Optional[OrientedBox] = None
        if cfg.background_color == "random":
            self.background_color = torch.tensor([0.1490, 0.1647, 0.2157])  # viser's background, for renders
        else:
            self.background_color = get_color(cfg.background_color)
        if cfg.use_bilateral_grid:
            self.bil_grids = BilateralGrid(
                num=self.num_train_data, grid_X=cfg.grid_shape[0], grid_Y=cfg.grid_shape[1], grid_W=cfg.grid_shape[2]
            )

        on_cuda = torch.device(self.kwargs.get("device", "cpu")).type == "cuda"
        if cfg.use_absgrad and not on_cuda:
            CONSOLE.log("difix-refiner: absgrad densification is off on the CPU (densifying on the plain 2D gradient)")
        self.strategy = DefaultStrategy(
            prune_opa=cfg.cull_alpha_thresh,
            grow_grad2d=cfg.densify_grad_thresh,
            grow_scale3d=cfg.densify_size_thresh,
            grow_scale2d=cfg.split_screen_size,
            prune_scale3d=cfg.cull_scale_thresh,
            prune_scale2d=cfg.cull_screen_size,
            refine_scale2d_stop_iter=cfg.stop_screen_size_at,
            refine_start_iter=cfg.warmup_length,
            refine_stop_iter=cfg.stop_split_at,
            reset_every=cfg.reset_alpha_every * cfg.refine_every,
            refine_every=cfg.refine_every,
            pause_refine_after_reset=self.num_train_data + cfg.refine_every,
            absgrad=cfg.use_absgrad and on_cuda,
            revised_opacity=False,
            verbose=True,
        )
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)

    def load_state_dict(self, state_dict, **kwargs):  # type: ignore[override]
        """Load a checkpoint into the existing Gaussian parameters, resized in place.

        splatfacto's version puts new ``Parameter`` objects into ``gauss_params``. nerfstudio builds the
        optimisers before it loads a checkpoint, so after a resume (``--load-dir``) they kept updating the
        old, orphaned tensors while training computed gradients for the new ones: nothing trained.
        Resizing the ``.data`` of the same objects keeps the optimisers pointing at the trained tensors.
        """
        self.step = 30000  # as splatfacto: full SH degree when rendering a loaded model; training resets it
        if "means" in state_dict:  # checkpoints from before gauss_params (splatfacto's compatibility remap)
            for name in self.gauss_params.keys():
                state_dict[f"gauss_params.{name}"] = state_dict[name]
        count = state_dict["gauss_params.means"].shape[0]
        for param in self.gauss_params.values():
            param.data = torch.zeros((count,) + tuple(param.shape[1:]), dtype=param.dtype, device=param.device)
        return torch.nn.Module.load_state_dict(self, state_dict, **kwargs)

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[torch.Tensor, list]]:
        """Render one camera; in training mode this also feeds splatfacto's densification statistics."""
        if not isinstance(camera, Cameras):
            raise TypeError(f"get_outputs needs a nerfstudio Cameras, got {type(camera).__name__}")
        outputs, info = self.render_view(camera, use_camera_optimizer=self.training, render_depth=self._depth_for_loss(camera))
        if self.training:
            self.info = info
            self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step, info)
        return outputs

    def _depth_for_loss(self, camera: Cameras) -> Optional[bool]:
        """True for a real training view when the depth loss has targets to use; None leaves the default."""
        metadata = self.kwargs.get("metadata") or {}
        real_view = bool(camera.metadata) and "cam_idx" in camera.metadata
        wanted = self.training and self.config.depth_loss_weight > 0 and metadata.get(DEPTH_KEY) is not None
        return True if wanted and real_view else None

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, torch.Tensor]:
        """Splatfacto's losses (masked by ``batch["mask"]``) plus the LiDAR depth loss where targets exist."""
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        targets = batch.get(DEPTH_KEY)
        if targets is not None and self.config.depth_loss_weight > 0 and outputs.get("depth") is not None:
            image_size = tuple(batch["image"].shape[:2])
            metres = float((self.kwargs.get("metadata") or {}).get("metres_per_scene_unit", 1.0))
            loss = depth_loss(outputs["depth"], targets, image_size, self.config.depth_loss_form, metres)
            loss_dict[DEPTH_LOSS] = self.config.depth_loss_weight * loss
        return loss_dict

    def render_view(
        self,
        camera: Cameras,
        use_camera_optimizer: bool = False,
        render_depth: Optional[bool] = None,
        depth_only: bool = False,
    ) -> Tuple[Dict[str, Union[torch.Tensor, list]], dict]:
        """Render one camera and return (outputs, rasteriser meta) without touching the strategy state.

        ``depth_only``: composite expected depth alone (``outputs["rgb"]`` is None), for losses on depth: about a
        third cheaper on the CPU, with the same depth and the same gradients to the geometry."""
        assert camera.shape[0] == 1, "render one camera at a time"
        if use_camera_optimizer:
            c2w = self.camera_optimizer.apply_to_camera(camera)  # [1, 3, 4]
        else:
            c2w = camera.camera_to_worlds

        if self.crop_box is not None and not self.training:
            keep = self.crop_box.within(self.means).squeeze()
            if keep.sum() == 0:
                empty = self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)
                return empty, {}
        else:
            keep = slice(None)

        sh = torch.cat((self.features_dc[keep][:, None, :], self.features_rest[keep]), dim=1)  # [N, K, 3]
        if self.config.sh_degree > 0:
            colors, sh_degree = sh, min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors, sh_degree = torch.sigmoid(sh[:, 0, :]), None  # [N, 3]

        factor = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / factor)
        Ks = camera.get_intrinsics_matrices().to(self.device)  # [1, 3, 3]
        width, height = int(camera.width.item()), int(camera.height.item())
        camera.rescale_output_resolution(factor)
        self.last_size = (height, width)

        if render_depth is None:
            render_depth = self.config.output_depth_during_training or not self.training
        render_mode = "ED" if depth_only else "RGB+ED" if render_depth else "RGB"
        render, alpha, info = rasterize(
            means=self.means[keep],
            quats=self.quats[keep],
            scales=torch.exp(self.scales[keep]),
            opacities=torch.sigmoid(self.opacities[keep]).squeeze(-1),
            colors=colors,
            viewmats=get_viewmat(c2w).to(self.device),  # [1, 4, 4]
            Ks=Ks,
            width=width,
            height=height,
            packed=False,
            near_plane=0.01,
            far_plane=1e10,
            render_mode=render_mode,
            sh_degree=sh_degree,
            sparse_grad=False,
            absgrad=self.strategy.absgrad,
            rasterize_mode=self.config.rasterize_mode,
        )
        background = self._get_background_color()  # drawn with depth_only too: the RNG stream stays the same
        if depth_only:
            depth = self._filled_depth(render, alpha)
            return {"rgb": None, "depth": depth, "accumulation": alpha.squeeze(0), "background": background}, info
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)  # [1, H, W, 3]
        if self.config.use_bilateral_grid and self.training and camera.metadata and "cam_idx" in camera.metadata:
            rgb = self._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], height, width)

        depth = None
        if render_depth:
            depth = self._filled_depth(render[..., 3:4], alpha)
        if not self.training:
            background = background.expand(height, width, 3)
        outputs = {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}
        return outputs, info

    @staticmethod
    def _filled_depth(depth: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """``[H, W, 1]`` expected depth of a ``[1, H, W, 1]`` render; empty pixels get the farthest rendered depth
        rather than 0, as splatfacto does."""
        return torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)

    def get_image_metrics_and_images(
        self, outputs: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, torch.Tensor]]:
        """PSNR and SSIM always; LPIPS only when its backbone weights are on disk."""
        gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred = outputs["rgb"]
        gt_b, pred_b = gt.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None]  # [1, 3, H, W]
        metrics = {"psnr": float(self.psnr(gt_b, pred_b).item()), "ssim": float(self.ssim(gt_b, pred_b))}
        lpips = self.lpips(gt_b, pred_b)
        if lpips is not None:
            metrics["lpips"] = float(lpips)
        return metrics, {"img": torch.cat([gt, pred], dim=1)}
