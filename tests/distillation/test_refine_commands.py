"""ns-eval, ns-render and ns-export load a refiner run without loading (or being able to load) the fixer.

A tiny in-process ``difix-refiner`` run with one refine round (so it has pseudo views), whose config.yml then
points the fixer at a folder that does not exist; the three commands run as child processes, side by side.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_refine_run import seeded_trainer, tiny_refine_config

BIN = Path(sys.executable).parent



@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("refine_commands")
    # 3 steps with a refine round (tiny fixer) before step 2.
    cfg = tiny_refine_config(out, "tiny", 3, steps_per_fix=2)
    trainer = seeded_trainer(cfg)
    trainer.train()
    cfg.save_config()
    run = Path(trainer.base_dir)
    assert (run / "pseudo_views" / "index.json").is_file()

    # From here on the fixer cannot be loaded: the commands must not try.
    config_path = run / "config.yml"
    text = config_path.read_text()
    assert text.count("fixer_base: tiny") == 1
    config_path.write_text(text.replace("fixer_base: tiny", "fixer_base: /nonexistent/fixer"))

    commands = {
        "eval": [str(BIN / "ns-eval"), "--load-config", str(config_path), "--output-path", str(out / "eval.json")],
        "render": [
            str(BIN / "ns-render"), "dataset", "--load-config", str(config_path), "--output-path", str(out / "renders"),
            "--split", "test", "--rendered-output-names", "rgb", "--image-format", "png",
        ],
        "export": [str(BIN / "ns-export"), "gaussian-splat", "--load-config", str(config_path), "--output-dir", str(out / "export")],
    }  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {
        name: subprocess.Popen(cmd, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, cmd in commands.items()
    }
    logs = {}
    for name, proc in procs.items():
        logs[name] = proc.communicate(timeout=600)[0]
        logs[name] = (proc.returncode, logs[name])
    return out, logs


def check(logs, name):
    code, log = logs[name]
    assert code == 0, f"ns-{name} failed:\n{log[-4000:]}"
    assert "fixer" not in log.lower(), f"ns-{name} mentioned the fixer:\n{log[-4000:]}"


def test_ns_eval(results):
    out, logs = results
    check(logs, "eval")
    metrics = json.loads((out / "eval.json").read_text())["results"]
    assert metrics["psnr"] > 0


def test_ns_render(results):
    out, logs = results
    check(logs, "render")
    assert list((out / "renders").rglob("*.png"))


def test_ns_export(results):
    out, logs = results
    check(logs, "export")
    ply = out / "export" / "splat.ply"
    assert ply.is_file() and ply.stat().st_size > 1000
