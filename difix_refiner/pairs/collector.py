"""Collecting pairs: renders and photos written under one images folder, with each pair's record.

The reference of a pair is the photo the producing run trained on that is nearest to the target's
pose (:func:`difix_refiner.cameras.reference_views.nearest_references`, the one picker pair building
and the refine loop share), from the target's own split and never the target itself.

With a :class:`~difix_refiner.pairs.hint_source.HintSource` every pair also gets the LiDAR hint of its
camera (:func:`~difix_refiner.pairs.pair_hints.write_hint`, once per view); with a
:class:`~difix_refiner.pairs.moving_masks.MovingObjectMasks` provider, moving objects are masked out of
targets and references (see that module).

Several resolutions and training lengths write into one images folder: :meth:`PairCollector.set_variant`
names the current one (a suffix of the labels, a folder of the photos and hints).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.cameras.reference_views import nearest_references, pose_costs
from difix_refiner.core import atomic
from difix_refiner.core.image_metrics import psnr
from difix_refiner.pairs.format import PairEntry
from difix_refiner.pairs.frame_split import FrameSplit
from difix_refiner.pairs.hint_source import HintSource, view_geometry
from difix_refiner.pairs.moving_masks import (
    MovingObjectMasks,
    check_mask,
    masked_reference,
    masked_target,
)
from difix_refiner.pairs.pair_hints import write_hint
from difix_refiner.pairs.views import RunViews, View, camera_record
from difix_refiner.scene import run_pipeline

IMAGES = "images"
"""Folder of the output that holds every render and photo (pair paths in the manifest start with it)."""


def save_png(path: Path, image: np.ndarray) -> None:
    """Atomic PNG write (a reader never sees half a file)."""
    from PIL import Image

    with atomic.atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


@dataclass(frozen=True)
class PairFiles:
    """The files of one pair, relative to the images folder."""

    image: str
    """The render (degraded input)."""
    target: str
    """The photo (or its masked copy)."""
    reference: Optional[str]
    """The reference photo (or its masked copy); None without one."""
    hint_image: Optional[str] = None
    """The LiDAR hint's colours; None without hints."""
    hint_mask: Optional[str] = None
    """The LiDAR hint's validity mask; None without hints."""


@dataclass(frozen=True)
class ViewHint:
    """A view's hint files (relative to the images folder) and its share of valid pixels."""

    image: str
    """The hint's colours (RGB PNG)."""
    mask: str
    """The hint's validity mask (grey PNG)."""
    coverage: float
    """Share of the view's pixels with a valid hint."""


class PairCollector:
    """Writes renders and photos under an images folder and records the pairs and their metadata."""

    def __init__(
        self,
        images_root: Path,
        split: FrameSplit,
        angle_weight: float,
        prompt: str,
        hints: Optional[HintSource] = None,
        masks: Optional[MovingObjectMasks] = None,
    ) -> None:
        self.root = Path(images_root)
        self.split = split
        self.angle_weight = float(angle_weight)
        self.prompt = prompt
        self.hints = hints
        self.masks = masks
        self.entries: Dict[str, Dict[str, PairFiles]] = {}  # split -> id -> files
        self.records: Dict[str, Dict[str, Any]] = {}
        self.label_suffix = ""
        self.folder = ""
        self._photos: Dict[Tuple[str, str, int], Tuple[str, Tuple[int, int]]] = {}
        self._hints: Dict[Tuple[str, str, int], ViewHint] = {}
        self._masks: Dict[Tuple[str, str, int], Optional[np.ndarray]] = {}
        self._masked_refs: Dict[Tuple[str, str, int], str] = {}

    def set_variant(self, label_suffix: str, folder: str) -> None:
        """Name the variant the next pairs belong to: ``label_suffix`` ends their labels (and ids),
        ``folder`` (e.g. ``"d2"``, or ``""``) holds its photos and hints (one per resolution)."""
        self.label_suffix = label_suffix
        self.folder = folder

    def _rel(self, kind: str, *parts: str) -> str:
        return "/".join([kind, *([self.folder] if self.folder else []), *parts])

    def _key(self, view: View) -> Tuple[str, str, int]:
        return (self.folder, view.camera, view.frame)

    def photo(self, view: View) -> Tuple[str, Tuple[int, int]]:
        """Relative path of ``view``'s photo (written once per resolution) and its ``(H, W)``."""
        key = self._key(view)
        if key not in self._photos:
            image = view.load_photo()
            rel = self._rel("photos", view.camera, f"{view.frame:05d}.png")
            save_png(self.root / rel, image)
            self._photos[key] = (rel, image.shape[:2])
        return self._photos[key]

    def hint(self, view: View, pool: RunViews) -> Optional[ViewHint]:
        """The LiDAR hint of ``view``'s camera (written once per view and resolution), or None without hints."""
        if self.hints is None:
            return None
        key = self._key(view)
        if key not in self._hints:
            hint = self.hints.render(view_geometry(view.cameras, pool.dataparser_transform, pool.dataparser_scale))
            stem = self._rel("hints", view.camera, f"{view.frame:05d}")
            write_hint(hint, self.root / f"{stem}.png", self.root / f"{stem}.mask.png")
            self._hints[key] = ViewHint(f"{stem}.png", f"{stem}.mask.png", hint.coverage)
        return self._hints[key]

    def moving_mask(self, view: View, pool: RunViews) -> Optional[np.ndarray]:
        """The provider's moving-object mask of ``view`` (None: no provider, or nothing moves there)."""
        if self.masks is None:
            return None
        key = self._key(view)
        if key not in self._masks:
            geometry = view_geometry(view.cameras, pool.dataparser_transform, pool.dataparser_scale)
            mask = self.masks(view.camera, view.frame, geometry)
            self._masks[key] = check_mask(mask, geometry, f"{view.camera} frame {view.frame}")
            if self._masks[key] is not None:
                save_png(self.root / self._rel("moving-masks", view.camera, f"{view.frame:05d}.png"),
                         np.where(self._masks[key], 255, 0).astype(np.uint8))  # fmt: skip
        return self._masks[key]

    def _masked_reference(self, ref: View, pool: RunViews) -> Optional[str]:
        """The reference's masked copy (written once), or None when nothing is masked in it."""
        mask = self.moving_mask(ref, pool)
        if mask is None:
            return None
        key = self._key(ref)
        if key not in self._masked_refs:
            rel = self._rel("references-masked", ref.camera, f"{ref.frame:05d}.png")
            save_png(self.root / rel, masked_reference(_read_png(self.root / self.photo(ref)[0]), mask))
            self._masked_refs[key] = rel
        return self._masked_refs[key]

    def reference(self, target: View, pool: RunViews) -> Tuple[Optional[View], Optional[float]]:
        """The trained photo of ``pool`` nearest to ``target``'s pose, in the same split, not the target."""
        split = self.split.split(target.frame)
        allowed = np.array(
            [v.trained and v.key != target.key and self.split.split(v.frame) == split for v in pool.views], dtype=bool
        )
        if not allowed.any():
            return None, None
        poses = np.stack([v.pose for v in pool.views])  # [N, 3, 4]
        mpsu = pool.metres_per_scene_unit or 1.0
        found = nearest_references(target.pose, poses, 1, allowed, self.angle_weight, mpsu)
        if not found:
            return None, None
        cost = float(pose_costs(target.pose, poses[found[0] : found[0] + 1], self.angle_weight, mpsu)[0])
        return pool.views[found[0]], cost

    def add(
        self,
        *,
        label: str,
        strategy: str,
        target: View,
        image: np.ndarray,
        render_camera: Dict[str, Any],
        pool: RunViews,
        run: str,
        step: int,
    ) -> str:
        """Record one pair: ``image`` is the render of ``target``'s camera; returns the pair id."""
        label = label + self.label_suffix
        photo_rel, photo_hw = self.photo(target)
        if tuple(image.shape[:2]) != tuple(photo_hw):
            raise RuntimeError(
                f"{label} {target.camera} frame {target.frame}: render is {image.shape[1]}x{image.shape[0]} but the photo "
                f"is {photo_hw[1]}x{photo_hw[0]}; the pair would not be aligned"
            )
        pair_id = f"{label}_{target.camera}_{target.frame:05d}"
        if any(pair_id in e for e in self.entries.values()):
            raise RuntimeError(f"duplicate pair id {pair_id}")
        render_rel = f"renders/{label}/{target.camera}/{target.frame:05d}.png"
        save_png(self.root / render_rel, image)
        ref, cost = self.reference(target, pool)
        ref_rel = self.photo(ref)[0] if ref is not None else None
        hint = self.hint(target, pool)
        target_rel, moving = photo_rel, self.moving_mask(target, pool)
        if moving is not None:  # the render's colours where something moved: the loss asks nothing there
            target_rel = f"targets-masked/{label}/{target.camera}/{target.frame:05d}.png"
            save_png(self.root / target_rel, masked_target(_read_png(self.root / photo_rel), image, moving))
        masked_ref = self._masked_reference(ref, pool) if ref is not None else None
        split = self.split.split(target.frame)
        files = PairFiles(render_rel, target_rel, masked_ref or ref_rel, *((hint.image, hint.mask) if hint else ()))
        self.entries.setdefault(split, {})[pair_id] = files
        self.records[pair_id] = {
            "split": split,
            "strategy": strategy,
            "label": label,
            "run": run,
            "checkpoint_step": int(step),
            "camera": target.camera,
            "frame": target.frame,
            "image": f"{IMAGES}/{render_rel}",
            "target_image": f"{IMAGES}/{photo_rel}",
            "ref_image": None if ref_rel is None else f"{IMAGES}/{ref_rel}",
            "ref_camera": None if ref is None else ref.camera,
            "ref_frame": None if ref is None else ref.frame,
            "ref_cost": cost,
            "ref_metres_per_scene_unit": pool.metres_per_scene_unit,
            "ref_camera_to_world": None if ref is None else ref.pose.tolist(),
            "render_camera": render_camera,
            "target_camera": camera_record(target.cameras),
            "psnr": _psnr_against_file(image, self.root / photo_rel),  # the photo as written
            "hint_image": None if hint is None else f"{IMAGES}/{hint.image}",
            "hint_mask": None if hint is None else f"{IMAGES}/{hint.mask}",
            "hint_coverage": None if hint is None else hint.coverage,
            "moving_masked_target": None if moving is None else f"{IMAGES}/{target_rel}",
            "moving_masked_reference": None if masked_ref is None else f"{IMAGES}/{masked_ref}",
        }
        return pair_id

    def pair_entries(self, final_root: Path) -> Dict[str, Dict[str, PairEntry]]:
        """``{split: {id: PairEntry}}`` with paths under ``final_root`` (where the images end up)."""
        out: Dict[str, Dict[str, PairEntry]] = {}
        for split in sorted(self.entries, key=lambda s: (s != "train", s)):
            out[split] = {pid: self._entry(pid, files, final_root) for pid, files in sorted(self.entries[split].items())}
        return out

    def _entry(self, pair_id: str, files: PairFiles, root: Path) -> PairEntry:
        refs = () if files.reference is None else (root / files.reference,)
        hint_image = None if files.hint_image is None else root / files.hint_image
        hint_mask = None if files.hint_mask is None else root / files.hint_mask
        return PairEntry(pair_id, root / files.image, root / files.target, refs, self.prompt, hint_image, hint_mask)

    def render_views(
        self,
        progress: Any,
        description: str,
        pipeline: Any,
        targets: Sequence[View],
        pool: RunViews,
        label: str,
        strategy: str,
        run: str,
        step: int,
        cameras_for: Optional[Callable[[View], Tuple[Any, Dict[str, Any]]]] = None,
    ) -> None:
        """Render each target view (``cameras_for`` may map it into another run's frame) and record pairs."""
        task = progress.add_task(description, total=len(targets))
        for view in targets:
            cams, record = cameras_for(view) if cameras_for else (view.cameras, camera_record(view.cameras))
            self.add(
                label=label, strategy=strategy, target=view, image=run_pipeline.render_camera(pipeline, cams).rgb,
                render_camera=record, pool=pool, run=run, step=step,
            )  # fmt: skip
            progress.advance(task)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _psnr_against_file(image: np.ndarray, path: Path) -> float:
    return psnr(image, _read_png(path))
