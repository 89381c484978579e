"""train-fixer: the loop learns, resumes bit for bit, validates, runs unpaired, and fails clearly.

Tiny fixers on tiny synthetic pairs (targets: smooth random images; inputs: the targets blurred
plus noise), CPU only, one thread.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from difix_refiner.core.image_metrics import psnr_batch as psnr
from difix_refiner.core.image_metrics import ssim_batch as ssim
from difix_refiner.fixer import Fixer
from difix_refiner.training.checkpointing import list_checkpoints
from difix_refiner.training.discriminator import DiscriminatorConfig
from difix_refiner.training.fixer_data import StreamSampler
from difix_refiner.training.lr_schedule import lr_factor
from difix_refiner.training.objectives import (
    PairedObjectiveConfig,
    UnpairedObjectiveConfig,
)
from difix_refiner.training.perceptual import PerceptualConfig, RandomInitWarning
from difix_refiner.training.run_folder import LOSSES_FILE
from difix_refiner.training.train_config import (
    CheckpointOptions,
    ModelOptions,
    OptimOptions,
    TrainFixerConfig,
    TrainFixerError,
    UnpairedOptions,
    ValidationOptions,
)
from difix_refiner.training.train_fixer import FixerTrainer, train_fixer

NO_WEIGHTS = PerceptualConfig(search_caches=False)  # nothing on disk: preset LPIPS/Gram switch off
RANDOM = PerceptualConfig(search_caches=False, random_init=True)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        yield


def _save(t: torch.Tensor, path: Path) -> None:
    Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def make_pairs(root: Path, n_train: int = 3, n_test: int = 2, h: int = 48, w: int = 64, refs: bool = True) -> Path:
    """Smooth targets, inputs = 5x5 box blur + noise; refs = another pair's target (same split)."""
    img = root / "img"
    img.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    data: dict[str, dict] = {"train": {}, "test": {}}
    for i in range(n_train + n_test):
        low = torch.rand(1, 3, h // 8, w // 8, generator=g)
        target = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)[0]
        blur = F.avg_pool2d(F.pad(target[None], (2, 2, 2, 2), mode="replicate"), 5, 1)[0]
        image = (blur + 0.05 * torch.randn(3, h, w, generator=g)).clamp(0, 1)
        _save(image, img / f"in{i}.png")
        _save(target, img / f"gt{i}.png")
        split = "train" if i < n_train else "test"
        first, count = (0, n_train) if split == "train" else (n_train, n_test)
        ref = first + (i - first + 1) % count
        data[split][f"p{i}"] = {
            "image": f"img/in{i}.png",
            "target_image": f"img/gt{i}.png",
            "ref_image": f"img/gt{ref}.png" if refs else None,
        }
    path = root / "pairs.json"
    path.write_text(json.dumps(data))
    return path


def command(pairs: Path | None, out: Path, **kw) -> TrainFixerConfig:
    """A small CPU run: tiny fixer, 32x32 crops, batch 2, no workers, no progress bar."""
    defaults = dict(
        output=out,
        pairs=pairs,
        base="tiny",
        crop=(32, 32),
        batch_size=2,
        max_steps=2,
        device="cpu",
        num_workers=0,
        progress=False,
        objective=PairedObjectiveConfig(perceptual=NO_WEIGHTS),
        checkpoint=CheckpointOptions(every=0),
        validation=ValidationOptions(every=0),
    )
    defaults.update(kw)
    return TrainFixerConfig(**defaults)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("pairs"))


# --------------------------------------------------------------------------- learning


def test_steps_lower_the_loss_on_a_fixed_batch(pairs, tmp_path):
    trainer = FixerTrainer(command(pairs, tmp_path / "run", optim=OptimOptions(lr=1e-3, warmup_steps=0)))
    trainer.setup()
    batch = {"a": next(trainer._data_iterators()["a"])}

    def loss() -> float:
        with torch.no_grad():
            out = trainer.fixer.fix(batch["a"]["image"], batch["a"]["ref"])
            return float(trainer.objective(out, batch["a"]["target"])[0])

    before = loss()
    logged = [trainer.training_step(step, batch)["loss"] for step in range(6)]
    after = loss()
    assert after < 0.7 * before, (before, after, logged)
    assert logged[-1] < logged[0]



def test_a_residual_fixer_learns_from_the_identity(tmp_path):
    # Renders that are their photos darkened: a correction the residual fixer learns in a few steps.
    pairs = make_pairs(tmp_path / "pairs")
    for entry in json.loads(pairs.read_text())["train"].values():
        photo = np.asarray(Image.open(pairs.parent / entry["target_image"]), dtype=np.float32)
        Image.fromarray((photo * 0.6).round().astype(np.uint8)).save(pairs.parent / entry["image"])
    opts = ModelOptions(residual_output=True)
    trainer = FixerTrainer(command(pairs, tmp_path / "run", model=opts, optim=OptimOptions(lr=1e-3, warmup_steps=0)))
    trainer.setup()
    batch = {"a": next(trainer._data_iterators()["a"])}
    image, ref, target = batch["a"]["image"], batch["a"]["ref"], batch["a"]["target"]
    torch.testing.assert_close(trainer.fixer.fix(image, ref), image, rtol=0, atol=1e-6)  # before any step: the render
    before = float(psnr(image, target).mean())
    for step in range(8):
        trainer.training_step(step, batch)
    assert float(psnr(trainer.fixer.fix(image, ref), target).mean()) > before + 1.0
    trainer.run()
    saved = json.loads((tmp_path / "run" / "fixer" / "fixer_config.json").read_text())["config"]
    assert saved["residual_output"] is True
    with pytest.raises(TrainFixerError, match="random weights"):
        FixerTrainer(command(pairs, tmp_path / "hub", base="stabilityai/sd-turbo", model=opts)).setup()

def test_divergence_stops_before_touching_the_weights(pairs, tmp_path, monkeypatch):
    trainer = FixerTrainer(command(pairs, tmp_path / "run"))
    trainer.setup()
    batch = {"a": next(trainer._data_iterators()["a"])}
    real = trainer.objective.forward

    def nan_loss(output, target, step=None, prompts=None):
        total, terms = real(output, target, step)
        return total * float("nan"), terms

    monkeypatch.setattr(trainer.objective, "forward", nan_loss)
    before = [p.detach().clone() for p in trainer.gen_params]
    with pytest.raises(TrainFixerError, match="non-finite generator gradients at step 0"):
        trainer.training_step(0, batch)
    assert all(torch.equal(a, p) for a, p in zip(before, trainer.gen_params))


# --------------------------------------------------------------------------- resume


def _resume_cmd(pairs: Path, out: Path, max_steps: int, **kw) -> TrainFixerConfig:
    # GAN (PatchGAN, spectral-norm buffers), Gram on random 16-pixel crops (draws from the torch RNG),
    # cosine schedule with warm-up and 3 pairs in batches of 2 (epoch boundaries inside a batch): the
    # resumed run must restore all of it.
    objective = PairedObjectiveConfig(
        perceptual=RANDOM, lpips=0.0, gram=0.5, gram_warmup_steps=1, gram_crop=16, gan=0.1,
        discriminator=DiscriminatorConfig(kind="patch", patch_channels=8, patch_layers=2),
    )  # fmt: skip
    optim = OptimOptions(lr=1e-3, schedule="cosine", warmup_steps=1)
    return command(
        pairs, out, max_steps=max_steps, objective=objective, optim=optim,
        checkpoint=CheckpointOptions(every=2, keep=0), **kw,
    )  # fmt: skip


def _trained(out: Path) -> dict[str, torch.Tensor]:
    return dict(Fixer.from_pretrained(out / "fixer").named_parameters())


def test_resume_is_bit_for_bit(pairs, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train_fixer(_resume_cmd(pairs, straight, 4))

    # Interrupted run: dies in step 3, after the checkpoint of step 2.
    broken = tmp_path / "broken"
    real_step = FixerTrainer.training_step

    def dying_step(self, step, batch):
        if step == 2:
            raise KeyboardInterrupt
        return real_step(self, step, batch)

    monkeypatch.setattr(FixerTrainer, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_fixer(_resume_cmd(pairs, broken, 4))
    monkeypatch.setattr(FixerTrainer, "training_step", real_step)
    assert [s for s, _ in list_checkpoints(broken / "checkpoints")] == [2]

    with pytest.raises(TrainFixerError, match="--resume"):  # not without asking
        train_fixer(_resume_cmd(pairs, broken, 4))
    train_fixer(_resume_cmd(pairs, broken, 4, resume=True))

    a, b = _trained(straight), _trained(broken)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    lines_a = (straight / LOSSES_FILE).read_text().splitlines()
    lines_b = (broken / LOSSES_FILE).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines_b] == [1, 2, 3, 4]
    assert lines_a == lines_b  # every logged loss, gradient norm and LR, as exact floats
    assert {"l2", "gram", "gan", "d_loss", "lr"} <= set(json.loads(lines_a[-1]))
    state_a = torch.load(straight / "checkpoints/step_000004/state.pt", weights_only=False)
    state_b = torch.load(broken / "checkpoints/step_000004/state.pt", weights_only=False)
    for name, value in state_a["objective"].items():  # discriminator heads and spectral-norm vectors
        assert torch.equal(value, state_b["objective"][name]), name


# --------------------------------------------------------------------------- validation and outputs


def test_validation_writes_metrics_grid_and_fixer(pairs, tmp_path):
    out = tmp_path / "run"
    cmd = command(pairs, out, max_steps=2, validation=ValidationOptions(every=1, grid_rows=2))
    metrics = train_fixer(cmd)

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["num_images"] == 2 and saved["split"] == "test" and saved["step"] == 2
    for when in ("before", "after"):
        assert set(saved[when]) == {"psnr", "ssim"}
    assert saved["delta"]["psnr"] == pytest.approx(saved["after"]["psnr"] - saved["before"]["psnr"])
    assert [r["id"] for r in saved["per_image"]] == ["p3", "p4"]

    # "before" is the input render against its target, on the 8-bit files
    a = torch.from_numpy(np.array(Image.open(pairs.parent / "img/in3.png"))).permute(2, 0, 1)[None] / 255.0
    b = torch.from_numpy(np.array(Image.open(pairs.parent / "img/gt3.png"))).permute(2, 0, 1)[None] / 255.0
    assert saved["per_image"][0]["psnr_before"] == pytest.approx(float(psnr(a, b)[0]), abs=1e-4)
    assert saved["per_image"][0]["ssim_before"] == pytest.approx(float(ssim(a, b)[0]), abs=1e-5)

    lines = [json.loads(x) for x in (out / "val/metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for name in ("val/step_000001.png", "val/step_000002.png", "final_grid.png"):
        with Image.open(out / name) as grid:
            assert grid.width >= 3 * 64 and grid.height >= 2 * 48  # 3 columns, 2 rows
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    fixer = Fixer.from_pretrained(out / "fixer")  # loads on its own (the tiny model is saved whole)
    assert fixer.config.variant == "difix"
    assert not list(out.glob(".*partial*"))  # atomic writes left nothing behind


def test_ssim_matches_pytorch_msssim():
    msssim = pytest.importorskip("pytorch_msssim")
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 40, 50, generator=g)
    b = (a + 0.1 * torch.randn(2, 3, 40, 50, generator=g)).clamp(0, 1)
    ref = msssim.ssim(a, b, data_range=1.0, size_average=False)
    assert torch.allclose(ssim(a, b), ref, atol=1e-5)
    assert float(psnr(a, a)[0]) == pytest.approx(100.0)


def test_local_diffusers_base_trains_adapters_only(pairs, tmp_path):
    from difix_refiner.fixer import write_prompt_embeds
    from difix_refiner.fixer.presets import tiny_components

    base = tmp_path / "base"  # a base in the diffusers layout, like a local copy of sd-turbo
    vae, unet, scheduler, emb = tiny_components(0)
    vae.save_pretrained(base / "vae")
    unet.save_pretrained(base / "unet")
    scheduler.save_pretrained(base / "scheduler")
    write_prompt_embeds(base / "prompt_embeds.safetensors", emb)

    trainer = FixerTrainer(command(pairs, tmp_path / "run", base=str(base), max_steps=1))
    trainer.setup()
    assert trainer.lr == 2e-5  # the published Difix rate for a pretrained base
    trained = {n for n, p in trainer.fixer.named_parameters() if p.requires_grad}
    assert trained == set(trainer.fixer.trained_state_dict())  # LoRA + skip convolutions only
    assert not any(n.startswith("vae.encoder.") for n in trained)
    trainer.run()
    saved = json.loads((tmp_path / "run/fixer/fixer_config.json").read_text())
    assert saved["kind"] == "adapter" and Path(saved["base"]) == base.resolve()

    # a later run can start from those weights (--adapter)
    again = FixerTrainer(command(pairs, tmp_path / "run2", base=str(base), adapter=tmp_path / "run/fixer"))
    again.setup()
    loaded = Fixer.from_pretrained(base, adapter=tmp_path / "run/fixer")
    for name, value in loaded.trained_state_dict().items():
        assert torch.equal(value, again.fixer.trained_state_dict()[name]), name


# --------------------------------------------------------------------------- unpaired


def test_unpaired_step_runs_and_saves_both_directions(pairs, tmp_path):
    renders, real = tmp_path / "renders", tmp_path / "real"
    renders.mkdir()
    real.mkdir()
    img = pairs.parent / "img"
    for i in range(3):
        (renders / f"r{i}.png").write_bytes((img / f"in{i}.png").read_bytes())
        (real / f"g{i}.png").write_bytes((img / f"gt{(i + 1) % 3}.png").read_bytes())
    objective = UnpairedObjectiveConfig(
        perceptual=RANDOM, cycle_lpips=0.0, identity_lpips=0.0,
        discriminator=DiscriminatorConfig(kind="patch", patch_channels=8, patch_layers=2),
    )  # fmt: skip
    out = tmp_path / "run"
    cmd = command(
        pairs, out, max_steps=1, batch_size=1, crop=(24, 24),
        unpaired=UnpairedOptions(renders=renders, real=real, objective=objective),
    )  # fmt: skip
    metrics = train_fixer(cmd)
    logged = json.loads((out / LOSSES_FILE).read_text().splitlines()[0])
    assert {"cycle_l1", "identity_l1", "gan_ab", "gan_ba", "d_loss"} <= set(logged)
    assert all(np.isfinite(v) for v in logged.values())
    assert metrics["mode"] == "unpaired" and metrics["num_images"] == 2  # validated on the pairs' test split
    assert (out / "fixer/fixer.safetensors").is_file() and (out / "fixer_reverse/fixer.safetensors").is_file()


# --------------------------------------------------------------------------- errors


def test_missing_pairs_json(tmp_path):
    with pytest.raises(TrainFixerError, match="pairs JSON not found"):
        train_fixer(command(tmp_path / "nope.json", tmp_path / "run"))
    with pytest.raises(TrainFixerError, match="--pairs"):
        train_fixer(command(None, tmp_path / "run"))
    with pytest.raises(TrainFixerError, match="both --unpaired.renders and --unpaired.real"):
        train_fixer(command(None, tmp_path / "run", unpaired=UnpairedOptions(renders=tmp_path)))


def test_invalid_pairs_are_listed(tmp_path):
    pairs = make_pairs(tmp_path / "data")
    (pairs.parent / "img/gt0.png").unlink()
    Image.new("RGB", (10, 10)).save(pairs.parent / "img/in1.png")
    with pytest.raises(TrainFixerError, match="invalid pairs JSON") as err:
        train_fixer(command(pairs, tmp_path / "run"))
    assert "train/p0: target_image file not found" in str(err.value)
    assert "train/p1: image" in str(err.value) and "must match" in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing written before the inputs check out


def test_bad_crop_and_small_images(pairs, tmp_path):
    with pytest.raises(TrainFixerError, match="multiples of 8"):
        train_fixer(command(pairs, tmp_path / "run", crop=(30, 32)))
    with pytest.raises(TrainFixerError, match="smaller than --crop"):
        train_fixer(command(pairs, tmp_path / "run", crop=(64, 64)))
    assert not (tmp_path / "run").exists()  # input errors come before anything is written


def test_output_folder_conflicts(pairs, tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TrainFixerError, match="not empty.*--resume.*--overwrite"):
        train_fixer(command(pairs, out))
    with pytest.raises(TrainFixerError, match="no checkpoint"):
        train_fixer(command(pairs, out, resume=True))
    with pytest.raises(TrainFixerError, match="contradict"):
        train_fixer(command(pairs, out, resume=True, overwrite=True))
    with caplog.at_level(logging.WARNING):
        train_fixer(command(pairs, out, max_steps=1, overwrite=True))
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite deletes only train-fixer's files
    assert (out / "metrics.json").is_file()
    with pytest.raises(TrainFixerError, match="--resume-from"):
        train_fixer(command(pairs, out, resume_from=out / "checkpoints/step_000099"))


# --------------------------------------------------------------------------- pieces


def test_stream_sampler_shards_and_resumes():
    whole = StreamSampler(5, seed=3, batch_size=4)
    it = iter(whole)
    stream = [next(it) for _ in range(12)]  # 3 steps of a global batch of 4
    assert sorted(i for e, i in stream[:5]) == list(range(5))  # epoch 0 is a permutation
    assert [e for e, _ in stream] == [0] * 5 + [1] * 5 + [2] * 2
    shards = [iter(StreamSampler(5, 3, 2, rank=r, world=2)) for r in range(2)]
    merged = []
    for _ in range(3):
        for s in shards:
            merged += [next(s), next(s)]
    assert merged == stream
    later = iter(StreamSampler(5, seed=3, batch_size=4, start_step=2))
    assert [next(later) for _ in range(4)] == stream[8:12]


def test_lr_schedule():
    kw = dict(warmup=4, max_steps=14, min_ratio=0.1)
    assert [lr_factor(s, schedule="constant", **kw) for s in (0, 3, 4, 13)] == [0.25, 1.0, 1.0, 1.0]
    assert lr_factor(4, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(9, schedule="cosine", **kw) == pytest.approx(0.55)
    assert lr_factor(14, schedule="cosine", **kw) == pytest.approx(0.1)
