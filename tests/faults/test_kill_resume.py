"""A run SIGKILLed during training, during a refine round or while writing a checkpoint, and resumed with
``--load-dir``, ends at the same final step with the same Gaussians, optimiser and densification states,
pseudo views (index entry for entry, PNG byte for byte) and ``rounds.jsonl`` as an uninterrupted run.

The 12-step run is ``tiny_killed_run.resume_config``: rounds before steps 3, 6, 9; checkpoints after
steps 4 and 8; densification at steps 8 and 10. Three subprocesses (tests/tiny_killed_run.py) are the three
killed runs; the reference and the resumes train in this process.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_killed_run import STEPS, resume_config
from tiny_refine_run import REPO, seeded_trainer

KILL_POINTS = ["train:7", "round:9", "checkpoint:8"]


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("killed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    script = REPO / "tests" / "tiny_killed_run.py"
    for point in KILL_POINTS:  # one fresh process per kill (a forked one would share torch's thread pool)
        result = subprocess.run(
            [sys.executable, str(script), str(out), point], capture_output=True, text=True, timeout=600, env=env
        )
        assert result.returncode == -signal.SIGKILL, f"{point}: {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    trainer = seeded_trainer(resume_config(tmp_path_factory.mktemp("reference"), "uninterrupted"))
    trainer.train()
    return trainer


def run_folder(out: Path, name: str) -> Path:
    return out / name / "difix-refiner" / "run"


def rounds(run: Path) -> list:
    return [json.loads(line)["step"] for line in (run / "pseudo_views" / "rounds.jsonl").read_text().splitlines()]


def index(run: Path) -> list:
    return json.loads((run / "pseudo_views" / "index.json").read_text())["views"]


def training_state(trainer) -> dict:
    """What carries from step to step: Gaussians, optimiser and scheduler states, densification statistics."""
    model = trainer.pipeline.model
    state = {f"param.{k}": v.detach() for k, v in model.gauss_params.items()}
    state.update({f"strategy.{k}": model.strategy_state[k] for k in ("grad2d", "count", "radii")})
    for name, optimizer in trainer.optimizers.optimizers.items():
        for i, s in optimizer.state_dict()["state"].items():
            state.update({f"optim.{name}.{i}.{k}": v for k, v in s.items()})
    for name, scheduler in trainer.optimizers.schedulers.items():
        state[f"sched.{name}"] = scheduler.state_dict()["last_epoch"]
    return state


def assert_same_state(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if torch.is_tensor(value):
            assert got[key].shape == value.shape and torch.equal(got[key], value), f"{key} differs"
        else:
            assert got[key] == value, key


def test_the_kills_left_what_a_kill_leaves(killed):
    # (Runs first: the resumes below replace what the in-place kills left.)
    # Killed at step 7: checkpoint 4 and rounds 3 and 6 on disk.
    run = run_folder(killed, "train")
    assert [p.name for p in (run / "nerfstudio_models").iterdir()] == ["step-000000004.ckpt"]
    assert rounds(run) == [3, 6] and sorted({v["step"] for v in index(run)}) == [3, 6]
    # Killed in round 9 after its first PNG: checkpoint 8, the first view of round 9, which the index does not list.
    run = run_folder(killed, "round")
    assert [p.name for p in (run / "nerfstudio_models").iterdir()] == ["step-000000008.ckpt"]
    assert len(list((run / "pseudo_views" / "step_000009").glob("*.png"))) == 2  # one view: image, opacity
    assert rounds(run) == [3, 6] and sorted({v["step"] for v in index(run)}) == [3, 6]
    # Killed writing checkpoint 8: the torn file is outside nerfstudio_models, checkpoint 4 is the latest.
    run = run_folder(killed, "checkpoint")
    assert [p.name for p in (run / "nerfstudio_models").iterdir()] == ["step-000000004.ckpt"]
    torn = run / ".nerfstudio_models.partial" / "step-000000008.ckpt"
    with pytest.raises(Exception):
        torch.load(torn, map_location="cpu", weights_only=False)


@pytest.mark.parametrize(
    "point, loaded, into_new_folder", [("train", 4, False), ("round", 8, False), ("checkpoint", 4, True)]
)
def test_resumed_run_ends_like_the_uninterrupted_one(killed, reference, point, loaded, into_new_folder, tmp_path):
    source = run_folder(killed, point)
    # The same settings plus --load-dir: in place (same --timestamp) or into a new run folder.
    cfg = resume_config(tmp_path, "resumed") if into_new_folder else resume_config(killed, point)
    cfg.load_dir = source / "nerfstudio_models"
    trainer = seeded_trainer(cfg)
    assert trainer._start_step == loaded + 1
    model = trainer.pipeline.model
    for name, optimizer in trainer.optimizers.optimizers.items():
        if name in model.gauss_params:  # the optimisers update the loaded tensors themselves
            assert optimizer.param_groups[0]["params"][0] is model.gauss_params[name]
    trainer.train()

    run = Path(trainer.base_dir)
    assert trainer.step == STEPS - 1 == reference.step  # --max-num-iterations is the total, not "that many more"
    assert [p.name for p in (run / "nerfstudio_models").iterdir()] == [f"step-{STEPS - 1:09d}.ckpt"]
    assert_same_state(training_state(trainer), training_state(reference))

    ref_run = Path(reference.base_dir)
    assert index(run) == index(ref_run)  # entry for entry: poses, steps, offsets, references
    for view in index(ref_run):
        for key in ("file", "alpha_file"):
            got, want = run / "pseudo_views" / view[key], ref_run / "pseudo_views" / view[key]
            assert got.read_bytes() == want.read_bytes(), view[key]
    assert rounds(run) == rounds(ref_run) == [3, 6, 9]  # no duplicate or stale lines
    on_disk = sorted(p.relative_to(run / "pseudo_views").as_posix() for p in (run / "pseudo_views").rglob("*.png"))
    assert on_disk == sorted(v[k] for v in index(ref_run) for k in ("file", "alpha_file"))  # nothing stale or torn
    names = [s.name for s in trainer.pipeline.datamanager.pseudo_views]
    assert names == [s.name for s in reference.pipeline.datamanager.pseudo_views]


def test_resuming_a_finished_run_trains_nothing(reference, tmp_path):
    cfg = resume_config(tmp_path, "again")
    cfg.load_dir = Path(reference.base_dir) / "nerfstudio_models"
    trainer = seeded_trainer(cfg)
    trainer.train()
    # The final checkpoint is saved again under its own step (nerfstudio's loop would call it step 0).
    assert [p.name for p in (Path(trainer.base_dir) / "nerfstudio_models").iterdir()] == [f"step-{STEPS - 1:09d}.ckpt"]
    assert_same_state(training_state(trainer), training_state(reference))


def test_nerfstudio_counting_is_kept_on_request(killed, tmp_path):
    cfg = resume_config(tmp_path, "more")
    cfg.resume_to_final_step = False
    cfg.max_num_iterations = 2  # two more steps after checkpoint 4
    cfg.load_dir = run_folder(killed, "checkpoint") / "nerfstudio_models"  # left as killed (resumed elsewhere)
    trainer = seeded_trainer(cfg)
    trainer.train()
    assert trainer.step == 6
