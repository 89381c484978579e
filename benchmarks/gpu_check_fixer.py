"""The fixer pieces of ``benchmarks/gpu_check.py``, each run as its own process.

``latency``: median latency and peak memory of the one-step fixer for each dtype and each number of
reference views, beside diffusers' one-step img2img pipeline on the same UNet and VAE objects (the
ratio's baseline; how it is built and measured is ``benchmarks/fixer.py``'s, reused here)::

    python benchmarks/gpu_check_fixer.py latency --arch sd-turbo --size 576 1024 --dtypes bf16 fp16 \\
        --refs 0 1 2 --warmup 3 --repeats 20 --json OUT.json

``write-base``: a base folder in the diffusers layout (``vae/``, ``unet/``, ``scheduler/``,
``prompt_embeds.safetensors``) with seeded random weights of the chosen architecture, which
``train-fixer --base DIR`` loads exactly like a downloaded SD-Turbo::

    python benchmarks/gpu_check_fixer.py write-base --arch sd-turbo --output DIR

Nothing is downloaded: the architectures come from ``difix_refiner.fixer.presets``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from peak_memory import write_json  # noqa: E402

from difix_refiner.fixer import Fixer, write_prompt_embeds  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MiB = 1024.0 * 1024.0


def fixer_benchmark() -> ModuleType:
    """``benchmarks/fixer.py`` (a script, not a package), for its models and its measurement."""
    spec = importlib.util.spec_from_file_location("difix_benchmarks_fixer", HERE / "fixer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def random_components(arch: str, seed: int) -> tuple[Any, Any, Any, torch.Tensor]:
    """Seeded random ``(vae, unet, scheduler, prompt_embeds)`` of the SD-Turbo or the tiny architecture."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from difix_refiner.fixer.presets import (
        PROMPT_TOKENS,
        sd_scheduler_config,
        sd_turbo_unet_config,
        sd_vae_config,
        tiny_components,
    )

    if arch == "tiny":
        return tiny_components(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**sd_vae_config())
        unet = UNet2DConditionModel(**sd_turbo_unet_config())
        prompt = torch.randn(1, PROMPT_TOKENS, unet.config.cross_attention_dim)  # [1, 77, 1024]
    return vae, unet, DDPMScheduler(**sd_scheduler_config()), prompt


def write_base(arch: str, output: Path, seed: int) -> dict[str, Any]:
    """Write a random base folder in the diffusers layout; returns what was written."""
    start = time.perf_counter()
    vae, unet, scheduler, prompt = random_components(arch, seed)
    output.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(output / "vae")
    unet.save_pretrained(output / "unet")
    scheduler.save_pretrained(output / "scheduler")
    write_prompt_embeds(output / "prompt_embeds.safetensors", prompt)
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    return {
        "arch": arch,
        "unet_params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
        "vae_params_m": sum(p.numel() for p in vae.parameters()) / 1e6,
        "folder_mib": size / MiB,
        "write_s": time.perf_counter() - start,
    }


def build_fixer(arch: str, seed: int, bench: ModuleType) -> Fixer:
    """The Difix fixer (variant ``difix``) with random weights of the chosen architecture."""
    if arch == "tiny":
        return Fixer.tiny("difix", seed=seed)
    return bench.sd_turbo_sized_fixer(seed)


def latency_rows(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every (dtype, reference views) case and the img2img baseline per dtype."""
    bench = fixer_benchmark()
    device = torch.device(args.device)
    height, width = args.size
    start = time.perf_counter()
    fixer = build_fixer(args.arch, args.seed, bench)
    build_s = time.perf_counter() - start
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, height, width, generator=g)  # [1, 3, H, W]
    refs = torch.rand(1, max(args.refs + [1]), 3, height, width, generator=g)  # [1, R, 3, H, W]
    rows = []
    for name in args.dtypes:
        dtype = DTYPES[name]
        fixer.to(device=device, dtype=dtype).eval()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            weights_mib = torch.cuda.memory_allocated(device) / MiB
        else:
            weights_mib = sum(p.numel() * p.element_size() for p in fixer.parameters()) / MiB
        img = image.to(device)
        ref = refs.to(device)
        prompt = fixer.encode_prompt(1).to(device, dtype)  # [1, 77, D]
        pipe = bench.img2img_pipeline(fixer)

        def run_pipe() -> torch.Tensor:
            return bench.run_img2img(pipe, img, prompt, device)

        print(f"[fixer] {name}: img2img baseline ...", file=sys.stderr, flush=True)
        base = bench.measure(run_pipe, device, args.warmup, args.repeats)
        for n_refs in args.refs:
            print(f"[fixer] {name}: {n_refs} reference view(s) ...", file=sys.stderr, flush=True)
            use = ref[:, :n_refs] if n_refs else None
            res = bench.measure(lambda: fixer.fix(img, use), device, args.warmup, args.repeats)  # noqa: B023
            rows.append(
                {
                    "dtype": name,
                    "refs": n_refs,
                    "latency_ms": res.latency_ms,
                    "peak_mib": res.peak_mib,
                    "img2img_ms": base.latency_ms,
                    "img2img_peak_mib": base.peak_mib,
                    "latency_ratio": res.latency_ms / base.latency_ms,
                    "weights_mib": weights_mib,
                }
            )
        del pipe
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "arch": args.arch,
        "size": [height, width],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "warmup": args.warmup,
        "repeats": args.repeats,
        "build_s": build_s,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency", help="fixer latency and peak memory against diffusers' img2img")
    lat.add_argument("--arch", choices=["sd-turbo", "tiny"], default="sd-turbo")
    lat.add_argument("--size", type=int, nargs=2, default=[576, 1024], metavar=("H", "W"))
    lat.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp16"])
    lat.add_argument("--refs", type=int, nargs="+", default=[0, 1, 2], help="numbers of reference views")
    lat.add_argument("--warmup", type=int, default=3, help="untimed calls before each measured case")
    lat.add_argument("--repeats", type=int, default=20, help="timed calls per case (the median is reported)")
    lat.add_argument("--device", default="cuda")
    lat.add_argument("--seed", type=int, default=0)
    lat.add_argument("--json", type=Path, required=True, help="where to write the results")
    base = sub.add_parser("write-base", help="a random base folder in the diffusers layout")
    base.add_argument("--arch", choices=["sd-turbo", "tiny"], default="sd-turbo")
    base.add_argument("--output", type=Path, required=True)
    base.add_argument("--seed", type=int, default=0)
    base.add_argument("--json", type=Path, default=None, help="where to write what was written")
    args = parser.parse_args(argv)

    if args.command == "latency":
        result = latency_rows(args)
    else:
        result = write_base(args.arch, args.output, args.seed)
    if args.json is not None:
        write_json(str(args.json), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
