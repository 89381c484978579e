"""Quality benchmark with seeds: the demo's comparison, repeated, as mean ± std per metric.

For every set-up and seed it trains, with ``ns-train`` and the same budget (the demo's recipe,
:func:`difix_refiner.evaluation.demo.train_args`):

- ``baseline``: the plain splatfacto reconstruction (refine loop off);
- ``plain``: the refiner with a plain fixer (``--plain-fixer``, default ``examples/fixer-small-plain``);
- ``hint``: the refiner with a fixer trained with LiDAR hints (``--hint-fixer``, default the shipped
  ``examples/fixer-small``; ``none`` leaves it out);

and scores them the same way; ``plus`` is the Difix3D+ "+" step: the hint refiner's renders put through
its fixer (with each camera's LiDAR hint from the run's training sweeps and the nearest training photo as
reference), or the plain refiner's through the plain fixer when no hint fixer is given. Metrics:

- held-out PSNR / SSIM (every 8th frame of the training cameras), over all of them and over ``--test-frames``;
- cross-camera PSNR / SSIM over all frames and over ``--test-frames`` (default 60-79, the frames no shipped
  fixer trained on), for cameras the run never trained on;
- for each ``--offsets`` shift: LiDAR-anchored colour PSNR and depth AbsRel / RMSE (metres), as ``eval``
  (evaluation sweeps only); the "+" step has the LiDAR PSNR of the fixed renders (a fixer leaves depth alone)
  and, in ``quality.json``, the fixer's mean change inside moving objects' boxes and outside them (ghosts);
- training wall time.

Set-ups (``--setups``): ``demo`` (front camera only, the side cameras held out, refine targets ``both``:
the demo's) and ``rig`` (all three bundled cameras, every 8th frame held out, refine targets ``offsets``).

Writes ``OUTPUT/quality.json`` (every per-seed value and the summaries) and ``OUTPUT/quality.md`` (one
table per set-up, with the machine and the command); prints the tables. Runs already trained under
``OUTPUT``, and their scores (``quality_scores.json`` beside each run's config), are reused unless
``--overwrite``: seeds can be run in parallel processes (``--first-seed S --seeds 1``, one each) and
tabled by one more call with ``--seeds 3``, and ``--systems baseline`` trains the baselines while the
fixers are still training. Run ``python benchmarks/quality.py --help`` for options.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from difix_refiner.evaluation.demo import DemoConfig, train_args  # noqa: E402
from difix_refiner.evaluation.settings import EvalSettings  # noqa: E402
from difix_refiner.scene.ns_train import ns_train_command, run_config_path, start_measured, thread_env  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SETUPS = ("demo", "rig")
SYSTEMS = ("baseline", "plain", "hint", "plus")
TRAINED = ("baseline", "plain", "hint")
"""The systems that are trained runs (``plus`` is the fixer applied to one of them)."""
SYSTEM_LABELS = {"baseline": "baseline", "plain": "refiner, plain fixer", "hint": "refiner, hint fixer", "plus": '"+" step'}
RIG_CAMERAS = ("front_camera", "front_left_camera", "front_right_camera")

Metrics = Dict[str, Optional[float]]
"""Flat metrics of one run: ``{"heldout.psnr": 24.1, "shifted.+2.lidar_psnr": 19.3, ...}`` (None: not measured)."""


# ----------------------------------------------------------------------------------------------
# Options


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The benchmark's options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (--first-seed, +1, ...)")
    p.add_argument("--first-seed", type=int, default=42, help="first seed (the demo's)")
    p.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS), help="set-ups to run")
    p.add_argument("--systems", nargs="+", choices=TRAINED, default=list(TRAINED),
                   help="runs to train and score ('plus' follows from a refiner); e.g. 'baseline' alone while the fixers train")  # fmt: skip
    p.add_argument("--plain-fixer", default=str(REPO / "examples" / "fixer-small-plain"),
                   help="fixer of the 'plain' refiner, as --fixer-base takes it (a saved fixer folder, 'tiny', a hub id)")  # fmt: skip
    p.add_argument("--hint-fixer", default=str(REPO / "examples" / "fixer-small"),
                   help="fixer trained with LiDAR hints (as --fixer-base takes it); none: no 'hint' runs")  # fmt: skip
    p.add_argument("--data", type=Path, default=REPO / "examples" / "pandaset_002", help="PandaSet folder")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu: difix-refiner-cpu preset; cuda: difix-refiner")
    p.add_argument("--iterations", type=int, default=None, help="training iterations per run (default: the preset's)")
    p.add_argument("--offsets", type=float, nargs="+", default=[-2.0, -1.0, 1.0, 2.0], help="lateral offsets in metres")
    p.add_argument("--test-frames", type=int, nargs=2, default=[60, 80], metavar=("START", "END"),
                   help="cross-camera frames also scored on their own (end exclusive)")  # fmt: skip
    p.add_argument("--eval-frame-stride", type=int, default=4, help="shifted drives use every n-th front frame")
    p.add_argument("--cross-camera-stride", type=int, default=1, help="every n-th frame of each side camera")
    p.add_argument("--lidar-data", type=Path, default=None,
                   help="PandaSet folder whose (denser) sweeps the LiDAR metrics read, same world frame; the run's evaluation-sweep split still picks them (default: the run's data)")
    p.add_argument("--occlusion-radius-px", type=int, default=EvalSettings().occlusion_radius_px,
                   help="LiDAR z-buffer occlusion radius of the LiDAR metrics (difix-refiner eval's option)")
    p.add_argument("--dataparser-args", default="", help="extra pandaset-data options, e.g. '--frame-start 40 --frame-end 48'")
    p.add_argument("--train-args", default="", help="extra ns-train options for every run")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per training and for the evaluation")
    p.add_argument("--output-dir", type=Path, default=Path("outputs/quality"), help="runs, quality.json, quality.md")
    p.add_argument("--overwrite", action="store_true", help="train every run again (otherwise finished runs are reused)")
    p.add_argument("--table-only", action="store_true",
                   help="train nothing: score and table the runs already trained under --output-dir (the others are n/a)")  # fmt: skip
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.test_frames[0] >= args.test_frames[1]:
        p.error("--test-frames START END needs START < END")
    if args.hint_fixer is not None and args.hint_fixer.lower() == "none":
        args.hint_fixer = None
    return args


def seeds_of(args: argparse.Namespace) -> List[int]:
    """The seeds, in order."""
    return [args.first_seed + i for i in range(args.seeds)]


def systems_of(args: argparse.Namespace) -> List[str]:
    """The systems compared, in table order (``hint`` only with a hint fixer; ``plus`` with either refiner)."""
    wanted = [s for s in args.systems if s != "hint" or args.hint_fixer is not None]
    if "plain" in wanted or "hint" in wanted:
        wanted.append("plus")
    return [s for s in SYSTEMS if s in wanted]


def plus_source(systems: Sequence[str]) -> Optional[str]:
    """The refiner whose renders the "+" step fixes: the hint refiner if there is one (None: no refiner)."""
    return "hint" if "hint" in systems else "plain" if "plain" in systems else None


def method_of(args: argparse.Namespace) -> str:
    """The preset every run trains with."""
    return "difix-refiner-cpu" if args.device == "cpu" else "difix-refiner"


# ----------------------------------------------------------------------------------------------
# Training


def data_args(args: argparse.Namespace, setup: str) -> List[str]:
    """pandaset-data options of a set-up."""
    base = ["--data", str(Path(args.data).resolve())]
    if setup == "demo":
        base += ["--eval-mode", "interval+cross-camera"]  # front camera; side cameras held out (the demo's)
    else:
        base += ["--cameras", *RIG_CAMERAS, "--eval-mode", "interval", "--eval-interval", "8"]
    return base + shlex.split(args.dataparser_args)


def run_args(args: argparse.Namespace, setup: str, seed: int, fixer: Optional[str]) -> List[str]:
    """ns-train options of one run: the demo's (``fixer`` None: the baseline), refine targets per set-up."""
    config = DemoConfig(
        data=args.data, device=args.device, iterations=args.iterations, offsets=tuple(args.offsets),
        curve_points=0, seed=seed, fixer_base=fixer, fixer_device=args.device,
    )  # fmt: skip
    out = train_args(config, refine=fixer is not None)
    at = out.index("--pipeline.refine.targets")
    out[at + 1] = "both" if setup == "demo" else "offsets"
    return out + shlex.split(args.train_args)


def run_fixer(args: argparse.Namespace, system: str) -> Optional[str]:
    """The fixer a system's run trains with (None: the baseline)."""
    return {"baseline": None, "plain": args.plain_fixer, "hint": args.hint_fixer}[system]


def finished(config_path: Path) -> bool:
    """A run trained to the end (its config and a checkpoint are there)."""
    models = config_path.parent / "nerfstudio_models"
    return config_path.is_file() and models.is_dir() and any(models.glob("step-*.ckpt"))


def train_runs(args: argparse.Namespace, setup: str, seed: int) -> Dict[str, Tuple[Path, Optional[float]]]:
    """Train (or reuse) the runs of one set-up and seed: ``{system: (config.yml, wall seconds or None if reused)}``."""
    out = Path(args.output_dir) / setup / f"seed-{seed}"
    method = method_of(args)
    runs: Dict[str, Tuple[Path, Optional[float]]] = {}
    for system in [s for s in systems_of(args) if s != "plus"]:
        config = run_config_path(out, system, method)
        if finished(config) and not args.overwrite:
            print(f"[{setup} seed {seed}] {system}: reusing {config}", flush=True)
            runs[system] = (config, _logged_wall(out / system))
            continue
        if args.table_only:
            print(f"[{setup} seed {seed}] {system}: not trained (--table-only): n/a", flush=True)
            continue
        if (out / system).exists():
            shutil.rmtree(out / system)
        command = ns_train_command(method, out, system, run_args(args, setup, seed, run_fixer(args, system)), "pandaset-data", data_args(args, setup))
        print(f"[{setup} seed {seed}] {system}: ns-train {method} (log: {out / system / 'train.log'})", flush=True)
        child = start_measured(command, out / system / "train.log", thread_env(args.threads)).wait()
        (out / system / "wall_s.json").write_text(json.dumps({"wall_s": child.wall_s, "peak_rss_gb": child.peak_rss_gb}))
        runs[system] = (config, child.wall_s)
    return runs


def _logged_wall(run_dir: Path) -> Optional[float]:
    path = run_dir / "wall_s.json"
    return float(json.loads(path.read_text())["wall_s"]) if path.is_file() else None


# ----------------------------------------------------------------------------------------------
# Evaluation


def load_fixer(spec: str, device: str) -> Any:
    """A fixer as the refine loop loads it (``spec`` as --fixer-base takes it)."""
    from difix_refiner.fixer.options import FixerOptions

    fixer, reason = FixerOptions(fixer_base=spec, fixer_device=device).load_fixer(default_device=device)
    if fixer is None:
        raise SystemExit(f"cannot load the fixer {spec!r}: {reason}")
    return fixer


def photo_scores(run: Any, views: List[Tuple[str, np.ndarray]], fixer: Any) -> List[Dict[str, Any]]:
    """PSNR / SSIM of every view's render against its photo and, with ``fixer``, of the fixed render.

    The fixer gets the nearest training photo by pose as reference (the one picker) and, when it was trained
    with hints, the LiDAR hint of the view's camera from the run's seed points (the refine loop's hint).
    """
    from difix_refiner.core import image_metrics as im
    from difix_refiner.evaluation.photo_metrics import PhotoViewFixing
    from difix_refiner.evaluation.runs import camera_matrix, pandaset_cameras
    from difix_refiner.fixer.render_fixing import read_photo
    from difix_refiner.scene.run_pipeline import render_camera

    mpsu = run.recorded.metres_per_scene_unit
    fixing = PhotoViewFixing.of(run, fixer) if fixer is not None else None
    scores = []
    for name, frames in views:
        cams, paths = pandaset_cameras(run, name, frames)
        for i, frame in enumerate(frames.tolist()):
            _, w, h = camera_matrix(cams, i)
            render = render_camera(run.pipeline, cams[i : i + 1], mpsu).rgb
            photo = read_photo(paths[i], w, h)
            entry = {"camera": name, "frame": int(frame), "psnr": im.psnr(render, photo), "ssim": im.ssim(render, photo)}
            if fixing is not None:
                fixed = fixing(render, cams, i)
                entry.update(fixed_psnr=im.psnr(fixed, photo), fixed_ssim=im.ssim(fixed, photo))
            scores.append(entry)
    return scores


def _mean(scores: List[Dict[str, Any]], key: str, frames: Optional[Tuple[int, int]] = None) -> Optional[float]:
    values = [s[key] for s in scores if key in s and (frames is None or frames[0] <= s["frame"] < frames[1])]
    return float(np.mean(values)) if values else None


def score_settings(args: argparse.Namespace, seed: int, fixer_spec: Optional[str]) -> Dict[str, Any]:
    """What a run's scores depend on besides the run itself (a cached score is reused only when they match)."""
    settings = {
        "offsets": [float(o) for o in args.offsets], "test_frames": list(args.test_frames), "seed": seed,
        "eval_frame_stride": args.eval_frame_stride, "cross_camera_stride": args.cross_camera_stride, "fixer": fixer_spec,
    }  # fmt: skip
    lidar = Path(args.lidar_data if args.lidar_data is not None else args.data)
    settings.update(lidar_sweeps=lidar_digest(lidar), occlusion_radius_px=args.occlusion_radius_px)
    return settings


def lidar_digest(data: Path) -> str:
    """SHA-1 over the names and bytes of the sweep files in ``data/lidar``: scores against other LiDAR truth are not reused."""
    digest = hashlib.sha1()
    for path in sorted((data / "lidar").glob("*.npz")) + sorted((data / "lidar").glob("*.pkl.gz")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def evaluate(args: argparse.Namespace, config_path: Path, seed: int, fixer: Any = None, fixer_spec: Optional[str] = None) -> Tuple[Metrics, Metrics]:
    """Score one run: (its metrics, the metrics of its renders after ``fixer``, the "+" step; empty without one).

    The scores are kept in ``quality_scores.json`` beside the run's config and reused while the settings
    (:func:`score_settings`) match and ``--overwrite`` is not given, so seeds scored in parallel processes
    can be tabled by one more call. The run's own metrics do not depend on the fixer: scores kept with one
    serve a call without one (the "+" step's are reused only for the same fixer).
    """
    from difix_refiner.core import atomic

    cache = config_path.parent / "quality_scores.json"
    settings = score_settings(args, seed, fixer_spec if fixer is not None else None)
    if cache.is_file() and not args.overwrite:
        kept = json.loads(cache.read_text())
        same_run = {**kept.get("settings", {}), "fixer": None} == {**settings, "fixer": None}
        if same_run and (fixer is None or kept["settings"]["fixer"] == settings["fixer"]):
            print(f"  reusing the scores in {cache}", flush=True)
            return kept["metrics"], (kept["fixed"] if fixer is not None else {})
    metrics, fixed = score_run(args, config_path, seed, fixer)
    atomic.write_json(cache, {"settings": settings, "metrics": metrics, "fixed": fixed})
    return metrics, fixed


def score_run(args: argparse.Namespace, config_path: Path, seed: int, fixer: Any) -> Tuple[Metrics, Metrics]:
    """The scores of :func:`evaluate`, computed."""
    from difix_refiner.core.progress import NoProgress
    from difix_refiner.evaluation.runs import cross_camera_views, heldout_views, load_run, run_frame_range
    from difix_refiner.evaluation.shifted import DrivePlan, drive_metrics, evaluate_drive
    from difix_refiner.fixer.render_fixing import takes_hints

    run = load_run(config_path, seed_points=fixer is not None and takes_hints(fixer))
    dp = run.config.pipeline.datamanager.dataparser
    frames = run_frame_range(dp, run.data)
    held, _ = heldout_views(dp, frames, run.trained)
    cross, _ = cross_camera_views(dp, frames, run.trained, run.data, args.cross_camera_stride)
    test = tuple(args.test_frames)
    metrics: Metrics = {}
    fixed: Metrics = {}
    for group, views in (("heldout", held), ("cross_camera", cross)):
        scores = photo_scores(run, views, fixer)
        for key, frame_range in ((group, None), (f"{group}_test", test)):
            for metric in ("psnr", "ssim"):
                metrics[f"{key}.{metric}"] = _mean(scores, metric, frame_range)
                if fixer is not None:
                    fixed[f"{key}.{metric}"] = _mean(scores, f"fixed_{metric}", frame_range)
    settings = EvalSettings(
        offsets=tuple(args.offsets), frame_stride=args.eval_frame_stride, seed=seed, lidar_data=args.lidar_data,
        occlusion_radius_px=args.occlusion_radius_px,
    )  # fmt: skip
    offsets = settings.checked_offsets()
    camera = run.recorded.resolve_camera(None)
    selection = run.recorded.select(camera)[:: args.eval_frame_stride]
    plan = DrivePlan(camera, selection, offsets, [], settings.shown_offset(offsets), keep_renders=False)
    drive = evaluate_drive(run, settings, plan, fixer, NoProgress(), str(config_path))
    _, shifted = drive_metrics(drive, offsets, None, None, seed)
    for key, entry in shifted.items():
        for metric in ("lidar_psnr", "depth_absrel", "depth_rmse", "lidar_share_rendered_nearer", "lidar_psnr_not_rendered_nearer"):
            metrics[f"shifted.{key}.{metric}"] = entry[metric]
        if fixer is not None:  # the fixer changes colour, not geometry: the "+" step has no depth rows of its own
            fixed[f"shifted.{key}.lidar_psnr"] = entry["lidar_psnr_fixed"]
            for where in ("moving", "static"):  # the ghost check: its change inside moving boxes against outside
                fixed[f"shifted.{key}.fixer_change_{where}"] = entry.get(f"fixer_change_{where}")
    return metrics, fixed


def evaluate_seed(args: argparse.Namespace, setup: str, seed: int, fixers: Dict[str, Any]) -> Dict[str, Metrics]:
    """Train (or reuse) and score every system of one set-up and seed."""
    runs = train_runs(args, setup, seed)
    plus_from = plus_source(systems_of(args))  # missing that run (--table-only): no "+" step for this seed
    out: Dict[str, Metrics] = {}
    for system, (config, wall) in runs.items():
        print(f"[{setup} seed {seed}] scoring {system}", flush=True)
        plus = system == plus_from
        metrics, fixed = evaluate(args, config, seed, fixers[system] if plus else None, run_fixer(args, system) if plus else None)
        out[system] = {**metrics, "wall_s": wall}
        if plus:
            out["plus"] = fixed
    return out


# ----------------------------------------------------------------------------------------------
# Summary, tables


def metric_rows(offsets: Sequence[float]) -> List[Tuple[str, str, bool]]:
    """(key, label, higher is better) of every table row, in order."""
    rows = [
        ("heldout.psnr", "held-out PSNR", True),
        ("heldout.ssim", "held-out SSIM", True),
        ("heldout_test.psnr", "held-out PSNR, test frames", True),
        ("heldout_test.ssim", "held-out SSIM, test frames", True),
        ("cross_camera.psnr", "cross-camera PSNR, all frames", True),
        ("cross_camera.ssim", "cross-camera SSIM, all frames", True),
        ("cross_camera_test.psnr", "cross-camera PSNR, test frames", True),
        ("cross_camera_test.ssim", "cross-camera SSIM, test frames", True),
    ]
    for offset in sorted(offsets):
        key = f"{offset:+g}"
        rows += [
            (f"shifted.{key}.lidar_psnr", f"shifted {key} m LiDAR PSNR", True),
            (f"shifted.{key}.depth_absrel", f"shifted {key} m depth AbsRel", False),
            (f"shifted.{key}.depth_rmse", f"shifted {key} m depth RMSE (m)", False),
            (f"shifted.{key}.lidar_share_rendered_nearer", f"shifted {key} m LiDAR points rendered nearer", False),
        ]
    return rows + [("wall_s", "training wall time (s)", False)]


def mean_std(values: Sequence[Optional[float]]) -> Dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the measured values."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    std = float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0
    return {"mean": float(np.mean(kept)), "std": std, "n": len(kept), "values": list(values)}


def summarise(per_seed: Dict[int, Dict[str, Metrics]], systems: Sequence[str], keys: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """``{system: {metric: mean_std}}`` over the seeds."""
    return {
        system: {key: mean_std([per_seed[s].get(system, {}).get(key) for s in sorted(per_seed)]) for key in keys}
        for system in systems
    }


def _fewer_seeds(entry: Dict[str, Any]) -> str:
    """`` (n=k)`` when a :func:`mean_std` entry was measured on fewer seeds than asked, else empty."""
    return f" (n={entry['n']})" if entry["n"] < len(entry["values"]) else ""


def _digits(label: str) -> int:
    """Decimals a row's values are printed with."""
    return 4 if ("SSIM" in label or "AbsRel" in label or "rendered nearer" in label) else 1 if "wall" in label else 2


def _cell(entry: Dict[str, Any], label: str) -> str:
    if entry["mean"] is None:
        return "n/a"
    digits = _digits(label)
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}{_fewer_seeds(entry)}"


def markdown_table(summary: Dict[str, Dict[str, Any]], systems: Sequence[str], offsets: Sequence[float]) -> str:
    """One row per metric, one column per system: ``mean ± std``."""
    lines = ["| metric | " + " | ".join(SYSTEM_LABELS[s] for s in systems) + " |"]
    lines.append("|---|" + "---:|" * len(systems))
    for key, label, higher in metric_rows(offsets):
        arrow = "↑" if higher else "↓"
        lines.append(f"| {label} {arrow} | " + " | ".join(_cell(summary[s][key], label) for s in systems) + " |")
    return "\n".join(lines)


RELATIVE = ("depth_absrel", "depth_rmse", "wall_s")
"""Metrics whose change over the baseline is given in percent (the others as differences)."""


def _relative(key: str) -> bool:
    return key.split(".")[-1] in RELATIVE


def paired_gains(per_seed: Dict[int, Dict[str, Metrics]], systems: Sequence[str], keys: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """``{system: {metric: mean_std of the per-seed change over that seed's baseline}}`` (every system but the
    baseline; a difference, or a percentage for :data:`RELATIVE` metrics). A seed where either is missing is None."""
    out: Dict[str, Dict[str, Any]] = {}
    for system in [s for s in systems if s != "baseline"]:
        out[system] = {}
        for key in keys:
            changes: List[Optional[float]] = []
            for seed in sorted(per_seed):
                value, base = per_seed[seed].get(system, {}).get(key), per_seed[seed].get("baseline", {}).get(key)
                if value is None or base is None:
                    changes.append(None)
                    continue
                changes.append(100.0 * (value - base) / base if _relative(key) else value - base)
            out[system][key] = mean_std(changes)
    return out


def gains_table(gains: Dict[str, Dict[str, Any]], offsets: Sequence[float]) -> str:
    """One row per metric, one column per system: its mean ± std change over the baseline, paired by seed."""
    systems = list(gains)
    lines = ["| change over the baseline | " + " | ".join(SYSTEM_LABELS[s] for s in systems) + " |"]
    lines.append("|---|" + "---:|" * len(systems))
    for key, label, higher in metric_rows(offsets):
        arrow = "↑" if higher else "↓"
        cells = []
        for system in systems:
            e = gains[system].get(key, {"mean": None})
            if e["mean"] is None:
                cells.append("n/a")
            else:
                digits = 1 if _relative(key) else _digits(label)  # percent changes: one decimal
                unit = "%" if _relative(key) else ""
                cells.append(f"{e['mean']:+.{digits}f}{unit} ± {e['std']:.{digits}f}{_fewer_seeds(e)}")
        lines.append(f"| {label} {arrow} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> Dict[str, Any]:
    """The CPU model, core count and platform (the tables name the machine)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # no torch build with CUDA: none
        gpu = None
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(), "gpu": gpu}


def write_report(args: argparse.Namespace, results: Dict[str, Any], command: str) -> Tuple[Path, Path]:
    """``quality.json`` and ``quality.md`` in the output folder; returns their paths."""
    from difix_refiner.core import atomic

    out = Path(args.output_dir)
    json_path, md_path = out / "quality.json", out / "quality.md"
    atomic.write_json(json_path, results)
    info = results["machine"]
    parts = [
        "# Quality benchmark",
        "",
        f"Machine: {info['cpu']} ({info['cores']} cores){', GPU ' + info['gpu'] if info['gpu'] else ''}; {info['platform']}.",
        f"Command: `{command}`",
        f"Seeds: {', '.join(map(str, results['seeds']))}; mean ± standard deviation over the seeds (n/a: not measured).",
        f"Test frames of the cross-camera rows: [{results['test_frames'][0]}, {results['test_frames'][1]}).",
    ]
    if results["plus_from"] is not None:
        parts.append(f"The \"+\" step: the renders of the {results['plus_from']} refiner after its fixer.")
    for setup, entry in results["setups"].items():
        parts += ["", f"## Set-up `{setup}`", "", markdown_table(entry["summary"], results["systems"], args.offsets)]
        if entry.get("gains"):
            parts += ["", "Change over the baseline, paired by seed (mean ± std of the per-seed changes; depth and time in percent):",
                      "", gains_table(entry["gains"], args.offsets)]  # fmt: skip
    with atomic.atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return json_path, md_path


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the benchmark; returns what ``quality.json`` holds."""
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/quality.py", *(sys.argv[1:] if argv is None else argv)])  # as run from the repository root
    systems = systems_of(args)
    fixers = {}  # loaded before training: a bad fixer fails at once
    if "plain" in systems:
        fixers["plain"] = load_fixer(args.plain_fixer, args.device)
    if "hint" in systems:
        fixers["hint"] = load_fixer(args.hint_fixer, args.device)
        if not fixers["hint"].config.uses_hint:
            raise SystemExit(f"--hint-fixer {args.hint_fixer} was trained without LiDAR hints (hint_channels 0)")
    keys = [key for key, _, _ in metric_rows(args.offsets)]
    results: Dict[str, Any] = {
        "command": command, "machine": machine(), "seeds": seeds_of(args), "systems": systems,
        "test_frames": list(args.test_frames), "plus_from": plus_source(systems),
        "fixers": {"plain": args.plain_fixer, "hint": args.hint_fixer}, "setups": {},
    }  # fmt: skip
    for setup in args.setups:
        per_seed = {seed: evaluate_seed(args, setup, seed, fixers) for seed in seeds_of(args)}
        summary = summarise(per_seed, systems, keys)
        gains = paired_gains(per_seed, systems, keys) if "baseline" in systems else {}
        results["setups"][setup] = {"per_seed": {str(s): v for s, v in per_seed.items()}, "summary": summary, "gains": gains}
        tables = markdown_table(summary, systems, args.offsets) + ("\n\n" + gains_table(gains, args.offsets) if gains else "")
        print(f"\n## Set-up {setup} ({len(per_seed)} seeds)\n\n" + tables, flush=True)
    json_path, md_path = write_report(args, results, command)
    print(f"\nwritten: {json_path}, {md_path}")
    return results


if __name__ == "__main__":
    main()
