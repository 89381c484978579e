"""The five parts of ``benchmarks/gpu_check.py``: the commands each runs and the figures it reads back.

Each part takes the check's ``Context`` and its ``PartResult``, fills the result's ``figures`` (and, in
a dry run, ``needs_cuda``: what it could not run on the CPU) and raises ``PartFailure`` with a
one-line reason when something is wrong. Every heavy step is a separate process (the project's own
command-line tools wherever one exists), so that a part can be stopped at its time limit and a CUDA
failure cannot take the check down.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from gpu_check_runner import (
    Context,
    PartFailure,
    PartResult,
    install_wheels,
    python_json,
    register_plugin,
    run_tool,
)

SCENE = Path("examples") / "pandaset_002"
SMALL_FIXER = Path("examples") / "fixer-small"
PARITY_TESTS = Path("tests") / "rendering" / "test_rasterize_gsplat_parity.py"

# GPU run and dry run of each part: sizes, steps, repeats.
TRAINING = {
    "gpu": {"method": "difix-refiner", "iterations": 400, "steps_per_fix": 100, "extra": [], "data": []},
    "cpu": {
        "method": "difix-refiner-cpu",
        "iterations": 6,
        "steps_per_fix": 2,
        "extra": ["--pipeline.refine.frame-stride", "40", "--pipeline.refine.offsets", "-1", "1"],
        "data": ["--downscale-factor", "4", "--lidar-max-points", "3000"],
    },
}
FIXER = {
    "gpu": {"arch": "sd-turbo", "size": (576, 1024), "warmup": 3, "repeats": 20},
    "cpu": {"arch": "tiny", "size": (64, 128), "warmup": 1, "repeats": 2},
}
FIXER_TRAINING = {
    "gpu": {"arch": "sd-turbo", "size": (576, 1024), "crop": (512, 512), "steps": 20, "train": 4, "workers": 2},
    "cpu": {"arch": "tiny", "size": (96, 160), "crop": (64, 64), "steps": 2, "train": 2, "workers": 0},
}


def _limit(ctx: Context, result: PartResult) -> float:
    """Seconds the next command of a part may take: what is left of the part's limit and of the check."""
    return max(1.0, min(ctx.state["deadlines"][result.name] - time.monotonic(), ctx.left()))


def _start(ctx: Context, result: PartResult) -> Path:
    """Record the part's deadline and return the folder for its logs."""
    ctx.state.setdefault("deadlines", {})[result.name] = time.monotonic() + result.limit_s
    logs = ctx.work / "logs" / result.name
    logs.mkdir(parents=True, exist_ok=True)
    return logs


def _mode(ctx: Context) -> str:
    return "cpu" if ctx.dry_run else "gpu"


# --------------------------------------------------------------------------- 1. setup

IMPORTS = r"""
import importlib, importlib.metadata as md, json, sys, time
out = {"python": sys.version.split()[0], "import_s": {}, "versions": {}}
for name in ["torch", "gsplat", "diffusers", "tyro", "nerfstudio.scripts.train", "nerfstudio.scripts.eval",
             "difix_refiner.fixer", "difix_refiner.commands.cli"]:
    t = time.perf_counter(); importlib.import_module(name); out["import_s"][name] = round(time.perf_counter() - t, 2)
for dist in ["torch", "numpy", "nerfstudio", "gsplat", "diffusers", "tyro", "peft", "accelerate", "transformers"]:
    try: out["versions"][dist] = md.version(dist)
    except md.PackageNotFoundError: out["versions"][dist] = None
from nerfstudio.configs.method_configs import all_methods
out["methods"] = sorted(m for m in all_methods if m.startswith("difix-refiner"))
import torch
out["cuda_available"] = torch.cuda.is_available()
out["torch_cuda"] = torch.version.cuda
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out.update(gpu=p.name, gpu_mib=round(p.total_memory / 2**20), capability=f"{p.major}.{p.minor}")
print(json.dumps(out))
"""


def part_setup(ctx: Context, result: PartResult) -> None:
    logs = _start(ctx, result)
    installed = install_wheels(ctx, logs / "pip.log")
    registered = register_plugin(ctx)
    info = python_json(ctx, IMPORTS, logs / "imports.log", _limit(ctx, result), "importing the packages")
    nvcc = shutil.which("nvcc", path=ctx.env.get("PATH"))
    nvcc_version = None
    if nvcc:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
        found = re.search(r"release ([\d.]+)", text)
        nvcc_version = found.group(1) if found else text.strip().splitlines()[-1:]
    ctx.state["device"] = info.get("gpu") or "cpu"
    result.figures = {
        "python": info["python"],
        "torch": info["versions"]["torch"],
        "torch_cuda": info["torch_cuda"],
        "numpy": info["versions"]["numpy"],
        "gpu": info.get("gpu"),
        "gpu_mib": info.get("gpu_mib"),
        "nvcc": nvcc_version,
        "wheels_installed": len(installed),
        "plugin_from_env": bool(registered),
        "import_train_s": info["import_s"]["nerfstudio.scripts.train"],
        "versions": info["versions"],
        "import_s": info["import_s"],
        "installed": installed,
    }
    missing = {"difix-refiner", "difix-refiner-cpu"} - set(info["methods"])
    if missing:
        raise PartFailure(f"nerfstudio does not list the method(s) {', '.join(sorted(missing))}")
    if ctx.dry_run:
        result.needs_cuda = ["CUDA device check"]
    elif not info["cuda_available"]:
        raise PartFailure("torch sees no CUDA device (on a machine without one, use --dry-run)")
    elif not nvcc:
        raise PartFailure("nvcc is not on PATH: gsplat compiles its kernels at first use and needs it")


# --------------------------------------------------------------------------- 2. gsplat

GSPLAT_BUILD = r"""
import json, os, time
t0 = time.perf_counter()
import torch
from torch.utils.cpp_extension import _get_build_directory
build_dir = _get_build_directory("gsplat_cuda", verbose=False)
cached = os.path.exists(os.path.join(build_dir, "gsplat_cuda.so"))
import gsplat
t1 = time.perf_counter()
from gsplat.cuda._backend import _C
t2 = time.perf_counter()
assert _C is not None, "gsplat's CUDA extension did not load (see the messages above)"
from difix_refiner.rendering import random_scene, rasterize
scene = random_scene(2000, 256, 192, seed=0, dtype=torch.float32)  # rasterize() keyword arguments
scene = {k: v.detach().cuda() if torch.is_tensor(v) else v for k, v in scene.items()}
with torch.no_grad():
    colors, alphas, meta = rasterize(**scene)  # CUDA tensors: gsplat's kernels
torch.cuda.synchronize()
print(json.dumps({"gsplat": gsplat.__version__, "import_s": round(t1 - t0, 2), "build_s": round(t2 - t1, 1),
                  "cached": cached, "build_dir": build_dir, "render_mean": float(colors.mean())}))
"""

GSPLAT_IMPORT = r"""
import json, time
t0 = time.perf_counter()
import gsplat, gsplat.cuda._torch_impl
print(json.dumps({"gsplat": gsplat.__version__, "import_s": round(time.perf_counter() - t0, 2)}))
"""


def junit_counts(path: Path) -> dict[str, int]:
    """tests / failures / errors / skipped of a pytest --junitxml report."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        raise PartFailure(f"{path} holds no test suite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def part_gsplat(ctx: Context, result: PartResult) -> None:
    logs = _start(ctx, result)
    if ctx.dry_run:
        info = python_json(ctx, GSPLAT_IMPORT, logs / "import.log", _limit(ctx, result), "importing gsplat")
    else:
        info = python_json(ctx, GSPLAT_BUILD, logs / "build.log", _limit(ctx, result), "building gsplat's kernels")
        ctx.state["gsplat_built"] = True
    result.figures.update(info)
    junit = logs / "parity.xml"
    junit.unlink(missing_ok=True)
    args = [ctx.python(), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PARITY_TESTS), f"--junitxml={junit}"]
    run = run_tool(ctx, args, logs / "parity.log", _limit(ctx, result), "the gsplat parity tests")
    counts = junit_counts(junit)
    result.figures.update(
        parity_tests=counts["tests"], parity_passed=counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        parity_skipped=counts["skipped"], parity_s=round(run.wall_s, 1),
    )  # fmt: skip
    if ctx.dry_run:
        result.needs_cuda = ["kernel build", f"{counts['skipped']} CUDA parity tests (skipped)"]
    elif counts["skipped"]:
        raise PartFailure(f"{counts['skipped']} parity tests were skipped on a CUDA machine (see {logs / 'parity.log'})")


# --------------------------------------------------------------------------- 3. training

ITER_TIMES = r"""
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0}); acc.Reload()
tag = "Train Iter (time)"
values = [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
print(json.dumps({"iter_s": values}))
"""


def training_args(ctx: Context, out: Path) -> list[str]:
    """The ns-train command line of the training part (nerfstudio's CLI options, then the dataparser's)."""
    cfg = TRAINING[_mode(ctx)]
    n, every = cfg["iterations"], cfg["steps_per_fix"]
    return [
        cfg["method"], "--max-num-iterations", str(n), "--steps-per-save", str(n), "--steps-per-eval-image", "0",
        "--steps-per-eval-batch", "0", "--steps-per-eval-all-images", "0", "--vis", "tensorboard",
        "--viewer.quit-on-train-completion", "True", "--output-dir", str(out), "--experiment-name", "gpu_check",
        "--timestamp", "run", "--pipeline.refine.steps-per-fix", str(every), "--pipeline.refine.first-fix-step",
        str(every), "--pipeline.refine.fixer-base", str(SMALL_FIXER), *cfg["extra"],
        "pandaset-data", "--data", str(SCENE), *cfg["data"],
    ]  # fmt: skip


def count_pseudo_views(folder: Path) -> tuple[int, list[dict[str, Any]]]:
    """Pseudo-view images written (not their alpha or raw renders) and the refine rounds logged."""
    rounds_file = folder / "rounds.jsonl"
    rounds = [json.loads(line) for line in rounds_file.read_text().splitlines() if line.strip()] if rounds_file.exists() else []
    images = [p for p in folder.rglob("*.png") if not p.name.endswith((".alpha.png", ".render.png"))]
    return len(images), rounds


def part_training(ctx: Context, result: PartResult) -> None:
    logs = _start(ctx, result)
    if not ctx.dry_run and not ctx.state.get("gsplat_built"):
        raise PartFailure("gsplat's kernels did not build (see the gsplat part); training on CUDA needs them")
    cfg = TRAINING[_mode(ctx)]
    out = ctx.work / "training"
    shutil.rmtree(out, ignore_errors=True)
    peak = logs / "peak_memory.json"
    args = [ctx.python(), str(ctx.repo / "benchmarks" / "peak_memory.py"), str(peak), "-m", "nerfstudio.scripts.train"]
    args += training_args(ctx, out)
    if not ctx.dry_run:
        args.insert(args.index("--max-num-iterations"), "--machine.device-type")
        args.insert(args.index("--max-num-iterations"), "cuda")
    train = run_tool(ctx, args, logs / "ns-train.log", _limit(ctx, result), "ns-train")
    run_dir = out / "gpu_check" / cfg["method"] / "run"
    memory = json.loads(peak.read_text())
    views, rounds = count_pseudo_views(run_dir / "pseudo_views")
    times = python_json(ctx, ITER_TIMES, logs / "events.log", _limit(ctx, result), "reading the training events",
                        args=(str(run_dir),))
    iter_s = [v for step, v in times["iter_s"] if step > 0]  # step 0 includes the start-up
    result.figures.update(
        method=cfg["method"],
        iterations=cfg["iterations"],
        it_per_s=round(1.0 / statistics.median(iter_s), 2) if iter_s else None,
        train_wall_s=round(train.wall_s, 1),
        peak_gpu_mib=_round(memory["cuda_peak_allocated_mib"]),
        peak_rss_mib=_round(memory["peak_rss_mib"]),
        refine_rounds=len(rounds),
        pseudo_views=views,
        refine_s=round(sum(r.get("total_s", 0.0) for r in rounds), 1),
    )
    eval_json = logs / "eval.json"
    eval_json.unlink(missing_ok=True)
    args = [ctx.python(), "-m", "nerfstudio.scripts.eval", "--load-config", str(run_dir / "config.yml"),
            "--output-path", str(eval_json)]  # fmt: skip
    ev = run_tool(ctx, args, logs / "ns-eval.log", _limit(ctx, result), "ns-eval")
    metrics = json.loads(eval_json.read_text())["results"]
    result.figures.update(heldout_psnr=round(metrics["psnr"], 2), heldout_ssim=round(metrics["ssim"], 4),
                          eval_wall_s=round(ev.wall_s, 1))  # fmt: skip
    if len(rounds) < 2 or views == 0:
        raise PartFailure(f"expected at least 2 refine rounds with pseudo views; got {len(rounds)} rounds, {views} views")
    if not math.isfinite(metrics["psnr"]):
        raise PartFailure(f"held-out PSNR is {metrics['psnr']}")
    if ctx.dry_run:
        result.needs_cuda = ["gsplat's CUDA rasteriser (the torch one ran)", "the GPU preset at full size, 400 iterations"]


def _round(value: float | None, digits: int = 0) -> float | None:
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------- 4. fixer


def part_fixer(ctx: Context, result: PartResult) -> None:
    logs = _start(ctx, result)
    cfg = FIXER[_mode(ctx)]
    out = logs / "latency.json"
    out.unlink(missing_ok=True)
    args = [ctx.python(), str(ctx.repo / "benchmarks" / "gpu_check_fixer.py"), "latency", "--arch", cfg["arch"],
            "--size", *map(str, cfg["size"]), "--dtypes", "bf16", "fp16", "--refs", "0", "1", "2",
            "--warmup", str(cfg["warmup"]), "--repeats", str(cfg["repeats"]), "--device", ctx.device,
            "--json", str(out)]  # fmt: skip
    run_tool(ctx, args, logs / "latency.log", _limit(ctx, result), "the fixer benchmark")
    data = json.loads(out.read_text())
    rows = data["rows"]
    result.figures.update(arch=data["arch"], size=list(data["size"]), warmup=data["warmup"], repeats=data["repeats"],
                          build_s=round(data["build_s"], 1), rows=rows)  # fmt: skip
    for row in rows:
        result.figures[f"{row['dtype']}_refs{row['refs']}_ms"] = round(row["latency_ms"], 1)
    bad = [r for r in rows if not (math.isfinite(r["latency_ms"]) and r["latency_ms"] > 0)]
    if len(rows) != 6 or bad:
        raise PartFailure(f"expected 6 finite latencies (bf16/fp16 x 0/1/2 reference views); got {len(rows) - len(bad)}")
    if ctx.dry_run:
        result.needs_cuda = ["SD-Turbo architecture at 576x1024 (tiny at 64x128 ran)", "CUDA memory (RSS measured)"]


# --------------------------------------------------------------------------- 5. fixer training


def write_pairs(ctx: Context, folder: Path, size: tuple[int, int], n_train: int) -> Path:
    """Pairs from the bundled photos at ``size`` (H, W): the photo blurred (4x down and up) as the input,
    the photo as the target, the photo 3 frames earlier as the reference view. One test pair."""
    from PIL import Image, ImageFilter

    height, width = size
    photos = sorted((ctx.repo / SCENE / "camera" / "front_camera").glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    splits: dict[str, dict[str, Any]] = {"train": {}, "test": {}}
    for i in range(n_train + 1):
        frame = 10 + 10 * i
        target = Image.open(photos[frame]).convert("RGB").resize((width, height), Image.BICUBIC)
        small = target.resize((width // 4, height // 4), Image.BILINEAR).filter(ImageFilter.GaussianBlur(1))
        ref = Image.open(photos[frame - 3]).convert("RGB").resize((width, height), Image.BICUBIC)
        names = {k: f"{k}_{frame:02d}.png" for k in ("image", "target", "ref")}
        small.resize((width, height), Image.BILINEAR).save(folder / names["image"])
        target.save(folder / names["target"])
        ref.save(folder / names["ref"])
        split = "test" if i == n_train else "train"
        splits[split][f"f{frame:02d}"] = {"image": names["image"], "target_image": names["target"],
                                          "ref_image": names["ref"]}  # fmt: skip
    path = folder / "pairs.json"
    path.write_text(json.dumps(splits, indent=2) + "\n")
    return path


class StepClock:
    """Notes when each step's line appears in train-fixer's losses.jsonl (polled while it runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0
        self.times: list[tuple[int, float]] = []
        self.last: dict[str, Any] = {}

    def poll(self) -> None:
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        now = time.monotonic()
        for line in lines[self.seen :]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break  # a line still being written
            self.times.append((int(entry["step"]), now))
            self.last = entry
            self.seen += 1

    def step_seconds(self) -> list[float]:
        """Seconds between consecutive steps (the first step, with its warm-up, has no interval)."""
        return [b[1] - a[1] for a, b in zip(self.times, self.times[1:])]


def part_fixer_training(ctx: Context, result: PartResult) -> None:
    logs = _start(ctx, result)
    cfg = FIXER_TRAINING[_mode(ctx)]
    work = ctx.work / "fixer_training"
    base = work / f"base_{cfg['arch']}"
    written = work / f"base_{cfg['arch']}.json"
    start = time.monotonic()
    if not written.exists():  # a random base is the same every time (seeded): keep it between runs
        shutil.rmtree(base, ignore_errors=True)
        args = [ctx.python(), str(ctx.repo / "benchmarks" / "gpu_check_fixer.py"), "write-base", "--arch", cfg["arch"],
                "--output", str(base), "--json", str(written)]  # fmt: skip
        run_tool(ctx, args, logs / "write-base.log", _limit(ctx, result), "writing the random base")
    base_info = json.loads(written.read_text())
    result.figures.update(arch=cfg["arch"], unet_params_m=round(base_info["unet_params_m"], 1),
                          base_s=round(time.monotonic() - start, 1))  # fmt: skip
    pairs = write_pairs(ctx, work / "pairs", cfg["size"], cfg["train"])
    out = work / "run"
    peak = logs / "peak_memory.json"
    args = [ctx.python(), str(ctx.repo / "benchmarks" / "peak_memory.py"), str(peak), "-m", "difix_refiner.commands.cli",
            "train-fixer", "--pairs", str(pairs), "--output", str(out), "--overwrite", "--base", str(base),
            "--variant", "difix", "--max-steps", str(cfg["steps"]), "--crop", *map(str, cfg["crop"]),
            "--mixed-precision", "bf16", "--device", ctx.device, "--checkpoint.every", "0", "--validation.every", "0",
            "--validation.final-max-images", "1", "--num-workers", str(cfg["workers"]), "--no-progress"]  # fmt: skip
    clock = StepClock(out / "losses.jsonl")
    (out / "losses.jsonl").unlink(missing_ok=True)
    run = run_tool(ctx, args, logs / "train-fixer.log", _limit(ctx, result), "train-fixer", on_poll=clock.poll)
    memory = json.loads(peak.read_text())
    text = run.text()
    params = re.search(r"([\d.]+)M of ([\d.]+)M parameters train", text)
    saved = json.loads((out / "fixer" / "fixer_config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    steps = clock.step_seconds()
    result.figures.update(
        steps=len(clock.times),
        crop=list(cfg["crop"]),
        step_s=round(statistics.median(steps[1:] or steps), 3) if steps else None,
        first_step_s=round(steps[0], 2) if steps else None,
        peak_gpu_mib=_round(memory["cuda_peak_allocated_mib"]),
        peak_rss_mib=_round(memory["peak_rss_mib"]),
        trainable_m=float(params.group(1)) if params else None,
        total_m=float(params.group(2)) if params else None,
        unet_lora_rank=saved["config"].get("unet_lora_rank"),
        vae_lora_rank=saved["config"].get("vae_lora_rank"),
        saved_kind=saved.get("kind"),
        final_loss=round(float(clock.last.get("loss", float("nan"))), 5),
        losses_off=metrics.get("objective", {}).get("disabled", []),
        wall_s=round(run.wall_s, 1),
    )
    if len(clock.times) != cfg["steps"] or not math.isfinite(result.figures["final_loss"]):
        raise PartFailure(f"expected {cfg['steps']} logged steps with a finite loss; got {len(clock.times)}")
    if saved.get("kind") != "adapter":
        raise PartFailure(f"train-fixer saved a '{saved.get('kind')}' fixer; LoRA training saves an adapter")
    if ctx.dry_run:
        result.needs_cuda = [f"SD-Turbo architecture, 512x512 crops, 20 steps (tiny, 64x64, {cfg['steps']} steps ran)",
                             "CUDA memory (RSS measured)"]  # fmt: skip


PARTS = {
    "setup": part_setup,
    "gsplat": part_gsplat,
    "training": part_training,
    "fixer": part_fixer,
    "fixer-training": part_fixer_training,
}
