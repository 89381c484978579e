"""Run ``ns-train`` and ``ns-eval`` as child processes and measure them.

Running the real command lines (rather than nerfstudio's internals in-process) keeps what the demo
reports identical to what a user gets from the same commands, and gives each run its own peak memory.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence


@dataclass
class ChildRun:
    """A finished child process: its command, wall time and peak resident memory."""

    command: List[str]
    wall_s: float
    peak_rss_gb: float


def thread_env(threads: int) -> Dict[str, str]:
    """Environment that caps torch's CPU thread pool (its OpenMP workers spin when cores are shared)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _script(name: str) -> str:
    """A console script installed next to this interpreter (ns-train, ns-eval, ...)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


class RunningChild:
    """A child process started by :func:`start_measured`; :meth:`wait` returns its :class:`ChildRun`."""

    def __init__(self, command: Sequence[str], log_path: Path, env: Optional[Dict[str, str]] = None) -> None:
        self.command = list(command)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._start = time.perf_counter()
        with open(log_path, "w") as log:
            log.write("$ " + shlex.join(self.command) + "\n")
            log.flush()
            self._proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def wait(self) -> ChildRun:
        """Wait for the child; raise ``RuntimeError`` with the end of its log when it failed."""
        _, status, usage = os.wait4(self._proc.pid, 0)  # per-child rusage, unlike RUSAGE_CHILDREN
        self._proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - self._start
        if self._proc.returncode != 0:
            tail = "".join(self.log_path.read_text().splitlines(keepends=True)[-30:])
            raise RuntimeError(
                f"command failed ({self._proc.returncode}): {shlex.join(self.command)}\nlast lines of {self.log_path}:\n{tail}"
            )
        return ChildRun(self.command, wall, usage.ru_maxrss / 2**20)

    def kill(self) -> None:
        """Stop the child if it still runs (e.g. after the other of two parallel runs failed)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def start_measured(command: Sequence[str], log_path: Path, env: Optional[Dict[str, str]] = None) -> RunningChild:
    """Start a command (with extra environment variables) logging to a file; ``.wait()`` gives wall time and peak RSS."""
    return RunningChild(command, log_path, env)


def run_measured(command: Sequence[str], log_path: Path, env: Optional[Dict[str, str]] = None) -> ChildRun:
    """Run a command (with extra environment variables), log its output to a file, return wall time and peak RSS."""
    return start_measured(command, log_path, env).wait()


def ns_train_command(
    method: str, output_dir: Path, name: str, args: Sequence[str], dataparser: str, dataparser_args: Sequence[str]
) -> List[str]:
    """``ns-train METHOD --output-dir D --experiment-name E --timestamp run ARGS DATAPARSER DATAPARSER_ARGS``."""
    return [
        _script("ns-train"), method,
        "--output-dir", str(output_dir), "--experiment-name", name, "--timestamp", "run",
        "--vis", "tensorboard", *args, dataparser, *dataparser_args,
    ]  # fmt: skip


def schedule_args(iterations: int) -> List[str]:
    """ns-train options that decay the learning rates over ``iterations`` steps (the difix-refiner presets
    decay over their own length, so a run with another ``--max-num-iterations`` needs these)."""
    return [
        "--optimizers.means.scheduler.max-steps", str(iterations),
        "--optimizers.camera-opt.scheduler.max-steps", str(iterations),
        "--optimizers.bilateral-grid.scheduler.max-steps", str(iterations),
    ]  # fmt: skip


def ns_train(
    method: str,
    output_dir: Path,
    name: str,
    args: Sequence[str],
    dataparser: str,
    dataparser_args: Sequence[str],
    env: Optional[Dict[str, str]] = None,
) -> ChildRun:
    """Run :func:`ns_train_command` to the end; its log goes to ``output_dir/name/train.log``."""
    command = ns_train_command(method, output_dir, name, args, dataparser, dataparser_args)
    return run_measured(command, output_dir / name / "train.log", env)


def run_config_path(output_dir: Path, name: str, method: str) -> Path:
    """Where ``ns_train`` leaves the run's config.yml."""
    return output_dir / name / method / "run" / "config.yml"


def ns_eval(
    config_path: Path, output_path: Path, render_dir: Optional[Path] = None, env: Optional[Dict[str, str]] = None
) -> Dict[str, float]:
    """``ns-eval`` on a run; returns its averaged held-out metrics (and writes renders to ``render_dir``)."""
    command = [_script("ns-eval"), "--load-config", str(config_path), "--output-path", str(output_path)]
    if render_dir is not None:
        command += ["--render-output-path", str(render_dir)]
    run_measured(command, output_path.with_suffix(".log"), env)
    return {k: float(v) for k, v in json.loads(output_path.read_text())["results"].items()}
