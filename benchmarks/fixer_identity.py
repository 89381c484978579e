"""What a fixer does to views that need no fixing, next to what it does to the renders, per kind of test pair.

A fixer used in the refine loop meets good renders as well as broken ones (the refine loop's fixer check
fixes renders of training views, which are near-clean). One that cannot hand a clean image back unchanged
caps every view at its own reconstruction quality. For each test pair of a pairs file this runs the fixer
twice, with the pair's reference and hint:

- on the render: PSNR against the photo before and after (what train-fixer's ``metrics.json`` holds);
- on the photo itself (the "identity" input): PSNR of the fixer's output against that same photo, which is
  100 dB (the cap of PSNR here) for a fixer that leaves a clean image alone.

It prints one table per fixer, a row per ``scene/label`` of the pairs (as ``fixer_test_pairs.py``) and a
row for all of them::

    python benchmarks/fixer_identity.py --pairs PAIRS.json --fixers examples/fixer-small examples/fixer-small-plain
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixer_test_pairs import split_id  # noqa: E402

from difix_refiner.core.image_metrics import psnr_batch  # noqa: E402
from difix_refiner.core.progress import progress_bar  # noqa: E402
from difix_refiner.fixer import Fixer  # noqa: E402
from difix_refiner.pairs.format import PairEntry, load_image, read_pairs  # noqa: E402
from difix_refiner.pairs.pair_hints import load_hint  # noqa: E402


def sample_pairs(entries: Dict[str, PairEntry], per_label: int, seed: int) -> List[PairEntry]:
    """Up to ``per_label`` pairs of each label, drawn with ``seed``; all of them when ``per_label`` is 0."""
    groups: Dict[str, List[PairEntry]] = defaultdict(list)
    for key in sorted(entries):
        groups[split_id(key)[0]].append(entries[key])
    rng = random.Random(seed)
    out: List[PairEntry] = []
    for label in sorted(groups):
        rows = groups[label]
        out.extend(rows if per_label <= 0 or len(rows) <= per_label else rng.sample(rows, per_label))
    return out


def score_pair(fixer: Fixer, entry: PairEntry) -> Dict[str, float]:
    """PSNR before / after on the render and after on the photo ("identity") for one pair."""
    render, photo = load_image(entry.image)[None], load_image(entry.target_image)[None]  # [1,3,H,W]
    refs = torch.stack([load_image(p) for p in entry.ref_images])[None] if entry.ref_images else None  # [1,R,3,H,W]
    if not fixer.config.supports_references:
        refs = None
    hint = None
    if fixer.config.uses_hint and entry.hint_image is not None:
        hint = load_hint(entry.hint_image, entry.hint_mask)[None]  # [1,4,H,W]
    fixed = fixer.fix(render, refs, hint=hint).clamp(0, 1)
    same = fixer.fix(photo, refs, hint=hint).clamp(0, 1)
    scores = psnr_batch(torch.cat([render, fixed, same]), photo.expand(3, -1, -1, -1))  # [3]
    return dict(zip(("before", "after", "identity"), scores.tolist()))


def table(rows: Dict[str, List[Dict[str, float]]]) -> str:
    """A markdown table: per label, pairs and mean PSNR before / after / gain / identity."""
    lines = ["| pair label | pairs | PSNR before | after | gain (dB) | identity (photo in) |", "|---|---:|---:|---:|---:|---:|"]
    everything = [r for group in rows.values() for r in group]
    for label, group in [*sorted(rows.items()), ("all", everything)]:
        mean = {k: float(np.mean([r[k] for r in group])) for k in ("before", "after", "identity")}
        lines.append(
            f"| {label} | {len(group)} | {mean['before']:.2f} | {mean['after']:.2f} | {mean['after'] - mean['before']:+.2f} "
            f"| {mean['identity']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=Path, required=True, help="pairs JSON (make-pairs / merge-pairs)")
    p.add_argument("--fixers", nargs="+", required=True, help="saved fixer folders (or anything --fixer-base takes)")
    p.add_argument("--split", default="test", help="split of the pairs file to score")
    p.add_argument("--per-label", type=int, default=10, help="pairs drawn per label (0: every pair)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.pairs.is_file():
        print(f"fixer_identity.py: error: no such file: {args.pairs}", file=sys.stderr)
        return 1
    splits = read_pairs(args.pairs)
    if not splits.get(args.split):
        print(f"fixer_identity.py: error: {args.pairs} has no {args.split!r} pairs", file=sys.stderr)
        return 1
    entries = sample_pairs(splits[args.split], args.per_label, args.seed)
    for name in args.fixers:
        fixer = Fixer.from_pretrained(name).eval()
        rows: Dict[str, List[Dict[str, float]]] = defaultdict(list)
        with progress_bar() as progress:
            task = progress.add_task(f"{name}: pairs", total=len(entries))
            for entry in entries:
                rows[split_id(entry.id)[0]].append(score_pair(fixer, entry))
                progress.advance(task)
        print(f"## {name} ({args.split} split of {args.pairs}, {len(entries)} pairs)\n\n{table(rows)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
