"""Atomic output writing: write to a temporary sibling, then rename into place.

A crash or Ctrl-C never leaves a half-written file or folder under the final name, so "the output
exists" always means "the output is complete". Temporaries are created with the mode of any new file
(the umask applies), so outputs get the permissions the user expects, not ``tempfile``'s 0600/0700.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator


def _random_token() -> str:
    return secrets.token_hex(4)


def current_umask() -> int:
    """The process umask, read without changing it where the platform says it (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only where /proc is missing)
    os.umask(mask)
    return mask


def give_new_file_mode(path: Path) -> None:
    """Set ``path``'s mode to a new file's (0666 less the umask): for writers that make their own 0600
    temporaries (safetensors' ``save_file`` does) before the result is renamed into place."""
    os.chmod(path, 0o666 & ~current_umask())


def create_temp_file(folder: Path, prefix: str, suffix: str) -> Path:
    """Create an empty, new file ``folder/<prefix><random><suffix>`` and return its path.

    Unlike ``tempfile.mkstemp`` (always ``-rw-------``), the file gets the mode any new file gets
    (``0o666`` less the umask), so an output renamed from it has the permissions the user expects.
    """
    folder = Path(folder)
    for _ in range(100):
        tmp = folder / f"{prefix}{_random_token()}{suffix}"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file in {folder}")


def create_temp_dir(folder: Path, prefix: str, suffix: str) -> Path:
    """Create a new folder ``folder/<prefix><random><suffix>`` with the umask's mode (``mkdtemp``'s is 0700)."""
    folder = Path(folder)
    for _ in range(100):
        tmp = folder / f"{prefix}{_random_token()}{suffix}"
        try:
            os.mkdir(tmp, 0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary folder in {folder}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success it is renamed to ``path``.

    The temporary name keeps ``path``'s suffix so writers that pick a format from it still work.
    Deleting the temporary file inside the block publishes nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp_file(path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    try:
        yield tmp
        if tmp.exists():
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp_dir(path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            # Move the old folder aside first so the final name is only ever missing briefly.
            old = create_temp_dir(path.parent, prefix=f".{path.name}.", suffix=".old")
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
