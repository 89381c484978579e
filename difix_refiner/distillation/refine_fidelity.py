"""The refine loop's fidelity hooks, mixed into :class:`~difix_refiner.distillation.pipeline.DifixRefinerPipeline`:
the LiDAR hint of each pseudo view and the fixer call with it, the fixer-change statistics and loss weights
(:mod:`difix_refiner.distillation.pseudo_view_fidelity`), and the fixer check before the first round
(:mod:`difix_refiner.distillation.fixer_fit_check`).

The methods use the pipeline's ``config.refine``, ``refine_state``, ``render_pseudo_view``, ``make_camera``,
``_split_intrinsics`` and ``_reference_images``; the caller keeps the RNG state (``preserved_rng``).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from nerfstudio.utils.rich_utils import CONSOLE

from difix_refiner.cameras.reference_views import nearest_references
from difix_refiner.data.lidar_hint import LidarHint
from difix_refiner.distillation.fixer_fit_check import (
    FitCheck,
    check_view_indices,
    fit_check,
)
from difix_refiner.distillation.pseudo_view_fidelity import (
    change_stats,
    fidelity_weight,
    round_summary,
    view_hint,
    weight_stats,
)
from difix_refiner.distillation.pseudo_views import PseudoViewRecord


class RefineFidelityHooks:
    """Hint, statistics, weights and the fixer check of the refine loop (module docstring)."""

    config: Any
    refine_state: Any

    def _view_hint(self, pose: np.ndarray, intrinsics: Dict[str, float]) -> Optional[LidarHint]:
        """The LiDAR hint of a view (pose [3, 4] in scene units), or None without hint points."""
        st = self.refine_state
        return None if st.hint_cloud is None else view_hint(st.hint_cloud, pose, intrinsics, st.metres_per_scene_unit)

    @staticmethod
    def _fix(fixer: Any, images: torch.Tensor, refs: Optional[torch.Tensor], hints: List[Optional[LidarHint]]) -> torch.Tensor:
        """``fixer.fix``, with the hints [B, 4, H, W] when the fixer takes hints and every view has one."""
        uses = bool(getattr(fixer.config, "uses_hint", False)) and all(h is not None for h in hints)
        hint = torch.stack([h.tensor() for h in hints]) if uses else None  # type: ignore[union-attr]
        return fixer.fix(images, refs, hint=hint)

    def _fidelity(
        self, record: PseudoViewRecord, render: torch.Tensor, fixed: torch.Tensor, hint: Optional[LidarHint]
    ) -> Optional[np.ndarray]:
        """Record how much the fixer changed a view ([3, H, W] each); its loss weight [H, W] uint8 with fidelity weighting."""
        cfg, st = self.config.refine, self.refine_state
        stats: Dict[str, Any] = {"file": record.file, **change_stats(render, fixed, hint)}
        weight = None
        if cfg.fidelity_weighting:
            w = fidelity_weight(render, fixed, hint, cfg.fidelity_change_threshold, cfg.fidelity_support_radius_px)
            stats.update(weight_stats(w))
            weight = np.round(w * 255.0).astype(np.uint8)
        st.round_views.append(stats)
        return weight

    def _round_extras(self) -> Dict[str, Any]:
        """Extra fields of this round's rounds.jsonl line (then cleared): fidelity statistics, fixer check."""
        st = self.refine_state
        extras = dict(st.round_log)
        if st.round_views:
            extras["fidelity"] = {"mean": round_summary(st.round_views), "views": st.round_views}
        st.round_views, st.round_log = [], {}
        return extras

    def _check_fixer(self, step: int, fixer: Any, start: float) -> bool:
        """The fixer check (fixer_fit_check.py), once, before the first round's pseudo views; False: leave them out."""
        cfg, st = self.config.refine, self.refine_state
        assert st.store is not None
        if st.fixer_check is None and cfg.fixer_check_views > 0 and not st.store.records:
            check_start = time.perf_counter()
            st.fixer_check = self._fixer_fit(fixer)
            st.round_log["fixer_check"] = {**st.fixer_check.to_json(), "seconds": time.perf_counter() - check_start}
            CONSOLE.log(st.fixer_check.message())
        if st.fixer_check is None or st.fixer_check.pseudo_views_used:
            return True
        st.store.log_round(step=step, views=0, total_s=time.perf_counter() - start, **self._round_extras())
        st.fixer = None  # no further round needs it
        return False

    def _fixer_fit(self, fixer: Any) -> FitCheck:
        """Render and fix the check views (training images) and compare both with their photos."""
        cfg, st = self.config.refine, self.refine_state
        mpsu, num_refs = st.metres_per_scene_unit, cfg.num_references if fixer.config.supports_references else 0
        renders, fixed, photos = [], [], []
        indices = check_view_indices(len(st.train_poses), cfg.fixer_check_views)
        for i in indices:
            pose, intr = st.train_poses[i], self._split_intrinsics("train", i)
            render = self.render_pseudo_view(self.make_camera(pose, intr))["rgb"].permute(2, 0, 1).float()  # [3, H, W]
            height, width = render.shape[-2:]
            near = nearest_references(pose, st.train_poses, num_refs + 1, None, cfg.reference_angle_weight, mpsu)
            others = [j for j in near if j != i][:num_refs]  # the photo itself would be no test
            refs = self._reference_images(others, height, width)[None] if others else None  # [1, R, 3, H, W]
            # No hint (the all-unknown one): at a training pose the hint's colours come from this very photo.
            hint = torch.zeros(1, 4, height, width) if getattr(fixer.config, "uses_hint", False) else None
            fixed.append(fixer.fix(render[None], refs, hint=hint)[0].cpu())
            renders.append(render.cpu())
            photos.append(self._reference_images([i], height, width)[0].cpu())
        frames = [int(st.train_frames[i]) for i in indices]
        stack = torch.stack
        return fit_check(stack(renders), stack(fixed), stack(photos), frames, cfg.fixer_check_tolerance_db, cfg.unfit_fixer)
