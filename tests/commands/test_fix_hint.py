"""``difix-refiner fix --hint FOLDER``: LiDAR hints paired by name, passed to a hint fixer, hashed in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difix_refiner.commands import cli
from difix_refiner.data.lidar_hint import LidarHint
from difix_refiner.fixer import Fixer
from difix_refiner.fixer.fix_folder import FixFolderConfig, fix_folder
from difix_refiner.fixer.fix_manifest import MANIFEST_NAME, file_sha256
from difix_refiner.fixer.folder_io import FixCommandError
from difix_refiner.fixer.hint_folder import read_hint_files
from difix_refiner.pairs.pair_hints import load_hint, write_hint

W, H = 40, 24


def write_inputs(folder: Path, names, seed=0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / name)


def write_hints(folder: Path, stems, seed=0, size=(W, H)) -> None:
    rng = np.random.default_rng(seed)
    for stem in stems:
        mask = rng.random((size[1], size[0])) < 0.3
        hint = LidarHint(rng.random((size[1], size[0], 3)).astype(np.float32), mask, np.where(mask, 5.0, np.inf).astype(np.float32))
        write_hint(hint, folder / f"{stem}.png", folder / f"{stem}.mask.png")


@pytest.fixture(scope="module")
def hint_fixer_dir(tmp_path_factory):
    """A tiny hint fixer whose hint convolution is no longer zero (as after training), saved whole."""
    fixer = Fixer.tiny("difix", seed=0, hint_channels=4)
    with torch.no_grad():
        fixer.hint_conv.conv.weight.copy_(0.5 * torch.randn(fixer.hint_conv.conv.weight.shape, generator=torch.Generator().manual_seed(1)))
    return Path(fixer.save_pretrained(tmp_path_factory.mktemp("hint_fixer") / "model"))


def cfg(**kw) -> FixFolderConfig:
    kw.setdefault("device", "cpu")
    return FixFolderConfig(**kw)


def as_tensor(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255


def test_hints_reach_the_fixer_and_the_manifest(tmp_path, hint_fixer_dir):
    inp, hints, out = tmp_path / "in", tmp_path / "hints", tmp_path / "out"
    write_inputs(inp, ["00001.png", "00002.png"])
    hints.mkdir()
    write_hints(hints, ["00001", "00002"])
    assert fix_folder(cfg(input=inp, output=out, base=str(hint_fixer_dir), hint=hints, batch_size=2))["fixed"] == 2

    fixer = Fixer.from_pretrained(hint_fixer_dir)
    x = as_tensor(inp / "00001.png")[None]
    hint = load_hint(hints / "00001.png", hints / "00001.mask.png")[None]  # [1, 4, H, W]
    want = fixer.fix(x, hint=hint)[0]
    assert (as_tensor(out / "00001.png") - want).abs().max() <= 1 / 255 + 1e-6
    plain = tmp_path / "plain"
    fix_folder(cfg(input=inp, output=plain, base=str(hint_fixer_dir)))  # a hint fixer runs without a hint too
    assert (as_tensor(plain / "00001.png") - as_tensor(out / "00001.png")).abs().max() > 2 / 255  # the hint matters

    entry = json.loads((out / MANIFEST_NAME).read_text())["outputs"]["00001.png"]
    assert entry["hint_image"] == file_sha256(hints / "00001.png")
    assert entry["hint_mask"] == file_sha256(hints / "00001.mask.png")
    assert "hint_image" not in json.loads((plain / MANIFEST_NAME).read_text())["outputs"]["00001.png"]

    # Done work is skipped; a changed hint makes its image again.
    assert fix_folder(cfg(input=inp, output=out, base=str(hint_fixer_dir), hint=hints))["skipped"] == 2
    write_hints(hints, ["00002"], seed=5)
    assert fix_folder(cfg(input=inp, output=out, base=str(hint_fixer_dir), hint=hints)) == {"fixed": 1, "skipped": 1, "total": 2}


def test_hint_files_read_as_pairs_store_them(tmp_path):
    write_hints(tmp_path, ["a"])
    np.testing.assert_array_equal(read_hint_files(tmp_path / "a.png", tmp_path / "a.mask.png"),
                                  load_hint(tmp_path / "a.png", tmp_path / "a.mask.png"))  # fmt: skip


def test_hint_to_a_fixer_without_hints_is_a_clear_error(tmp_path):
    inp, hints = tmp_path / "in", tmp_path / "hints"
    write_inputs(inp, ["a.png"])
    hints.mkdir()
    write_hints(hints, ["a"])
    with pytest.raises(SystemExit) as info:
        cli.entrypoint(["fix", "--input", str(inp), "--output", str(tmp_path / "o"), "--base", "tiny", "--hint", str(hints)])
    message = str(info.value.code)
    assert message.startswith("difix-refiner fix: error:") and "trained without LiDAR hints" in message
    assert not (tmp_path / "o").exists()


def test_missing_or_misfit_hints_are_named(tmp_path, hint_fixer_dir):
    inp, hints = tmp_path / "in", tmp_path / "hints"
    write_inputs(inp, ["a.png", "b.png"])
    hints.mkdir()
    write_hints(hints, ["a"])
    (hints / "b.png").write_bytes((hints / "a.png").read_bytes())  # colours without a mask
    with pytest.raises(FixCommandError, match=r"1 of 2 images have no LiDAR hint.*b\.png.*b\.mask\.png"):
        fix_folder(cfg(input=inp, output=tmp_path / "o", base=str(hint_fixer_dir), hint=hints))
    assert not (tmp_path / "o").exists()  # refused before anything was written
    write_hints(hints, ["b"], size=(W // 2, H // 2))
    with pytest.raises(FixCommandError, match=r"hint .*b\.png.* is 20x12 but its image is 40x24"):
        fix_folder(cfg(input=inp, output=tmp_path / "o", base=str(hint_fixer_dir), hint=hints))
    assert (tmp_path / "o" / "a.png").is_file()  # the image with a fitting hint was still fixed
    with pytest.raises(FixCommandError, match="hint folder"):
        fix_folder(cfg(input=inp, output=tmp_path / "o2", base=str(hint_fixer_dir), hint=tmp_path / "nowhere"))
