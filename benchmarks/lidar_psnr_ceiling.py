"""How high the LiDAR-anchored PSNR can go: real photos from elsewhere on the drive scored as if rendered.

The shifted-view metric (``difix-refiner eval``'s ``lidar_psnr``) compares, at every evaluation-sweep point
that both the frame-t camera and the judged camera see, the frame-t photo's colour with the judged image's.
No photo exists 2 m to the side of the drive, but the same camera's photos a few frames later are real views
from some metres further on. Scored by the same rule in place of a render, they give what a perfect model
would score for that displacement: the metric's ceiling, with LiDAR-camera misregistration (a 360-degree
sweep against a photo taken at one instant), the z-buffer's choices, changes of light and the pixel grid all
counted. Moving objects leave both sides: their points are dropped (the frame-t boxes) and so are points
whose pixel in the later photo lies in a moving box of that frame (the model renders no moving object there).

    python benchmarks/lidar_psnr_ceiling.py
    python benchmarks/lidar_psnr_ceiling.py --bins 0.05 1 2 3 --downscale 1

Prints one row per distance between the two cameras (bins in metres; the pairs of a bin are pooled): how many
photo pairs, their mean distance, the points compared and the PSNR. The car drives straight, so the later photo
is further ahead, not to the side: a sideways move of the same length changes more of what the camera sees.
The default frames are the demo's evaluation-sweep frames (every 4th training frame of the front camera,
every 8th frame held out) at the CPU preset's resolution (``--downscale 2``: 240x135 for the bundled drive).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from difix_refiner.data.boxes import DEFAULT_MARGIN_M, box_pixel_mask  # noqa: E402
from difix_refiner.data.pandaset import load_camera, load_lidar_positions, load_lidar_sweeps  # noqa: E402
from difix_refiner.data.sweep_split import DEFAULT_EVAL_STRIDE, every_nth_frame  # noqa: E402
from difix_refiner.evaluation import lidar_metrics as lm  # noqa: E402
from difix_refiner.evaluation.lidar_protocol import evaluation_sweeps, moving_boxes  # noqa: E402
from difix_refiner.evaluation.settings import EvalSettings  # noqa: E402
from difix_refiner.fixer.render_fixing import read_photo  # noqa: E402


def demo_frames(num_frames: int, eval_interval: int = 8, stride: int = DEFAULT_EVAL_STRIDE) -> List[int]:
    """The demo's evaluation-sweep frames: every ``stride``-th training frame when every ``eval_interval``-th
    frame is held out."""
    training = [f for f in range(num_frames) if f % eval_interval]
    return every_nth_frame(training, stride).tolist()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "examples" / "pandaset_002", help="PandaSet folder")
    p.add_argument("--camera", default="front_camera", help="the camera whose photos are compared")
    p.add_argument("--frames", type=int, nargs="+", default=None,
                   help="frames whose sweeps anchor the metric (default: the demo's evaluation-sweep frames)")
    p.add_argument("--gaps", type=int, nargs="+", default=[d for d in range(-12, 13) if d],
                   help="frame gaps d: the photo of frame t+d is scored against frame t's sweep")
    p.add_argument("--bins", type=float, nargs="+", default=[0.05, 0.5, 1.0, 1.5, 2.5, 3.5],
                   help="edges (metres) of the distance bins the photo pairs are pooled in")
    p.add_argument("--lidar-data", type=Path, default=None,
                   help="PandaSet folder whose (denser) sweeps anchor the metric, same world frame (default: --data)")
    p.add_argument("--occlusion-radius-px", type=int, default=EvalSettings().occlusion_radius_px,
                   help="the LiDAR z-buffer's occlusion radius (difix-refiner eval's option)")
    p.add_argument("--downscale", type=int, default=2, help="image downscale factor (2: the CPU preset's)")
    p.add_argument("--moving-object-margin", type=float, default=DEFAULT_MARGIN_M, help="metres added to moving boxes")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.downscale < 1:
        raise SystemExit("--downscale must be at least 1")
    settings = EvalSettings(occlusion_radius_px=args.occlusion_radius_px)  # otherwise the eval command's defaults
    cam = load_camera(args.data, args.camera, verify_images=False)
    num = len(cam.frame_indices)
    frames = demo_frames(num) if args.frames is None else sorted(set(args.frames))
    bad = [f for f in frames if not 0 <= f < num]
    if bad:
        raise SystemExit(f"frames {bad} are outside 0..{num - 1}")
    w, h = cam.width // args.downscale, cam.height // args.downscale
    K = cam.K.copy()
    K[:2] *= np.array([[w / cam.width], [h / cam.height]])  # intrinsics of the downscaled image

    lidar_root = args.lidar_data if args.lidar_data is not None else args.data
    sweeps = load_lidar_sweeps(lidar_root, frames)
    sensors = load_lidar_positions(lidar_root)
    targets = sorted({f + d for f in frames for d in args.gaps if 0 <= f + d < num})
    boxes = moving_boxes(args.data, sorted(set(frames) | set(targets)), args.moving_object_margin)
    sweeps, _ = evaluation_sweeps(sweeps, None, boxes, frames, 0)  # drops moving objects' points
    visibility = settings.visibility()
    photos: Dict[int, np.ndarray] = {}

    def photo(f: int) -> np.ndarray:
        if f not in photos:
            photos[f] = read_photo(cam.image_paths[f], w, h)
        return photos[f]

    print(f"{args.data} {args.camera} at {w}x{h}; anchor frames {frames[0]}..{frames[-1]} ({len(frames)}), gaps {args.gaps}")
    edges = sorted(args.bins)
    pooled: Dict[int, List[lm.ColourSamples]] = {b: [] for b in range(len(edges) - 1)}
    moved: Dict[int, List[float]] = {b: [] for b in range(len(edges) - 1)}
    for t in frames:
        if t not in sweeps:
            continue
        points, _ = lm.points_near_frame(sweeps, sensors, t, 0)  # [N, 3] frame t's own sweep
        real = lm.project_points(points, cam.c2w_opencv[t], K, w, h, visibility, max_depth=settings.max_depth_m)
        for d in args.gaps:
            u = t + d
            if not 0 <= u < num:
                continue
            offset = cam.c2w_opencv[u, :3, 3] - cam.c2w_opencv[t, :3, 3]  # [3] world metres
            dist = float(np.linalg.norm(offset))
            b = int(np.searchsorted(edges, dist, side="right")) - 1
            if not 0 <= b < len(edges) - 1:
                continue
            other = lm.project_points(points, cam.c2w_opencv[u], K, w, h, visibility, max_depth=settings.max_depth_m)
            if boxes is not None and boxes.get(u):
                moving = box_pixel_mask(boxes[u], cam.c2w_opencv[u], K, w, h)  # [H, W]
                other = dataclasses.replace(other, visible=other.visible & ~moving[other.pixels[:, 1], other.pixels[:, 0]])
            pooled[b].append(lm.lidar_colour_samples(real, photo(t), other, photo(u)))
            moved[b].append(dist)
    print()
    print("| distance between the cameras (m) | photo pairs | mean distance (m) | points | LiDAR PSNR (dB) |")
    print("|---|---:|---:|---:|---:|")
    for b in range(len(edges) - 1):
        label = f"{edges[b]:g}-{edges[b + 1]:g}"
        if not pooled[b]:
            print(f"| {label} | 0 | n/a | 0 | n/a |")
            continue
        score = lm.samples_psnr(lm.ColourSamples.concat(pooled[b]))
        print(f"| {label} | {len(moved[b])} | {np.mean(moved[b]):.2f} | {score['num_points']} | {score['psnr']:.2f} |")


if __name__ == "__main__":
    main()
