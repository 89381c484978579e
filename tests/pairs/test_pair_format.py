"""The Difix pair JSON: validation errors, writing, merging, and aligned crops in PairDataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difix_refiner.pairs.format import (
    PairDataset,
    PairEntry,
    PairsError,
    merge_pairs,
    read_pairs,
    validate_pairs,
    write_pairs,
)


def _png(path: Path, arr: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return str(path)


def _scene(root: Path, n: int = 3, size: tuple[int, int] = (24, 32), seed: int = 0) -> Path:
    """A scene folder with n train pairs (+1 test) and pairs.json using relative paths."""
    rng = np.random.default_rng(seed)
    h, w = size
    data: dict = {"train": {}, "test": {}}
    for i in range(n + 1):
        img = rng.integers(0, 256, (h, w, 3))
        _png(root / "render" / f"{i:03d}.png", img)
        _png(root / "gt" / f"{i:03d}.png", 255 - img)
        _png(root / "ref" / f"{i:03d}.png", img)
        split = "test" if i == n else "train"
        data[split][f"{i:03d}"] = {
            "image": f"render/{i:03d}.png",
            "target_image": f"gt/{i:03d}.png",
            "ref_image": f"ref/{i:03d}.png",
            "prompt": "remove degradation",
        }
    (root / "pairs.json").write_text(json.dumps(data))
    return root / "pairs.json"


def _edit(json_path: Path, fn) -> None:
    data = json.loads(json_path.read_text())
    fn(data)
    json_path.write_text(json.dumps(data))


def test_valid_scene_and_relative_paths(tmp_path: Path, monkeypatch):
    path = _scene(tmp_path / "scene_a")
    monkeypatch.chdir(tmp_path)  # relative paths must resolve against the JSON's folder, not the cwd
    assert validate_pairs(path) == {"train": 3, "test": 1}
    entry = read_pairs(path)["train"]["001"]
    assert entry.image == tmp_path / "scene_a" / "render" / "001.png"
    assert entry.ref_images == (tmp_path / "scene_a" / "ref" / "001.png",)


def test_absolute_paths_and_defaults(tmp_path: Path):
    img = _png(tmp_path / "a.png", np.zeros((8, 8, 3)))
    path = tmp_path / "sub" / "p.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"train": {"x": {"image": img, "target_image": img}}}))
    assert validate_pairs(path) == {"train": 1}
    entry = read_pairs(path)["train"]["x"]
    assert entry.ref_images == () and entry.prompt == "remove degradation"


def test_missing_file_is_named(tmp_path: Path):
    path = _scene(tmp_path / "s")
    (tmp_path / "s" / "gt" / "001.png").unlink()
    with pytest.raises(PairsError) as info:
        validate_pairs(path)
    assert "train/001" in str(info.value) and "target_image" in str(info.value) and "gt/001.png" in str(info.value)
    assert len(info.value.problems) == 1


def test_size_mismatch_is_named(tmp_path: Path):
    path = _scene(tmp_path / "s")
    _png(tmp_path / "s" / "gt" / "002.png", np.zeros((16, 32, 3)))
    with pytest.raises(PairsError, match=r"train/002: image .* is 32x24 but target_image .* is 32x16"):
        validate_pairs(path)


def test_overlap_between_splits(tmp_path: Path):
    path = _scene(tmp_path / "s")
    _edit(path, lambda d: d["test"].update({"000": d["train"]["000"]}))
    with pytest.raises(PairsError, match="id '000' is in both 'train' and 'test'"):
        validate_pairs(path)
    with pytest.raises(PairsError):
        read_pairs(path)  # structural problems are caught without touching files too


def test_malformed_entries_all_reported(tmp_path: Path):
    path = _scene(tmp_path / "s")

    def break_it(d):
        del d["train"]["000"]["target_image"]
        d["train"]["001"]["ref_image"] = 5
        d["train"]["002"] = "render/002.png"

    _edit(path, break_it)
    with pytest.raises(PairsError) as info:
        validate_pairs(path)
    text = str(info.value)
    assert "train/000: 'target_image'" in text
    assert "train/001: 'ref_image'" in text
    assert "train/002: entry must be an object" in text
    assert len(info.value.problems) == 3


def test_duplicate_ids_and_bad_json(tmp_path: Path):
    img = _png(tmp_path / "a.png", np.zeros((8, 8, 3)))
    entry = json.dumps({"image": img, "target_image": img})
    dup = tmp_path / "dup.json"
    dup.write_text('{"train": {"x": %s, "x": %s}}' % (entry, entry))
    with pytest.raises(PairsError, match="train/x: id appears more than once"):
        validate_pairs(dup)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PairsError, match="not valid JSON"):
        validate_pairs(bad)
    with pytest.raises(PairsError, match="not found"):
        validate_pairs(tmp_path / "missing.json")


def test_write_pairs_relative_and_overwrite(tmp_path: Path):
    img = Path(_png(tmp_path / "imgs" / "a.png", np.zeros((8, 8, 3))))
    out = tmp_path / "data" / "pairs.json"
    write_pairs({"train": {"a": PairEntry("a", img, img, (img, img))}}, out)
    raw = json.loads(out.read_text())
    assert raw["train"]["a"]["image"] == "../imgs/a.png"
    assert raw["train"]["a"]["ref_image"] == ["../imgs/a.png", "../imgs/a.png"]
    assert validate_pairs(out) == {"train": 1}
    with pytest.raises(FileExistsError, match="overwrite"):
        write_pairs({"train": {}}, out)
    write_pairs({"train": {"b": {"image": str(img), "target_image": str(img)}}}, out, overwrite=True)
    assert list(read_pairs(out)["train"]) == ["b"]


def test_merge_prefixes_ids_and_rewrites_paths(tmp_path: Path):
    a = _scene(tmp_path / "scene_a", n=2, seed=1)
    b = _scene(tmp_path / "scene_b", n=3, seed=2)
    out = tmp_path / "merged" / "all.json"
    counts = merge_pairs([a, b], out)
    assert counts == {"train": 5, "test": 2}
    merged = read_pairs(out)
    assert sorted(merged["train"]) == ["scene_a/000", "scene_a/001", "scene_b/000", "scene_b/001", "scene_b/002"]
    assert merged["test"]["scene_b/003"].image == (tmp_path / "scene_b" / "render" / "003.png")
    raw = json.loads(out.read_text())
    assert raw["train"]["scene_a/000"]["image"] == "../scene_a/render/000.png"
    validate_pairs(out)

    with pytest.raises(FileExistsError, match="overwrite"):
        merge_pairs([a, b], out)
    assert merge_pairs({"x": a}, out, overwrite=True) == {"train": 2, "test": 1}
    assert "x/000" in read_pairs(out)["train"]


def test_merge_refuses_collisions(tmp_path: Path):
    a = _scene(tmp_path / "one" / "scene", n=1, seed=1)
    b = _scene(tmp_path / "two" / "scene", n=1, seed=2)
    with pytest.raises(PairsError, match="scene name 'scene' is used by both"):
        merge_pairs([a, b], tmp_path / "m.json")
    # Explicit names resolve it ...
    assert merge_pairs([f"s1={a}", f"s2={b}"], tmp_path / "m.json") == {"train": 2, "test": 2}
    # ... and prefixed ids that still collide are refused.
    c = tmp_path / "c.json"
    img = str(tmp_path / "one" / "scene" / "render" / "000.png")
    c.write_text(json.dumps({"train": {"x/000": {"image": img, "target_image": img}}}))
    d = tmp_path / "d.json"
    d.write_text(json.dumps({"train": {"000": {"image": img, "target_image": img}}}))
    with pytest.raises(PairsError, match="id collision: 'p/x/000'"):
        merge_pairs({"p": c, "p/x": d}, tmp_path / "m2.json")
    assert not (tmp_path / "m2.json").exists()


def test_merge_validates_inputs(tmp_path: Path):
    a = _scene(tmp_path / "scene_a", n=1)
    (tmp_path / "scene_a" / "render" / "000.png").unlink()
    with pytest.raises(PairsError, match="train/000: image file not found"):
        merge_pairs([a], tmp_path / "m.json")


def _shifted_scene(tmp_path: Path, n: int = 6, h: int = 40, w: int = 56) -> Path:
    """Targets equal the input shifted left by one pixel; references equal the input."""
    rng = np.random.default_rng(7)
    data: dict = {"train": {}}
    for i in range(n):
        base = rng.integers(0, 256, (h, w + 1, 3))
        _png(tmp_path / f"img{i}.png", base[:, :w])
        _png(tmp_path / f"tgt{i}.png", base[:, 1:])
        _png(tmp_path / f"ref{i}.png", base[:, :w])
        data["train"][f"p{i}"] = {"image": f"img{i}.png", "target_image": f"tgt{i}.png", "ref_image": f"ref{i}.png", "prompt": "p"}
    (tmp_path / "pairs.json").write_text(json.dumps(data))
    return tmp_path / "pairs.json"


def test_dataset_crops_are_aligned_and_reproducible(tmp_path: Path):
    path = _shifted_scene(tmp_path)
    ds = PairDataset(path, "train", crop=(16, 24), seed=3)
    assert len(ds) == 6 and ds.with_ref
    boxes = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 16, 24) and item["target"].shape == (3, 16, 24)
        assert item["ref"].shape == (1, 3, 16, 24)
        assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
        # target(x) = image(x + 1): the same crop window keeps that relation exactly
        assert torch.equal(item["target"][:, :, :-1], item["image"][:, :, 1:])
        assert torch.equal(item["ref"][0], item["image"])
        boxes.add(ds.crop_box(i, 40, 56))
    assert len(boxes) > 1  # crops are random across items
    again = PairDataset(path, "train", crop=(16, 24), seed=3)
    assert torch.equal(again[2]["image"], ds[2]["image"])
    ds.set_epoch(1)
    assert ds.crop_box(2, 40, 56) != again.crop_box(2, 40, 56) or ds.crop_box(3, 40, 56) != again.crop_box(3, 40, 56)
    batch = next(iter(torch.utils.data.DataLoader(again, batch_size=3)))
    assert batch["image"].shape == (3, 3, 16, 24) and batch["ref"].shape == (3, 1, 3, 16, 24)
    assert batch["id"] == ["p0", "p1", "p2"]


def test_dataset_ref_options_and_errors(tmp_path: Path):
    path = _shifted_scene(tmp_path, n=2)
    assert "ref" not in PairDataset(path, with_ref=False)[0]
    _png(tmp_path / "ref0.png", np.zeros((20, 28, 3)))  # a smaller reference gets resized
    item = PairDataset(path, crop=8)[0]
    assert item["ref"].shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        PairDataset(path, crop=(10, 16))
    with pytest.raises(PairsError, match="larger than the image"):
        PairDataset(path, crop=(64, 64))[0]
    with pytest.raises(PairsError, match="no split 'test'"):
        PairDataset(path, "test")
    _edit(path, lambda d: d["train"]["p1"].update({"ref_image": None}))
    assert not PairDataset(path).with_ref  # auto: not every entry has a reference
    with pytest.raises(PairsError, match="train/p1: no ref_image"):
        PairDataset(path, with_ref=True)
