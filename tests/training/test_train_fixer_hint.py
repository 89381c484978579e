"""train-fixer with LiDAR hints: pairs carry hint_image/hint_mask, the trainer feeds them (with dropout),
the loss falls, and the saved fixer is a hint fixer.

Synthetic pairs where the input alone cannot tell the colours: targets are smooth random images, inputs
their grey level plus noise, and the hint holds the target's true colours at a random half of the pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from difix_refiner.data.lidar_hint import LidarHint
from difix_refiner.fixer import Fixer
from difix_refiner.pairs.format import (
    PairDataset,
    PairsError,
    read_pairs,
    validate_pairs,
    write_pairs,
)
from difix_refiner.pairs.pair_hints import load_hint, write_hint
from difix_refiner.training.hint_training import HintOptions, drop_hints
from difix_refiner.training.objectives import PairedObjectiveConfig
from difix_refiner.training.perceptual import PerceptualConfig
from difix_refiner.training.train_config import (
    CheckpointOptions,
    OptimOptions,
    TrainFixerConfig,
    TrainFixerError,
    ValidationOptions,
)
from difix_refiner.training.train_fixer import FixerTrainer, train_fixer

H, W = 32, 48


def _save(t: torch.Tensor, path: Path) -> None:
    Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def make_hint_pairs(root: Path, n_train: int = 4, n_test: int = 2, hints: bool = True) -> Path:
    folder = root / "img"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    data: dict[str, dict] = {"train": {}, "test": {}}
    for i in range(n_train + n_test):
        low = torch.rand(1, 3, 4, 6, generator=g)
        target = F.interpolate(low, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)[0]  # [3, H, W]
        grey = target.mean(0, keepdim=True).expand(3, H, W)
        image = (grey + 0.03 * torch.randn(3, H, W, generator=g)).clamp(0, 1)
        _save(image, folder / f"in{i}.png")
        _save(target, folder / f"gt{i}.png")
        entry = {"image": f"img/in{i}.png", "target_image": f"img/gt{i}.png"}
        if hints:
            mask = rng.random((H, W)) < 0.5
            write_hint(LidarHint(target.permute(1, 2, 0).numpy(), mask, np.where(mask, 5.0, np.inf)),
                       folder / f"hint{i}.png", folder / f"hint{i}.mask.png")  # fmt: skip
            entry.update(hint_image=f"img/hint{i}.png", hint_mask=f"img/hint{i}.mask.png")
        data["train" if i < n_train else "test"][f"p{i}"] = entry
    path = root / "pairs.json"
    path.write_text(json.dumps(data))
    return path


def command(pairs: Path, out: Path, **kw) -> TrainFixerConfig:
    defaults = dict(
        output=out, pairs=pairs, base="tiny", crop=(32, 32), batch_size=2, max_steps=2, device="cpu",
        num_workers=0, progress=False, objective=PairedObjectiveConfig(preset="local", perceptual=PerceptualConfig(search_caches=False)),
        checkpoint=CheckpointOptions(every=0), validation=ValidationOptions(every=0),
        optim=OptimOptions(lr=1e-3, warmup_steps=0),
    )  # fmt: skip
    defaults.update(kw)
    return TrainFixerConfig(**defaults)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return make_hint_pairs(tmp_path_factory.mktemp("hint_pairs"))


def test_pair_format_carries_hints_and_stays_backward_compatible(pairs, tmp_path):
    assert validate_pairs(pairs) == {"train": 4, "test": 2}
    entry = read_pairs(pairs)["train"]["p0"]
    assert entry.hint_image.name == "hint0.png" and entry.hint_mask.name == "hint0.mask.png"
    hint = load_hint(entry.hint_image, entry.hint_mask)  # [4, H, W]
    assert hint.shape == (4, H, W) and set(hint[3].unique().tolist()) == {0.0, 1.0}
    assert torch.all(hint[:3][:, hint[3] == 0] == 0)  # unknown pixels carry no colour
    # Written back (merged, rewritten) the hints survive; entries without hints write no hint keys.
    out = write_pairs(read_pairs(pairs), tmp_path / "copy" / "pairs.json")
    assert read_pairs(out)["train"]["p0"].hint_mask == entry.hint_mask
    plain = make_hint_pairs(tmp_path / "plain", hints=False)
    assert "hint_image" not in json.loads(write_pairs(read_pairs(plain), tmp_path / "p2.json").read_text())["train"]["p0"]
    # A dataset gives the hint, cropped like the images.
    ds = PairDataset(pairs, "train", crop=(16, 24), seed=0, with_hint=None)
    item = ds[0]
    top, left = ds.crop_box(0, H, W)
    torch.testing.assert_close(item["hint"], hint[:, top : top + 16, left : left + 24], rtol=0, atol=0)
    assert "hint" not in PairDataset(plain, "train").__getitem__(0)
    with pytest.raises(PairsError, match="no hint_image"):
        PairDataset(plain, "train", with_hint=True)


def test_half_a_hint_or_a_wrong_size_is_reported(pairs, tmp_path):
    data = json.loads(pairs.read_text())
    data["train"]["p0"].pop("hint_mask")
    data["train"]["p1"]["hint_mask"] = "img/in5.png"  # exists, but is an RGB image of the right size: fine
    Image.new("L", (W + 8, H)).save(pairs.parent / "img" / "small.png")
    data["train"]["p2"]["hint_mask"] = "img/small.png"
    bad = pairs.parent / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(PairsError) as info:
        validate_pairs(bad)
    problems = "\n".join(info.value.problems)
    assert "train/p0: 'hint_image' and 'hint_mask' must both be" in problems
    assert "train/p2: hint_mask" in problems and "p1" not in problems


def test_hint_dropout_is_reproducible_and_hides_whole_samples():
    hint = torch.ones(64, 4, 2, 2)
    dropped = drop_hints(hint, 0.3, seed=0, step=5)
    kept = dropped.flatten(1).amax(1)  # [64] 1 = kept, 0 = hidden
    assert set(kept.tolist()) == {0.0, 1.0} and torch.equal(dropped, drop_hints(hint, 0.3, seed=0, step=5))
    assert torch.all(dropped.flatten(1).amin(1) == kept)  # all or nothing per sample
    assert not torch.equal(dropped, drop_hints(hint, 0.3, seed=0, step=6))
    assert torch.equal(drop_hints(hint, 0.0, 0, 0), hint)
    with pytest.raises(ValueError, match="--hint.dropout"):
        HintOptions(dropout=1.5).check()


def test_training_steps_with_the_hint_lower_the_loss(pairs, tmp_path):
    trainer = FixerTrainer(command(pairs, tmp_path / "run", hint=HintOptions(dropout=0.0)))
    trainer.setup()
    assert trainer.with_hint and trainer.fixer.config.hint_channels == 4
    batch = {"a": next(trainer._data_iterators()["a"])}
    assert batch["a"]["hint"].shape == (2, 4, 32, 32)

    def loss() -> float:
        with torch.no_grad():
            out = trainer.fixer.fix(batch["a"]["image"], hint=batch["a"]["hint"])
            return float(trainer.objective(out, batch["a"]["target"])[0])

    before = loss()
    logged = [trainer.training_step(step, batch)["loss"] for step in range(8)]
    after = loss()
    assert after < 0.8 * before, (before, after, logged)
    weight = trainer.fixer.hint_conv.conv.weight
    assert weight.abs().sum() > 0  # the hint channels, zero at the start, were trained
    image, hint = batch["a"]["image"], batch["a"]["hint"]
    assert not torch.equal(trainer.fixer.fix(image, hint=hint), trainer.fixer.fix(image, hint=torch.zeros_like(hint)))


def test_run_saves_a_hint_fixer_and_validates_with_hints(pairs, tmp_path):
    metrics = train_fixer(command(pairs, tmp_path / "run", max_steps=2, hint=HintOptions(dropout=0.5)))
    assert metrics["num_images"] == 2
    saved = json.loads((tmp_path / "run" / "fixer" / "fixer_config.json").read_text())["config"]
    assert saved["hint_channels"] == 4 and saved["extra"]["hint_dropout"] == 0.5
    fixer = Fixer.from_pretrained(tmp_path / "run" / "fixer")
    assert fixer.config.uses_hint
    # Without hints in use the trainer builds a plain fixer, and --hint.use yes needs hints in every pair.
    plain = make_hint_pairs(tmp_path / "plain", hints=False)
    trainer = FixerTrainer(command(plain, tmp_path / "plain_run"))
    trainer.setup()
    assert not trainer.with_hint and not trainer.fixer.config.uses_hint
    with pytest.raises(TrainFixerError, match="no hint_image"):
        FixerTrainer(command(plain, tmp_path / "bad", hint=HintOptions(use="yes"))).setup()
    # An adapter without hint channels cannot take the pairs' hints unless told to ignore them.
    Fixer.tiny("difix", seed=0).save_pretrained(tmp_path / "plain_fixer")
    with pytest.raises(TrainFixerError, match="has no hint channels"):
        FixerTrainer(command(pairs, tmp_path / "adapter_run", adapter=tmp_path / "plain_fixer")).setup()
    trainer = FixerTrainer(command(pairs, tmp_path / "off", hint=HintOptions(use="no")))
    trainer.setup()
    assert not trainer.fixer.config.uses_hint and "hint" not in next(trainer._data_iterators()["a"])
