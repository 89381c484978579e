"""The demo: baseline splatfacto vs the Difix-style refiner on the bundled scene, same training budget.

It trains ``difix-refiner`` twice with the same budget on the front camera: once as the plain splatfacto
baseline (``--pipeline.refine.enabled False``) and once with the refine loop and a fixer (on the CPU the
shipped ``examples/fixer-small``). Both runs are then evaluated the same way (:func:`evaluate_run`):
held-out front frames, the side cameras the runs never saw (cross-camera), and the drive shifted sideways by
+-1 m and +-2 m, measured against LiDAR. :func:`run_demo` prints a table and writes a report folder.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

from rich.console import Console
from rich.table import Table

from difix_refiner.core import atomic
from difix_refiner.core.errors import InputError
from difix_refiner.core.progress import progress_bar
from difix_refiner.evaluation.contact_sheets import (
    build_contact_sheet,
    build_cross_camera_sheet,
)
from difix_refiner.evaluation.drive_extras import write_geometry_figures
from difix_refiner.evaluation.evaluate_run import RunEvaluation, evaluate_run
from difix_refiner.evaluation.report import write_report
from difix_refiner.evaluation.settings import EvalSettings
from difix_refiner.fixer.options import FixerOptions
from difix_refiner.scene.ns_train import (
    ChildRun,
    ns_train_command,
    run_config_path,
    schedule_args,
    start_measured,
    thread_env,
)

CONSOLE = Console()
REPOSITORY = Path(__file__).resolve().parents[2]
"""The checkout this package runs from (its examples/ hold the bundled scene)."""
RUNS = ("baseline", "refiner")
CURVE_TAG = "Eval Images Metrics Dict (all images)"
"""The tensorboard group nerfstudio logs its whole-eval-split metrics under."""


@dataclass
class DemoConfig(FixerOptions):
    """Baseline splatfacto vs the Difix-style refiner on the bundled PandaSet scene, same training budget.

    Both runs train on the front camera; the front-left and front-right cameras are held out. Reported for
    each run: PSNR/SSIM on held-out front frames and on the side cameras (cross-camera), LiDAR-anchored
    colour PSNR and depth AbsRel/RMSE (metres) of the drive shifted by each offset, training wall time and
    peak memory; held-out and side-camera scores after the fixer too (the "+" step). The --fixer-*
    options choose the refiner's fixer, which also makes the '+ fixer' rows (default: examples/fixer-small
    on cpu, the preset's stabilityai/sd-turbo on cuda). The report folder
    (--output-dir/report) holds metrics.json, a contact sheet (photo | recorded render | shifted render |
    shifted + fixer, for both runs), one of the side cameras (photo | baseline | refiner), a depth contact
    sheet (rendered depth on the path and at the largest offsets, evaluation LiDAR drawn over it), the
    moving-object masks of one frame, a plot of the
    eval-split metrics over training, a bar chart of the final metrics and the full evaluation
    (report/eval/metrics.json)."""

    data: Path = REPOSITORY / "examples" / "pandaset_002"
    """PandaSet folder to train on (the bundled downscaled scene by default)."""
    output_dir: Path = Path("outputs/demo")
    """Folder for the two runs (baseline/, refiner/) and the report (report/)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Training device. cpu uses the difix-refiner-cpu preset (half-size images, short schedule); cuda uses
    the difix-refiner preset (full size, splatfacto's 30k-step schedule, gsplat's kernels): the GPU recipe."""
    iterations: Optional[int] = None
    """Training iterations per run; default: the preset's (cpu 1000, cuda 30000)."""
    offsets: Tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)
    """Lateral offsets (metres, positive = vehicle's left) the refiner steps toward and the evaluation shifts by."""
    eval_frame_stride: int = 4
    """The shifted-drive evaluation uses every n-th training frame of the front camera."""
    cross_camera_stride: int = 1
    """The cross-camera evaluation uses every n-th frame of each side camera (1: all 80 of each)."""
    curve_points: int = 4
    """Evaluations of the whole eval split during training, for the plot of metrics over training (0: none)."""
    parallel: bool = True
    """Train the two runs at the same time, each on --threads threads (on a 2-core CPU: one core each).
    Both runs share the machine the same way, so their times stay comparable."""
    threads: int = 1
    """CPU threads per training process. torch's thread pool spins when its cores are busy with other
    work, which made 2 threads 10x slower than 1 on a loaded 2-core machine."""
    seed: int = 42
    """Random seed of both runs."""
    overwrite: bool = False
    """Replace an existing output folder (otherwise the demo refuses to touch it)."""

    @property
    def method(self) -> str:
        """The preset both runs train with."""
        return "difix-refiner-cpu" if self.device == "cpu" else "difix-refiner"


# ----------------------------------------------------------------------------------------------
# The demo, step by step


def run_demo(config: DemoConfig) -> Dict[str, Dict[str, Any]]:
    """Train, evaluate, print the table and write the report; returns the summary (``report/metrics.json``).

    Raises:
        InputError: bad options, an output folder that holds results (without --overwrite), a fixer that
            does not load.
    """
    check_inputs(config)
    if config.output_dir.exists() and any(config.output_dir.iterdir()):
        if not config.overwrite:
            raise InputError(f"{config.output_dir} already holds results; pass --overwrite to replace them")
        shutil.rmtree(config.output_dir)
    report = config.output_dir / "report"
    report.mkdir(parents=True)

    fixer = load_refiner_fixer(config)  # before training: a fixer that cannot load fails the demo at once
    runs = train_both(config)
    evaluations = evaluate_both(config, fixer, report / "eval")
    summary = {name: summarise(evaluations[name].metrics, runs[name]) for name in RUNS}
    atomic.write_json(report / "metrics.json", summary)
    curves = {name: read_eval_curves(run_config_path(config.output_dir, name, config.method).parent) for name in RUNS}
    atomic.write_json(report / "training_curves.json", curves)
    plot_training_curves(curves, report / "metrics_over_training.png")
    plot_final_metrics(summary, report / "final_metrics.png")
    print_table(summary)
    CONSOLE.print(
        f"Report written to {report} (metrics.json, contact_sheet.png, contact_sheet_cross_camera.png, "
        "depth_contact_sheet.png, moving_object_masks.png, metrics_over_training.png)"
    )
    return summary


def check_inputs(config: DemoConfig) -> None:
    """Refuse bad options before anything is touched."""
    if not config.data.is_dir():
        raise InputError(f"data folder not found: {config.data} (pass --data)")
    if config.iterations is not None and config.iterations < 1:
        raise InputError(f"--iterations must be at least 1, got {config.iterations}")
    if config.fixer_adapter is not None and not Path(config.fixer_adapter).exists():
        raise InputError(f"--fixer-adapter not found: {config.fixer_adapter}")
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch sees no CUDA device here; use --device cpu")


def _preset(method: str) -> Any:
    """The ``TrainerConfig`` of a preset (``difix-refiner-cpu`` or ``difix-refiner``), as ns-train starts from it."""
    from difix_refiner.method_configs import (
        difix_refiner_cpu_trainer_config,
        difix_refiner_trainer_config,
    )

    return difix_refiner_cpu_trainer_config() if method == "difix-refiner-cpu" else difix_refiner_trainer_config()


def refiner_fixer_base(config: DemoConfig) -> Optional[str]:
    """--fixer-base, else the preset's (cpu: examples/fixer-small; cuda: None, i.e. the adapter's base)."""
    if config.fixer_base is not None:
        return config.fixer_base
    return _preset(config.method).pipeline.refine.fixer_base


def load_refiner_fixer(config: DemoConfig) -> Any:
    """The refiner's fixer (as its refine loop loads it), for the evaluation's '+ fixer' rows and agreement metrics."""
    import dataclasses

    from difix_refiner.fixer import DEFAULT_BASE

    options = dataclasses.replace(config, fixer_base=refiner_fixer_base(config))
    fixer, _ = options.load_fixer(default_device=config.device, default_base=DEFAULT_BASE)
    return fixer


def train_args(config: DemoConfig, refine: bool) -> List[str]:
    """ns-train options of one run (the same for both, but for the refine loop and its fixer)."""
    args = ["--machine.device-type", config.device, "--machine.seed", str(config.seed)]
    if config.iterations is not None:
        args += ["--max-num-iterations", str(config.iterations), "--steps-per-save", str(config.iterations)]
        args += schedule_args(config.iterations)
    total = config.iterations or _preset(config.method).max_num_iterations
    # Whole-eval-split metrics a few times during training, for the plot (never at step 0).
    every = math.ceil(total / config.curve_points) if config.curve_points > 0 else 0
    args += ["--steps-per-eval-all-images", str(every)]
    args += ["--pipeline.refine.enabled", str(refine), "--pipeline.refine.targets", "both"]
    args += ["--pipeline.refine.offsets", *[f"{o:g}" for o in config.offsets]]
    if refine:
        base = refiner_fixer_base(config)
        if base is not None:
            args += ["--pipeline.refine.fixer-base", base]
        if config.fixer_adapter is not None:
            args += ["--pipeline.refine.fixer-adapter", str(Path(config.fixer_adapter).resolve())]
        # The other fixer options only when given, so the preset's choices stand otherwise.
        if config.fixer_variant is not None:
            args += ["--pipeline.refine.fixer-variant", config.fixer_variant]
        if config.fixer_device != "auto":
            args += ["--pipeline.refine.fixer-device", config.fixer_device]
        if config.fixer_dtype != "auto":
            args += ["--pipeline.refine.fixer-dtype", config.fixer_dtype]
    return args


def _log_trained(name: str, run: ChildRun) -> None:
    CONSOLE.log(f"{name}: trained in {run.wall_s:.0f} s, peak RSS {run.peak_rss_gb:.2f} GB")


def train_both(config: DemoConfig) -> Dict[str, ChildRun]:
    """Train the baseline and the refiner (at the same time with --parallel); returns their times and memory."""
    # Absolute data path: the run configs then load from any working directory.
    data_args = ["--data", str(config.data.resolve()), "--eval-mode", "interval+cross-camera"]
    env = thread_env(config.threads)
    out = config.output_dir
    commands = {
        name: ns_train_command(config.method, out, name, train_args(config, name == "refiner"), "pandaset-data", data_args)
        for name in RUNS
    }
    CONSOLE.rule(f"ns-train {config.method} on {config.device}: baseline and refiner ({'in parallel' if config.parallel else 'one after the other'})")
    for name in RUNS:
        CONSOLE.log(f"{name}: log in {out / name / 'train.log'}")
    results: Dict[str, ChildRun] = {}
    if config.parallel:
        children = {name: start_measured(commands[name], out / name / "train.log", env) for name in RUNS}
        try:
            for name in RUNS:
                results[name] = children[name].wait()
                _log_trained(name, results[name])
        finally:
            for child in children.values():
                child.kill()
    else:
        for name in RUNS:
            results[name] = start_measured(commands[name], out / name / "train.log", env).wait()
            _log_trained(name, results[name])
    return results


def evaluate_both(config: DemoConfig, fixer: Any, out: Path) -> Dict[str, RunEvaluation]:
    """Evaluate both runs the same way; writes ``out/metrics.json`` and the contact sheets (next to ``out``)."""
    import torch

    from difix_refiner.fixer import DEFAULT_BASE

    torch.set_num_threads(config.threads)
    CONSOLE.rule("evaluation: held-out front frames, side cameras, shifted drives against LiDAR")
    settings = EvalSettings(
        offsets=config.offsets,
        frame_stride=config.eval_frame_stride,
        cross_camera_stride=config.cross_camera_stride,
        seed=config.seed,
    )
    evaluations: Dict[str, RunEvaluation] = {}
    with progress_bar() as progress:
        for name in RUNS:
            first = evaluations.get(RUNS[0])
            evaluations[name] = evaluate_run(
                run_config_path(config.output_dir, name, config.method), settings, label=name, fixer=fixer,
                fixer_name=refiner_fixer_base(config) or DEFAULT_BASE,
                sheet_frames=None if first is None else first.sheet_frames, progress=progress,
            )  # fmt: skip
    full = {name: e.metrics for name, e in evaluations.items()}
    write_report(out, full, build_contact_sheet(list(evaluations.values())))
    with atomic.atomic_path(out.parent / "contact_sheet.png") as tmp:
        shutil.copyfile(out / "contact_sheet.png", tmp)
    write_geometry_figures(out.parent, list(evaluations.values()))  # depth contact sheet, moving-object masks
    cross = build_cross_camera_sheet(list(evaluations.values()))
    if cross is not None:
        with atomic.atomic_path(out.parent / "contact_sheet_cross_camera.png") as tmp:
            cross.save(tmp, format="PNG")
    return evaluations


# ----------------------------------------------------------------------------------------------
# Summary, table and plots


def summarise(metrics: Dict[str, Any], run: ChildRun) -> Dict[str, Any]:
    """One run's entry of the demo's metrics.json (the shape the README documents)."""

    def photo(entry: Optional[Dict[str, Any]]) -> Dict[str, Optional[float]]:
        return {"psnr": None if entry is None else entry["psnr"], "ssim": None if entry is None else entry["ssim"]}

    return {
        "heldout": photo(metrics["heldout"]),
        "cross_camera": photo(metrics["cross_camera"]),
        # The same views after the fixer (the Difix3D+ "+" step): extra keys next to the documented ones.
        "heldout_fixed": photo(metrics["heldout"].get("fixed")),
        "cross_camera_fixed": photo(metrics["cross_camera"].get("fixed")),
        # Photo PSNR over the pixels no moving object's box covers (psnr above is the whole image).
        "heldout_static": {"psnr": metrics["heldout"].get("psnr_static_pixels")},
        "cross_camera_static": {"psnr": metrics["cross_camera"].get("psnr_static_pixels")},
        "shifted": {
            key: {k: entry[k] for k in ("lidar_psnr", "depth_absrel", "depth_rmse")}
            for key, entry in metrics["shifted"].items()
        },
        "wall_s": round(run.wall_s, 1),
        "peak_rss_gb": round(run.peak_rss_gb, 3),
    }


def read_eval_curves(run_dir: Path) -> Dict[str, List[Tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` of nerfstudio's whole-eval-split evaluations in a run's tensorboard log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    curves = {}
    for tag in events.Tags().get("scalars", []):
        if tag.startswith(CURVE_TAG + "/"):
            metric = tag.split("/", 1)[1]
            curves[metric] = [(int(e.step), float(e.value)) for e in events.Scalars(tag)]
    return curves


def _fmt(value: Optional[float], digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_rows(summary: Dict[str, Dict[str, Any]]) -> List[Tuple[str, str, bool]]:
    """(metric label, metric path, higher is better) for every row of the table, in order."""
    rows = [
        ("held-out front PSNR", "heldout.psnr", True),
        ("held-out front SSIM", "heldout.ssim", True),
        ("cross-camera PSNR", "cross_camera.psnr", True),
        ("cross-camera SSIM", "cross_camera.ssim", True),
        ("held-out front PSNR, + fixer", "heldout_fixed.psnr", True),
        ("cross-camera PSNR, + fixer", "cross_camera_fixed.psnr", True),
        ("cross-camera SSIM, + fixer", "cross_camera_fixed.ssim", True),
        ("held-out front PSNR, moving objects left out", "heldout_static.psnr", True),
        ("cross-camera PSNR, moving objects left out", "cross_camera_static.psnr", True),
    ]
    for key in sorted(summary[RUNS[0]]["shifted"], key=float):
        rows += [
            (f"shifted {key} m LiDAR PSNR", f"shifted.{key}.lidar_psnr", True),
            (f"shifted {key} m depth AbsRel", f"shifted.{key}.depth_absrel", False),
            (f"shifted {key} m depth RMSE (m)", f"shifted.{key}.depth_rmse", False),
        ]
    rows += [("training wall time (s)", "wall_s", False), ("training peak RSS (GB)", "peak_rss_gb", False)]
    return rows


def lookup(entry: Dict[str, Any], path: str) -> Optional[float]:
    """``entry`` at a dotted path whose keys may contain dots (``shifted.+1.5.lidar_psnr``)."""
    head, _, rest = path.partition(".")
    if head == "shifted":
        offset, _, metric = rest.rpartition(".")
        return entry["shifted"][offset][metric]
    return entry[head] if not rest else entry[head][rest]


def print_table(summary: Dict[str, Dict[str, Any]]) -> None:
    """The demo's table: one row per metric, one column per run, and which run is better."""
    table = Table(title="difix-refiner demo: baseline vs refiner, same training budget")
    for col in ("metric", *RUNS, "better"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for label, path, higher in table_rows(summary):
        a, b = (lookup(summary[name], path) for name in RUNS)
        digits = 4 if "SSIM" in label or "AbsRel" in label else 2
        winner = "" if a is None or b is None or a == b else (RUNS[1] if (b > a) == higher else RUNS[0])
        table.add_row(label, _fmt(a, digits), _fmt(b, digits), winner)
    CONSOLE.print(table)


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_training_curves(curves: Dict[str, Dict[str, List[Tuple[int, float]]]], path: Path) -> None:
    """PSNR and SSIM of the whole eval split (held-out front frames + side cameras) over training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ("psnr", "ssim")):
        for name, colour in zip(RUNS, ("tab:gray", "tab:blue")):
            points = curves.get(name, {}).get(metric, [])
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o", color=colour, label=name)
        ax.set_xlabel("training step")
        ax.set_title(f"eval split {metric.upper()} (held-out + side cameras)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def plot_final_metrics(summary: Dict[str, Dict[str, Any]], path: Path) -> None:
    """Bar chart of the final metrics, one panel per metric that is better when higher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(label, p) for label, p, higher in table_rows(summary) if higher and "SSIM" not in label and "fixer" not in label]
    panels += [(label, p) for label, p, _ in table_rows(summary) if "AbsRel" in label and "+2" in label]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 3.2))
    for ax, (label, p) in zip(axes, panels):
        values = [lookup(summary[name], p) or 0.0 for name in RUNS]
        ax.bar(RUNS, values, color=["tab:gray", "tab:blue"])
        low = min(values)
        ax.set_ylim(low * 0.9 if "PSNR" in label else 0.0, max(values) * 1.05 if max(values) > 0 else 1.0)
        ax.set_title(label.replace(" m ", " m\n"), fontsize=8)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.2f}" if "PSNR" in label else f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
