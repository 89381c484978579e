"""Run a Python module as ``__main__`` and write its peak memory to a JSON file when it ends.

    python benchmarks/peak_memory.py OUT.json -m nerfstudio.scripts.train difix-refiner ...

``benchmarks/gpu_check.py`` wraps the command-line tools it times (``ns-train``, ``train-fixer``)
with this, so that they run unchanged (the same entry points a user calls) and the check still
learns their peak memory:

* ``cuda_peak_allocated_mib``: ``torch.cuda.max_memory_allocated`` of the current device over the
  whole run (weights, activations, optimiser state; not the CUDA context);
* ``cuda_peak_reserved_mib``: what torch's caching allocator held at most;
* ``peak_rss_mib``: the process's peak resident set size (children not counted).

CUDA figures are ``null`` when the module never initialised CUDA. The exit status is the
module's own.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys
import tempfile
import time

MiB = 1024.0 * 1024.0


def peak_memory() -> dict[str, float | None]:
    """The process's peak memory figures so far (see the module docstring)."""
    figures: dict[str, float | None] = {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # KiB on Linux
        "cuda_peak_allocated_mib": None,
        "cuda_peak_reserved_mib": None,
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        figures["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / MiB
        figures["cuda_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / MiB
    return figures


def write_json(path: str, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (a reader never sees half a file)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".peak_memory.", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "-m":
        print("usage: python benchmarks/peak_memory.py OUT.json -m MODULE [ARGS...]", file=sys.stderr)
        return 2
    out, module, args = argv[0], argv[2], argv[3:]
    sys.argv = [module, *args]
    code: int | str | None = 0
    start = time.perf_counter()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # argparse/tyro and the tools' own error exits
        code = exc.code
    finally:
        write_json(out, {"module": module, "wall_s": time.perf_counter() - start, **peak_memory()})
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
