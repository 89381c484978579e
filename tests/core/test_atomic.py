"""The one atomic writer: complete-or-absent outputs, the user's umask, one sentence on a full disk."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from faults.full_disk import full_disk, read_only_folder
from PIL import Image

from difix_refiner.core import atomic
from difix_refiner.core.errors import InputError


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        with atomic.atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    old = os.umask(0o077)
    try:
        atomic.write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


@pytest.mark.parametrize("mount", [True, False], ids=["tmpfs-or-wrapper", "wrapper"])
def test_a_full_disk_is_one_sentence_and_leaves_nothing(tmp_path, monkeypatch, mount):
    with full_disk(tmp_path, monkeypatch, mount=mount) as folder:
        noise = (np.random.default_rng(0).random((400, 400, 3)) * 255).astype(np.uint8)  # ~480 KB as PNG
        target = folder / "frames" / "big.png"
        with pytest.raises(atomic.OutputWriteError) as info:
            with atomic.atomic_path(target) as tmp:
                Image.fromarray(noise).save(tmp, format="PNG")
        message = str(info.value)
        assert isinstance(info.value, InputError)
        assert str(target) in message and "\n" not in message
        assert "No space left on device" in message and "free there" in message
        assert sorted(p.name for p in (folder / "frames").iterdir()) == []  # no partial file left
        atomic.write_text(folder / "small.txt", "fits")  # the disk still takes small files
        assert (folder / "small.txt").read_text() == "fits"


def test_a_read_only_folder_is_one_sentence(tmp_path):
    with read_only_folder(tmp_path) as folder:
        with pytest.raises(atomic.OutputWriteError, match=r"could not write .*x\.txt: (Read-only file system|Permission denied)"):
            atomic.write_text(folder / "x.txt", "x")
        assert list(folder.iterdir()) == []
