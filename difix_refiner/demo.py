"""``difix-refiner demo``: the README's first command, on the bundled scene.

It trains the ``difix-refiner`` method twice with the same budget, once initialised from LiDAR and
once randomly, evaluates both on held-out frames with ``ns-eval``, prints a table and writes a
report folder (``metrics.json``, a bar chart, and a held-out frame from each run next to the photo).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Literal

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from difix_refiner.nerfstudio.runs import ChildRun, ns_eval, ns_train, run_config_path, thread_env

CONSOLE = Console()
METHOD = "difix-refiner"


@dataclass
class DemoCommand:
    """Train on the bundled PandaSet scene (LiDAR vs random initialisation, same budget) and report held-out PSNR/SSIM."""

    data: Path = Path("examples/pandaset_002")
    """PandaSet folder to train on (the bundled downscaled scene by default)."""
    output_dir: Path = Path("outputs/demo")
    """Folder for the two runs and the report (report/metrics.json, report/*.png)."""
    iterations: int = 300
    """Training iterations per run."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Device for training (cuda uses gsplat's kernels)."""
    threads: int = 1
    """CPU threads per training process. torch's thread pool spins when its cores are busy with other
    work, which made 2 threads 10x slower than 1 on a loaded 2-core machine; raise it on an idle one."""
    seed: int = 42
    """Random seed of both runs."""
    overwrite: bool = False
    """Replace an existing output folder (otherwise the demo refuses to touch it)."""

    def main(self) -> None:
        if not self.data.is_dir():
            raise SystemExit(f"data folder not found: {self.data} (run from the repository root, or pass --data)")
        if self.output_dir.exists() and any(self.output_dir.iterdir()):
            if not self.overwrite:
                raise SystemExit(f"{self.output_dir} already holds results; pass --overwrite to replace them")
            shutil.rmtree(self.output_dir)
        report = self.output_dir / "report"
        report.mkdir(parents=True)

        results: Dict[str, dict] = {}
        for name, lidar in (("lidar_init", True), ("random_init", False)):
            CONSOLE.rule(f"{name}: ns-train {METHOD}, {self.iterations} iterations on {self.device}")
            run = self._train(name, lidar)
            config = run_config_path(self.output_dir, name, METHOD)
            CONSOLE.log(f"{name}: trained in {run.wall_s:.0f} s; evaluating held-out frames with ns-eval")
            metrics = ns_eval(
                config, self.output_dir / name / "eval.json", self.output_dir / name / "renders", thread_env(self.threads)
            )
            results[name] = {
                "heldout": {"psnr": metrics["psnr"], "ssim": metrics["ssim"]},
                "wall_s": run.wall_s,
                "peak_rss_gb": run.peak_rss_gb,
                "config": str(config),
            }
        _write_json(report / "metrics.json", results)
        _plot_metrics(results, report / "heldout_metrics.png")
        self._comparison_image(report / "heldout_frame.png")
        self._print_table(results)
        CONSOLE.print(f"Report written to {report}")

    def _train(self, name: str, lidar: bool) -> ChildRun:
        args = [
            "--machine.device-type", self.device, "--machine.seed", str(self.seed),
            "--max-num-iterations", str(self.iterations), "--steps-per-save", str(self.iterations),
            # This comparison is about initialisation alone: plain splatfacto training, no refine rounds.
            "--pipeline.refine.enabled", "False",
        ]  # fmt: skip
        data_args = ["--data", str(self.data.resolve()), "--load-lidar", str(lidar)]  # absolute: runs load from anywhere
        return ns_train(METHOD, self.output_dir, name, args, "pandaset-data", data_args, thread_env(self.threads))

    def _comparison_image(self, path: Path) -> None:
        """Held-out frame 0: photo | LiDAR-initialised render | randomly initialised render."""
        tiles = []
        for name in ("lidar_init", "random_init"):
            renders = self.output_dir / name / "renders"
            pair = np.asarray(Image.open(sorted(renders.glob("*img*.png"))[0]).convert("RGB"))
            half = pair.shape[1] // 2
            if not tiles:
                tiles.append(pair[:, :half])  # the photo
            tiles.append(pair[:, half:])
        _save_png(path, np.concatenate(tiles, axis=1))

    @staticmethod
    def _print_table(results: Dict[str, dict]) -> None:
        table = Table(title="Held-out frames (every 8th front-camera frame)")
        for col in ("run", "PSNR", "SSIM", "train wall s", "peak RSS GB"):
            table.add_column(col)
        for name, r in results.items():
            table.add_row(name, f"{r['heldout']['psnr']:.2f}", f"{r['heldout']['ssim']:.4f}", f"{r['wall_s']:.0f}", f"{r['peak_rss_gb']:.2f}")
        CONSOLE.print(table)


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _save_png(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(image).save(tmp)
    os.replace(tmp, path)


def _plot_metrics(results: Dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, key in zip(axes, ("psnr", "ssim")):
        values = [results[n]["heldout"][key] for n in names]
        ax.bar(names, values, color=["tab:blue", "tab:gray"])
        ax.set_title(f"held-out {key.upper()}")
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.3f}" if key == "ssim" else f"{v:.2f}", ha="center", va="bottom")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
