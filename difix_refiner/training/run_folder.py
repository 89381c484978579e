"""The fixer trainer's run folder: what it owns, and checking it against --resume / --overwrite."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from difix_refiner.training import checkpointing as ckpt
from difix_refiner.training.train_config import TrainFixerConfig, TrainFixerError

logger = logging.getLogger(__name__)

# Entries of the run folder this command writes (--overwrite deletes exactly these).
CONFIG_FILE = "train_config.json"
LOSSES_FILE = "losses.jsonl"
METRICS_FILE = "metrics.json"
FINAL_GRID = "final_grid.png"
OWNED = ("checkpoints", "tensorboard", "val", "fixer", "fixer_reverse", CONFIG_FILE, LOSSES_FILE, METRICS_FILE, FINAL_GRID)


def _to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def prepare_output(cmd: TrainFixerConfig, dry_run: bool = False) -> Path | None:
    """Check the output folder against --resume/--overwrite; return the checkpoint to resume from.

    * new or empty folder: start;
    * --resume-from CKPT: that checkpoint; --resume: the newest one, or start over when there is
      none and the folder holds only this command's files (a run that died before its first save);
    * --overwrite: delete this command's files, start;
    * otherwise a non-empty folder is an error.

    ``dry_run`` checks and decides without deleting anything.
    """
    out = Path(cmd.output)
    if out.exists() and not out.is_dir():
        raise TrainFixerError(f"--output '{out}' exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if cmd.resume_from is not None:
        path = Path(cmd.resume_from)
        if not (path / ckpt.STATE_FILE).is_file():
            raise TrainFixerError(f"--resume-from '{path}' is not a complete checkpoint folder (no {ckpt.STATE_FILE})")
        return path
    if cmd.resume:
        if cmd.overwrite:
            raise TrainFixerError("--resume and --overwrite contradict each other; pick one")
        latest = ckpt.latest_checkpoint(out / "checkpoints")
        if latest is not None:
            return latest
        foreign = [e for e in entries if e not in OWNED]
        if foreign:
            raise TrainFixerError(
                f"--resume: '{out}' has no checkpoint (checkpoints/step_*) and holds other files ({', '.join(foreign[:5])}); "
                "nothing to resume"
            )
        if entries and not dry_run:
            logger.warning("--resume: no checkpoint in '%s' yet; starting over (its train-fixer files are replaced)", out)
            _remove_owned(out)
        return None
    if entries:
        if not cmd.overwrite:
            shown = ", ".join(entries[:6]) + (" ..." if len(entries) > 6 else "")
            raise TrainFixerError(
                f"--output '{out}' exists and is not empty ({shown}). Pass --resume to continue the run in it, "
                "--overwrite to start over there, or choose another folder"
            )
        if dry_run:
            return None
        _remove_owned(out)
        left = [e for e in entries if e not in OWNED]
        if left:
            logger.warning("--overwrite: kept files train-fixer does not write: %s", ", ".join(left[:6]))
    return None


def _remove_owned(out: Path) -> None:
    for name in OWNED:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
