"""Paired training data in the Difix JSON format: reading, validating, writing, merging, and a Dataset.

Format::

    {
      "train": {
        "<id>": {
          "image": "renders/000123.png",        # degraded input (a render)
          "target_image": "gt/000123.png",      # clean target, same size as "image"
          "ref_image": "ref/000120.png",        # optional: null, a path, or a list of paths
          "prompt": "remove degradation"        # optional, this is the default
        },
        ...
      },
      "test": { ... }
    }

* Relative paths are relative to **the folder that holds the JSON file** (not the working
  directory), so a data folder can be moved as a whole. Absolute paths are accepted too.
  :func:`write_pairs` writes relative paths by default.
* Split names are free; Difix uses "train" and "test". An id may appear in only one split.
* A list in ``ref_image`` is our extension (several reference views); Difix uses one path or null.
* References may differ in size from the input: :class:`PairDataset` resizes them to the
  input's size before cropping. Input and target must have the same size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# Same default as the fixer's (difix_refiner.fixer.config.DEFAULT_PROMPT).
DEFAULT_PROMPT = "remove degradation"
_MAX_LISTED = 50  # problems spelled out in one error message
_DUP_KEY = "\x00duplicate keys"  # marker the JSON hook adds; no real id contains a NUL


class PairsError(ValueError):
    """The pair JSON or its files are unusable. ``problems`` lists every issue found, each naming
    the split, the id and the file."""

    def __init__(self, source: str | Path, problems: Sequence[str]) -> None:
        self.source = str(source)
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:_MAX_LISTED])
        more = f"\n  ... and {len(self.problems) - _MAX_LISTED} more" if len(self.problems) > _MAX_LISTED else ""
        n = len(self.problems)
        super().__init__(f"{self.source}: {n} problem{'s' if n != 1 else ''}:\n{shown}{more}")


@dataclass(frozen=True)
class PairEntry:
    """One training pair with absolute paths."""

    id: str
    """Unique id within the whole file (all splits)."""

    image: Path
    """Degraded input image."""

    target_image: Path
    """Clean target image, same size as ``image``."""

    ref_images: tuple[Path, ...] = ()
    """Reference views (empty: none)."""

    prompt: str = DEFAULT_PROMPT
    """Text prompt of the fixer."""

    def to_json(self, root: Path, relative: bool = True) -> dict[str, Any]:
        """The JSON object of this entry, paths relative to ``root`` (the JSON's folder) if asked."""

        def fmt(p: Path) -> str:
            if not relative:
                return Path(p).absolute().as_posix()
            try:
                return Path(os.path.relpath(Path(p).absolute(), root.absolute())).as_posix()
            except ValueError:  # different drives (Windows): no relative path exists
                return Path(p).absolute().as_posix()

        refs = [fmt(p) for p in self.ref_images]
        return {
            "image": fmt(self.image),
            "target_image": fmt(self.target_image),
            "ref_image": None if not refs else refs[0] if len(refs) == 1 else refs,
            "prompt": self.prompt,
        }


Splits = dict[str, dict[str, PairEntry]]


# --------------------------------------------------------------------------- reading


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.load silently keeps the last of duplicated keys; a duplicated id is a real mistake.
    out: dict[str, Any] = {}
    dups = []
    for k, v in pairs:
        if k in out:
            dups.append(k)
        out[k] = v
    if dups:
        out[_DUP_KEY] = dups
    return out


def _resolve(root: Path, value: str) -> Path:
    p = Path(value).expanduser()
    # normpath folds "a/../b" without following symlinks (resolve() would)
    return Path(os.path.normpath(p if p.is_absolute() else root.absolute() / p))


def _parse_entry(root: Path, split: str, key: str, raw: Any, problems: list[str]) -> PairEntry | None:
    where = f"{split}/{key}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: entry must be an object with 'image' and 'target_image', got {type(raw).__name__}.")
        return None
    ok = True
    paths: dict[str, Path] = {}
    for field_name in ("image", "target_image"):
        value = raw.get(field_name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}: '{field_name}' must be a non-empty path string, got {value!r}.")
            ok = False
        else:
            paths[field_name] = _resolve(root, value)
    ref = raw.get("ref_image")
    refs: list[Path] = []
    if ref is None:
        pass
    elif isinstance(ref, str) and ref.strip():
        refs = [_resolve(root, ref)]
    elif isinstance(ref, list) and ref and all(isinstance(r, str) and r.strip() for r in ref):
        refs = [_resolve(root, r) for r in ref]
    else:
        problems.append(f"{where}: 'ref_image' must be null, a path or a non-empty list of paths, got {ref!r}.")
        ok = False
    prompt = raw.get("prompt", DEFAULT_PROMPT)
    if not isinstance(prompt, str):
        problems.append(f"{where}: 'prompt' must be a string, got {prompt!r}.")
        ok = False
    if not ok:
        return None
    return PairEntry(key, paths["image"], paths["target_image"], tuple(refs), prompt)


def _load_json(json_path: Path) -> Any:
    if not json_path.is_file():
        raise PairsError(json_path, [f"pair file not found: '{json_path}'"])
    try:
        with open(json_path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as err:
        raise PairsError(json_path, [f"not valid JSON: {err}"]) from None


def _parse(json_path: Path) -> tuple[Splits, list[str]]:
    data = _load_json(json_path)
    root = json_path.parent
    problems: list[str] = []
    splits: Splits = {}
    if not isinstance(data, dict) or not data:
        return {}, [f"top level must be an object of splits such as {{'train': {{...}}, 'test': {{...}}}}, got {type(data).__name__}"]
    for split, entries in data.items():
        if split == _DUP_KEY:
            problems += [f"split '{s}' appears more than once" for s in entries]
            continue
        if not isinstance(entries, dict):
            problems.append(f"split '{split}' must be an object of id -> entry, got {type(entries).__name__}.")
            continue
        splits[split] = {}
        for key, raw in entries.items():
            if key == _DUP_KEY:
                problems += [f"{split}/{k}: id appears more than once in the split" for k in raw]
                continue
            entry = _parse_entry(root, split, key, raw, problems)
            if entry is not None:
                splits[split][key] = entry
    # An id in two splits leaks test data into training.
    seen: dict[str, str] = {}
    for split, entries in splits.items():
        for key in entries:
            if key in seen:
                problems.append(f"id '{key}' is in both '{seen[key]}' and '{split}' (ids must be unique across splits)")
            else:
                seen[key] = split
    return splits, problems


def read_pairs(json_path: str | Path) -> Splits:
    """Parse a pair JSON into {split: {id: PairEntry}} with absolute paths.

    Checks the structure only (not the files); raises :class:`PairsError` listing every problem.
    """
    json_path = Path(json_path)
    splits, problems = _parse(json_path)
    if problems:
        raise PairsError(json_path, problems)
    return splits


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def validate_pairs(json_path: str | Path, check_sizes: bool = True) -> dict[str, int]:
    """Check a pair JSON and its files; return {split: number of pairs}.

    Raises :class:`PairsError` listing every problem: malformed entries, ids shared between
    splits, missing or unreadable files, and input/target of different sizes.
    """
    json_path = Path(json_path)
    splits, problems = _parse(json_path)
    for split, entries in splits.items():
        for key, e in entries.items():
            where = f"{split}/{key}"
            files = [("image", e.image), ("target_image", e.target_image)]
            files += [(f"ref_image[{i}]" if len(e.ref_images) > 1 else "ref_image", p) for i, p in enumerate(e.ref_images)]
            present = {}
            for name, p in files:
                if not p.is_file():
                    problems.append(f"{where}: {name} file not found: '{p}'")
                else:
                    present[name] = p
            if not check_sizes:
                continue
            sizes = {}
            for name in ("image", "target_image"):
                if name in present:
                    try:
                        sizes[name] = _image_size(present[name])
                    except Exception as err:  # any decoder error means the file is unusable
                        problems.append(f"{where}: {name} '{present[name]}' is not a readable image ({type(err).__name__})")
            if len(sizes) == 2 and sizes["image"] != sizes["target_image"]:
                (wi, hi), (wt, ht) = sizes["image"], sizes["target_image"]
                problems.append(
                    f"{where}: image '{e.image}' is {wi}x{hi} but target_image '{e.target_image}' is {wt}x{ht} (W x H); they must match"
                )
    if problems:
        raise PairsError(json_path, problems)
    return {split: len(entries) for split, entries in splits.items()}


# --------------------------------------------------------------------------- writing and merging


def _entry_from(key: str, value: PairEntry | Mapping[str, Any]) -> PairEntry:
    if isinstance(value, PairEntry):
        return value if value.id == key else PairEntry(key, value.image, value.target_image, value.ref_images, value.prompt)
    # Mappings hold paths absolute or relative to the working directory.
    ref = value.get("ref_image")
    refs = [] if ref is None else [ref] if isinstance(ref, (str, Path)) else list(ref)
    return PairEntry(
        key,
        Path(value["image"]).absolute(),
        Path(value["target_image"]).absolute(),
        tuple(Path(r).absolute() for r in refs),
        value.get("prompt", DEFAULT_PROMPT),
    )


def write_pairs(
    splits: Mapping[str, Mapping[str, PairEntry | Mapping[str, Any]]],
    json_path: str | Path,
    *,
    overwrite: bool = False,
    relative: bool = True,
) -> Path:
    """Write {split: {id: entry}} as a pair JSON (atomically).

    Entries are :class:`PairEntry` or mappings in the JSON's field names with paths absolute or
    relative to the working directory. Paths are written relative to the JSON's folder unless
    ``relative=False``. Refuses to replace an existing file unless ``overwrite``.
    """
    json_path = Path(json_path)
    if json_path.exists() and not overwrite:
        raise FileExistsError(f"'{json_path}' already exists; pass overwrite=True (--overwrite) to replace it.")
    seen: dict[str, str] = {}
    for split, entries in splits.items():
        for key in entries:
            if key in seen:
                raise PairsError(json_path, [f"id '{key}' is in both '{seen[key]}' and '{split}'"])
            seen[key] = split
    root = json_path.parent
    data = {
        split: {key: _entry_from(key, e).to_json(root, relative) for key, e in entries.items()}
        for split, entries in splits.items()
    }
    root.mkdir(parents=True, exist_ok=True)
    from difix_refiner.cameras.atomic import create_temp_file  # the shared writer (lazy: no import cycle)
    tmp = str(create_temp_file(root, prefix=f".{json_path.name}.", suffix=".tmp"))  # umask's mode
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, json_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return json_path


def _scene_inputs(inputs: Sequence[str | Path] | Mapping[str, str | Path]) -> list[tuple[str, Path]]:
    """(scene, json path) pairs; a sequence item may be 'scene=path', else the JSON's folder name is the scene."""
    if isinstance(inputs, Mapping):
        return [(str(k), Path(v)) for k, v in inputs.items()]
    out = []
    for item in inputs:
        text = str(item)
        name, sep, rest = text.partition("=")
        if sep and name and "/" not in name and os.sep not in name:
            out.append((name, Path(rest)))
        else:
            p = Path(text)
            out.append((p.absolute().parent.name, p))
    return out


def merge_pairs(
    inputs: Sequence[str | Path] | Mapping[str, str | Path],
    output: str | Path,
    *,
    overwrite: bool = False,
    validate: bool = True,
    separator: str = "/",
) -> dict[str, int]:
    """Merge several scenes' pair JSONs into one; return {split: number of pairs}.

    inputs: JSON paths (the scene name is the JSON's folder name, or give 'scene=path'), or a
      mapping {scene: path}. Ids become '<scene><separator><id>'; paths are rewritten relative
      to the output's folder.
    Refuses: duplicate scene names, id collisions after prefixing, and an existing ``output``
    unless ``overwrite``. With ``validate`` every input is fully checked first (files, sizes).
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"Merge output '{output}' already exists; pass overwrite=True (--overwrite) to replace it.")
    scenes = _scene_inputs(inputs)
    if not scenes:
        raise ValueError("merge_pairs needs at least one input JSON.")
    problems: list[str] = []
    names: dict[str, Path] = {}
    for name, path in scenes:
        if not name:
            problems.append(f"'{path}': empty scene name; pass 'scene=path' or a mapping")
        elif name in names:
            problems.append(
                f"scene name '{name}' is used by both '{names[name]}' and '{path}'; name them explicitly ('scene=path')"
            )
        names[name] = path
    if problems:
        raise PairsError(output, problems)

    merged: dict[str, dict[str, PairEntry]] = {}
    origin: dict[str, str] = {}
    for name, path in scenes:
        if validate:
            validate_pairs(path)
        for split, entries in read_pairs(path).items():
            target = merged.setdefault(split, {})
            for key, e in entries.items():
                new_id = f"{name}{separator}{key}"
                if new_id in origin:
                    problems.append(f"id collision: '{new_id}' (from '{path}', split '{split}') already comes from {origin[new_id]}")
                    continue
                origin[new_id] = f"'{path}' split '{split}'"
                target[new_id] = PairEntry(new_id, e.image, e.target_image, e.ref_images, e.prompt)
    if problems:
        raise PairsError(output, problems)
    write_pairs(merged, output, overwrite=overwrite)
    return {split: len(entries) for split, entries in merged.items()}


# --------------------------------------------------------------------------- dataset


def load_image(path: Path) -> torch.Tensor:
    """RGB image file -> [3, H, W] float in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class PairDataset(Dataset):
    """Pairs of one split as tensors, with the same random crop on input, target and references.

    Items: {"image": [3, h, w], "target": [3, h, w], "ref": [R, 3, h, w] (when references are used),
    "id": str, "prompt": str}, all images in [0, 1].

    crop: (h, w) or one int for a square; ``None`` keeps full images (then all must share a size
      to be batched). Sides must be multiples of ``crop_multiple`` (8: the VAE's downsampling).
    seed: crops depend only on (seed, epoch, index), so an item is reproducible; call
      :meth:`set_epoch` to draw new crops each epoch.
    with_ref: ``None`` uses references when every entry of the split has the same number (> 0);
      ``True`` requires them; ``False`` ignores them. References of another size are resized
      (bilinear, anti-aliased) to the input's size before the crop.
    """

    def __init__(
        self,
        json_path: str | Path,
        split: str = "train",
        crop: tuple[int, int] | int | None = None,
        seed: int = 0,
        with_ref: bool | None = None,
        crop_multiple: int = 8,
    ) -> None:
        self.json_path = Path(json_path)
        splits = read_pairs(self.json_path)
        if split not in splits:
            raise PairsError(self.json_path, [f"no split '{split}' (have: {sorted(splits)})"])
        # Sorted ids: the index -> pair mapping must not depend on JSON key order.
        self.entries = [splits[split][k] for k in sorted(splits[split])]
        self.split = split
        if isinstance(crop, int):
            crop = (crop, crop)
        if crop is not None:
            crop = (int(crop[0]), int(crop[1]))
            if min(crop) <= 0:
                raise ValueError(f"crop must be positive, got {crop}.")
            if crop_multiple and (crop[0] % crop_multiple or crop[1] % crop_multiple):
                raise ValueError(f"crop {crop} must be a multiple of {crop_multiple} on both sides.")
        self.crop = crop
        self.seed = int(seed)
        self.epoch = 0
        counts = {len(e.ref_images) for e in self.entries}
        if with_ref is None:
            with_ref = bool(self.entries) and 0 not in counts and len(counts) == 1
        elif with_ref:
            lacking = [e.id for e in self.entries if not e.ref_images]
            if lacking:
                raise PairsError(self.json_path, [f"{split}/{i}: no ref_image but with_ref=True" for i in lacking])
            if len(counts) > 1:
                raise PairsError(self.json_path, [f"split '{split}' mixes entries with {sorted(counts)} references; batches need one count"])
        self.with_ref = bool(with_ref)

    def set_epoch(self, epoch: int) -> None:
        """Draw different (still reproducible) crops in each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def crop_box(self, index: int, height: int, width: int) -> tuple[int, int]:
        """(top, left) of the crop of item ``index`` in an image of ``height`` x ``width``."""
        ch, cw = self.crop  # type: ignore[misc]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))

    def __getitem__(self, index: int) -> dict[str, Any]:
        e = self.entries[index]
        image = load_image(e.image)  # [3, H, W]
        target = load_image(e.target_image)  # [3, H, W]
        if image.shape != target.shape:
            raise PairsError(
                self.json_path,
                [f"{self.split}/{e.id}: image {tuple(image.shape[1:])} and target_image {tuple(target.shape[1:])} (H, W) differ"],
            )
        h, w = image.shape[1:]
        refs = None
        if self.with_ref:
            loaded = []
            for p in e.ref_images:
                r = load_image(p)
                if r.shape[1:] != (h, w):
                    r = F.interpolate(r[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
                loaded.append(r.clamp_(0.0, 1.0))
            refs = torch.stack(loaded)  # [R, 3, H, W]
        if self.crop is not None:
            ch, cw = self.crop
            if ch > h or cw > w:
                raise PairsError(self.json_path, [f"{self.split}/{e.id}: crop {self.crop} is larger than the image ({h}, {w})"])
            top, left = self.crop_box(index, h, w)
            image = image[:, top : top + ch, left : left + cw]
            target = target[:, top : top + ch, left : left + cw]
            if refs is not None:
                refs = refs[..., top : top + ch, left : left + cw]
        item: dict[str, Any] = {
            "image": image.contiguous(),
            "target": target.contiguous(),
            "id": e.id,
            "prompt": e.prompt,
        }
        if refs is not None:
            item["ref"] = refs.contiguous()
        return item
