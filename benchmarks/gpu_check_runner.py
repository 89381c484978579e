"""Running the parts of ``benchmarks/gpu_check.py``: the shared context, commands with time limits,
and installing missing packages from the wheel folder.

Only the standard library is imported here: the check must start before nerfstudio, gsplat,
diffusers or tyro are importable (it installs them).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What the check imports itself or through the tools it runs; missing ones come from the wheel folder.
REQUIRED_MODULES = ("nerfstudio", "gsplat", "diffusers", "tyro")
PLUGIN_METHODS = {
    "difix-refiner": "difix_refiner.method_configs:difix_refiner_method",
    "difix-refiner-cpu": "difix_refiner.method_configs:difix_refiner_cpu_method",
}
PLUGIN_DATAPARSERS = {"pandaset-data": "difix_refiner.data.pandaset_dataparser:pandaset_dataparser"}


class PartFailure(Exception):
    """A part could not finish; the message is its one-line reason."""


@dataclass
class PartResult:
    """One part's entry of the report."""

    name: str
    status: str = "ok"
    """'ok', 'failed' or 'skipped'."""
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    limit_s: float = 0.0
    needs_cuda: list[str] = field(default_factory=list)
    """What this part could not run on the CPU (dry run only)."""
    log: str | None = None


@dataclass
class Context:
    """What every part needs: where things are, the mode, the environment of its commands."""

    repo: Path
    work: Path
    dry_run: bool
    env: dict[str, str]
    deadline: float
    """time.monotonic() by which the whole check must end."""
    wheels: Path
    site: Path
    limits: dict[str, float]
    state: dict[str, Any] = field(default_factory=dict)
    """Facts one part leaves for a later one (e.g. whether gsplat's kernels built)."""

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"

    def python(self) -> str:
        return sys.executable

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class ToolRun:
    """A finished command: exit status, wall time and where its output went."""

    returncode: int
    wall_s: float
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# --------------------------------------------------------------------------- running commands


def failure_reason(text: str, fallback: str) -> str:
    """The most telling line of a failed command's output: its last Python error line, else the title and
    first line of its last rich/tyro message box (``╭─ Unrecognized options ─╮``), else its last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    error = re.compile(r"^([\w.]*(Error|Exception|Interrupt)\b|.*\berror:|FAILED|Killed)")
    for line in reversed(lines):
        if error.search(line):
            return line[:300]
    boxes = [i for i, ln in enumerate(lines) if ln.startswith("╭─")]
    if boxes:
        title = lines[boxes[-1]].strip("╭╮─ ")
        inner = next((ln.strip("│ ") for ln in lines[boxes[-1] + 1 :] if ln.strip("│─╰╯ ")), "")
        return f"{title}: {inner}"[:300]
    return lines[-1][:300] if lines else fallback


def run_tool(
    ctx: Context,
    args: list[str],
    log: Path,
    limit_s: float,
    what: str,
    on_poll: Callable[[], None] | None = None,
    cwd: Path | None = None,
) -> ToolRun:
    """Run ``args`` with the check's environment, output to ``log``, killed after ``limit_s``.

    Raises PartFailure (with the command's telling line) when it fails or runs out of time.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as out:
        out.write("$ " + " ".join(args) + "\n")
        out.flush()
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=ctx.env, cwd=str(cwd or ctx.repo), start_new_session=True
        )
        try:
            while True:
                try:
                    proc.wait(timeout=0.02)
                    break
                except subprocess.TimeoutExpired:
                    if on_poll is not None:
                        on_poll()
                    if time.monotonic() - start > limit_s:
                        _stop(proc)
                        raise PartFailure(f"{what} timed out after {limit_s:.0f} s (see {log})") from None
        finally:
            if proc.poll() is None:
                _stop(proc)
    run = ToolRun(proc.returncode, time.monotonic() - start, log)
    if on_poll is not None:
        on_poll()
    if run.returncode != 0:
        raise PartFailure(f"{what} exited with {run.returncode}: {failure_reason(run.text(), 'no output')}")
    return run


def _stop(proc: subprocess.Popen) -> None:
    """End the command and everything it started (its own process group), politely first."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def python_json(ctx: Context, code: str, log: Path, limit_s: float, what: str, args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run a Python snippet (``args`` in its sys.argv[1:]) that prints one JSON object on its last output
    line; return that object."""
    run = run_tool(ctx, [ctx.python(), "-c", code, *args], log, limit_s, what)
    for line in reversed(run.text().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise PartFailure(f"{what} printed no result (see {log})")


# --------------------------------------------------------------------------- packages


def missing_modules(names: tuple[str, ...] = REQUIRED_MODULES) -> list[str]:
    """The required top-level modules this interpreter cannot import."""
    importlib.invalidate_caches()
    return [n for n in names if importlib.util.find_spec(n) is None]


def wheel_dist_name(wheel: Path) -> str:
    """The normalised distribution name of a wheel file (``Foo_Bar-1.0-...whl`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def install_wheels(ctx: Context, log: Path) -> list[str]:
    """Install the wheels of the distributions that are missing into ``ctx.site`` (``pip --target``);
    returns the file names installed. The site folder goes first on sys.path and PYTHONPATH."""
    add_site(ctx)
    missing = missing_modules()
    if not missing:
        return []
    ctx.site.mkdir(parents=True, exist_ok=True)
    wheels = sorted(ctx.wheels.glob("*.whl"))
    if not wheels:
        raise PartFailure(
            f"{', '.join(missing)} cannot be imported and the wheel folder '{ctx.wheels}' holds no wheels: "
            "run `bash benchmarks/gpu_wheels.sh` on a machine with network and copy .whl/ here, or pip install them"
        )
    todo = [w for w in wheels if not installed(wheel_dist_name(w))]
    args = [ctx.python(), "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
            "--disable-pip-version-check", "--upgrade", "--target", str(ctx.site), *map(str, todo)]  # fmt: skip
    if todo:
        run_tool(ctx, args, log, max(10.0, min(ctx.limits["setup"], ctx.left())), "pip install from the wheel folder")
    sys.path_importer_cache.pop(str(ctx.site), None)  # the folder was looked at (empty) before the install
    still = missing_modules()
    if still:
        raise PartFailure(f"{', '.join(still)} still cannot be imported after installing {ctx.wheels}")
    return [w.name for w in todo]


def add_site(ctx: Context) -> None:
    """Put the wheel install folder first on this process's path and its commands' PYTHONPATH."""
    site = str(ctx.site)
    if site not in sys.path:
        sys.path.insert(0, site)
    parts = [p for p in ctx.env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if site not in parts:
        ctx.env["PYTHONPATH"] = os.pathsep.join([str(ctx.repo), site, *[p for p in parts if p != str(ctx.repo)]])


def register_plugin(ctx: Context) -> list[str]:
    """Without an installed difix-refiner (no entry points), name its methods and dataparser to nerfstudio
    through NERFSTUDIO_METHOD_CONFIGS / NERFSTUDIO_DATAPARSER_CONFIGS; returns what was registered."""
    found = {ep.name for ep in importlib.metadata.entry_points(group="nerfstudio.method_configs")}
    if set(PLUGIN_METHODS) <= found:
        return []
    methods = ",".join(f"{n}={spec}" for n, spec in PLUGIN_METHODS.items())
    parsers = ",".join(f"{n}={spec}" for n, spec in PLUGIN_DATAPARSERS.items())
    ctx.env["NERFSTUDIO_METHOD_CONFIGS"] = methods
    ctx.env["NERFSTUDIO_DATAPARSER_CONFIGS"] = parsers
    return list(PLUGIN_METHODS) + list(PLUGIN_DATAPARSERS)
