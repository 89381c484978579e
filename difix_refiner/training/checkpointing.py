"""Training checkpoints of ``train-fixer``: everything needed to continue a run bit for bit.

Layout::

    OUT/checkpoints/step_000500/
        state.pt          step, data position, trained tensors of every model, optimisers,
                          LR schedulers, gradient scalers (written by the main process)
        rng_rank0.pt      Python, NumPy and torch (CPU + CUDA) RNG states of process 0
        rng_rank1.pt      ... one per process (each process has its own streams)

A checkpoint folder is assembled under a hidden ``.step_000500.partial`` name and renamed when
complete, so a ``step_*`` folder is always whole: a run killed while saving resumes from the
previous one.

Only tensors that training changes are stored (trainable parameters and all buffers, e.g. the
spectral-norm vectors of a PatchGAN); frozen weights (the base model, perceptual backbones) are
rebuilt from their source on resume. :func:`trained_state` / :func:`load_trained_state` do that
selection for any module.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from difix_refiner.core.errors import InputError

CHECKPOINT_FORMAT = "difix-refiner-train-checkpoint"
CHECKPOINT_VERSION = 1
STATE_FILE = "state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(InputError):
    """A checkpoint is missing, incomplete or does not fit the model being trained."""


def step_dir_name(step: int) -> str:
    """``step_000500`` (zero-padded so that names sort by step)."""
    return f"step_{step:06d}"


def rng_file(rank: int) -> str:
    """File name of process ``rank``'s RNG states."""
    return f"rng_rank{rank}.pt"


# --------------------------------------------------------------------------- model state


def trained_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and all buffers of ``module`` (frozen parameters left out), on the CPU."""
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items() if k not in frozen}


def load_trained_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load :func:`trained_state` output back; every trainable parameter must be present."""
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    missing = sorted(trainable - set(state))
    unexpected = sorted(set(state) - set(module.state_dict()))
    if missing or unexpected:
        raise CheckpointError(
            f"the checkpoint's {what} does not fit the model being trained: {len(missing)} trainable tensors missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). Was it written with another "
            "--base, --variant or model option?"
        )
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"the checkpoint's {what} does not fit the model being trained: {err}") from None


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Every RNG stream the training step may draw from (Python, NumPy, torch CPU and CUDA)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- folders


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``folder`` (``step_*`` with a ``state.pt``), sorted by step."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(folder: Path) -> Path | None:
    """The highest-step complete checkpoint in ``folder``, or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def partial_dir(folder: Path, step: int) -> Path:
    """The hidden folder a checkpoint is assembled in before its rename."""
    return Path(folder) / f".{step_dir_name(step)}.partial"


def begin_checkpoint(folder: Path, step: int) -> Path:
    """Create (empty) the assembly folder of the checkpoint of ``step``; main process only."""
    tmp = partial_dir(folder, step)
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a run killed while saving
    tmp.mkdir(parents=True)
    return tmp


def write_state(tmp: Path, state: dict[str, Any]) -> None:
    """Write the shared state (main process) into the assembly folder."""
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, tmp / STATE_FILE)


def write_rng(tmp: Path, rank: int) -> None:
    """Write this process's RNG states into the assembly folder (every process)."""
    torch.save(rng_state(), tmp / rng_file(rank))


def publish_checkpoint(folder: Path, step: int, keep: int | None) -> Path:
    """Rename the assembled checkpoint into place and drop the oldest beyond ``keep`` (main only)."""
    tmp = partial_dir(folder, step)
    final = Path(folder) / step_dir_name(step)
    if final.exists():  # same step saved again (e.g. a resumed run re-finishing): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep:
        for _, old in list_checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: Path, rank: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(shared state, this process's RNG state or None when the checkpoint has none for ``rank``)."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"'{path}' is not a complete checkpoint (no {STATE_FILE})")
    # Our own files; they hold optimiser states and RNG tuples, which weights_only cannot unpickle.
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"'{state_file}' is not a train-fixer checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"'{state_file}' has checkpoint version {state.get('version')}; this code reads {CHECKPOINT_VERSION}")
    rng_path = path / rng_file(rank)
    rng = torch.load(rng_path, map_location="cpu", weights_only=False) if rng_path.is_file() else None
    return state, rng
