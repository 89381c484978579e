"""A full-image datamanager that serves real training images and, once there are any, pseudo views.

The real-view order is exactly nerfstudio's ``FullImageDatamanager`` order, and the real/pseudo coin is a
separate seeded ``random.Random`` that is only drawn while pseudo views exist: until the first refine round
(and with the refine loop off) the batches are identical to the plain datamanager's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.full_images_datamanager import (
    FullImageDatamanager,
    FullImageDatamanagerConfig,
)

from difix_refiner.distillation.image_dataset import NamedImageDataset
from difix_refiner.scene.lidar_batch import add_lidar_entries

PSEUDO_VIEW_KEY = "pseudo_view"
"""Batch key present (holding the view's file name) when a training batch is a pseudo view."""


@dataclass
class DifixRefinerDatamanagerConfig(FullImageDatamanagerConfig):
    """nerfstudio's full-image datamanager plus pseudo views; the mixing options are under --pipeline.refine."""

    _target: Type = field(default_factory=lambda: DifixRefinerDatamanager)


@dataclass
class PseudoViewSample:
    """A pseudo view ready for training (CPU tensors; moved to the device per batch)."""

    name: str
    """File of the view, relative to the pseudo-view folder."""
    camera: Cameras
    """[1] camera at the novel pose (no ``cam_idx``: the camera optimiser and bilateral grid leave it alone)."""
    image: torch.Tensor
    """[H, W, 3] uint8 fixed render."""
    mask: Optional[torch.Tensor]
    """[H, W, 1] bool, True where the render was opaque enough to trust (or float weights in [0, 1], with
    fidelity weighting); None trusts every pixel."""


class DifixRefinerDatamanager(FullImageDatamanager[NamedImageDataset]):
    """Serves real images like ``FullImageDatamanager`` and pseudo views with probability ``fraction``."""

    config: DifixRefinerDatamanagerConfig

    def __init__(
        self,
        config: DifixRefinerDatamanagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        if test_mode != "inference":
            from difix_refiner.data.scene_preflight import preflight_scene

            preflight_scene(config)  # missing images of nerfstudio / instant-ngp scenes, in one sentence
        super().__init__(
            config, device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank, **kwargs
        )
        # Plain attributes (not tensors registered on the module), so nothing here enters checkpoints.
        self.pseudo_views: List[PseudoViewSample] = []
        self.pseudo_view_fraction = 0.0
        self._pseudo_rng = random.Random(0)
        self._pseudo_unseen: List[int] = []

    def configure_pseudo_views(self, fraction: float, seed: int) -> None:
        """Set the share of pseudo-view batches and seed their coin and order."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"the pseudo-view fraction must lie in [0, 1], got {fraction}")
        self.pseudo_view_fraction = float(fraction)
        self._pseudo_rng = random.Random(seed)

    def set_pseudo_views(self, views: List[PseudoViewSample]) -> None:
        """Replace the pseudo views trained on (a new epoch over them starts)."""
        self.pseudo_views = list(views)
        self._pseudo_unseen = []

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        """A real image with probability 1 - fraction, else a pseudo view (only real ones before any exist)."""
        if self.pseudo_views and self.pseudo_view_fraction > 0.0:
            if self._pseudo_rng.random() < self.pseudo_view_fraction:
                return self.next_pseudo_view()
        camera, data = super().next_train(step)
        # LiDAR depth targets and moving-object masks of this image, when the dataparser gives them.
        return camera, add_lidar_entries(data, self.train_dataparser_outputs.metadata, self.device)

    def next_pseudo_view(self) -> Tuple[Cameras, Dict]:
        """The next pseudo view, each once per epoch in a seeded random order."""
        if not self.pseudo_views:
            raise RuntimeError("there are no pseudo views yet (they appear after the first refine round)")
        if not self._pseudo_unseen:
            self._pseudo_unseen = list(range(len(self.pseudo_views)))
            self._pseudo_rng.shuffle(self._pseudo_unseen)
        view = self.pseudo_views[self._pseudo_unseen.pop(0)]
        data: Dict = {"image": view.image.to(self.device), PSEUDO_VIEW_KEY: view.name}
        if view.mask is not None:
            data["mask"] = view.mask.to(self.device, torch.float32)  # [H, W, 1]; splatfacto multiplies by it
        return view.camera.to(self.device), data
