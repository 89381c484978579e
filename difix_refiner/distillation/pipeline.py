"""The ``difix-refiner`` pipeline: splatfacto training plus the Difix3D-style refine loop.

Every ``refine.steps_per_fix`` steps (before that step's training iteration) a refine round:

1. moves each novel camera one ``refine.shift_step`` (metres) toward its target (``cameras.step_toward``:
   straight line for the centre, slerp for the rotation);
2. renders the novel cameras with ``DifixRefinerModel.render_view`` under ``torch.no_grad`` in eval mode,
   so the render never touches ``means2d`` gradients, ``model.info`` or the densification ``strategy_state``;
   the global RNGs are restored afterwards, so training continues exactly as without the round;
3. fixes the renders with the one-step diffusion fixer (loaded at the first round, kept out of every
   ``nn.Module`` so checkpoints never hold it), with the nearest training image(s) as references;
4. writes them to ``<run>/pseudo_views`` (see :mod:`difix_refiner.distillation.pseudo_views`) and hands them
   to the datamanager, which mixes them into training (``refine.pseudo_view_fraction``). Their loss is
   splatfacto's masked loss (pixels whose rendered opacity was below ``refine.alpha_mask_threshold`` are
   masked) times ``refine.pseudo_view_loss_weight``, logged as ``pseudo_view_loss``.

Each pseudo view gets the LiDAR hint of its camera (``refine.lidar_hint``), given to a fixer trained with
hints; how much the fixer changed the view inside and outside the hint goes into ``rounds.jsonl``, and
``refine.fidelity_weighting`` lowers the loss weight of unsupported large changes
(:mod:`difix_refiner.distillation.pseudo_view_fidelity`). Before the first round's views enter training the
fixer is checked on a few training views (:mod:`difix_refiner.distillation.fixer_fit_check`).

``side_view_depth`` adds the LiDAR depth loss at training cameras moved sideways, with or without the refine
loop, wherever the dataparser gives LiDAR depth targets (:mod:`difix_refiner.distillation.side_view_depth`).

With ``refine.enabled False`` and ``side_view_depth`` off (``weight 0``, or data without LiDAR) the pipeline is
nerfstudio's ``VanillaPipeline`` step for step.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.engine.callbacks import (
    TrainingCallback,
    TrainingCallbackAttributes,
    TrainingCallbackLocation,
)
from nerfstudio.models.base_model import ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from difix_refiner.cameras.reference_views import nearest_references, pose_costs
from difix_refiner.cameras.stepping import step_toward
from difix_refiner.core.errors import InputError
from difix_refiner.distillation import resume
from difix_refiner.distillation.datamanager import (
    PSEUDO_VIEW_KEY,
    DifixRefinerDatamanager,
    DifixRefinerDatamanagerConfig,
    PseudoViewSample,
)
from difix_refiner.distillation.fixer_fit_check import FitCheck
from difix_refiner.distillation.frame_counts import too_few_training_frames
from difix_refiner.distillation.moving_object_masks import (
    pseudo_view_moving_mask,
    reference_moving_mask,
    without_moving,
)
from difix_refiner.distillation.pseudo_view_fidelity import hint_cloud_from_metadata
from difix_refiner.distillation.pseudo_views import (
    NovelCamera,
    PseudoViewRecord,
    PseudoViewStore,
    held_out_cameras,
    offset_cameras,
    pose_key,
)
from difix_refiner.distillation.refine_config import RefineConfig
from difix_refiner.distillation.refine_fidelity import RefineFidelityHooks
from difix_refiner.distillation.side_view_depth import SIDE_VIEW_DEPTH_LOSS, SideViewDepth, SideViewDepthConfig
from difix_refiner.scene.lidar_batch import record_sweep_split
from difix_refiner.scene.model import DifixRefinerModelConfig
from difix_refiner.scene.trained_run import RecordedImages, recorded_images

PSEUDO_VIEW_DIR = "pseudo_views"
"""Folder of the pseudo views inside the run folder."""
PSEUDO_VIEW_LOSS = "pseudo_view_loss"
"""Loss-dict key of the (weighted) pseudo-view photometric loss; real views keep splatfacto's ``main_loss``."""


@dataclass
class DifixRefinerPipelineConfig(VanillaPipelineConfig):
    """Splatfacto training with the Difix3D-style refine loop (options under --pipeline.refine)."""

    _target: Type = field(default_factory=lambda: DifixRefinerPipeline)
    datamanager: DataManagerConfig = field(default_factory=DifixRefinerDatamanagerConfig)
    """Datamanager: real images plus pseudo views."""
    model: ModelConfig = field(default_factory=DifixRefinerModelConfig)
    """The splatfacto-based model."""
    refine: RefineConfig = field(default_factory=RefineConfig)
    """The refine loop: novel cameras, the fixer, and how pseudo views enter training."""
    side_view_depth: SideViewDepthConfig = field(default_factory=SideViewDepthConfig)
    """The LiDAR depth loss at training cameras moved sideways (the baseline gets it too)."""


class _RefineState:
    """Everything the refine loop keeps between rounds. A plain object, so that ``nn.Module`` never sees the
    fixer or the pseudo views: nothing here is saved in (or needed to load) a checkpoint."""

    def __init__(self) -> None:
        self.fixer: Any = None
        self.cameras: List[NovelCamera] = []
        self.metres_per_scene_unit: float = 1.0
        self.train_poses: np.ndarray = np.zeros((0, 3, 4))  # [N, 3, 4]
        self.train_camera_names: Optional[List[str]] = None
        self.train_frames: np.ndarray = np.zeros(0, dtype=np.int64)  # [N]
        self.run_dir: Optional[Path] = None
        self.store: Optional[PseudoViewStore] = None
        self.samples: Dict[str, PseudoViewSample] = {}
        self.viewer_state: Any = None
        self.frustums: List[Any] = []
        self.hint_cloud: Optional[Tuple[np.ndarray, np.ndarray]] = None  # ([N, 3] scene units, [N, 3] uint8)
        self.fixer_check: Optional[FitCheck] = None
        self.round_views: List[Dict[str, Any]] = []  # fixer-change statistics of the current round
        self.round_log: Dict[str, Any] = {}  # extra fields of the current round's rounds.jsonl line


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Restore the torch (CPU and the device's CUDA), numpy and Python RNG states on exit, so that a
    refine round (the fixer may reseed, renders may draw backgrounds) leaves training's random stream as it was."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8 (rounded)."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def _rounded(value: Optional[float]) -> Optional[float]:
    """Metres for the index: micrometre precision is plenty and keeps 0.5 from printing as 0.4999999999999999."""
    return None if value is None else round(float(value), 6)


def _metadata_list(metadata: Dict, key: str, count: int) -> Optional[list]:
    values = (metadata or {}).get(key)
    if values is None or len(values) != count:
        return None
    return list(values)


def _refine_input_error(exc: InputError) -> InputError:
    """The cameras module's input error, worded for ns-train's option names."""
    message = str(exc).replace("--metres-per-scene-unit", "--pipeline.refine.metres-per-scene-unit")
    return InputError(message if message.startswith("difix-refiner") else f"difix-refiner refine loop: {message}")


def recorded_for_refine(outputs: Any, cameras: Cameras, metres_per_scene_unit: Optional[float]) -> RecordedImages:
    """The training images as a drive (``scene.trained_run.recorded_images``): poses, frame order, rig names
    and the scene scale, which non-metric dataparsers must get from ``--pipeline.refine.metres-per-scene-unit``."""
    try:
        return recorded_images(outputs, cameras, metres_per_scene_unit)
    except InputError as exc:
        raise _refine_input_error(exc) from None


def _check_fixer_source(cfg: RefineConfig) -> None:
    """Fail at start-up (not at the first round) when the fixer can be neither read nor fetched."""
    from difix_refiner.fixer import DEFAULT_BASE

    cfg.check_fixer_available(default_base=DEFAULT_BASE, option_prefix="--pipeline.refine.")


class DifixRefinerPipeline(RefineFidelityHooks, VanillaPipeline):
    """``VanillaPipeline`` plus the refine loop (module docstring)."""

    config: DifixRefinerPipelineConfig

    def __init__(
        self,
        config: DifixRefinerPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[torch.cuda.amp.GradScaler] = None,
    ):
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.refine_state = _RefineState()
        self._resume_state: Optional[Dict[str, Any]] = None  # from a loaded checkpoint, until training starts
        self.side_view_depth = SideViewDepth.build(config.side_view_depth, self.datamanager) if test_mode == "val" else None
        refine = config.refine
        # Only training ("val") runs the loop; ns-eval / ns-render / ns-export / ns-viewer never build it.
        if refine.enabled and test_mode == "val":
            refine.validate()
            _check_fixer_source(refine)
            if not isinstance(self.datamanager, DifixRefinerDatamanager):
                raise TypeError(
                    "the refine loop needs the difix-refiner datamanager (DifixRefinerDatamanagerConfig), got "
                    f"{type(self.datamanager).__name__}; use it or pass --pipeline.refine.enabled False"
                )
            too_few = too_few_training_frames(self.datamanager.train_dataparser_outputs, self.datamanager.eval_dataset)
            if too_few is not None:
                raise InputError(too_few)
            self._setup_novel_cameras()
            self.datamanager.configure_pseudo_views(refine.pseudo_view_fraction, refine.seed)

    # ------------------------------------------------------------------------------------ set-up

    @property
    def refine_active(self) -> bool:
        """Whether the refine loop runs in this pipeline (enabled and training)."""
        return self.config.refine.enabled and self.test_mode == "val"

    @property
    def novel_cameras(self) -> List[NovelCamera]:
        """The novel cameras (tracks) of the refine loop."""
        return self.refine_state.cameras

    def _setup_novel_cameras(self) -> None:
        cfg, st, dm = self.config.refine, self.refine_state, self.datamanager
        try:
            recorded = recorded_for_refine(
                dm.train_dataparser_outputs, dm.train_dataset.cameras, cfg.metres_per_scene_unit
            )
            cameras = offset_cameras(recorded, cfg.offsets, cfg.frame_stride) if cfg.uses_offsets() else []
        except InputError as exc:
            raise _refine_input_error(exc) from None
        st.metres_per_scene_unit = recorded.metres_per_scene_unit
        st.train_poses = recorded.camera_to_worlds
        st.train_camera_names = recorded.camera_names
        st.train_frames = recorded.frame_indices
        if cfg.uses_held_out():
            eval_set = dm.eval_dataset
            if eval_set is None or len(eval_set) == 0:
                raise InputError(
                    "difix-refiner refine loop: --pipeline.refine.targets held-out needs held-out cameras, but the "
                    "eval split is empty (e.g. use pandaset-data --eval-mode cross-camera)"
                )
            eval_poses = eval_set.cameras.camera_to_worlds.double().numpy()  # [M, 3, 4]
            count = eval_poses.shape[0]
            frames = _metadata_list(eval_set.metadata, "frame_indices", count)
            cameras += held_out_cameras(
                recorded.camera_to_worlds,
                eval_poses,
                _metadata_list(eval_set.metadata, "camera_names", count),
                np.asarray(frames if frames is not None else range(count), dtype=np.int64),
                cfg.frame_stride,
                st.metres_per_scene_unit,
                cfg.reference_angle_weight,
            )
        if not cameras:
            raise InputError("difix-refiner refine loop: no novel cameras (check --pipeline.refine.targets)")
        st.cameras = cameras
        st.hint_cloud = hint_cloud_from_metadata(dm.train_dataparser_outputs.metadata) if cfg.lidar_hint else None
        CONSOLE.log(
            f"difix-refiner: {len(cameras)} novel cameras ({cfg.targets}), first refine round at step {cfg.first_step()}"
        )

    def set_run_dir(self, run_dir: Path) -> None:
        """Where pseudo views are written (``<run_dir>/pseudo_views``); the trainer's base folder."""
        self.refine_state.run_dir = Path(run_dir)

    @property
    def pseudo_view_dir(self) -> Optional[Path]:
        """``<run>/pseudo_views``, once the run folder is known."""
        run_dir = self.refine_state.run_dir
        return None if run_dir is None else run_dir / PSEUDO_VIEW_DIR

    # ------------------------------------------------------------------------------------ training

    def get_train_loss_dict(self, step: int):
        """VanillaPipeline's step; a pseudo-view batch's ``main_loss`` becomes the weighted ``pseudo_view_loss``."""
        camera, batch = self.datamanager.next_train(step)
        model_outputs = self._model(camera)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)
        if PSEUDO_VIEW_KEY in batch:
            # splatfacto's loss already applied batch["mask"] (low-opacity pixels zeroed in both images).
            loss_dict[PSEUDO_VIEW_LOSS] = self.config.refine.pseudo_view_loss_weight * loss_dict.pop("main_loss")
            metrics_dict["pseudo_view_psnr"] = metrics_dict.pop("psnr")
        side = None if self.side_view_depth is None else self.side_view_depth.loss(self.model, self.make_camera, step)
        if side is not None:
            loss_dict[SIDE_VIEW_DEPTH_LOSS] = side
        return model_outputs, loss_dict, metrics_dict

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        """Model and datamanager callbacks, then the refine round (so the model's step is already current)."""
        callbacks = super().get_training_callbacks(training_callback_attributes)
        trainer = training_callback_attributes.trainer
        if trainer is not None:  # the LiDAR sweep split goes with the run's outputs
            record_sweep_split(self.datamanager.train_dataparser_outputs.metadata, Path(trainer.base_dir))
        if self.refine_active:
            if trainer is not None:
                self.set_run_dir(trainer.base_dir)
                self.refine_state.viewer_state = getattr(trainer, "viewer_state", None)
                source = _checkpoint_run_dir(trainer.config)
                if source is not None:
                    self.resume_pseudo_views(source, step=int(getattr(trainer, "_start_step", 1)) - 1)
            before = [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION]
            callbacks.append(TrainingCallback(where_to_run=before, func=self._refine_callback))
        if self._resume_state is not None:  # a checkpoint was loaded: continue exactly where it was saved
            resume.restore(self, self._resume_state)
            self._resume_state = None
        elif trainer is not None and _checkpoint_run_dir(trainer.config) is not None:
            resume.warn_missing()
        return callbacks

    def get_extra_state(self) -> Dict[str, Any]:
        """Saved with every checkpoint (as ``_extra_state``): the random streams, view orders, densification
        statistics and novel cameras a resumed run needs to continue exactly (see ``resume.py``)."""
        return resume.capture(self) if self.test_mode == "val" else {}

    def set_extra_state(self, state: Any) -> None:
        """Keep a loaded checkpoint's resume state until training starts (``get_training_callbacks``)."""
        self._resume_state = state if isinstance(state, dict) and state else None

    def _refine_callback(self, step: int) -> None:
        if self.config.refine.is_fix_step(step):
            self.refine_round(step)

    # ------------------------------------------------------------------------------------ rounds

    def load_fixer(self) -> Any:
        """The fixer, loaded on first use (``refine.fixer_*``) and held outside the module tree."""
        st, cfg = self.refine_state, self.config.refine
        if st.fixer is None:
            from difix_refiner.fixer import DEFAULT_BASE

            start = time.perf_counter()
            fixer, _ = cfg.load_fixer(default_device=str(self.device), default_base=DEFAULT_BASE)
            if cfg.fixer_memory_efficient:
                fixer.set_memory_efficient(True)
            st.fixer = fixer
            CONSOLE.log(
                f"difix-refiner: fixer {cfg.fixer_base or 'default base'} ({fixer.config.variant}) loaded on "
                f"{next(fixer.parameters()).device} ({next(fixer.parameters()).dtype}) in {time.perf_counter() - start:.1f} s"
            )
        return st.fixer

    def reference_indices(self, pose: np.ndarray, count: int) -> List[int]:
        """Training images nearest to ``pose`` ``[3, 4]`` (the one picker, :mod:`difix_refiner.cameras.reference_views`)."""
        st, cfg = self.refine_state, self.config.refine
        return nearest_references(pose, st.train_poses, count, None, cfg.reference_angle_weight, st.metres_per_scene_unit)

    def _intrinsics(self, cam: NovelCamera) -> Dict[str, float]:
        return self._split_intrinsics(cam.intrinsics_split, cam.intrinsics_index)

    def _split_intrinsics(self, split: str, index: int) -> Dict[str, float]:
        dataset = self.datamanager.train_dataset if split == "train" else self.datamanager.eval_dataset
        c = dataset.cameras[index]
        return {
            "fx": float(c.fx), "fy": float(c.fy), "cx": float(c.cx), "cy": float(c.cy),
            "width": int(c.width), "height": int(c.height),
        }  # fmt: skip

    @staticmethod
    def make_camera(pose: np.ndarray, intrinsics: Dict[str, float]) -> Cameras:
        """A one-camera ``Cameras`` [1] on the CPU (no metadata, so no ``cam_idx``)."""

        def value(key: str, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor([[intrinsics[key]]], dtype=dtype)

        return Cameras(
            camera_to_worlds=torch.as_tensor(np.asarray(pose), dtype=torch.float32)[None],  # [1, 3, 4]
            fx=value("fx"), fy=value("fy"), cx=value("cx"), cy=value("cy"),
            width=value("width", torch.long), height=value("height", torch.long),
            camera_type=CameraType.PERSPECTIVE,
        )  # fmt: skip

    @torch.no_grad()
    def render_pseudo_view(self, camera: Cameras) -> Dict[str, torch.Tensor]:
        """Render a novel camera for the fixer, leaving every piece of training state as it was.

        Eval mode gives full resolution, a fixed background and no camera-optimiser or bilateral-grid
        correction; ``render_view`` (unlike ``get_outputs``) never calls the densification strategy, and
        no_grad keeps the rasteriser's ``means2d`` out of autograd.

        Returns:
            ``rgb`` [H, W, 3] and ``accumulation`` [H, W, 1] on the model's device.
        """
        model = self.model
        was_training, crop_box, last_size = model.training, model.crop_box, getattr(model, "last_size", None)
        model.eval()
        model.crop_box = None  # the viewer may have set a crop for its own renders
        try:
            outputs, _ = model.render_view(camera.to(self.device), use_camera_optimizer=False, render_depth=False)
        finally:
            model.train(was_training)
            model.crop_box = crop_box
            if last_size is not None:
                model.last_size = last_size
        return {"rgb": outputs["rgb"], "accumulation": outputs["accumulation"]}

    def _reference_images(self, indices: List[int], height: int, width: int) -> torch.Tensor:
        """Training images ``indices`` as ``[R, 3, H, W]`` floats in [0, 1], resized to the render's size, their
        moving-object pixels replaced by the model's render of that camera (``moving_object_masks``)."""
        from difix_refiner.fixer.reference_masking import mask_reference

        refs = []
        metadata = self.datamanager.train_dataparser_outputs.metadata
        for i in indices:
            image = self.datamanager.cached_train[i]["image"][..., :3]  # [h, w, 3]
            image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
            image = image.permute(2, 0, 1)[None]  # [1, 3, h, w]
            if image.shape[-2:] != (height, width):
                image = F.interpolate(image, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
            moving = reference_moving_mask(metadata, i, height, width)  # [H, W] or None
            if moving is not None:
                static = self.render_pseudo_view(self.datamanager.train_dataset.cameras[i : i + 1])["rgb"]  # [h, w, 3]
                static = static.permute(2, 0, 1)[None].float()  # [1, 3, h, w]
                if static.shape[-2:] != (height, width):
                    static = F.interpolate(static, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
                image = mask_reference(image[0], moving, static[0])[None]
            refs.append(image[0].clamp(0.0, 1.0))
        return torch.stack(refs)  # [R, 3, H, W]

    def _sample(self, record: PseudoViewRecord, image: torch.Tensor, alpha: torch.Tensor) -> PseudoViewSample:
        """A training sample from a record, its fixed image [H, W, 3] uint8 and opacity [H, W] uint8."""
        threshold = self.config.refine.alpha_mask_threshold
        # Thresholded from the stored 8-bit opacity, so fresh and reloaded views get the same mask.
        mask = (alpha.float() / 255.0 >= threshold)[..., None] if threshold > 0 else None  # [H, W, 1]
        weight = self.refine_state.store.read_weight(record) if self.refine_state.store is not None else None
        if weight is not None:  # fidelity weighting: [H, W, 1] floats in [0, 1]
            w = torch.from_numpy(weight).float()[..., None] / 255.0
            mask = w if mask is None else mask.float() * w
        # Pixels where a moving object's box projects are left out too (moving_object_masks).
        metadata = self.datamanager.train_dataparser_outputs.metadata
        moving = pseudo_view_moving_mask(metadata, record.frame, record.pose(), record.intrinsics, self.refine_state.metres_per_scene_unit)
        mask = without_moving(mask, moving)
        return PseudoViewSample(
            name=record.file, camera=self.make_camera(record.pose(), record.intrinsics), image=image, mask=mask
        )

    def refine_round(self, step: int) -> List[PseudoViewRecord]:
        """One refine round before training step ``step`` (module docstring); returns the new views."""
        cfg, st = self.config.refine, self.refine_state
        if not self.refine_active or (st.fixer_check is not None and not st.fixer_check.pseudo_views_used):
            return []
        if self.pseudo_view_dir is None:
            raise RuntimeError("the run folder is unknown: call set_run_dir() (the trainer's callbacks do) first")
        if st.store is None:
            st.store = PseudoViewStore(self.pseudo_view_dir)
        start = time.perf_counter()
        seconds = {"load_fixer": 0.0, "render": 0.0, "fix": 0.0}  # where the round's time goes (rounds.jsonl)
        # Building the fixer initialises modules from the global RNG: keep that out of training's stream too.
        with preserved_rng(torch.device(self.device)):
            fixer = self.load_fixer()
        seconds["load_fixer"] = time.perf_counter() - start
        with preserved_rng(torch.device(self.device)):  # the check renders and fixes a few training views
            if not self._check_fixer(step, fixer, start):
                return []
        mpsu = st.metres_per_scene_unit

        current = np.stack([c.current for c in st.cameras])  # [T, 3, 4]
        target = np.stack([c.target for c in st.cameras])  # [T, 3, 4]
        moved, reached = step_toward(current, target, cfg.shift_step, mpsu)
        for cam, pose, done in zip(st.cameras, moved, reached):
            cam.current, cam.reached = pose, bool(done)

        # Novel cameras at the same pose (e.g. the +1 m and +2 m tracks after one step) share one view.
        views: Dict[tuple, Tuple[List[NovelCamera], Dict[str, float]]] = {}
        for cam in st.cameras:
            intr = self._intrinsics(cam)
            key = pose_key(cam.current, int(intr["width"]), int(intr["height"]))
            views.setdefault(key, ([], intr))[0].append(cam)

        num_refs = cfg.num_references if fixer.config.supports_references else 0
        with_camera = len(set(st.train_camera_names or [])) > 1
        folder = f"step_{step:06d}"
        fresh: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        new_records: List[PseudoViewRecord] = []
        pending: List[Tuple[PseudoViewRecord, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]] = []

        def flush() -> None:
            """Fix the pending renders (same size) in one call and write them."""
            if not pending:
                return
            fix_start = time.perf_counter()
            images = torch.stack([p[1] for p in pending])  # [B, 3, H, W]
            refs = torch.stack([p[3] for p in pending]) if num_refs > 0 else None  # [B, R, 3, H, W]
            hints = [self._view_hint(p[0].pose(), p[0].intrinsics) for p in pending]
            fixed = self._fix(fixer, images, refs, hints)  # [B, 3, H, W] in [0, 1]
            for (record, render, alpha, _), out, hint in zip(pending, fixed, hints):
                # Contiguous like the images a resumed run reads back from the PNGs (same sums, same bits).
                image_u8 = _to_uint8(out).permute(1, 2, 0).cpu().contiguous()  # [H, W, 3]
                alpha_u8 = _to_uint8(alpha)[..., 0].cpu().contiguous()  # [H, W]
                raw = _to_uint8(render).permute(1, 2, 0).cpu().numpy() if cfg.save_renders else None
                weight = self._fidelity(record, render, out, hint)  # [H, W] uint8 or None
                st.store.add(record, image_u8.numpy(), alpha_u8.numpy(), raw, weight)
                fresh[record.file] = (image_u8, alpha_u8)
                new_records.append(record)
            pending.clear()
            seconds["fix"] += time.perf_counter() - fix_start

        with preserved_rng(torch.device(self.device)):
            for cams, intr in views.values():
                lead = cams[0]
                render_start = time.perf_counter()
                outputs = self.render_pseudo_view(self.make_camera(lead.current, intr))
                seconds["render"] += time.perf_counter() - render_start
                render = outputs["rgb"].permute(2, 0, 1).float()  # [3, H, W]
                height, width = render.shape[-2:]
                ref_idx = self.reference_indices(lead.current, num_refs)
                ref_dist = pose_costs(lead.current, st.train_poses[ref_idx], cfg.reference_angle_weight, mpsu) if ref_idx else []
                refs = self._reference_images(ref_idx, height, width) if num_refs > 0 else None
                stem = lead.file_stem(mpsu, with_camera)
                record = PseudoViewRecord(
                    file=f"{folder}/{stem}.png",
                    alpha_file=f"{folder}/{stem}.alpha.png",
                    render_file=f"{folder}/{stem}.render.png" if cfg.save_renders else None,
                    weight_file=f"{folder}/{stem}.weight.png" if cfg.fidelity_weighting else None,
                    step=step,
                    tracks=[c.track for c in cams],
                    kind=lead.kind,
                    camera_name=lead.camera_name,
                    frame=lead.frame,
                    offset_m=_rounded(lead.current_offset_m(mpsu)),
                    distance_from_start_m=_rounded(lead.travelled_m(mpsu)),
                    distance_to_target_m=_rounded(lead.remaining_m(mpsu)),
                    reached=lead.reached,
                    camera_to_world=np.asarray(lead.current, dtype=np.float64).tolist(),
                    intrinsics=intr,
                    references=[
                        {
                            "index": int(i),
                            "camera_name": None if st.train_camera_names is None else st.train_camera_names[i],
                            "frame": int(st.train_frames[i]),
                            "distance_m": _rounded(float(d)),
                        }
                        for i, d in zip(ref_idx, ref_dist)
                    ],
                )
                if pending and (pending[0][1].shape != render.shape or len(pending) >= cfg.fixer_batch_size):
                    flush()
                pending.append((record, render, outputs["accumulation"], refs))
            flush()

        self._save_index()
        active = self._publish(fresh)
        self._show_in_viewer(new_records)
        total = time.perf_counter() - start
        st.store.log_round(
            step=step, views=len(new_records), total_s=total, **{f"{k}_s": v for k, v in seconds.items()}, **self._round_extras()
        )
        CONSOLE.log(
            f"difix-refiner: refine round at step {step}: {len(new_records)} pseudo views fixed "
            f"({len(active)} in training, {sum(c.reached for c in st.cameras)}/{len(st.cameras)} cameras at "
            f"their targets) in {total:.1f} s -> {st.store.root / folder}"
        )
        return new_records

    def _save_index(self) -> None:
        cfg, st = self.config.refine, self.refine_state
        assert st.store is not None
        st.store.save_index(
            metres_per_scene_unit=st.metres_per_scene_unit,
            targets=cfg.targets,
            offsets=list(cfg.offsets),
            shift_step=cfg.shift_step,
            fixer={"base": cfg.fixer_base, "adapter": cfg.fixer_adapter, "variant": cfg.fixer_variant},
        )

    def _publish(self, fresh: Dict[str, Tuple[torch.Tensor, torch.Tensor]]) -> List[PseudoViewRecord]:
        """Hand the active pseudo views to the datamanager; images come from memory or from disk."""
        st = self.refine_state
        assert st.store is not None
        active = st.store.active(self.config.refine.keep_previous_rounds)
        samples: Dict[str, PseudoViewSample] = {}
        for record in active:
            if record.file in fresh:
                image, alpha = fresh[record.file]
                samples[record.file] = self._sample(record, image, alpha)
            elif record.file in st.samples:
                samples[record.file] = st.samples[record.file]
            else:
                image = torch.from_numpy(st.store.read_image(record))
                alpha = torch.from_numpy(st.store.read_alpha(record))
                samples[record.file] = self._sample(record, image, alpha)
        st.samples = samples  # views no longer trained on are dropped from memory
        self.datamanager.set_pseudo_views(list(samples.values()))
        return active

    def resume_pseudo_views(self, source_run_dir: Path, step: int) -> int:
        """Reload the pseudo views made up to ``step`` by the run in ``source_run_dir`` (copied into this run's
        folder when that is another one) and put the novel cameras back where they were. Returns the count."""
        st = self.refine_state
        if not self.refine_active or self.pseudo_view_dir is None:
            return 0
        source = PseudoViewStore.load(Path(source_run_dir) / PSEUDO_VIEW_DIR)
        if not source.root.is_dir():
            return 0
        kept = source.up_to(step)
        # Rounds after the checkpoint are redone: their lines, views and files go (no duplicates, no stale files).
        rounds = [r for r in source.read_rounds() if isinstance(r.get("step"), int) and r["step"] <= step]
        if source.root.resolve() == self.pseudo_view_dir.resolve():
            st.store = PseudoViewStore(self.pseudo_view_dir, kept)
            st.store.remove_after(step)
        else:
            st.store = source.copy_into(self.pseudo_view_dir, kept)
        st.store.write_rounds(rounds)
        self._save_index()
        if not kept:
            return 0
        latest = st.store.latest_per_track()
        for cam in st.cameras:
            record = latest.get(cam.track)
            if record is not None:
                cam.current, cam.reached = record.pose(), bool(record.reached)
        active = self._publish({})
        last = max(r.step for r in kept)
        self._show_in_viewer([r for r in kept if r.step == last])
        CONSOLE.log(
            f"difix-refiner: resumed {len(kept)} pseudo views up to step {step} from {source.root} "
            f"({len(active)} in training)"
        )
        return len(kept)

    # ------------------------------------------------------------------------------------ viewer

    def _show_in_viewer(self, records: List[PseudoViewRecord]) -> None:
        """Draw the latest round's pseudo views as (orange) camera frustums with thumbnails in the viewer."""
        st, cfg = self.refine_state, self.config.refine
        server = getattr(st.viewer_state, "viser_server", None)
        if not cfg.show_in_viewer or server is None or not hasattr(server, "scene"):
            return
        try:
            import viser.transforms as vtf
            from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

            for handle in st.frustums:
                handle.remove()
            st.frustums = []
            scale = float(getattr(getattr(st.viewer_state, "config", None), "camera_frustum_scale", 0.1))
            for i, record in enumerate(records):
                c2w = record.pose()  # [3, 4]
                rot = vtf.SO3.from_matrix(c2w[:, :3]) @ vtf.SO3.from_x_radians(np.pi)  # OpenGL -> OpenCV axes
                intr = record.intrinsics
                sample = st.samples.get(record.file)
                thumb = None
                if sample is not None:
                    img = sample.image.permute(2, 0, 1)[None].float()  # [1, 3, H, W]
                    size = (100, max(1, round(100 * intr["width"] / intr["height"])))
                    thumb = F.interpolate(img, size=size, mode="area")[0].permute(1, 2, 0)  # [100, w, 3]
                    thumb = thumb.round().to(torch.uint8).numpy()
                handle = server.scene.add_camera_frustum(
                    name=f"/pseudo_views/view_{i:05d}",
                    fov=float(2 * np.arctan(0.5 * intr["height"] / intr["fy"])),  # vertical
                    aspect=float(intr["width"] / intr["height"]),
                    scale=scale,
                    color=(255, 140, 0),
                    image=thumb,
                    wxyz=rot.wxyz,
                    position=c2w[:, 3] * VISER_NERFSTUDIO_SCALE_RATIO,
                )
                st.frustums.append(handle)
        except Exception as exc:  # the viewer is a convenience: never stop training for it
            CONSOLE.log(f"difix-refiner: could not draw the pseudo views in the viewer ({exc})")


def _checkpoint_run_dir(trainer_config: Any) -> Optional[Path]:
    """The run folder of the checkpoint a trainer resumes from (``--load-dir`` / ``--load-checkpoint``)."""
    load_dir = getattr(trainer_config, "load_dir", None)
    if load_dir is not None:
        return Path(load_dir).parent  # <run>/nerfstudio_models
    load_checkpoint = getattr(trainer_config, "load_checkpoint", None)
    if load_checkpoint is not None:
        return Path(load_checkpoint).parent.parent  # <run>/nerfstudio_models/step-*.ckpt
    return None
