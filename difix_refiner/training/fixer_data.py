"""Data for the fixer trainer: the seeded sample stream, unpaired image folders, size checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
from torch.utils.data import Dataset, Sampler

from difix_refiner.fixer.folder_io import FixCommandError, list_images
from difix_refiner.pairs.format import load_image
from difix_refiner.training.train_config import TrainFixerError


class StreamSampler(Sampler):
    """This process's share of an endless, seeded stream of ``(epoch, index)`` items.

    The stream concatenates permutations of ``range(size)`` drawn from ``(seed, epoch)``. Global
    batch ``s`` covers stream positions ``[s*G, (s+1)*G)`` with ``G = batch_size * world``; process
    ``rank`` takes ``[s*G + rank*batch_size, s*G + (rank+1)*batch_size)``. Iteration starts at
    ``start_step``, so resuming needs only the step.
    """

    def __init__(self, size: int, seed: int, batch_size: int, rank: int = 0, world: int = 1, start_step: int = 0):
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.rank, self.world, self.start_step = rank, world, start_step
        self._perm: tuple[int, np.ndarray] | None = None

    def item(self, position: int) -> tuple[int, int]:
        """(epoch, dataset index) at a stream position."""
        epoch, offset = divmod(position, self.size)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng((self.seed, epoch)).permutation(self.size))
        return epoch, int(self._perm[1][offset])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world
        step = self.start_step
        while True:
            first = step * global_batch + self.rank * self.batch_size
            for position in range(first, first + self.batch_size):
                yield self.item(position)
            step += 1


class EpochItems(Dataset):
    """Index a dataset with ``(epoch, index)``: the epoch picks the item's random crop."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        self.dataset.set_epoch(epoch)  # a worker process has its own copy; calls there are sequential
        return self.dataset[index]


class ImageFolderDataset(Dataset):
    """Images of one folder (unpaired training), with random crops reproducible from (seed, epoch, index).

    Items: {"image": [3, h, w] in [0, 1], "id": file name}.
    """

    def __init__(self, folder: Path, crop: tuple[int, int] | None, seed: int) -> None:
        self.folder = Path(folder)
        try:
            self.files = list_images(self.folder)
        except FixCommandError as err:
            raise TrainFixerError(str(err)) from None
        self.crop, self.seed, self.epoch = crop, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Draw other (still reproducible) crops in each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        image = load_image(path)  # [3, H, W]
        if self.crop is not None:
            ch, cw = self.crop
            h, w = image.shape[1:]
            if ch > h or cw > w:
                raise TrainFixerError(f"'{path}' ({h}x{w}) is smaller than the crop {ch}x{cw}")
            rng = np.random.default_rng((self.seed, self.epoch, index))
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            image = image[:, top : top + ch, left : left + cw]
        return {"image": image.contiguous(), "id": path.name}


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header."""
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def check_sizes(paths: list[Path], crop: tuple[int, int] | None, batch_size: int, what: str) -> None:
    """Every image must hold the crop (or, uncropped and batched, all must share one size)."""
    sizes = {p: _image_size(p) for p in paths}
    if crop is not None:
        small = [(p, s) for p, s in sizes.items() if s[0] < crop[0] or s[1] < crop[1]]
        if small:
            shown = "; ".join(f"'{p}' is {h}x{w}" for p, (h, w) in small[:3])
            raise TrainFixerError(
                f"{len(small)} {what} images are smaller than --crop {crop[0]} {crop[1]} (H W): {shown}. Use a smaller crop."
            )
    elif batch_size > 1 and len(set(sizes.values())) > 1:
        raise TrainFixerError(
            f"{what} images differ in size ({sorted(set(sizes.values()))[:4]} ...); with --crop None they cannot be "
            "batched: give --crop H W or --batch-size 1"
        )


def _check_crop(crop: tuple[int, int] | None) -> tuple[int, int] | None:
    if crop is None:
        return None
    crop = (int(crop[0]), int(crop[1]))
    if min(crop) <= 0 or crop[0] % 8 or crop[1] % 8:
        raise TrainFixerError(f"--crop {crop[0]} {crop[1]}: both sides must be positive multiples of 8 (the VAE's factor)")
    return crop
