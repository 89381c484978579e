"""Atomic output writing: write to a temporary sibling, then rename into place.

A crash or Ctrl-C never leaves a half-written file or folder under the final name, so "the output
exists" always means "the output is complete". Published files and folders get the permissions the
user's umask gives new files (not the 0600/0700 of a temporary one). A full disk, a quota or a
read-only folder ends as one :class:`OutputWriteError` naming the path, not a raw ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from difix_refiner.core.errors import InputError

# errno values that mean "the disk or folder will not take this", as opposed to a bug.
_WRITE_FAULTS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class OutputWriteError(InputError):
    """An output could not be written (disk full, quota, read-only or forbidden folder)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free there"
    except OSError:
        return "free space unknown"


def write_error(path: Path, err: OSError) -> OutputWriteError:
    """The one-sentence error for a failed write of ``path``."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    reason = err.strerror or str(err)
    return OutputWriteError(f"could not write {path}: {reason} ({_free_space(folder)}); nothing half-written was left")


@contextlib.contextmanager
def _write_faults_named(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        if err.errno in _WRITE_FAULTS:
            raise write_error(path, err) from err
        raise


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success it is renamed to ``path``.

    The temporary name keeps ``path``'s suffix so writers that pick a format from it still work.
    Deleting the temporary file inside the block publishes nothing.
    """
    path = Path(path)
    with _write_faults_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _write_faults_named(path):
            yield tmp
            if tmp.exists():
                os.chmod(tmp, 0o666 & ~_umask())
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    """Atomically write JSON (indented, with a trailing newline)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def atomic_dir(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path``.

    Args:
        path: Final folder.
        overwrite: Replace an existing ``path``; otherwise an existing one is an error.
    """
    path = Path(path)
    with _write_faults_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        with _write_faults_named(path):
            yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            # Move the old folder aside first so the final name is only ever missing briefly.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
