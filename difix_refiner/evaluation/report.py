"""The ``eval`` report: evaluate one run (or two side by side), write ``metrics.json`` and the contact
sheet atomically, and print a summary.

:class:`EvalConfig` holds the options (the ``eval`` command is this config plus ``main()``);
:func:`evaluate_and_report` is the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from PIL import Image

from difix_refiner.core import atomic
from difix_refiner.core.errors import InputError
from difix_refiner.core.progress import progress_bar
from difix_refiner.evaluation.contact_sheets import build_contact_sheet
from difix_refiner.evaluation.drive_extras import write_geometry_figures
from difix_refiner.evaluation.evaluate_run import RunEvaluation, evaluate_run
from difix_refiner.evaluation.settings import EvalSettings
from difix_refiner.fixer.options import FixerOptions
from difix_refiner.scene.trained_run import check_outputs_free, load_run_config

METRICS_JSON = "metrics.json"
CONTACT_SHEET = "contact_sheet.png"


def output_paths(output_dir: Path) -> List[Path]:
    """The files an evaluation writes into ``output_dir``."""
    return [Path(output_dir) / METRICS_JSON, Path(output_dir) / CONTACT_SHEET]


def check_free(output_dir: Path, overwrite: bool) -> None:
    """Refuse (``InputError``) when results already exist in ``output_dir`` unless ``overwrite``."""
    check_outputs_free(output_paths(output_dir), overwrite)


def write_report(output_dir: Path, metrics: Dict[str, Any], sheet: Optional[Image.Image], overwrite: bool = False) -> List[Path]:
    """Write ``metrics.json`` (and ``contact_sheet.png`` when given) atomically; returns the paths written."""
    check_free(output_dir, overwrite)
    out = Path(output_dir)
    written = []
    if sheet is not None:
        with atomic.atomic_path(out / CONTACT_SHEET) as tmp:
            sheet.save(tmp, format="PNG")
        written.append(out / CONTACT_SHEET)
    atomic.write_json(out / METRICS_JSON, metrics)
    written.append(out / METRICS_JSON)
    return written


@dataclass
class EvalConfig(FixerOptions, EvalSettings):
    """Evaluate a trained pandaset-data run; write metrics.json and contact_sheet.png to --output-dir.

    Held-out photos (every eval_interval-th frame, and the run's eval_cameras, e.g. front-left/right,
    whatever its eval_mode; views it trained on are skipped): PSNR, SSIM, and LPIPS when its weights are
    on disk. Drives shifted sideways by --offsets metres (positive = left), which have no photo: depth
    AbsRel/RMSE against LiDAR, LiDAR-anchored colour PSNR, sharpness (variance of the Laplacian) vs the
    recorded path, fixer agreement, and FID/KID with --inception-weights. Contact-sheet rows: the
    recorded photo; then per run, its render on the recorded path, its render shifted by --sheet-offset,
    and that render after the fixer.
    """

    load_config: Path
    """Path to the run's config.yml (written by ns-train)."""
    output_dir: Optional[Path] = None
    """Folder for metrics.json and contact_sheet.png (default: an 'eval' folder next to the config)."""
    compare_config: Optional[Path] = None
    """A second run's config.yml (e.g. the baseline vs the refiner); both are evaluated the same way and metrics.json is keyed by --label / --compare-label."""
    label: str = "run"
    """Name of the --load-config run in the contact sheet (and in metrics.json with --compare-config)."""
    compare_label: str = "compare"
    """Name of the --compare-config run."""
    overwrite: bool = False
    """Replace metrics.json / contact_sheet.png already in --output-dir."""


def evaluate_and_report(config: EvalConfig) -> Dict[str, Any]:
    """Evaluate and write the report; returns the metrics written (raises ``InputError`` on bad input)."""
    config.checked_offsets()
    out = Path(config.output_dir) if config.output_dir is not None else Path(config.load_config).parent / "eval"
    check_free(out, config.overwrite)  # before the slow part
    for path in (config.load_config, config.compare_config):
        if path is not None:
            load_run_config(path)  # missing file / wrong method fails fast
    if config.compare_config is not None and config.label == config.compare_label:
        raise InputError("--label and --compare-label must differ")
    fixer, reason = config.load_fixer()
    fixer_name = config.fixer_label() if fixer is not None else None
    runs: List[RunEvaluation] = []
    with progress_bar() as progress:
        runs.append(evaluate_run(config.load_config, config, label=config.label, fixer=fixer, fixer_skip_reason=reason, fixer_name=fixer_name, progress=progress))
        if config.compare_config is not None:
            runs.append(
                evaluate_run(
                    config.compare_config, config, label=config.compare_label, fixer=fixer, fixer_skip_reason=reason, fixer_name=fixer_name,
                    sheet_frames=runs[0].sheet_frames, progress=progress,
                )
            )  # fmt: skip
    metrics = runs[0].metrics if len(runs) == 1 else {r.label: r.metrics for r in runs}
    write_report(out, metrics, build_contact_sheet(runs), overwrite=config.overwrite)
    write_geometry_figures(out, runs)  # depth_contact_sheet.png, moving_object_masks.png
    print_summary(runs, out)
    return metrics


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_summary(runs: Sequence[RunEvaluation], out: Path) -> None:
    """One table per run (offsets by metrics), what was skipped, and where the report is."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for run in runs:
        m = run.metrics
        plus = "".join(
            f", {kind} + fixer {_fmt(m[key]['fixed']['psnr'])}"
            for key, kind in (("heldout", "held-out"), ("cross_camera", "cross-camera"))
            if m[key]["fixed"] is not None
        )
        table = Table(
            title=f"{run.label}: held-out PSNR {_fmt(m['heldout']['psnr'])}, cross-camera PSNR {_fmt(m['cross_camera']['psnr'])}{plus}"
        )
        for col in ("offset", "LiDAR PSNR", "+ fixer", "rendered nearer %", "depth AbsRel", "depth RMSE m", "sharpness", "fixer PSNR"):
            table.add_column(col)
        for key, e in [("0 (recorded)", m["recorded"])] + list(m["shifted"].items()):
            fixed = _fmt(e.get("lidar_psnr_fixed"))
            share = e.get("lidar_share_rendered_nearer")
            nearer = _fmt(None if share is None else 100.0 * share, 1)
            table.add_row(key, _fmt(e["lidar_psnr"]), fixed, nearer, _fmt(e["depth_absrel"], 3), _fmt(e["depth_rmse"]), _fmt(e["sharpness"], 1), _fmt(e["fixer_agreement_psnr"]))
        console.print(table)
        for what, why in m["skipped"].items():
            console.print(f"  skipped {what}: {why}")
    console.print(f"Wrote {out / METRICS_JSON} and {out / CONTACT_SHEET}")
