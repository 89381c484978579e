"""Settings and fixtures shared by the whole test suite."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """One torch thread: the test models are tiny, and on a small shared machine OpenMP's spinning
    workers made multi-threaded runs 10-100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "examples" / "pandaset_002"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """config.yml of a 3-iteration CPU difix-refiner run on the bundled scene at quarter size (via ns-train).

    Its refine loop would start at step 2000, so the fixer is the random ``tiny`` one: the GPU preset's
    SD-Turbo is not on this machine, and a missing fixer is refused before training starts."""
    out = tmp_path_factory.mktemp("tiny_run")
    command = [
        str(Path(sys.executable).parent / "ns-train"), "difix-refiner",
        "--machine.device-type", "cpu", "--machine.seed", "0",
        "--max-num-iterations", "3", "--steps-per-save", "3", "--vis", "tensorboard",
        "--output-dir", str(out), "--experiment-name", "tiny", "--timestamp", "run",
        "--pipeline.refine.fixer-base", "tiny",
        "pandaset-data", "--data", str(SCENE), "--downscale-factor", "4", "--lidar-max-points", "5000",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
    if result.returncode != 0:
        pytest.fail(f"ns-train failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return out / "tiny" / "difix-refiner" / "run" / "config.yml"
