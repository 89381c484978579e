"""A trained fixer's test-pair scores, one row per kind of pair: what it gains on each strategy and resolution.

``train-fixer`` writes ``metrics.json`` with the PSNR / SSIM of every test pair before and after the fixer
(``per_image``). A pair's id is ``[scene/]<label>_<camera>_<frame>`` (make-pairs; merge-pairs puts the
scene name in front), and the label names the strategy and its variant (``underfit-25``, ``cross-camera``,
``cycle-2m``, ...). This prints, per ``scene/label`` and per camera, the number of pairs and the mean
PSNR / SSIM before and after, so a fixer that helps on average but hurts one kind of view shows it::

    python benchmarks/fixer_test_pairs.py examples/fixer-small/metrics.json [other/metrics.json ...]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

PAIR_ID = re.compile(r"^(?P<label>.+?)_(?P<camera>[a-z_]*camera)_(?P<frame>\d+)$")
"""``<label>_<camera>_<frame>``: the camera is the last ``..._camera`` word (PandaSet's names end so)."""


def split_id(pair_id: str) -> Tuple[str, str]:
    """``(label, camera)`` of a pair id (``("?", "?")`` for an id of another form)."""
    match = PAIR_ID.match(pair_id)
    return (match["label"], match["camera"]) if match else ("?", "?")


def group_scores(records: Sequence[Dict[str, float]], by: str) -> Dict[str, Dict[str, float]]:
    """Mean before/after PSNR and SSIM per ``label`` or ``camera`` (``by``), plus ``n``; sorted by key."""
    groups: Dict[str, List[Dict[str, float]]] = defaultdict(list)
    for record in records:
        label, camera = split_id(str(record["id"]))
        groups[label if by == "label" else camera].append(record)
    out = {}
    for key in sorted(groups):
        rows = groups[key]
        mean = {m: sum(float(r[m]) for r in rows) / len(rows) for m in ("psnr_before", "psnr_after", "ssim_before", "ssim_after")}
        out[key] = {"n": len(rows), **mean, "psnr_delta": mean["psnr_after"] - mean["psnr_before"]}
    return out


def table(groups: Dict[str, Dict[str, float]], title: str) -> str:
    """A markdown table of :func:`group_scores`."""
    lines = [f"| {title} | pairs | PSNR before | PSNR after | gain (dB) | SSIM before | SSIM after |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, g in groups.items():
        lines.append(
            f"| {key} | {g['n']} | {g['psnr_before']:.2f} | {g['psnr_after']:.2f} | {g['psnr_delta']:+.2f} "
            f"| {g['ssim_before']:.4f} | {g['ssim_after']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("metrics", type=Path, nargs="+", help="train-fixer metrics.json files (with per_image)")
    args = p.parse_args(argv)
    for path in args.metrics:
        if not path.is_file():
            print(f"fixer_test_pairs.py: error: no such file: {path}", file=sys.stderr)
            return 1
        metrics = json.loads(path.read_text())
        records = metrics.get("per_image")
        if not records:
            print(f"fixer_test_pairs.py: error: {path} has no per_image scores (train-fixer without a test split?)", file=sys.stderr)
            return 1
        print(f"## {path} ({metrics.get('split', '?')} split, {len(records)} pairs, step {metrics.get('step', '?')})\n")
        print(table(group_scores(records, "label"), "pair label") + "\n")
        print(table(group_scores(records, "camera"), "camera") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
