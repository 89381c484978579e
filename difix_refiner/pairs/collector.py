"""Collecting pairs: renders and photos written under one images folder, with each pair's record.

The reference of a pair is the photo the producing run trained on that is nearest to the target's
pose (:mod:`difix_refiner.cameras.reference_views`, the one picker pair building and distillation
share), from the target's own split and never the target itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from difix_refiner.cameras.reference_views import nearest_reference, pose_costs
from difix_refiner.core import atomic
from difix_refiner.core.image_metrics import psnr
from difix_refiner.pairs.format import PairEntry
from difix_refiner.pairs.frame_split import FrameSplit
from difix_refiner.pairs.views import RunViews, View, camera_record
from difix_refiner.scene import run_pipeline

IMAGES = "images"
"""Folder of the output that holds every render and photo (pair paths in the manifest start with it)."""


def save_png(path: Path, image: np.ndarray) -> None:
    """Atomic PNG write (a reader never sees half a file)."""
    from PIL import Image

    with atomic.atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


class PairCollector:
    """Writes renders and photos under an images folder and records the pairs and their metadata."""

    def __init__(self, images_root: Path, split: FrameSplit, angle_weight: float, prompt: str) -> None:
        self.root = Path(images_root)
        self.split = split
        self.angle_weight = float(angle_weight)
        self.prompt = prompt
        self.entries: Dict[str, Dict[str, Tuple[str, str, Optional[str]]]] = {}  # split -> id -> relative paths
        self.records: Dict[str, Dict[str, Any]] = {}
        self._photos: Dict[Tuple[str, int], Tuple[str, Tuple[int, int]]] = {}

    def photo(self, view: View) -> Tuple[str, Tuple[int, int]]:
        """Relative path of ``view``'s photo (written once) and its ``(H, W)``."""
        if view.key not in self._photos:
            image = view.load_photo()
            rel = f"photos/{view.camera}/{view.frame:05d}.png"
            save_png(self.root / rel, image)
            self._photos[view.key] = (rel, image.shape[:2])
        return self._photos[view.key]

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
        idx = nearest_reference(target.pose, poses, allowed, self.angle_weight, mpsu)
        if idx is None:
            return None, None
        cost = float(pose_costs(target.pose, poses[idx : idx + 1], self.angle_weight, mpsu)[0])
        return pool.views[idx], cost

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
        photo_rel, photo_hw = self.photo(target)
        if tuple(image.shape[:2]) != tuple(photo_hw):
            raise RuntimeError(
                f"{label} {target.camera} frame {target.frame}: render is {image.shape[1]}x{image.shape[0]} but the photo "
                f"is {photo_hw[1]}x{photo_hw[0]}; the pair would not be aligned"
            )
        pair_id = f"{label}_{target.camera}_{target.frame:05d}"
        render_rel = f"renders/{label}/{target.camera}/{target.frame:05d}.png"
        save_png(self.root / render_rel, image)
        ref, cost = self.reference(target, pool)
        ref_rel = self.photo(ref)[0] if ref is not None else None
        split = self.split.split(target.frame)
        if any(pair_id in e for e in self.entries.values()):
            raise RuntimeError(f"duplicate pair id {pair_id}")
        self.entries.setdefault(split, {})[pair_id] = (render_rel, photo_rel, ref_rel)
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
        }
        return pair_id

    def pair_entries(self, final_root: Path) -> Dict[str, Dict[str, PairEntry]]:
        """``{split: {id: PairEntry}}`` with paths under ``final_root`` (where the images end up)."""
        out: Dict[str, Dict[str, PairEntry]] = {}
        for split in sorted(self.entries, key=lambda s: (s != "train", s)):
            out[split] = {
                pid: PairEntry(pid, final_root / img, final_root / tgt, () if ref is None else (final_root / ref,), self.prompt)
                for pid, (img, tgt, ref) in sorted(self.entries[split].items())
            }
        return out


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


def _psnr_against_file(image: np.ndarray, path: Path) -> float:
    from PIL import Image

    with Image.open(path) as im:
        return psnr(image, np.asarray(im.convert("RGB")))
