"""What ``difix-refiner fix`` wrote into an output folder, so a rerun skips only its own finished work.

``fix_manifest.json`` in the output folder records the fixer's identity (base, adapter and the hash of
its weights, variant, precision, the seed of a tiny model) and, per output image, the SHA-256 of the
input, of the reference, of the LiDAR hint's two files (``--hint``) and of the output written. A rerun
skips an image only when all of these match; any other file in the way (the user's own ``01.png``, another fixer's output, an output edited
since) is an error naming it, unless ``--overwrite`` is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from difix_refiner.core import atomic
from difix_refiner.core.errors import InputError
from difix_refiner.core.optional_weights import file_sha256

MANIFEST_NAME = "fix_manifest.json"
MANIFEST_VERSION = 1

HintHashes = Optional[Tuple[str, str]]
"""SHA-256 of a LiDAR hint's colours and mask files; None without a hint."""


def fixer_identity(base: Optional[str], adapter: Optional[Path], variant: Optional[str], dtype: str, seed: int) -> Dict[str, Any]:
    """What decides the fixer's output, known before the model is loaded."""
    identity: Dict[str, Any] = {"base": base, "variant": variant, "dtype": dtype}
    if base == "tiny" and adapter is None:
        identity["seed"] = seed
    if adapter is not None:
        weights = Path(adapter)
        if weights.is_dir():
            weights = weights / "fixer.safetensors"
        identity["adapter"] = str(adapter)
        identity["adapter_sha256"] = file_sha256(weights) if weights.is_file() else None
    return identity


@dataclass
class FixManifest:
    """The manifest of one output folder."""

    folder: Path
    fixer: Dict[str, Any]
    """The identity of the fixer that writes into the folder now."""
    outputs: Dict[str, Dict[str, Optional[str]]] = field(default_factory=dict)
    """Output file name -> {"input", "reference", "hint_image", "hint_mask", "output"} SHA-256 (reference
    and hint None without them)."""

    @classmethod
    def open(cls, folder: Path, fixer: Dict[str, Any]) -> "FixManifest":
        """The folder's manifest; entries written by another fixer are kept only if the fixer is the same."""
        path = Path(folder) / MANIFEST_NAME
        manifest = cls(Path(folder), fixer)
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise InputError(f"{path} is not a readable fix manifest ({err}); remove it or pass --overwrite") from None
            if data.get("fixer") == fixer:
                manifest.outputs = dict(data.get("outputs", {}))
        return manifest

    def is_done(self, name: str, input_hash: str, reference_hash: Optional[str], hint_hashes: HintHashes = None) -> bool:
        """Whether ``name`` in the folder is this fixer's output of exactly these inputs, unchanged since."""
        entry = self.outputs.get(name)
        out = self.folder / name
        if entry is None or not out.is_file():
            return False
        hint_image, hint_mask = hint_hashes or (None, None)
        same_inputs = entry.get("input") == input_hash and entry.get("reference") == reference_hash
        same_hint = entry.get("hint_image") == hint_image and entry.get("hint_mask") == hint_mask
        return same_inputs and same_hint and entry.get("output") == file_sha256(out)

    def record(self, name: str, input_hash: str, reference_hash: Optional[str], hint_hashes: HintHashes = None) -> None:
        """Note that ``name`` was just written from these inputs."""
        entry = {"input": input_hash, "reference": reference_hash}
        if hint_hashes is not None:  # only with a hint, so manifests of runs without one read as before
            entry.update(hint_image=hint_hashes[0], hint_mask=hint_hashes[1])
        self.outputs[name] = {**entry, "output": file_sha256(self.folder / name)}

    def save(self) -> None:
        """Write the manifest (atomically)."""
        atomic.write_json(
            self.folder / MANIFEST_NAME,
            {"version": MANIFEST_VERSION, "fixer": self.fixer, "outputs": dict(sorted(self.outputs.items()))},
        )


def in_the_way(manifest: FixManifest, names: List[str], overwrite: bool) -> None:
    """Refuse output files that this fixer did not write, unless ``overwrite``."""
    if overwrite:
        return
    def ours(name: str) -> bool:  # written by this fixer and unchanged since (its inputs may have changed)
        entry = manifest.outputs.get(name)
        return entry is not None and entry.get("output") == file_sha256(manifest.folder / name)

    foreign = [n for n in names if (manifest.folder / n).exists() and not ours(n)]
    if foreign:
        shown = ", ".join(str(manifest.folder / n) for n in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise InputError(
            f"{len(foreign)} file(s) in --output were not written by this fixer from these inputs ({shown}); "
            "pass --overwrite to replace them, or choose another --output"
        )
