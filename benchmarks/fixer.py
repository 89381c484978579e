"""Latency and peak memory of the one-step fixer against diffusers' img2img pipeline.

Cases (all with random weights; nothing is downloaded):

(a) SD-Turbo-sized architecture (UNet 320/640/1280/1280, cross-attention 1024, SD VAE) at
    512x512: our Difix fixer, single view;
(b) the same with one reference view (the UNet and VAE encoder see two views);
(c) the tiny preset.

Each fixer row is compared, in the same process, with ``StableDiffusionImg2ImgPipeline``
built on the *same* UNet and VAE objects (so with the same LoRA-wrapped layers), a
``DDPMScheduler`` with the same schedule, ``num_inference_steps=2, strength=0.5`` (= one
UNet evaluation), ``guidance_scale=0`` (no classifier-free guidance, batch of one),
``prompt_embeds`` passed directly (no tokenizer or text encoder), ``output_type="pt"``.
Both run under ``torch.inference_mode``; neither includes prompt encoding.

Latency: median over ``--repeats`` calls after ``--warmup`` calls of each code path (for the
full-size model on CPU the pipeline shares the single-view fixer's warm-up: same kernels,
same shapes). Peak memory: on CUDA the
peak of ``torch.cuda.max_memory_allocated`` above what was allocated before the call; on
CPU the peak resident-set size above the level before the call (sampled every 2 ms after
``malloc_trim``; approximate, and it also counts allocator caching).

    python benchmarks/fixer.py                 # all cases, CPU or GPU
    python benchmarks/fixer.py --cases tiny --size 256 --repeats 5
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel  # noqa: E402

from difix_refiner.fixer import Fixer, FixerConfig  # noqa: E402
from difix_refiner.fixer.presets import (  # noqa: E402
    PROMPT_TOKENS,
    sd_scheduler_config,
    sd_turbo_unet_config,
    sd_vae_config,
)

MiB = 1024.0 * 1024.0


# --------------------------------------------------------------------------- measurement


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    """Give freed heap back to the OS so that the RSS before a call is a fair baseline."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class _RssPeak:
    """Samples the process RSS in a thread while the block runs."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> _RssPeak:
        self.base = _rss_bytes()
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


@dataclass
class Result:
    latency_ms: float
    peak_mib: float


def measure(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> Result:
    """Median latency of ``fn`` and the largest memory increase seen during the timed calls."""
    for _ in range(warmup):
        fn()
    times, peaks = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
            peaks.append(torch.cuda.max_memory_allocated(device) - before)
        else:
            _trim_heap()
            with _RssPeak() as rss:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            peaks.append(rss.peak - rss.base)
    return Result(latency_ms=1000.0 * statistics.median(times), peak_mib=max(peaks) / MiB)


# --------------------------------------------------------------------------- models


def sd_turbo_sized_fixer(seed: int) -> Fixer:
    """The Difix fixer on SD-Turbo-sized components with random weights (configs built in code)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**sd_vae_config())
        unet = UNet2DConditionModel(**sd_turbo_unet_config())
        prompt = torch.randn(1, PROMPT_TOKENS, unet.config.cross_attention_dim)
    return Fixer(vae, unet, DDPMScheduler(**sd_scheduler_config()), FixerConfig(variant="difix"), prompt_embeds=prompt)


def run_img2img(pipe, image: torch.Tensor, prompt: torch.Tensor, device) -> torch.Tensor:
    """One call of the one-step img2img baseline: 2 scheduler steps at strength 0.5 (one UNet evaluation)."""
    with torch.inference_mode():
        return pipe(
            image=image,
            prompt_embeds=prompt,
            num_inference_steps=2,
            strength=0.5,
            guidance_scale=0.0,
            output_type="pt",
            generator=torch.Generator(device).manual_seed(0),
        ).images


def img2img_pipeline(fixer: Fixer) -> StableDiffusionImg2ImgPipeline:
    """diffusers' img2img pipeline on the fixer's own UNet and VAE objects."""
    pipe = StableDiffusionImg2ImgPipeline(
        vae=fixer.vae,
        text_encoder=None,
        tokenizer=None,
        unet=fixer.unet,
        scheduler=DDPMScheduler.from_config(fixer.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_case(
    name: str,
    fixer: Fixer,
    height: int,
    width: int,
    device: torch.device,
    dtype: torch.dtype,
    args: argparse.Namespace,
    with_ref: tuple[bool, ...],
    warm_pipeline: bool = True,
) -> list[tuple[str, str, Result, Result]]:
    fixer.to(device=device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, height, width, generator=g).to(device)
    ref = torch.rand(1, 1, 3, height, width, generator=g).to(device)
    prompt = fixer.encode_prompt(1).to(device, dtype)  # [1, 77, D]
    pipe = img2img_pipeline(fixer)

    def run_pipe() -> torch.Tensor:
        return run_img2img(pipe, image, prompt, device)

    def run_fixer(use_ref: bool) -> torch.Tensor:
        return fixer.fix(image, ref if use_ref else None)

    # Warm-up once per code path. For the full-size model on CPU the pipeline shares the
    # single-view fixer's warm-up (same kernels at the same shapes): a pass there takes tens of
    # seconds and the whole benchmark should stay within minutes.
    print(f"[{name}] warm-up ...", file=sys.stderr, flush=True)
    for _ in range(args.warmup):
        for use_ref in with_ref:
            run_fixer(use_ref)
        if warm_pipeline:
            run_pipe()
    print(f"[{name}] img2img pipeline ...", file=sys.stderr, flush=True)
    baseline = measure(run_pipe, device, 0, args.repeats)
    rows = []
    for use_ref in with_ref:
        label = f"fixer {fixer.config.variant}" + (" + 1 ref view" if use_ref else "")
        print(f"[{name}] {label} ...", file=sys.stderr, flush=True)
        res = measure(lambda: run_fixer(use_ref), device, 0, args.repeats)  # noqa: B023
        rows.append((name, label, res, baseline))
    del pipe
    fixer.to("cpu")
    return rows


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=["sd-turbo", "tiny"], default=["sd-turbo", "tiny"])
    parser.add_argument("--size", type=int, default=512, help="side of the square frame for the SD-Turbo-sized case")
    parser.add_argument("--tiny-size", type=int, nargs=2, default=[256, 448], metavar=("H", "W"))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 2 on CPU, 10 on GPU)")
    parser.add_argument("--device", default="auto", help="'cpu', 'cuda', or 'auto'")
    parser.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                        help="auto: fp16 on GPU, fp32 on CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.repeats is None:
        args.repeats = 10 if device.type == "cuda" else 2
    dtype = {
        "auto": torch.float16 if device.type == "cuda" else torch.float32,
        "fp32": torch.float32,
        "fp16": torch.float16,
        "bf16": torch.bfloat16,
    }[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    t_start = time.perf_counter()
    if "sd-turbo" in args.cases:
        print("building SD-Turbo-sized components (random weights) ...", file=sys.stderr, flush=True)
        fixer = sd_turbo_sized_fixer(args.seed)
        rows += bench_case(
            f"(a,b) SD-Turbo-sized {args.size}x{args.size}",
            fixer,
            args.size,
            args.size,
            device,
            dtype,
            args,
            (False, True),
            warm_pipeline=device.type == "cuda",
        )
        del fixer
        _trim_heap()
    if "tiny" in args.cases:
        h, w = args.tiny_size
        for variant, refs in (("difix", (False, True)), ("pix2pix-turbo", (False,))):
            rows += bench_case(
                f"(c) tiny {h}x{w}", Fixer.tiny(variant, seed=args.seed), h, w, device, dtype, args, refs
            )

    dev = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print()
    print(f"device: {dev}; dtype: {str(dtype).replace('torch.', '')}; torch {torch.__version__}; "
          f"warm-up {args.warmup}, median of {args.repeats}; total {time.perf_counter() - t_start:.0f} s")
    print("baseline: diffusers StableDiffusionImg2ImgPipeline, same UNet/VAE objects, 1 UNet step "
          "(num_inference_steps=2, strength=0.5), guidance 0, prompt_embeds given")
    print()
    header = "| case | model | latency ms | img2img ms | latency ratio | peak MiB | img2img peak MiB | memory ratio |"
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for case, label, res, base in rows:
        print(
            f"| {case} | {label} | {res.latency_ms:.1f} | {base.latency_ms:.1f} | "
            f"{res.latency_ms / base.latency_ms:.2f} | {res.peak_mib:.0f} | {base.peak_mib:.0f} | "
            f"{res.peak_mib / max(base.peak_mib, 1e-6):.2f} |"
        )


if __name__ == "__main__":
    main()
