"""``difix-refiner import-pandaset SRC DST``: a PandaSet release sequence in this project's layout, once.

For users who want no pickles at training time: ``pandaset-data`` reads the release layout directly
too (caching the converted sweeps), so this step is optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from difix_refiner.data.pandaset_import import import_pandaset


@dataclass
class ImportPandasetCommand:
    """Convert a PandaSet release sequence folder (pickled LiDAR and boxes) into this project's layout.

    Writes DST with lidar/NN.npz (every point: xyz, intensity, sensor, timestamp) and
    annotations/cuboids/NN.json (full precision) in place of the release's lidar/NN.pkl.gz and
    annotations/cuboids/NN.pkl.gz; cameras, poses, timestamps and meta/ are copied. The pickles are read
    with an unpickler limited to pandas/numpy containers. SRC is never written to; DST appears whole or
    not at all. Optional: pandaset-data reads the release folder directly too.
    """

    src: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="SRC")]]
    """Sequence folder of the PandaSet release (camera/, lidar/NN.pkl.gz, annotations/cuboids/NN.pkl.gz)."""
    dst: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="DST")]]
    """Folder to create in this project's layout (must not exist unless --overwrite)."""
    overwrite: bool = False
    """Replace an existing DST."""

    def main(self) -> None:
        """Convert, and print what was written."""
        counts = import_pandaset(self.src, self.dst, self.overwrite)
        note = f"; {counts['pickles_skipped']} other pickle(s) not read" if counts["pickles_skipped"] else ""
        print(
            f"wrote {self.dst}: {counts['sweeps']} LiDAR sweeps (npz), boxes of {counts['cuboid_frames']} frames (json), "
            f"{counts['files_copied']} files copied{note}"
        )
