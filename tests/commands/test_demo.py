"""``difix-refiner demo``: the report's shape, the table, bad input, ``--help`` from a bare checkout, and a
shrunken end-to-end run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from difix_refiner.commands.cli import entrypoint
from difix_refiner.commands.demo import DemoCommand
from difix_refiner.core.errors import InputError
from difix_refiner.evaluation.demo import (
    DemoConfig,
    lookup,
    read_eval_curves,
    run_demo,
    summarise,
    table_rows,
)
from difix_refiner.scene.ns_train import ChildRun

REPO = Path(__file__).resolve().parents[2]


def eval_metrics(psnr: float) -> dict:
    """An evaluate_run-shaped metrics dict (only the keys the demo reads, plus extras it must drop)."""
    shifted = {
        key: {"lidar_psnr": psnr - i, "depth_absrel": 0.1 * i, "depth_rmse": 1.5 * i, "sharpness": 3.0}
        for i, key in enumerate(("-2", "-1", "+1", "+2"), start=1)
    }
    return {
        "heldout": {"psnr": psnr, "ssim": 0.7, "lpips": None, "num_views": 10, "fixed": None},
        "cross_camera": {
            "psnr": psnr - 10, "ssim": 0.4, "lpips": None, "num_views": 160,
            "fixed": {"psnr": psnr - 9, "ssim": 0.45, "lpips": None, "num_views": 160},
        },
        "shifted": shifted,
        "recorded": {},
    }


def test_summary_has_the_documented_shape():
    entry = summarise(eval_metrics(25.0), ChildRun(["ns-train"], 123.456, 1.23456))
    documented = {"heldout", "cross_camera", "shifted", "wall_s", "peak_rss_gb"}
    assert set(entry) == documented | {"heldout_fixed", "cross_camera_fixed", "heldout_static", "cross_camera_static"}
    assert entry["heldout_static"] == {"psnr": None}  # metrics without psnr_static_pixels (no boxes): None
    assert entry["heldout"] == {"psnr": 25.0, "ssim": 0.7}
    assert entry["cross_camera"] == {"psnr": 15.0, "ssim": 0.4}
    assert entry["cross_camera_fixed"] == {"psnr": 16.0, "ssim": 0.45}
    assert entry["heldout_fixed"] == {"psnr": None, "ssim": None}  # no fixed metrics: None, not missing
    assert list(entry["shifted"]) == ["-2", "-1", "+1", "+2"]
    assert entry["shifted"]["+2"] == {"lidar_psnr": 21.0, "depth_absrel": pytest.approx(0.4), "depth_rmse": 6.0}
    assert entry["wall_s"] == 123.5 and entry["peak_rss_gb"] == 1.235


def test_table_rows_cover_every_metric_and_lookup_reads_them():
    summary = {
        "baseline": summarise(eval_metrics(25.0), ChildRun([], 10.0, 1.0)),
        "refiner": summarise(eval_metrics(26.0), ChildRun([], 12.0, 1.1)),
    }
    rows = table_rows(summary)
    paths = [p for _, p, _ in rows]
    assert paths[:4] == ["heldout.psnr", "heldout.ssim", "cross_camera.psnr", "cross_camera.ssim"]
    assert paths[4:7] == ["heldout_fixed.psnr", "cross_camera_fixed.psnr", "cross_camera_fixed.ssim"]
    assert paths[7:9] == ["heldout_static.psnr", "cross_camera_static.psnr"]  # moving objects left out
    # Offsets in numeric order, three metrics each, then time and memory.
    assert [p.split(".")[1] for p in paths[9:-2:3]] == ["-2", "-1", "+1", "+2"]
    assert paths[-2:] == ["wall_s", "peak_rss_gb"]
    assert lookup(summary["refiner"], "shifted.+2.lidar_psnr") == 22.0
    assert lookup(summary["baseline"], "cross_camera.ssim") == 0.4
    assert lookup(summary["refiner"], "wall_s") == 12.0
    higher = {p: h for _, p, h in rows}
    assert higher["shifted.-1.lidar_psnr"] and not higher["shifted.-1.depth_rmse"] and not higher["wall_s"]


def test_demo_help_from_a_bare_checkout():
    """``python -m difix_refiner.commands.cli demo --help`` with only ``PYTHONPATH=<repository>``: the
    presets are imported from the package itself (difix_refiner.method_configs), not an installed name."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    where = subprocess.run(
        [sys.executable, "-c", "import difix_refiner; print(difix_refiner.__file__)"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve() == (REPO / "difix_refiner" / "__init__.py").resolve()
    result = subprocess.run(
        [sys.executable, "-m", "difix_refiner.commands.cli", "demo", "--help"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--iterations" in result.stdout and "--fixer-base" in result.stdout


def test_demo_refuses_bad_input_before_training(tmp_path):
    with pytest.raises(InputError, match="--iterations"):
        run_demo(DemoConfig(output_dir=tmp_path / "demo", iterations=0))
    with pytest.raises(InputError, match="data folder not found"):
        run_demo(DemoConfig(output_dir=tmp_path / "demo", data=tmp_path / "missing"))
    with pytest.raises(InputError, match="--fixer-adapter not found"):
        run_demo(DemoConfig(output_dir=tmp_path / "demo", fixer_adapter=str(tmp_path / "no-adapter")))
    assert not (tmp_path / "demo").exists()  # nothing was created


def test_demo_end_to_end_shrunk(tmp_path, capsys):
    """The real command on the bundled scene, shrunk to a few iterations and a random tiny fixer.

    The contact sheets show frames 1 and 46 (every 40th training frame); side-camera frames 0, 23, 46, 69
    include 46, so the cross-camera sheet has a column."""
    out = tmp_path / "demo"
    demo = DemoCommand(
        output_dir=out, iterations=4, curve_points=2, eval_frame_stride=40, cross_camera_stride=23, fixer_base="tiny"
    )
    demo.main()

    report = out / "report"
    summary = json.loads((report / "metrics.json").read_text())
    assert set(summary) == {"baseline", "refiner"}
    for entry in summary.values():
        assert set(entry["shifted"]) == {"-2", "-1", "+1", "+2"}
        assert entry["heldout"]["psnr"] > 5 and 0 < entry["cross_camera"]["ssim"] < 1
        assert entry["shifted"]["+2"]["lidar_psnr"] > 5 and entry["shifted"]["-2"]["depth_rmse"] > 0
        assert entry["wall_s"] > 0 and entry["peak_rss_gb"] > 0.1
    full = json.loads((report / "eval" / "metrics.json").read_text())
    assert full["refiner"]["cross_camera"]["psnr"] == summary["refiner"]["cross_camera"]["psnr"]
    # The "+" step: the same views after the fixer (a random tiny fixer changes them).
    fixed = summary["refiner"]["cross_camera_fixed"]
    assert fixed["psnr"] is not None and fixed["psnr"] != summary["refiner"]["cross_camera"]["psnr"]
    files = ("contact_sheet.png", "contact_sheet_cross_camera.png", "metrics_over_training.png", "final_metrics.png")
    for name in files + ("training_curves.json", "depth_contact_sheet.png", "moving_object_masks.png"):
        assert (report / name).is_file(), name
    # nerfstudio evaluated the whole eval split at step 2 (4 iterations, 2 curve points).
    curves = read_eval_curves(out / "refiner" / "difix-refiner-cpu" / "run")
    assert [step for step, _ in curves["psnr"]] == [2]
    printed = capsys.readouterr().out
    assert "cross-camera PSNR" in printed and "shifted +2 m LiDAR PSNR" in printed

    # A second run refuses to overwrite the results: InputError from the engine, one line from the CLI.
    with pytest.raises(InputError, match="--overwrite"):
        run_demo(DemoConfig(output_dir=out, iterations=4, fixer_base="tiny"))
    with pytest.raises(SystemExit, match="^difix-refiner demo: error: .*--overwrite"):
        entrypoint(["demo", "--output-dir", str(out), "--iterations", "4", "--fixer-base", "tiny"])
