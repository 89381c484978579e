"""Outputs written atomically get the mode of any new file (0666/0777 less the umask), not the 0600/0700
of ``tempfile``'s temporaries they are renamed from: fixed images, pseudo views, index.json, fixer weights,
pair files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difix_refiner.core import atomic


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writer_follows_the_umask(tmp_path, umask):
    atomic.write_json(tmp_path / "index.json", {"views": []})
    with atomic.atomic_path(tmp_path / "view.png") as tmp:
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp, format="PNG")
    with atomic.atomic_dir(tmp_path / "frames") as folder:
        (folder / "0.png").write_bytes(b"")
    assert mode(tmp_path / "index.json") == mode(tmp_path / "view.png") == 0o666 & ~umask
    assert mode(tmp_path / "frames") == 0o777 & ~umask
    with atomic.atomic_dir(tmp_path / "frames", overwrite=True) as folder:  # replacing keeps it too
        (folder / "1.png").write_bytes(b"")
    assert mode(tmp_path / "frames") == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "index.json", "view.png"]  # no temporaries left


def test_pseudo_views_follow_the_umask(tmp_path, umask):
    from difix_refiner.distillation.pseudo_views import (
        PseudoViewRecord,
        PseudoViewStore,
    )

    record = PseudoViewRecord(
        file="step_000001/v.png", alpha_file="step_000001/v.alpha.png", step=1, tracks=["t"], kind="offset",
        camera_name=None, frame=0, offset_m=0.5, distance_from_start_m=0.5, distance_to_target_m=0.5,
        reached=False, camera_to_world=np.eye(4)[:3].tolist(), intrinsics={"width": 4, "height": 4}, references=[],
    )  # fmt: skip
    store = PseudoViewStore(tmp_path / "pseudo_views")
    store.add(record, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))
    store.save_index()
    store.write_rounds([{"step": 1}])
    for name in ("step_000001/v.png", "step_000001/v.alpha.png", "index.json", "rounds.jsonl"):
        assert mode(store.root / name) == 0o666 & ~umask, name


def test_fixed_images_weights_and_pairs_follow_the_umask(tmp_path, umask):
    from difix_refiner.fixer.folder_io import write_image_atomic
    from difix_refiner.fixer.weights import write_saved
    from difix_refiner.pairs.format import write_pairs

    write_image_atomic(Image.fromarray(np.zeros((4, 4, 3), np.uint8)), tmp_path / "fixed" / "01.png")
    write_saved(tmp_path / "fixer", {"format_version": 1, "kind": "adapter"}, {"w": torch.zeros(2)})
    write_pairs({"train": {}}, tmp_path / "pairs.json")
    written = [tmp_path / "fixed" / "01.png", tmp_path / "pairs.json", *sorted((tmp_path / "fixer").iterdir())]
    assert len(written) == 4
    for path in written:
        assert mode(path) == 0o666 & ~umask, path.name
