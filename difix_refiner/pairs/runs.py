"""The reconstructions of one make-pairs: train them with ns-train under ``runs/``, then open them.

Every run is a real ``ns-train`` child process (:mod:`difix_refiner.scene.ns_train`), so it is exactly
what a user gets from the same command line, and its folder is kept for inspection.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from difix_refiner.pairs.views import RunViews, dataset_views, pandaset_views
from difix_refiner.scene.ns_train import ns_train, run_config_path
from difix_refiner.scene.run_pipeline import load_pipeline

# splatfacto's reference schedule: the resolution and SH-degree steps below are fractions of it.
_SPLATFACTO_STEPS = 30000
_SPLATFACTO_RESOLUTION_SCHEDULE = 3000
_SPLATFACTO_SH_DEGREE_INTERVAL = 1000


@dataclass
class TrainedRun:
    """A finished ns-train run of make-pairs and how it was made."""

    name: str
    """Its folder name under ``runs/``."""
    config: Path
    """Its ``config.yml``."""
    log: Path
    """Its ns-train log."""
    wall_s: float
    """Training wall time in seconds."""
    iterations: int
    """Training iterations."""
    dataparser: str
    """nerfstudio dataparser it trained with."""
    dataparser_args: List[str]
    """The dataparser's command-line options."""


def last_logged_step(log_path: Path) -> Optional[int]:
    """The last step nerfstudio's progress table printed into a training log (``"120 (40.00%)"``)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    steps = re.findall(r"(\d+) \(\d+\.\d+%\)", tail)
    return int(steps[-1]) if steps else None


@dataclass
class RunTrainer:
    """Trains the runs of one make-pairs (same method, budget, device and seed) and opens them for rendering."""

    runs_dir: Path
    """Folder that holds one sub-folder per run."""
    console: Any
    """rich ``Console`` for the log lines."""
    method: str
    """nerfstudio method to train."""
    iterations: int
    """Training iterations of every run."""
    device: str
    """``"cpu"`` or ``"cuda"``."""
    seed: int
    """Random seed of every run."""
    compress_schedule: bool
    """Scale splatfacto's resolution schedule and SH-degree interval to ``iterations``."""
    refine_loop: bool
    """The method has difix-refiner's refine loop, which make-pairs switches off."""
    extra_train_args: Sequence[str]
    """The user's extra ns-train options, appended last."""
    lidar_max_points: int
    """pandaset-data: at most this many LiDAR seed points per run."""
    extra_dataparser_args: Sequence[str]
    """The user's extra dataparser options, appended last."""
    pandaset: bool
    """The runs use the pandaset-data dataparser."""
    metres_per_scene_unit: Optional[float] = None
    """Other dataparsers: metres per scene unit for reference distances (None: scene units)."""
    runs: Dict[str, TrainedRun] = field(default_factory=dict)
    """Every run trained so far, by name."""
    timings: Dict[str, float] = field(default_factory=dict)
    """Wall times in seconds, by stage (``"train <run>"``, and the renders the caller adds)."""

    def train_args(self, save_every: int) -> List[str]:
        """ns-train options of every run, saving a checkpoint every ``save_every`` steps."""
        args = [
            "--machine.device-type", self.device, "--machine.seed", str(self.seed),
            "--max-num-iterations", str(self.iterations), "--steps-per-save", str(save_every),
            "--save-only-latest-checkpoint", "False",
            # No evaluation during training: it only costs time here.
            "--steps-per-eval-image", "0", "--steps-per-eval-batch", "0", "--steps-per-eval-all-images", "0",
        ]  # fmt: skip
        if self.refine_loop:
            args += ["--pipeline.refine.enabled", "False"]
        if self.compress_schedule:
            # Reach full resolution and all SH degrees at the same fraction of a short run as splatfacto
            # does of its 30k steps (10 % / 20 % and every 1/30), instead of never on a small budget.
            ratio = self.iterations / _SPLATFACTO_STEPS
            args += [
                "--pipeline.model.resolution-schedule", str(max(1, round(_SPLATFACTO_RESOLUTION_SCHEDULE * ratio))),
                "--pipeline.model.sh-degree-interval", str(max(1, round(_SPLATFACTO_SH_DEGREE_INTERVAL * ratio))),
            ]  # fmt: skip
        return args + list(self.extra_train_args)

    def pandaset_args(self, data: Path, cameras: Sequence[str], frame_start: int, frame_end: Optional[int], **extra: Any) -> List[str]:
        """pandaset-data options; each ``extra`` keyword becomes ``--its-name VALUE...``."""
        args = ["--data", str(Path(data).resolve()), "--cameras", *cameras, "--frame-start", str(frame_start)]
        if frame_end is not None:
            args += ["--frame-end", str(frame_end)]
        args += ["--lidar-max-points", str(self.lidar_max_points)]
        for key, value in extra.items():
            flag = "--" + key.replace("_", "-")
            args += [flag, *value] if isinstance(value, (list, tuple)) else [flag, str(value)]
        return args + list(self.extra_dataparser_args)

    def train(self, name: str, dataparser: str, dataparser_args: List[str], save_every: int, progress: Any) -> TrainedRun:
        """``ns-train`` one run under runs/<name>, showing its progress; returns where it lies."""
        log = self.runs_dir / name / "train.log"
        self.console.log(f"[bold]{name}[/]: ns-train {self.method}, {self.iterations} iterations on {self.device}; log: {log}")
        task = progress.add_task(f"train {name}", total=self.iterations)
        result: Dict[str, Any] = {}

        def target() -> None:
            try:
                result["run"] = ns_train(self.method, self.runs_dir, name, self.train_args(save_every), dataparser, dataparser_args)
            except BaseException as exc:  # re-raised in the calling thread
                result["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
            step = last_logged_step(log)
            if step is not None:
                progress.update(task, completed=step + 1)
        if "error" in result:
            raise result["error"]
        progress.update(task, completed=self.iterations)
        config = run_config_path(self.runs_dir, name, self.method)
        run = TrainedRun(name, config, log, result["run"].wall_s, self.iterations, dataparser, list(dataparser_args))
        self.runs[name] = run
        self.timings[f"train {name}"] = run.wall_s
        self.console.log(f"{name}: trained in {run.wall_s:.0f} s; run folder: {config.parent}")
        return run

    def open(self, run: TrainedRun) -> Tuple[Any, Any, RunViews]:
        """``(config, pipeline, views)`` of a trained run, no checkpoint loaded yet (see ``load_checkpoint``)."""
        config, pipeline = load_pipeline(run.config, device=self.device, step=False)
        if self.pandaset:
            views = pandaset_views(run.name, run.config, config, pipeline)
        else:
            views = dataset_views(run.name, run.config, pipeline, self.metres_per_scene_unit)
        return config, pipeline, views
