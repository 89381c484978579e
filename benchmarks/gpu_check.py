"""One prepared check of the CUDA path: gsplat's kernels, a short GPU training run, the fixer at
576x1024 and SD-Turbo-size LoRA training, each part with its own time limit.

    python benchmarks/gpu_check.py --json outputs/gpu_check.json          # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run --json outputs/dry_run.json  # anywhere, on the CPU

Parts, in this order (each reports ``ok``, ``failed: <reason>`` or ``skipped: <reason>`` and the
check goes on):

1. ``setup``: installs nerfstudio, gsplat, diffusers, tyro and the few packages they import from the
   wheel folder (``--wheels``, default ``.whl/``, filled by ``benchmarks/gpu_wheels.sh``) when they are
   missing, then imports them and records the versions, the GPU and ``nvcc``.
2. ``gsplat``: imports gsplat and builds its CUDA kernels (compiled at first use; the build is timed),
   then runs ``tests/rendering/test_rasterize_gsplat_parity.py``.
3. ``training``: ``ns-train difix-refiner`` on ``examples/pandaset_002`` for a few hundred iterations with
   refine rounds every 100 steps and the shipped ``examples/fixer-small``, then ``ns-eval``: it/s, peak
   GPU memory, held-out PSNR/SSIM, refine rounds and pseudo views written.
4. ``fixer``: the Difix fixer on SD-Turbo's architecture with random weights (nothing is downloaded) at
   576x1024, bf16 and fp16, 0/1/2 reference views: median latency of 20 calls after warm-up and peak
   memory, beside diffusers' one-step img2img pipeline on the same UNet and VAE.
5. ``fixer-training``: 20 ``train-fixer`` steps on a random SD-Turbo-architecture base folder (LoRA,
   bf16, 512x512 crops): step time and peak memory.

``--dry-run`` runs the same parts through the same commands on the CPU at toy sizes (the CPU preset,
the tiny fixer architecture, two train-fixer steps) and lists, per part, what it could not run without
CUDA. The whole GPU check is meant to finish within ``--budget`` seconds (default 470: under 8 minutes
on one H100/H200); each part's limit is cut to what is left of it.

``--json PATH`` writes ``{"mode", "device", "parts": [{"name", "status", "figures", "error", "seconds",
"limit_s", "needs_cuda", "log"}, ...]}`` with one entry per part in the order above. The exit status is
0 when every part is ``ok``. Logs of every command go to ``--workdir`` (default ``outputs/gpu_check``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from gpu_check_runner import Context, PartFailure, PartResult, install_wheels, register_plugin  # noqa: E402
from peak_memory import write_json  # noqa: E402

PART_NAMES = ("setup", "gsplat", "training", "fixer", "fixer-training")
# Per-part limits in seconds (GPU run, dry run). The GPU figures are planned for an H100/H200 with 16
# cores (gsplat's first build takes most of its part); the dry run's are a safety net for slow or busy
# CPUs (its commands take about 90 s of CPU time in all, spread over two cores).
PART_LIMITS = {
    "setup": (90, 180),
    "gsplat": (300, 180),
    "training": (200, 300),
    "fixer": (150, 180),
    "fixer-training": (180, 180),
}
# A dry run's parts after setup in two lanes at once (each lane in order): the CPU run is mostly
# Python start-up and small single-threaded work, and a CI machine has two cores.
DRY_RUN_LANES = (("training",), ("gsplat", "fixer", "fixer-training"))

# --------------------------------------------------------------------------- report


def run_part(ctx: Context, name: str, fn: Callable[[Context, PartResult], None]) -> PartResult:
    """Run one part within its limit; any failure becomes the part's status instead of stopping the check."""
    result = PartResult(name=name, limit_s=round(min(ctx.limits[name], max(ctx.left(), 0.0)), 1))
    result.log = str(ctx.work / "logs" / name)
    if ctx.left() < 5:
        result.status, result.error = "skipped", f"the check's --budget ran out before {name}"
        return result
    print(f"[gpu_check] {name} (limit {result.limit_s:.0f} s) ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        fn(ctx, result)
    except PartFailure as err:
        result.status, result.error = "failed", str(err)
    except Exception as err:  # a bug in the check itself must not hide the other parts
        result.status, result.error = "failed", f"{type(err).__name__}: {err}"[:300]
    result.seconds = round(time.monotonic() - start, 1)
    print(f"[gpu_check] {name}: {status_text(result)} ({result.seconds:.0f} s)", file=sys.stderr, flush=True)
    return result


def run_parts(ctx: Context, selected: list[str], parts: dict[str, Callable], parallel: bool) -> list[PartResult]:
    """Run the selected parts (setup first, alone; the rest in order, or in DRY_RUN_LANES when
    ``parallel``) and return their results in PART_NAMES order."""
    done: dict[str, PartResult] = {}
    if "setup" in selected:
        done["setup"] = run_part(ctx, "setup", parts["setup"])
    else:
        prepare_packages(ctx)
    rest = [n for n in selected if n != "setup"]
    lanes = [[n for n in lane if n in rest] for lane in DRY_RUN_LANES] if parallel else [rest]
    lanes = [lane for lane in lanes if lane]

    def run_lane(lane: list[str]) -> None:
        for name in lane:
            done[name] = run_part(ctx, name, parts[name])

    if lanes:
        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            for future in [pool.submit(run_lane, lane) for lane in lanes]:
                future.result()
    return [done[n] for n in PART_NAMES if n in done]


def prepare_packages(ctx: Context) -> None:
    """What the setup part does to the environment, for runs that leave setup out (--only)."""
    try:
        install_wheels(ctx, ctx.work / "logs" / "setup" / "pip.log")
    except PartFailure as err:
        print(f"[gpu_check] warning: {err}", file=sys.stderr)
    register_plugin(ctx)


def status_text(result: PartResult) -> str:
    return result.status if result.error is None else f"{result.status}: {result.error}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value)) if all(isinstance(v, int) for v in value) else ", ".join(map(str, value))
    return str(value)


def summary_figures(result: PartResult) -> str:
    """The part's scalar figures as ``key=value`` pairs (lists of rows go in their own table)."""
    shown = {k: v for k, v in result.figures.items() if not isinstance(v, (dict, list)) or k == "size"}
    return "; ".join(f"{k}={_fmt(v)}" for k, v in shown.items())


def table(results: list[PartResult], dry_run: bool) -> str:
    """Markdown tables: one row per part, then the fixer's rows when it ran."""
    lines = ["| part | status | s | figures |" + (" not run without CUDA |" if dry_run else ""),
             "|---|---|---:|---|" + ("---|" if dry_run else "")]  # fmt: skip
    for r in results:
        row = f"| {r.name} | {status_text(r)} | {r.seconds:.0f} | {summary_figures(r)} |"
        lines.append(row + (f" {'; '.join(r.needs_cuda) or '-'} |" if dry_run else ""))
    fixer = next((r for r in results if r.name == "fixer" and r.figures.get("rows")), None)
    if fixer is not None:
        lines += ["", f"fixer ({fixer.figures.get('arch')}, {_fmt(fixer.figures.get('size'))}, median of "
                      f"{fixer.figures.get('repeats')} after {fixer.figures.get('warmup')} warm-up calls):", "",
                  "| dtype | ref views | latency ms | img2img ms | ratio | peak MiB | img2img peak MiB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for row in fixer.figures["rows"]:
            lines.append(
                f"| {row['dtype']} | {row['refs']} | {row['latency_ms']:.1f} | {row['img2img_ms']:.1f} | "
                f"{row['latency_ratio']:.2f} | {row['peak_mib']:.0f} | {row['img2img_peak_mib']:.0f} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_limits(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in PART_NAMES or not value:
            raise SystemExit(f"gpu_check: --limit takes PART=SECONDS with PART one of {', '.join(PART_NAMES)}; got {item!r}")
        out[name] = float(value)
    return out


def base_env(repo: Path, dry_run: bool) -> dict[str, str]:
    """The environment of every command: the checkout first on PYTHONPATH, no hub access, unbuffered output."""
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(repo)]
    env["PYTHONPATH"] = os.pathsep.join([str(repo), *parts])
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_OFFLINE"] = "1"  # nothing in the check may download: a missing weight must fail, not fetch
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))  # parallel nvcc jobs for gsplat's build
    env.setdefault("MPLBACKEND", "Agg")
    if shutil.which("nvcc", path=env.get("PATH")) is None and Path("/usr/local/cuda/bin/nvcc").exists():
        env["PATH"] = os.pathsep.join(["/usr/local/cuda/bin", env.get("PATH", "")])  # where CUDA images keep it
    if dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run must not touch a GPU even where there is one
    return env


def main(argv: list[str] | None = None) -> int:
    from gpu_check_parts import PARTS  # beside this file; imports nothing outside the standard library

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="run every part on the CPU at toy sizes")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument("--workdir", type=Path, default=REPO / "outputs" / "gpu_check",
                        help="runs, logs and generated data (replaced parts are overwritten)")  # fmt: skip
    parser.add_argument("--wheels", type=Path, default=REPO / ".whl", help="wheel folder from benchmarks/gpu_wheels.sh")
    parser.add_argument("--site", type=Path, default=None, help="where missing wheels are installed (default WORKDIR/site)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole check (default 470; dry run 900)")
    parser.add_argument("--only", nargs="+", choices=PART_NAMES, default=None, help="run only these parts")
    parser.add_argument("--limit", nargs="+", default=[], metavar="PART=SECONDS", help="override a part's time limit")
    parser.add_argument("--jobs", type=int, default=2,
                        help="dry run only: 2 runs the training part beside the others; a GPU run is always sequential")  # fmt: skip
    args = parser.parse_args(argv)

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    budget = args.budget if args.budget is not None else (900.0 if args.dry_run else 470.0)
    limits = {name: float(PART_LIMITS[name][1 if args.dry_run else 0]) for name in PART_NAMES}
    limits.update(parse_limits(args.limit))
    ctx = Context(
        repo=REPO,
        work=work,
        dry_run=args.dry_run,
        env=base_env(REPO, args.dry_run),
        deadline=time.monotonic() + budget,
        wheels=args.wheels.resolve(),
        site=(args.site or work / "site").resolve(),
        limits=limits,
    )
    started = time.monotonic()
    selected = [n for n in PART_NAMES if args.only is None or n in args.only]
    results = run_parts(ctx, selected, PARTS, parallel=args.dry_run and args.jobs > 1)
    report = {
        "mode": "dry-run (CPU)" if args.dry_run else "cuda",
        "device": ctx.state.get("device", "unknown"),
        "budget_s": budget,
        "total_s": round(time.monotonic() - started, 1),
        "parts": [asdict(r) for r in results],
    }
    print()
    print(f"gpu_check {report['mode']} on {report['device']}: {report['total_s']:.0f} s of a {budget:.0f} s budget")
    print()
    print(table(results, args.dry_run))
    if args.json is not None:
        write_json(str(args.json), report)
        print(f"\nwrote {args.json}")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
