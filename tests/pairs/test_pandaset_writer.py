"""The cycle strategy's PandaSet-layout folder: sweeps from either layout of the source."""

from __future__ import annotations

import numpy as np
from release_fixture import BOXES, EXAMPLE, FIXTURE, FRAMES, REPO, user_cache  # noqa: F401  (user_cache: autouse)

from difix_refiner.data import pandaset_release as pr


def test_make_pairs_cycle_folder_takes_sweeps_from_a_release(tmp_path):
    """make-pairs' cycle writes its second scene with npz sweeps, also when the source is a release folder."""
    from difix_refiner.pairs.pandaset_writer import write_pandaset_folder

    world = np.tile(np.eye(4)[:3], (2, 1, 1))
    world[:, :, 3] = [[0.0, 0.0, 1.5], [1.0, 0.0, 1.5]]
    spec = {"front_camera": {"images": [np.zeros((8, 8, 3), np.uint8)] * 2, "camera_to_world": world,
                             "fx": 8.0, "fy": 8.0, "cx": 4.0, "cy": 4.0}}  # fmt: skip
    folder = tmp_path / "cycle"
    write_pandaset_folder(folder, FIXTURE, [0, 1], spec)
    for j in FRAMES:
        with np.load(folder / "lidar" / f"{j:02d}.npz") as got:
            want = pr.read_release_sweep(pr.release_file(FIXTURE, "lidar", j))
            np.testing.assert_array_equal(got["xyz"], want["xyz"])
