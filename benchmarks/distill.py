"""Benchmark of the refine loop (progressive distillation) against the plain baseline, at equal iterations.

Trains ``difix-refiner-cpu`` (or ``difix-refiner`` with --device cuda) on the bundled scene twice with
``ns-train``, one run after the other so that neither slows the other: the baseline
(``--pipeline.refine.enabled False``) and the refiner with its fixer. Each run is a fresh process, so
its peak memory is its maximum resident set size.

Reported:

- wall time and peak memory of both runs, and their ratios refiner / baseline;
- where the refiner's time goes: rendering the pseudo views, fixing them, loading the fixer (the refine
  rounds log these to ``pseudo_views/rounds.jsonl``), and the rest, which is training (plus the process
  start-up and data loading that the baseline pays too).

Run ``python benchmarks/distill.py --help`` for options.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from difix_refiner.scene.ns_train import ChildRun, ns_train, run_config_path, schedule_args, thread_env  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def refine_args(args: argparse.Namespace, enabled: bool) -> List[str]:
    """ns-train options shared by both runs, plus the refine switch."""
    n = args.iterations
    return [
        "--machine.device-type", args.device, "--machine.seed", "0",
        "--max-num-iterations", str(n), "--steps-per-save", str(n), "--steps-per-eval-all-images", "0",
        *schedule_args(n),
        "--pipeline.refine.enabled", str(enabled),
        "--pipeline.refine.first-fix-step", str(args.steps_per_fix),
        "--pipeline.refine.steps-per-fix", str(args.steps_per_fix),
        "--pipeline.refine.targets", "both",
    ]  # fmt: skip


def round_seconds(run_dir: Path) -> Dict[str, float]:
    """Sum of the refine rounds' timings (``rounds.jsonl``)."""
    totals = {"rounds": 0.0, "views": 0.0, "render_s": 0.0, "fix_s": 0.0, "load_fixer_s": 0.0, "total_s": 0.0}
    log = run_dir / "pseudo_views" / "rounds.jsonl"
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        totals["rounds"] += 1
        for key in ("views", "render_s", "fix_s", "load_fixer_s", "total_s"):
            totals[key] += float(entry[key])
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=600, help="training iterations of each run")
    parser.add_argument("--steps-per-fix", type=int, default=150, help="steps between refine rounds (first round at this step)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--data", type=Path, default=REPO / "examples" / "pandaset_002")
    parser.add_argument("--output-dir", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    method = "difix-refiner-cpu" if args.device == "cpu" else "difix-refiner"

    with tempfile.TemporaryDirectory() as tmp:
        out = args.output_dir or Path(tmp)
        data_args = ["--data", str(args.data.resolve()), "--eval-mode", "interval+cross-camera"]
        runs: Dict[str, ChildRun] = {}
        for name, enabled in (("baseline", False), ("refiner", True)):
            print(f"training {name}: {method}, {args.iterations} iterations on {args.device} ...", flush=True)
            runs[name] = ns_train(method, out, name, refine_args(args, enabled), "pandaset-data", data_args, thread_env(args.threads))
        rounds = round_seconds(run_config_path(out, "refiner", method).parent)

    base, ref = runs["baseline"], runs["refiner"]
    print()
    print(f"{method}, {args.iterations} iterations, {args.threads} thread(s), refine round every {args.steps_per_fix} steps")
    print()
    print("| run      | wall s | peak RSS GB |")
    print("|----------|-------:|------------:|")
    for name, run in runs.items():
        print(f"| {name:<8} | {run.wall_s:6.1f} | {run.peak_rss_gb:11.2f} |")
    print(f"| ratio    | {ref.wall_s / base.wall_s:6.2f} | {ref.peak_rss_gb / base.peak_rss_gb:11.2f} |")
    print()
    rendering, fixing, loading = rounds["render_s"], rounds["fix_s"], rounds["load_fixer_s"]
    other_round = rounds["total_s"] - rendering - fixing - loading  # pose stepping, writing, publishing
    training = ref.wall_s - rounds["total_s"]
    print(f"refiner time split ({int(rounds['rounds'])} rounds, {int(rounds['views'])} pseudo views fixed):")
    print()
    print("| part                                     | s      | share |")
    print("|------------------------------------------|-------:|------:|")
    for label, seconds in (
        ("training (incl. start-up, data loading)", training),
        ("rendering pseudo views", rendering),
        ("fixing pseudo views", fixing),
        ("loading the fixer", loading),
        ("rest of the rounds (poses, writing)", other_round),
    ):
        print(f"| {label:<40} | {seconds:6.1f} | {100 * seconds / ref.wall_s:4.1f}% |")


if __name__ == "__main__":
    main()
