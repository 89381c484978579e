"""``benchmarks/gpu_check.py --dry-run``: every part runs on the CPU through the commands of the GPU run
(ns-train, ns-eval, train-fixer, the fixer benchmark, the gsplat parity tests), and the JSON report has
one entry per part with its status, figures, errors and what needs CUDA."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PARTS = ["setup", "gsplat", "training", "fixer", "fixer-training"]

sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_check_runner import failure_reason, wheel_dist_name  # noqa: E402


def _run(args: list[str], work: Path) -> tuple[subprocess.CompletedProcess, dict]:
    report = work / "report.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--json", str(report), "--workdir", str(work / "work"), *args],
        capture_output=True, text=True, timeout=900, env=env, cwd=str(REPO),
    )  # fmt: skip
    assert report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(report.read_text())


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    return _run([], tmp_path_factory.mktemp("gpu_check"))


def _part(report: dict, name: str) -> dict:
    return next(p for p in report["parts"] if p["name"] == name)


def test_every_part_runs_on_the_cpu_and_says_what_needs_cuda(dry_run):
    proc, report = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert report["mode"] == "dry-run (CPU)" and report["device"] == "cpu"
    assert [p["name"] for p in report["parts"]] == PARTS
    for part in report["parts"]:
        assert part["status"] == "ok" and part["error"] is None, part
        assert set(part) >= {"name", "status", "figures", "error", "seconds", "limit_s", "needs_cuda"}
        assert part["needs_cuda"], part["name"]  # each part names what the CPU run could not do
        assert 0 < part["seconds"] <= part["limit_s"] + 15
    assert "kernel build" in _part(report, "gsplat")["needs_cuda"]
    # the printed table has a row per part and the fixer's own rows
    for name in PARTS:
        assert f"| {name} | ok |" in proc.stdout
    assert "| dtype | ref views | latency ms |" in proc.stdout


def test_setup_imports_the_entry_points(dry_run):
    fig = _part(dry_run[1], "setup")["figures"]
    for module in ["nerfstudio.scripts.train", "nerfstudio.scripts.eval", "gsplat", "diffusers", "tyro", "difix_refiner.commands.cli"]:
        assert fig["import_s"][module] >= 0
    assert fig["versions"]["nerfstudio"] == "1.1.5" and fig["versions"]["gsplat"] == "1.4.0"
    assert fig["gpu"] is None


def test_gsplat_parity_tests_ran_except_the_cuda_ones(dry_run):
    fig = _part(dry_run[1], "gsplat")["figures"]
    assert fig["gsplat"] == "1.4.0"
    assert fig["parity_skipped"] >= 1  # the CUDA comparisons
    assert fig["parity_passed"] == fig["parity_tests"] - fig["parity_skipped"] > 0


def test_training_refines_twice_writes_pseudo_views_and_is_evaluated(dry_run):
    fig = _part(dry_run[1], "training")["figures"]
    assert fig["method"] == "difix-refiner-cpu" and fig["iterations"] == 6
    assert fig["refine_rounds"] == 2  # fixes before steps 2 and 4
    assert fig["pseudo_views"] == 8  # 2 frames (stride 40) x offsets -1, +1 per round
    assert 5.0 < fig["heldout_psnr"] < 40.0 and 0.0 < fig["heldout_ssim"] < 1.0
    assert fig["it_per_s"] > 0 and fig["peak_rss_mib"] > 100
    assert fig["peak_gpu_mib"] is None  # CUDA never initialised on the CPU


def test_fixer_rows_cover_both_dtypes_and_0_1_2_reference_views(dry_run):
    fig = _part(dry_run[1], "fixer")["figures"]
    assert fig["arch"] == "tiny" and fig["size"] == [64, 128] and fig["repeats"] == 2
    rows = fig["rows"]
    assert sorted((r["dtype"], r["refs"]) for r in rows) == [(d, n) for d in ("bf16", "fp16") for n in (0, 1, 2)]
    for r in rows:
        assert r["latency_ms"] > 0 and r["img2img_ms"] > 0 and r["peak_mib"] >= 0
        assert r["latency_ratio"] == pytest.approx(r["latency_ms"] / r["img2img_ms"])
    # bf16 and fp16 weights take the same bytes; the tiny model is a few MiB
    assert len({round(r["weights_mib"], 3) for r in rows}) == 1 and 1 < rows[0]["weights_mib"] < 50


def test_fixer_training_trains_lora_adapters_from_a_local_base(dry_run):
    fig = _part(dry_run[1], "fixer-training")["figures"]
    assert fig["arch"] == "tiny" and fig["steps"] == 2 and fig["crop"] == [64, 64]
    assert fig["saved_kind"] == "adapter" and fig["unet_lora_rank"] == 8 and fig["vae_lora_rank"] == 4
    assert 0 < fig["trainable_m"] < fig["total_m"]  # LoRA and skip convolutions only
    assert math.isfinite(fig["final_loss"]) and fig["step_s"] > 0


def test_a_failing_part_reports_its_reason_and_the_check_goes_on(tmp_path):
    proc, report = _run(["--only", "training", "fixer", "--limit", "training=1"], tmp_path)
    assert proc.returncode == 1
    assert [p["name"] for p in report["parts"]] == ["training", "fixer"]
    training, fixer = report["parts"]
    assert training["status"] == "failed" and "ns-train timed out after 1 s" in training["error"]
    assert fixer["status"] == "ok" and len(fixer["figures"]["rows"]) == 6
    assert "| training | failed: ns-train timed out after 1 s" in proc.stdout


def test_failure_reason_picks_the_telling_line():
    traceback = "Traceback (most recent call last):\n  File 'x.py'\nRuntimeError: Error building extension 'gsplat_cuda'\n"
    assert failure_reason(traceback, "-") == "RuntimeError: Error building extension 'gsplat_cuda'"
    tyro = "╭─ Unrecognized options ──────╮\n│ Unrecognized or misplaced options: │\n│ --foo │\n╰─────╯\n"
    assert failure_reason(tyro, "-") == "Unrecognized options: Unrecognized or misplaced options:"
    assert failure_reason("", "no output") == "no output"
    assert failure_reason("step 1\nstep 2\n", "-") == "step 2"


def test_wheel_names_are_normalised_distribution_names():
    assert wheel_dist_name(Path("pytorch_msssim-1.0.0-py3-none-any.whl")) == "pytorch-msssim"
    assert wheel_dist_name(Path("docstring_parser-0.18.0-py3-none-any.whl")) == "docstring-parser"
    assert wheel_dist_name(Path("gsplat-1.4.0-py3-none-any.whl")) == "gsplat"
