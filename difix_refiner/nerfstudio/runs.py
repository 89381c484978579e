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


def run_measured(command: Sequence[str], log_path: Path, env: Optional[Dict[str, str]] = None) -> ChildRun:
    """Run a command (with extra environment variables), log its output to a file, return wall time and peak RSS."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        proc = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)  # per-child rusage, unlike RUSAGE_CHILDREN
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"command failed ({proc.returncode}): {shlex.join(command)}\nlast lines of {log_path}:\n{tail}")
    return ChildRun(list(command), wall, usage.ru_maxrss / 2**20)


def ns_train(
    method: str,
    output_dir: Path,
    name: str,
    args: Sequence[str],
    dataparser: str,
    dataparser_args: Sequence[str],
    env: Optional[Dict[str, str]] = None,
) -> ChildRun:
    """``ns-train METHOD --output-dir D --experiment-name E --timestamp '' ARGS DATAPARSER DATAPARSER_ARGS``."""
    command = [
        _script("ns-train"), method,
        "--output-dir", str(output_dir), "--experiment-name", name, "--timestamp", "run",
        "--vis", "tensorboard", *args, dataparser, *dataparser_args,
    ]  # fmt: skip
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
