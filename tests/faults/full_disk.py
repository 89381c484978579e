"""A folder on a full disk, for fault tests: a real 256 KiB tmpfs where the machine lets us mount one,
otherwise a write wrapper that fails every write below the folder with ENOSPC past a small budget."""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

BUDGET_BYTES = 256 * 1024


def _try_mount(folder: Path, options: str = f"size={BUDGET_BYTES}") -> bool:
    if os.geteuid() != 0:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return result.returncode == 0


@contextlib.contextmanager
def read_only_folder(base: Path) -> Iterator[Path]:
    """Yield a folder nothing can be written to: a read-only tmpfs as root, else a mode-0500 folder."""
    folder = Path(base) / f"ro-{uuid.uuid4().hex[:8]}"
    if _try_mount(folder, "ro,size=64k"):
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], capture_output=True)
        return
    folder.mkdir(parents=True)
    folder.chmod(0o500)
    try:
        yield folder
    finally:
        folder.chmod(0o700)


class _BudgetFile(io.RawIOBase):
    """A raw file that refuses writes once the folder's shared budget is spent."""

    def __init__(self, raw, budget: list) -> None:
        self._raw, self._budget = raw, budget

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return self._raw.readable()

    def seekable(self) -> bool:
        return self._raw.seekable()

    def seek(self, *args):
        return self._raw.seek(*args)

    def tell(self):
        return self._raw.tell()

    def readinto(self, b):
        return self._raw.readinto(b)

    def write(self, b) -> int:
        if len(b) > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= len(b)
        return self._raw.write(b)

    def close(self) -> None:
        self._raw.close()
        super().close()


@contextlib.contextmanager
def full_disk(base: Path, monkeypatch, mount: bool = True) -> Iterator[Path]:
    """Yield a folder that holds at most about 256 KiB (``mount=False``: always the write wrapper)."""
    folder = Path(base) / f"full-{uuid.uuid4().hex[:8]}"
    if mount and _try_mount(folder):
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], capture_output=True)
        return
    folder.mkdir(parents=True)
    budget = [BUDGET_BYTES]
    real_open = builtins.open

    def limited_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True, opener=None):
        inside = isinstance(file, (str, os.PathLike)) and Path(os.path.abspath(file)).is_relative_to(folder)
        if not inside or not any(c in mode for c in "wax+"):
            return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        raw = _BudgetFile(real_open(file, mode.replace("t", "").replace("b", "") + "b", buffering=0), budget)
        buffered = io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding=encoding, errors=errors, newline=newline)

    monkeypatch.setattr(builtins, "open", limited_open)
    monkeypatch.setattr(io, "open", limited_open)
    yield folder
