"""The ``fix`` command on temporary folders of small PNGs with the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difix_refiner.commands import cli
from difix_refiner.core.errors import InputError
from difix_refiner.fixer import Fixer
from difix_refiner.fixer.fix_folder import FixFolderConfig, fix_folder
from difix_refiner.fixer.folder_io import FixCommandError


def _write_pngs(folder: Path, names: list[str], size: tuple[int, int] = (40, 24), seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / name)


def _cmd(**kw) -> FixFolderConfig:
    kw.setdefault("base", "tiny")
    kw.setdefault("device", "cpu")
    return FixFolderConfig(**kw)


def test_fix_folder_with_tiny_and_skip_done(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    _write_pngs(inp, ["a.png", "b.png", "c.png"])
    summary = fix_folder(_cmd(input=inp, output=out, batch_size=2))
    assert summary == {"fixed": 3, "skipped": 0, "total": 3}
    for name in ("a.png", "b.png", "c.png"):
        with Image.open(out / name) as im:
            assert im.size == (40, 24) and im.mode == "RGB"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png", "fix_manifest.json"]  # no temp files
    # Same result as calling the model directly (8-bit rounding aside).
    x = torch.from_numpy(np.array(Image.open(inp / "a.png"))).permute(2, 0, 1)[None].float() / 255
    want = Fixer.tiny("difix").fix(x)[0]
    got = torch.from_numpy(np.array(Image.open(out / "a.png"))).permute(2, 0, 1).float() / 255
    assert (got - want).abs().max() <= 1 / 255 + 1e-6

    # Finished images are skipped; a new one is fixed.
    before = (out / "a.png").stat().st_mtime_ns
    _write_pngs(inp, ["d.png"], seed=1)
    assert fix_folder(_cmd(input=inp, output=out)) == {"fixed": 1, "skipped": 3, "total": 4}
    assert (out / "a.png").stat().st_mtime_ns == before
    assert fix_folder(_cmd(input=inp, output=out))["fixed"] == 0
    assert fix_folder(_cmd(input=inp, output=out, overwrite=True))["fixed"] == 4


def test_only_its_own_outputs_are_skipped(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    _write_pngs(inp, ["01.png", "02.png"])
    out.mkdir()
    _write_pngs(out, ["01.png"], seed=7)  # the user's own file, under an input's name
    users = (out / "01.png").read_bytes()
    with pytest.raises(InputError, match=r"1 file\(s\) in --output were not written by this fixer.*01\.png.*--overwrite"):
        fix_folder(_cmd(input=inp, output=out))
    assert (out / "01.png").read_bytes() == users and not (out / "02.png").exists()  # nothing touched

    other = tmp_path / "other"
    fix_folder(_cmd(input=inp, output=other, seed=1))  # another fixer (other random weights)
    with pytest.raises(InputError, match="not written by this fixer"):
        fix_folder(_cmd(input=inp, output=other, seed=0))
    assert fix_folder(_cmd(input=inp, output=other, seed=0, overwrite=True))["fixed"] == 2
    assert fix_folder(_cmd(input=inp, output=other, seed=0)) == {"fixed": 0, "skipped": 2, "total": 2}

    _write_pngs(inp, ["02.png"], seed=3)  # a changed input: its output is made again
    assert fix_folder(_cmd(input=inp, output=other, seed=0)) == {"fixed": 1, "skipped": 1, "total": 2}
    (other / "01.png").write_bytes(users)  # an output edited since: no longer ours
    with pytest.raises(InputError, match="01.png"):
        fix_folder(_cmd(input=inp, output=other, seed=0))


def test_refuses_output_inside_input(tmp_path):
    inp = tmp_path / "in"
    _write_pngs(inp, ["a.png"])
    for bad in (inp, inp / "fixed"):
        with pytest.raises(FixCommandError, match="inside"):
            fix_folder(_cmd(input=inp, output=bad))
    assert sorted(p.name for p in inp.iterdir()) == ["a.png"]


def test_references_by_name_and_map(tmp_path):
    inp, refs, out = tmp_path / "in", tmp_path / "refs", tmp_path / "out"
    _write_pngs(inp, ["a.png", "b.png"])
    _write_pngs(refs, ["a.png", "b.jpg"], seed=3)  # b pairs by stem
    assert fix_folder(_cmd(input=inp, output=out, ref=refs))["fixed"] == 2
    no_ref = tmp_path / "noref"
    fix_folder(_cmd(input=inp, output=no_ref))
    assert not np.array_equal(np.asarray(Image.open(out / "a.png")), np.asarray(Image.open(no_ref / "a.png")))

    # Explicit map, relative to the JSON's folder; b's reference is larger and gets resized.
    _write_pngs(tmp_path / "big", ["r.png"], size=(80, 48), seed=4)
    ref_map = tmp_path / "map.json"
    ref_map.write_text(json.dumps({"a.png": "refs/a.png", "b": "big/r.png"}))
    assert fix_folder(_cmd(input=inp, output=tmp_path / "out_map", ref_map=ref_map))["fixed"] == 2
    by_map = np.asarray(Image.open(tmp_path / "out_map" / "a.png"))
    assert np.array_equal(by_map, np.asarray(Image.open(out / "a.png")))


def test_missing_reference_is_an_error(tmp_path):
    inp, refs = tmp_path / "in", tmp_path / "refs"
    _write_pngs(inp, ["a.png", "b.png"])
    _write_pngs(refs, ["a.png"])
    with pytest.raises(FixCommandError, match="b.png"):
        fix_folder(_cmd(input=inp, output=tmp_path / "out", ref=refs))
    ref_map = tmp_path / "map.json"
    ref_map.write_text(json.dumps({"a.png": "refs/a.png"}))
    with pytest.raises(FixCommandError, match="no entry"):
        fix_folder(_cmd(input=inp, output=tmp_path / "out", ref_map=ref_map))
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_empty_folder_and_unreadable_image(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FixCommandError, match="no images"):
        fix_folder(_cmd(input=tmp_path / "empty", output=tmp_path / "out"))
    inp = tmp_path / "in"
    _write_pngs(inp, ["a.png"])
    (inp / "broken.png").write_bytes(b"not a png")
    with pytest.raises(FixCommandError, match="broken.png"):
        fix_folder(_cmd(input=inp, output=tmp_path / "out"))
    assert (tmp_path / "out" / "a.png").is_file()  # the readable one was still fixed


def test_main_prints_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as info:
        cli.entrypoint(["fix", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o"), "--base", "tiny"])
    assert "no images found" in str(info.value.code)


def test_saved_model_via_adapter_and_base(tmp_path):
    inp = tmp_path / "in"
    _write_pngs(inp, ["a.png"])
    fixer = Fixer.tiny("pix2pix-turbo", seed=2)
    with torch.no_grad():
        for p in fixer.trainable_parameters():
            p.add_(0.05)
    saved = fixer.save_pretrained(tmp_path / "model")
    fix_folder(_cmd(input=inp, output=tmp_path / "o1", base=None, adapter=Path(saved)))
    fix_folder(_cmd(input=inp, output=tmp_path / "o2", base=saved))
    fix_folder(_cmd(input=inp, output=tmp_path / "o3"))  # untrained tiny for contrast
    a, b, c = (np.asarray(Image.open(tmp_path / o / "a.png")) for o in ("o1", "o2", "o3"))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # pix2pix-turbo takes no reference.
    _write_pngs(tmp_path / "refs", ["a.png"])
    with pytest.raises(FixCommandError, match="no reference"):
        fix_folder(_cmd(input=inp, output=tmp_path / "o4", adapter=Path(saved), base=None, ref=tmp_path / "refs"))
