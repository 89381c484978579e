"""Options of the refine loop (Difix3D-style progressive distillation) inside ``ns-train difix-refiner``.

Set on the command line under ``--pipeline.refine.*``, e.g. ``--pipeline.refine.enabled False`` for the
plain splatfacto baseline with otherwise identical settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Tuple

from nerfstudio.configs.base_config import PrintableConfig

from difix_refiner.cameras.reference_views import DEFAULT_ANGLE_WEIGHT
from difix_refiner.core.errors import InputError
from difix_refiner.fixer.options import FixerOptions

TargetKind = Literal["offsets", "held-out", "both"]


@dataclass
class RefineConfig(FixerOptions, PrintableConfig):
    """Every ``steps_per_fix`` steps: move the novel cameras one ``shift_step`` toward their targets, render
    them (no gradients, outside the densification statistics), fix the renders with the one-step diffusion
    fixer and train on them as pseudo ground truth next to the real images."""

    enabled: bool = True
    """Run the refine loop. False trains the plain splatfacto baseline with otherwise identical settings
    (same code path, same seeds, no pseudo views)."""
    steps_per_fix: int = 2000
    """Steps between refine rounds (Difix3D: 2000)."""
    first_fix_step: Optional[int] = None
    """Step of the first refine round; None means ``steps_per_fix`` (the model needs some training first)."""
    last_fix_step: Optional[int] = None
    """No refine round after this step; None means rounds until the end of training."""
    targets: TargetKind = "offsets"
    """Where the novel cameras go: 'offsets' (the recorded trajectory shifted sideways by ``offsets``
    metres), 'held-out' (the poses of the eval split's cameras, e.g. the side cameras with
    ``--eval-mode cross-camera``; their images are never used), or 'both'."""
    offsets: Tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)
    """Lateral target offsets in metres from the recorded trajectory, positive to the vehicle's left."""
    shift_step: float = 0.5
    """Metres each novel camera moves toward its target per round (rotation slerped in proportion)."""
    frame_stride: int = 1
    """Use every k-th recorded frame (per camera) as a novel-camera start, and every k-th held-out image
    as a target: fewer renders and fixes per round."""
    metres_per_scene_unit: Optional[float] = None
    """Scene scale for metre-valued options. Taken from the dataparser when it says (pandaset-data does);
    required for non-metric dataparsers such as nerfstudio-data."""
    num_references: int = 1
    """Nearest training images passed to the fixer as references (0 = none; a 'pix2pix-turbo' fixer gets none)."""
    reference_angle_weight: float = DEFAULT_ANGLE_WEIGHT
    """The reference picker's cost = centre distance in metres + this many metres per radian between the
    viewing directions (5: about 11.5 degrees count like 1 metre). make-pairs picks its references with
    the same rule, so the fixer sees the kind of reference it was trained with."""
    pseudo_view_fraction: float = 0.3
    """Share of training steps that use a pseudo view once there are any (Difix3D: 70/30 real/fixed)."""
    pseudo_view_loss_weight: float = 0.3
    """Weight of the photometric loss on pseudo views (the real views' loss keeps weight 1)."""
    alpha_mask_threshold: float = 0.5
    """Pseudo-view pixels whose rendered opacity was below this when they were made are left out of the
    loss (the fixer invents what an empty render does not show); 0 keeps all pixels."""
    keep_previous_rounds: bool = True
    """Keep training on the pseudo views of earlier rounds (a view at the same pose is replaced by the newer
    one); False trains only on the latest round's views."""
    fixer_batch_size: int = 1
    """Renders fixed per fixer call (same-size renders only)."""
    fixer_memory_efficient: bool = False
    """Run the fixer's VAE and UNet one view at a time (less memory, slower)."""
    lidar_hint: bool = True
    """Render the dataparser's seed points (pandaset-data: the training sweeps' LiDAR points coloured from the
    training photos) into every pseudo view as its LiDAR hint: given to a fixer trained with hints, and used for
    the fixer-change statistics in rounds.jsonl and by fidelity_weighting. No effect without seed points."""
    fidelity_weighting: bool = False
    """Lower the pseudo-view loss weight where the fixer changed a pixel by more than fidelity_change_threshold
    and no LiDAR hint is within fidelity_support_radius_px: weight = threshold / change (rule and statistics:
    difix_refiner/distillation/pseudo_view_fidelity.py)."""
    fidelity_change_threshold: float = 0.1
    """Mean RGB change (colours in [0, 1]) above which an unsupported pixel is trusted less."""
    fidelity_support_radius_px: int = 2
    """A pixel counts as supported by the hint when a valid hint pixel lies this close (pixels)."""
    fixer_check_views: int = 4
    """Before the first round's pseudo views enter training, render this many training views, fix them and
    compare PSNR against their photos with and without the fixer (result in rounds.jsonl); 0 skips the check."""
    fixer_check_tolerance_db: float = 0.0
    """Mean PSNR drop (dB) on the check views still counted as the fixer fitting the scene."""
    unfit_fixer: Literal["drop", "keep"] = "drop"
    """When the fixer lowers PSNR on the check views: 'drop' leaves its pseudo views out of training (no refine
    round runs), 'keep' trains on them anyway. Either way the loop says so in one line."""
    save_renders: bool = False
    """Also save the raw (unfixed) renders next to the pseudo views, for inspection."""
    show_in_viewer: bool = True
    """Draw the latest round's pseudo views as camera frustums in the viewer (when it runs)."""
    seed: int = 42
    """Seed of the real/pseudo coin and of the pseudo-view order (the real-view order is nerfstudio's)."""

    def first_step(self) -> int:
        """Step of the first refine round."""
        return self.steps_per_fix if self.first_fix_step is None else self.first_fix_step

    def is_fix_step(self, step: int) -> bool:
        """Whether a refine round runs before training step ``step``."""
        if not self.enabled:
            return False
        first = self.first_step()
        if step < first or (self.last_fix_step is not None and step > self.last_fix_step):
            return False
        return (step - first) % self.steps_per_fix == 0

    def uses_offsets(self) -> bool:
        """Whether lateral-offset targets are on."""
        return self.targets in ("offsets", "both")

    def uses_held_out(self) -> bool:
        """Whether held-out camera targets are on."""
        return self.targets in ("held-out", "both")

    def validate(self) -> None:
        """Raise ``InputError`` (a ``ValueError``) naming the option when a value cannot work."""

        def bad(option: str, why: str) -> InputError:
            return InputError(f"--pipeline.refine.{option.replace('_', '-')}: {why}")

        if self.steps_per_fix < 1:
            raise bad("steps_per_fix", f"must be at least 1, got {self.steps_per_fix}")
        if self.first_fix_step is not None and self.first_fix_step < 1:
            raise bad("first_fix_step", f"must be at least 1 (step 0 trains nothing yet), got {self.first_fix_step}")
        if self.targets not in ("offsets", "held-out", "both"):
            raise bad("targets", f"must be 'offsets', 'held-out' or 'both', got {self.targets!r}")
        if self.uses_offsets():
            if not self.offsets:
                raise bad("offsets", "is empty; give lateral offsets in metres, e.g. -2 -1 1 2")
            if any(not math.isfinite(o) or o == 0.0 for o in self.offsets):
                raise bad("offsets", f"must be finite and non-zero, got {list(self.offsets)}")
            if len({round(o, 6) for o in self.offsets}) != len(self.offsets):
                raise bad("offsets", f"has duplicates: {list(self.offsets)}")
        if not (math.isfinite(self.shift_step) and self.shift_step > 0):
            raise bad("shift_step", f"must be a positive number of metres, got {self.shift_step}")
        if self.frame_stride < 1:
            raise bad("frame_stride", f"must be at least 1, got {self.frame_stride}")
        if self.metres_per_scene_unit is not None and not (
            math.isfinite(self.metres_per_scene_unit) and self.metres_per_scene_unit > 0
        ):
            raise bad("metres_per_scene_unit", f"must be a positive number, got {self.metres_per_scene_unit}")
        if self.num_references < 0:
            raise bad("num_references", f"must be 0 or more, got {self.num_references}")
        if not (math.isfinite(self.reference_angle_weight) and self.reference_angle_weight >= 0):
            raise bad("reference_angle_weight", f"must be 0 or more, got {self.reference_angle_weight}")
        if not 0.0 <= self.pseudo_view_fraction <= 1.0:
            raise bad("pseudo_view_fraction", f"must lie in [0, 1], got {self.pseudo_view_fraction}")
        if not (math.isfinite(self.pseudo_view_loss_weight) and self.pseudo_view_loss_weight >= 0):
            raise bad("pseudo_view_loss_weight", f"must be 0 or more, got {self.pseudo_view_loss_weight}")
        if not 0.0 <= self.alpha_mask_threshold <= 1.0:
            raise bad("alpha_mask_threshold", f"must lie in [0, 1], got {self.alpha_mask_threshold}")
        if self.fixer_batch_size < 1:
            raise bad("fixer_batch_size", f"must be at least 1, got {self.fixer_batch_size}")
        if not (math.isfinite(self.fidelity_change_threshold) and self.fidelity_change_threshold > 0):
            raise bad("fidelity_change_threshold", f"must be a positive colour difference, got {self.fidelity_change_threshold}")
        if self.fidelity_support_radius_px < 0:
            raise bad("fidelity_support_radius_px", f"must be 0 or more, got {self.fidelity_support_radius_px}")
        if self.fixer_check_views < 0:
            raise bad("fixer_check_views", f"must be 0 or more, got {self.fixer_check_views}")
        if not (math.isfinite(self.fixer_check_tolerance_db) and self.fixer_check_tolerance_db >= 0):
            raise bad("fixer_check_tolerance_db", f"must be 0 or more, got {self.fixer_check_tolerance_db}")
        if self.unfit_fixer not in ("drop", "keep"):
            raise bad("unfit_fixer", f"must be 'drop' or 'keep', got {self.unfit_fixer!r}")
