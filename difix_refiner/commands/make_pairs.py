"""``difix-refiner make-pairs`` and ``difix-refiner merge-pairs``: fixer training pairs from reconstructions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

from difix_refiner.core.errors import InputError
from difix_refiner.pairs.format import merge_pairs
from difix_refiner.pairs.make_pairs import MakePairsConfig, make_pairs


@dataclass
class MakePairsCommand(MakePairsConfig):
    """Train reconstructions of a scene and render them into fixer training pairs (render, photo, reference).

    Strategies: underfit (checkpoints at 25/50/75 % of the schedule render the training views),
    sparse (a run on every k-th frame renders the others), cross-camera (a run on --cameras renders
    --cross-camera-targets; pandaset-data only), cycle (render the path shifted sideways, train a
    second run on those renders, render the recorded path back; pandaset-data only). Writes
    OUTPUT/pairs.json (Difix format), OUTPUT/manifest.json (per-pair cameras, references, PSNR),
    OUTPUT/images/ and keeps the ns-train runs under OUTPUT/runs/. Frames in --test-frames make test
    pairs, all others train pairs; references are the nearest training photo in the same split. With
    pandaset-data every pair carries the LiDAR hint of its camera (training sweeps only); --downscale-factors,
    --iteration-counts and --every-camera repeat the strategies at several resolutions, training lengths
    and for every camera of the rig.
    """

    def main(self) -> None:
        """Build the pair set."""
        make_pairs(self)


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

    def main(self) -> Dict[str, int]:
        """Merge and print the counts; returns {split: number of pairs}."""
        if not self.inputs:
            raise InputError("--inputs needs at least one pair JSON")
        try:
            counts = merge_pairs(list(self.inputs), self.output_json(), overwrite=self.overwrite, validate=self.validate)
        except FileExistsError as exc:  # the library's refusal to replace a file is bad input here
            raise InputError(str(exc)) from None
        print(f"merged {len(self.inputs)} scenes into {self.output_json()}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return counts
