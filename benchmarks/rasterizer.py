"""Benchmark of the CPU rasteriser: forward + backward time and peak memory.

Scene: a synthetic LiDAR-like street seen from a car (ground, two facades, a
few objects), with Gaussian sizes chosen so that most splats are a few pixels
in radius. Each Gaussian count runs in a fresh process so that its peak memory
can be read from the process's maximum resident set size.

The dense reference (every Gaussian against every pixel) would take minutes
per iteration at these sizes. Its cost is proportional to pixels x visible
Gaussians, so it is timed at full resolution on two random subsets of the
scene's Gaussians and extrapolated linearly to the full count (the table
names the subset sizes).

Run ``python benchmarks/rasterizer.py --help`` for options.
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from difix_refiner.rendering import rasterize, reference_rasterize  # noqa: E402

PARAMS = ("means", "quats", "scales", "opacities", "colors")


def make_street_scene(n: int, width: int, height: int, seed: int = 0, sh_degree: Optional[int] = None) -> Dict:
    """Random street scene in front of one camera (OpenCV axes: x right, y down, z forward).

    Returns a dict of rasterize() keyword arguments (Gaussian parameters require grad).
    """
    g = torch.Generator().manual_seed(seed)

    def uniform(lo, hi, k):
        return lo + (hi - lo) * torch.rand(k, generator=g)

    focal = 0.85 * width
    n_ground, n_facade = int(0.5 * n), int(0.4 * n)
    n_object = n - n_ground - n_facade
    # LiDAR density falls with distance: depths are log-uniform.
    ground = torch.stack(
        [
            uniform(-12, 12, n_ground),
            1.6 + 0.05 * torch.randn(n_ground, generator=g),
            torch.exp(uniform(math.log(2.0), math.log(60.0), n_ground)),
        ],
        1,
    )
    side = torch.where(torch.rand(n_facade, generator=g) < 0.5, -1.0, 1.0)
    facade = torch.stack(
        [
            side * (7.0 + 0.2 * torch.randn(n_facade, generator=g)),
            uniform(-8, 1.6, n_facade),
            torch.exp(uniform(math.log(3.0), math.log(60.0), n_facade)),
        ],
        1,
    )
    objects = torch.stack([uniform(-6, 6, n_object), uniform(-1, 1.6, n_object), uniform(4, 40, n_object)], 1)
    means = torch.cat([ground, facade, objects])[torch.randperm(n, generator=g)]

    # Projected standard deviation log-uniform in [0.5, 3] px, up to 2x anisotropy per axis.
    sigma_px = torch.exp(uniform(math.log(0.5), math.log(3.0), n))
    scales = (sigma_px * means[:, 2] / focal)[:, None] * torch.exp(uniform(-0.7, 0.7, 3 * n).reshape(n, 3))
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.sigmoid(1.5 * torch.randn(n, generator=g))
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g)
    else:
        colors = 0.3 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)
    Ks = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])[None]
    scene = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)
    scene = {k: v.requires_grad_() for k, v in scene.items()}
    return dict(scene, viewmats=torch.eye(4)[None], Ks=Ks, width=width, height=height, sh_degree=sh_degree)


def time_fwd_bwd(render: Callable, scene: Dict, repeats: int) -> Tuple[float, float, float, int]:
    """Median forward and backward wall-clock seconds, median fwd+bwd CPU seconds, visible splats."""
    fwd, bwd, cpu, visible = [], [], [], 0
    for _ in range(repeats):
        for key in PARAMS:
            scene[key].grad = None
        c0, t0 = time.process_time(), time.perf_counter()
        colors, alphas, meta = render(**scene)
        t1 = time.perf_counter()
        (colors.square().mean() + alphas.mean()).backward()
        c2, t2 = time.process_time(), time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
        cpu.append(c2 - c0)
        visible = int((meta["radii"] > 0).sum())
    mid = len(fwd) // 2
    return sorted(fwd)[mid], sorted(bwd)[mid], sorted(cpu)[mid], visible


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> Dict:
    """Measure one Gaussian count in this process."""
    n = args.worker
    pixels = args.width * args.height
    scene = make_street_scene(n, args.width, args.height, seed=0, sh_degree=args.sh_degree)
    rss_before = current_rss_mib()
    time_fwd_bwd(rasterize, dict(scene, packed=False), 1)  # warm-up
    fwd, bwd, cpu, visible = time_fwd_bwd(rasterize, dict(scene, packed=False), args.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - rss_before
    row = dict(n=n, visible=visible, fwd=fwd, bwd=bwd, cpu=cpu, peak_mib=peak)
    if args.reference_pairs > 0:
        # The dense cost is pixels x visible Gaussians. Random subsets of the scene keep
        # the fraction of visible Gaussians, so time is linear in the subset size:
        # time two subsets of the full image and extrapolate to n.
        timings = []
        for n_sub in (args.reference_pairs / pixels, args.reference_pairs / pixels / 4):
            n_sub = max(int(n_sub), 1)
            subset = {k: (v.detach()[:n_sub].requires_grad_() if k in PARAMS else v) for k, v in scene.items()}
            chunk = max(1, int(2e6 // n_sub))  # pixels per checkpointed chunk: bounded memory
            rfwd, rbwd, _, _ = time_fwd_bwd(reference_rasterize, dict(subset, pixel_chunk=chunk), 1)
            timings.append((n_sub, rfwd + rbwd))
        (n_a, t_a), (n_b, t_b) = timings
        slope = (t_a - t_b) / max(n_a - n_b, 1)
        row.update(ref=t_a + slope * (n - n_a), subsets=f"{n_a}, {n_b}")
    return row


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 50_000, 100_000], help="Gaussian counts")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=270)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per count (median reported)")
    parser.add_argument("--sh-degree", type=int, default=None, help="use SH colours of this degree")
    parser.add_argument(
        "--reference-pairs",
        type=float,
        default=1e8,
        help="pixels x Gaussians of the larger dense-reference run; 0 skips the reference",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {args.width}x{args.height}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    rows = []
    for n in args.counts:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n)] + [
            a for a in (argv if argv is not None else sys.argv[1:])
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(".", end="", flush=True)
    print()

    header = (
        f"{'gaussians':>9} {'visible':>8} {'fwd s':>7} {'bwd s':>7} {'fwd+bwd s':>9} {'CPU s':>6} "
        f"{'peak MiB':>8} {'dense ref s':>11} {'speed-up':>8}  dense reference run on subsets of"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        total = r["fwd"] + r["bwd"]
        ref = f"{'-':>11} {'-':>8}"
        if "ref" in r:
            ref = f"{r['ref']:>11.1f} {r['ref'] / total:>7.0f}x  {r['subsets']} Gaussians"
        print(
            f"{r['n']:>9} {r['visible']:>8} {r['fwd']:>7.3f} {r['bwd']:>7.3f} {total:>9.3f} {r['cpu']:>6.3f} "
            f"{r['peak_mib']:>8.0f} {ref}"
        )
    print(
        "times: median wall clock; CPU s: CPU time of fwd+bwd summed over threads; peak MiB: maximum resident memory of the run minus the memory"
        " held before it (scene built); dense ref: fwd+bwd extrapolated linearly in the Gaussian count."
    )


if __name__ == "__main__":
    main()
