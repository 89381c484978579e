"""Running the fixer over a folder of images (the engine of ``difix-refiner fix``).

:class:`FixFolderConfig` says what to fix and with which fixer; :func:`fix_folder` does it and
returns the counts. Bad input raises :class:`~difix_refiner.fixer.folder_io.FixCommandError` (an
``InputError``) before the model is loaded wherever it can be checked without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from tqdm import tqdm

from difix_refiner.core.optional_weights import file_sha256
from difix_refiner.fixer.fix_manifest import FixManifest, fixer_identity, in_the_way
from difix_refiner.fixer.folder_io import (
    FixCommandError,
    check_output_location,
    list_images,
    pair_by_map,
    pair_by_name,
    read_image,
    to_image,
    to_tensor,
    write_image_atomic,
)
from difix_refiner.fixer.hint_folder import pair_hints_by_name, read_hint
from difix_refiner.fixer.model import Fixer
from difix_refiner.fixer.options import resolve_dtype

logger = logging.getLogger(__name__)


@dataclass
class FixFolderConfig:
    """What to fix, where to write it, and with which fixer."""

    input: Path
    """Folder of images to fix (png, jpg, ...; not searched recursively)."""

    output: Path
    """Folder for the fixed images, written under the same file names. Must not be the input folder or inside it."""

    ref: Path | None = None
    """Folder of reference views, paired with the inputs by file name (same name, or same stem with another image extension). Difix variant only."""

    ref_map: Path | None = None
    """JSON file {image_name: ref_path} giving each input its reference; relative paths are taken from the JSON's folder."""

    hint: Path | None = None
    """Folder of LiDAR hints, paired with the inputs by file name: <stem>.png (hint colours, 0 where unknown) and <stem>.mask.png (validity, 255 where a point is), as make-pairs writes them, at the inputs' size. Only for a fixer trained with hints (hint_channels 4)."""

    base: str | None = None
    """Base model: a hub id, a local folder in the diffusers layout (vae/, unet/, scheduler/, text_encoder/, tokenizer/), 'tiny' for the small random model, or a folder saved by Fixer.save_pretrained. Default: the base recorded in --adapter, else stabilityai/sd-turbo."""

    adapter: Path | None = None
    """Trained fixer weights written by Fixer.save_pretrained (folder or its fixer.safetensors): adapter-only or whole."""

    variant: Literal["difix", "pix2pix-turbo"] | None = None
    """Model variant. Default: the one saved with --adapter, else difix."""

    device: str = "auto"
    """Torch device ('cuda', 'cuda:1', 'cpu'); 'auto' takes the GPU when there is one."""

    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """Compute precision; 'auto' is bf16 (or fp16) on a GPU and fp32 on a CPU."""

    batch_size: int = 1
    """Images per network evaluation (consecutive images of equal size are batched)."""

    memory_efficient: bool = False
    """Slice the VAE and UNet per image/view: slower, much lower peak memory for large frames."""

    overwrite: bool = False
    """Fix every image again and replace any file in --output in its way. By default an image is skipped only when
    fix_manifest.json says this same fixer already made its output from the same input (and reference), and
    any other file in the way is an error."""

    seed: int = 0
    """Seed of the random weights when --base tiny."""

    threads: int | None = None
    """CPU threads for torch (default: torch's choice); 1 helps on small machines shared with other jobs."""


def fix_folder(config: FixFolderConfig) -> dict[str, int]:
    """Fix every image of ``config.input`` into ``config.output``; returns counts ``{"fixed", "skipped", "total"}``.

    Raises :class:`FixCommandError` / :class:`FixerWeightsError` (both ``InputError``) on bad input.
    """
    if config.batch_size < 1:
        raise FixCommandError("--batch-size must be >= 1")
    if config.ref is not None and config.ref_map is not None:
        raise FixCommandError("give either --ref or --ref-map, not both")

    # Everything that can be checked without the model is checked first: errors come fast.
    images = list_images(config.input)
    protected = {"input": config.input}
    if config.ref is not None:
        protected["reference"] = config.ref
    if config.hint is not None:
        protected["hint"] = config.hint
    check_output_location(config.output, protected)
    hints = None if config.hint is None else pair_hints_by_name(images, config.hint)
    refs: dict[Path, Path] | None = None
    if config.ref is not None:
        refs = pair_by_name(images, config.ref)
    elif config.ref_map is not None:
        refs, unused = pair_by_map(images, config.ref_map)
        if unused:
            logger.warning("%d reference-map entries name no input image (e.g. %s)", len(unused), unused[0])

    identity = fixer_identity(config.base, config.adapter, config.variant, config.dtype, config.seed)
    manifest = FixManifest.open(config.output, identity)
    hashes = {
        p: (
            file_sha256(p),
            None if refs is None else file_sha256(refs[p]),
            None if hints is None else (file_sha256(hints[p][0]), file_sha256(hints[p][1])),
        )
        for p in images
    }
    todo = [p for p in images if config.overwrite or not manifest.is_done(p.name, *hashes[p])]
    in_the_way(manifest, [p.name for p in todo], config.overwrite)
    skipped = len(images) - len(todo)
    if not todo:
        return {"fixed": 0, "skipped": skipped, "total": len(images)}

    fixer = _load_model(config)
    if refs is not None and not fixer.config.supports_references:
        raise FixCommandError(f"the {fixer.config.variant!r} variant takes no reference views; drop --ref/--ref-map")
    if hints is not None and not fixer.config.uses_hint:
        raise FixCommandError(
            "--hint was given but this fixer was trained without LiDAR hints (hint_channels 0 in its fixer_config.json); "
            "drop --hint, or use a fixer trained with hints (train-fixer on pairs with hint_image/hint_mask)"
        )

    config.output.mkdir(parents=True, exist_ok=True)
    fixed, failed = 0, []
    warned_resize = False
    batch: list[tuple[Path, torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []

    def flush() -> None:
        nonlocal fixed
        if not batch:
            return
        imgs = torch.stack([b[1] for b in batch])  # [B,3,H,W]
        ref_t = None if refs is None else torch.stack([b[2] for b in batch])[:, None]  # [B,1,3,H,W]
        hint_t = None if hints is None else torch.stack([b[3] for b in batch])  # [B,4,H,W]
        out = fixer.fix(imgs, ref_t, hint=hint_t)
        for (path, *_), result in zip(batch, out):
            write_image_atomic(to_image(result), config.output / path.name)
            manifest.record(path.name, *hashes[path])
            fixed += 1
            bar.update(1)
        manifest.save()  # after every batch, so a killed run resumes where it stopped
        batch.clear()

    with tqdm(total=len(todo), unit="img", desc="fix", dynamic_ncols=True) as bar:
        for path in todo:
            try:
                image = read_image(path)
                ref_img = None
                if refs is not None:
                    ref_img = read_image(refs[path])
                    if ref_img.size != image.size:
                        if not warned_resize:
                            tqdm.write(
                                f"note: references differ in size from their images (first: {refs[path].name} "
                                f"{ref_img.size[0]}x{ref_img.size[1]} vs {path.name} "
                                f"{image.size[0]}x{image.size[1]}); resizing references to their image's size"
                            )
                            warned_resize = True
                        ref_img = ref_img.resize(image.size, Image.Resampling.BICUBIC)
                hint = None if hints is None else read_hint(hints[path], image.size)  # [4, H, W]
            except FixCommandError as err:
                failed.append(str(err))
                tqdm.write(f"error: {err}")
                bar.update(1)
                continue
            tensor = to_tensor(image)
            if batch and batch[0][1].shape != tensor.shape:
                flush()
            batch.append((path, tensor, None if ref_img is None else to_tensor(ref_img), hint))
            if len(batch) >= config.batch_size:
                flush()
        flush()

    if failed:
        raise FixCommandError(
            f"{len(failed)} image(s) (or their hints) could not be read and were not fixed ({fixed} others were): "
            + "; ".join(failed[:5])
            + (" ..." if len(failed) > 5 else "")
        )
    return {"fixed": fixed, "skipped": skipped, "total": len(images)}


def _load_model(config: FixFolderConfig) -> Fixer:
    if config.threads is not None:
        torch.set_num_threads(max(1, config.threads))
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device)
    dtype = resolve_dtype(config.dtype, device)
    if config.base == "tiny" and config.adapter is None:
        fixer = Fixer.tiny(config.variant or "difix", seed=config.seed)
    else:
        fixer = Fixer.from_pretrained(config.base, adapter=config.adapter, variant=config.variant)
    if config.memory_efficient:
        fixer.set_memory_efficient(True)
    return fixer.to(device=device, dtype=dtype).eval()
