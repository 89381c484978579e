"""Build the bundled, downscaled copy of PandaSet sequence 002 in ``examples/pandaset_002/``.

This is how the copy in the repository was made (it is committed, so users need not run it):

    python examples/make_pandaset_example.py --source ../shared/data/pandaset_002 \
        --output examples/pandaset_002

Images are downscaled 4x (1920x1080 -> 480x270) with area averaging and the intrinsics are
divided by the same factor (nerfstudio and PandaSet both put pixel edges at integer coordinates,
so a uniform rescale is exact). Each LiDAR sweep keeps a seeded random subset of its points, except the
sweeps ``pandaset-data`` keeps for evaluation by default, which stay whole: the LiDAR metrics z-buffer the
evaluation sweep into a shifted camera, and a thinned sweep is too sparse to hide the road behind a parked
car (see the README's *What limits the colour off the path*). Training never reads those sweeps.
Poses and timestamps are copied unchanged. The 3D boxes (``annotations/cuboids/NN.json``) keep the keys
the dataparser reads (``CUBOID_KEYS``), values rounded to millimetres, written compactly.

The boxes were added to the committed copy later, with the same code on its own:

    python examples/make_pandaset_example.py --source ../shared/data/pandaset_002 \
        --output examples/pandaset_002 --only-annotations

The whole evaluation sweeps came later still: the first command into a new folder, whose files other than
those 18 sweeps were byte-identical to the committed ones, and the 18 sweeps copied over.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

CAMERAS = ("front_camera", "front_left_camera", "front_right_camera")
CUBOID_KEYS = (
    "uuid", "label", "stationary", "attributes.object_motion",
    "position.x", "position.y", "position.z", "dimensions.x", "dimensions.y", "dimensions.z", "yaw",
)  # fmt: skip
"""Box keys kept in the bundled copy (the release's labelling metadata is dropped)."""


def write_cuboids(source: Path, output: Path) -> None:
    """Copy ``annotations/cuboids/NN.json`` with only ``CUBOID_KEYS``, numbers rounded to 3 decimals."""
    dst = output / "annotations" / "cuboids"
    dst.mkdir(parents=True)
    for path in sorted((source / "annotations" / "cuboids").glob("*.json")):
        boxes = json.loads(path.read_text())
        kept = [
            {k: round(b[k], 3) if isinstance(b[k], float) else b[k] for k in CUBOID_KEYS if k in b} for b in boxes
        ]
        (dst / path.name).write_text(json.dumps(kept, separators=(",", ":")))


def default_evaluation_sweeps(source: Path) -> List[int]:
    """The frames whose sweeps ``pandaset-data`` (default options) keeps for evaluation only."""
    from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig

    return PandasetDataParserConfig(data=source).setup().sweep_split().eval


def thinned_sweep(data: Dict[str, np.ndarray], frame: int, points: int) -> Dict[str, np.ndarray]:
    """A seeded random subset of ``points`` points of a sweep (rng seeded by the frame), in file order."""
    rng = np.random.default_rng(frame)
    n = data["xyz"].shape[0]
    keep = np.sort(rng.choice(n, size=min(points, n), replace=False))
    return {"xyz": data["xyz"][keep].astype(np.float32), "intensity": data["intensity"][keep], "sensor": data["sensor"][keep]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="full-size pandaset_002 folder")
    parser.add_argument("--output", type=Path, required=True, help="folder to create (must not exist)")
    parser.add_argument("--factor", type=int, default=4, help="integer downscale factor for the images")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of the written images")
    parser.add_argument("--lidar-points", type=int, default=4000, help="points kept per training LiDAR sweep")
    parser.add_argument(
        "--eval-lidar-points", type=int, default=35000,
        help="points kept in the sweeps pandaset-data keeps for evaluation by default (35000: the source's whole sweep)",
    )  # fmt: skip
    parser.add_argument(
        "--only-annotations", action="store_true", help="add annotations/ to an existing --output that has none"
    )
    args = parser.parse_args()

    if args.only_annotations:
        if (args.output / "annotations").exists():
            raise SystemExit(f"{args.output / 'annotations'} already exists; remove it first (this script never overwrites).")
        tmp = args.output / ".annotations.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        write_cuboids(args.source, tmp)
        (tmp / "annotations").rename(args.output / "annotations")
        tmp.rmdir()
        print(f"wrote {args.output / 'annotations'}")
        return

    if args.output.exists():
        raise SystemExit(f"{args.output} already exists; remove it first (this script never overwrites).")
    tmp = args.output.with_name(args.output.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)

    for cam in CAMERAS:
        src, dst = args.source / "camera" / cam, tmp / "camera" / cam
        dst.mkdir(parents=True)
        for name in ("poses.json", "timestamps.json"):
            shutil.copy2(src / name, dst / name)
        intr = json.loads((src / "intrinsics.json").read_text())
        intr = {k: float(v) / args.factor for k, v in intr.items()}
        (dst / "intrinsics.json").write_text(json.dumps(intr, indent=1))
        for jpg in sorted(src.glob("*.jpg")):
            img = cv2.imread(str(jpg), cv2.IMREAD_COLOR)
            h, w = img.shape[:2]
            small = cv2.resize(img, (w // args.factor, h // args.factor), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(dst / jpg.name), small, [cv2.IMWRITE_JPEG_QUALITY, args.jpeg_quality])

    (tmp / "lidar").mkdir()
    for name in ("poses.json", "timestamps.json"):
        shutil.copy2(args.source / "lidar" / name, tmp / "lidar" / name)
    evaluation = set(default_evaluation_sweeps(args.source))
    print(f"whole sweeps ({args.eval_lidar_points} points) for the evaluation frames {sorted(evaluation)}")
    for sweep in sorted((args.source / "lidar").glob("*.npz")):
        frame = int(sweep.stem)
        points = args.eval_lidar_points if frame in evaluation else args.lidar_points
        with np.load(sweep) as data:
            np.savez_compressed(tmp / "lidar" / sweep.name, **thinned_sweep(dict(data), frame, points))
    shutil.copytree(args.source / "meta", tmp / "meta")
    write_cuboids(args.source, tmp)
    tmp.rename(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
