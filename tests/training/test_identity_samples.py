"""Identity samples in train-fixer: the render replaced by its photo, reproducibly, and what it teaches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difix_refiner.training.hint_training import drop_hints
from difix_refiner.training.identity_samples import identity_mask, with_identity_samples
from difix_refiner.training.train_config import ModelOptions, OptimOptions, TrainFixerError, UnpairedOptions
from difix_refiner.training.train_fixer import FixerTrainer

sys.path.insert(0, str(Path(__file__).parent))
from test_train_fixer import command, make_pairs  # noqa: E402


def test_identity_samples_are_whole_reproducible_and_independent_of_hint_dropout():
    images, target = torch.zeros(64, 3, 2, 2), torch.ones(64, 3, 2, 2)
    mixed = with_identity_samples(images, target, 0.25, seed=0, step=3)
    chosen = mixed.flatten(1).amax(1) == 1  # [64]
    assert torch.all(mixed.flatten(1).amin(1)[chosen] == 1) and torch.all(mixed.flatten(1).amax(1)[~chosen] == 0)
    assert 4 <= int(chosen.sum()) <= 30  # about a quarter of 64
    assert torch.equal(mixed, with_identity_samples(images, target, 0.25, seed=0, step=3))
    assert not np.array_equal(identity_mask(64, 0.25, 0, 3), identity_mask(64, 0.25, 0, 4))
    assert with_identity_samples(images, target, 0.0, 0, 3) is images
    # Same (seed, step): not the samples hint dropout hides.
    hidden = drop_hints(torch.ones(64, 4, 1, 1), 0.25, seed=0, step=3).flatten(1).amax(1) == 0
    assert not torch.equal(hidden, chosen)


def test_train_fixer_checks_the_identity_fraction(tmp_path):
    pairs = make_pairs(tmp_path / "pairs")
    for bad in (-0.1, 1.0):
        with pytest.raises(TrainFixerError, match="--identity-fraction"):
            FixerTrainer(command(pairs, tmp_path / f"bad{bad}", identity_fraction=bad)).setup()
    folder = tmp_path / "pairs" / "img"
    unpaired = UnpairedOptions(renders=folder, real=folder)
    with pytest.raises(TrainFixerError, match="paired training"):
        FixerTrainer(command(None, tmp_path / "unpaired", unpaired=unpaired, identity_fraction=0.2)).setup()


def _photo_change_after_training(pairs: Path, out: Path, identity_fraction: float) -> float:
    """Mean |fixer(photo) - photo| of a residual fixer after 8 steps on the pairs."""
    trainer = FixerTrainer(command(pairs, out, model=ModelOptions(residual_output=True), identity_fraction=identity_fraction,
                                   optim=OptimOptions(lr=1e-3, warmup_steps=0)))  # fmt: skip
    trainer.setup()
    batch = {"a": next(trainer._data_iterators()["a"])}
    for step in range(8):
        trainer.training_step(step, batch)
    photo, ref = batch["a"]["target"], batch["a"]["ref"]
    return float((trainer.fixer.fix(photo, ref) - photo).abs().mean())


def test_identity_samples_teach_the_fixer_to_leave_photos_alone(tmp_path):
    # Renders are their photos darkened: without identity samples the fixer learns to brighten whatever it sees.
    pairs = make_pairs(tmp_path / "pairs")
    for entry in json.loads(pairs.read_text())["train"].values():
        photo = np.asarray(Image.open(pairs.parent / entry["target_image"]), dtype=np.float32)
        Image.fromarray((photo * 0.6).round().astype(np.uint8)).save(pairs.parent / entry["image"])
    without = _photo_change_after_training(pairs, tmp_path / "without", 0.0)
    with_identity = _photo_change_after_training(pairs, tmp_path / "with", 0.5)
    assert with_identity < 0.7 * without  # measured here: 0.055 against 0.124
