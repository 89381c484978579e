"""``difix-refiner make-pairs`` and ``difix-refiner merge-pairs``: fixer training pairs from reconstructions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple

from difix_refiner.cameras.run_data import InputError
from difix_refiner.training.pairs import DEFAULT_PROMPT, PairsError, merge_pairs
from difix_refiner.training.reference_views import DEFAULT_ANGLE_WEIGHT

Strategy = Literal["underfit", "sparse", "cross-camera", "cycle"]


@dataclass
class MakePairsCommand:
    """Train reconstructions of a scene and render them into fixer training pairs (render, photo, reference).

    Strategies: underfit (checkpoints at 25/50/75 % of the schedule render the training views),
    sparse (a run on every k-th frame renders the others), cross-camera (a run on --cameras renders
    --cross-camera-targets; pandaset-data only), cycle (render the path shifted sideways, train a
    second run on those renders, render the recorded path back; pandaset-data only). Writes
    OUTPUT/pairs.json (Difix format), OUTPUT/manifest.json (per-pair cameras, references, PSNR),
    OUTPUT/images/ and keeps the ns-train runs under OUTPUT/runs/. Frames in --test-frames make test
    pairs, all others train pairs; references are the nearest training photo in the same split.
    """

    data: Path
    """Scene folder (for pandaset-data: the layout of examples/pandaset_002, or a PandaSet release sequence folder). Never written to."""
    output_dir: Path
    """Folder for pairs.json, manifest.json, images/ and runs/. Must be empty unless --overwrite."""
    strategy: Tuple[Strategy, ...] = ()
    """Pair strategies, several allowed. Default: underfit and cross-camera for pandaset-data, underfit and sparse otherwise."""
    dataparser: str = "pandaset-data"
    """nerfstudio dataparser of the scene. Other dataparsers support underfit and sparse (their own train/eval split decides what sparse renders)."""
    dataparser_args: str = ""
    """Extra dataparser options as one string, given with '=': --dataparser-args="--lidar-voxel-size 0.2" or, for nerfstudio-data, --dataparser-args="--eval-mode fraction --train-split-fraction 0.25"."""
    method: str = "difix-refiner"
    """nerfstudio method to train (difix-refiner with its refine loop switched off, or splatfacto on CUDA)."""
    train_args: str = ""
    """Extra ns-train options as one string, given with '=': --train-args="--pipeline.model.sh-degree 1"."""
    cameras: Tuple[str, ...] = ("front_camera",)
    """pandaset-data: rig cameras the reconstructions train on (and whose frames give underfit, sparse and cycle pairs)."""
    cross_camera_targets: Tuple[str, ...] = ("front_left_camera", "front_right_camera")
    """pandaset-data: cameras rendered by cross-camera (never trained on); they are also the base run's eval split."""
    frame_start: int = 0
    """pandaset-data: first frame used (inclusive)."""
    frame_end: Optional[int] = None
    """pandaset-data: last frame used (exclusive); default: the last frame."""
    test_frames: Optional[Tuple[int, int]] = None
    """Frames START END (end exclusive) that make test pairs; no train pair uses them. Default: the last --test-fraction of the frames (bundled scene: 60 80)."""
    test_fraction: float = 0.25
    """Share of the frames, at the end of the range, held out for test pairs when --test-frames is not given (0: no test split)."""
    iterations: int = 3000
    """Training iterations of every run (the "normal schedule" that underfit takes fractions of). On 2 CPU cores about 2 s each at --downscale-factor 4 (120x67) and far more at full resolution: use cuda for real budgets."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device for training and rendering (auto: cuda when available)."""
    downscale_factor: Optional[int] = None
    """Image downscale factor of the runs (and so of the pairs). Default: 1 for pandaset-data, the dataparser's default otherwise."""
    lidar_max_points: int = 60000
    """pandaset-data: at most this many LiDAR seed points per run."""
    compress_schedule: bool = True
    """Scale splatfacto's resolution schedule and SH-degree interval to --iterations, so short runs also end at full resolution with all SH degrees."""
    underfit_fractions: Tuple[float, ...] = (0.25, 0.5, 0.75)
    """underfit: fractions of --iterations whose checkpoints render pairs."""
    sparse_stride: int = 4
    """sparse: train on every k-th frame (pandaset-data --train-stride), render the frames in between."""
    cycle_offsets: Tuple[float, ...] = (2.0,)
    """cycle: lateral offsets in metres (positive: the vehicle's left); one second run per offset."""
    ref_angle_weight: float = DEFAULT_ANGLE_WEIGHT
    """Reference choice: metres of camera-centre distance that one radian of viewing-direction difference costs (5: about 11.5 degrees = 1 m)."""
    metres_per_scene_unit: Optional[float] = None
    """Other dataparsers: metres per scene unit for reference distances (otherwise scene units are used). pandaset-data knows its scale."""
    prompt: str = DEFAULT_PROMPT
    """Prompt stored with every pair."""
    seed: int = 42
    """Random seed of every run."""
    overwrite: bool = False
    """Replace earlier make-pairs results in --output-dir (pairs.json, manifest.json, images/, runs/); other files are left alone."""

    def main(self) -> None:
        """Run the command; bad input exits with a one-line message."""
        from difix_refiner.training.make_pairs import make_pairs

        try:
            make_pairs(self)
        except InputError as exc:
            raise SystemExit(f"make-pairs: error: {exc}") from None


@dataclass
class MergePairsCommand:
    """Merge the pair sets of several scenes into one pairs.json (ids become '<scene>/<id>', paths stay valid)."""

    inputs: Tuple[str, ...]
    """Pair JSONs as SCENE=PATH (e.g. scene1=out1/pairs.json); a plain PATH takes its folder's name as the scene."""
    output: Path
    """Merged JSON file, or a folder to hold pairs.json. Paths inside are written relative to it."""
    overwrite: bool = False
    """Replace an existing merged JSON."""
    validate: bool = True
    """Check every input fully first (files exist, input and target sizes match)."""

    def output_json(self) -> Path:
        """The JSON file to write: --output itself, or OUTPUT/pairs.json for a folder."""
        out = Path(self.output)
        return out if out.suffix.lower() == ".json" else out / "pairs.json"

    def main(self) -> None:
        """Run the command; bad input exits with the problems listed."""
        self.run()

    def run(self) -> Dict[str, int]:
        """Merge; returns {split: number of pairs}."""
        if not self.inputs:
            raise SystemExit("merge-pairs: error: --inputs needs at least one pair JSON")
        try:
            counts = merge_pairs(list(self.inputs), self.output_json(), overwrite=self.overwrite, validate=self.validate)
        except (PairsError, FileExistsError, ValueError) as exc:
            raise SystemExit(f"merge-pairs: error: {exc}") from None
        print(f"merged {len(self.inputs)} scenes into {self.output_json()}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return counts
