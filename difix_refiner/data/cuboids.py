"""3D boxes of a PandaSet frame, from either layout: converted JSON or the release's pickles.

Each box is a dict with the keys of the release's cuboid table (see the README of a converted
PandaSet folder): ``uuid``, ``label``, ``yaw`` (radians about world z), ``stationary``,
``camera_used``, ``position.x/y/z`` (box centre, world metres), ``dimensions.x/y/z`` (width, length,
height in metres), ``attributes.object_motion``, ``cuboids.sibling_id``, ``cuboids.sensor_id``,
``attributes.rider_status``, ``attributes.pedestrian_behavior``, ``attributes.pedestrian_age``;
missing values are None. Converted JSON files may round numbers (to 4 decimals for
``examples``-style conversions); release pickles and ``import-pandaset`` keep full precision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from difix_refiner.data.pandaset import PandasetFormatError

CUBOIDS_DIR = "annotations/cuboids"


def cuboids_json(root: Path, frame: int) -> Path:
    """Converted-layout box file of a frame: annotations/cuboids/NN.json."""
    return Path(root) / CUBOIDS_DIR / f"{int(frame):02d}.json"


def load_cuboids(root: Path, frame: int) -> List[Dict[str, Any]]:
    """The boxes of frame ``frame`` of a PandaSet folder (converted JSON, else release pickle via the user cache)."""
    from difix_refiner.data.pandaset_release import release_file
    from difix_refiner.data.release_cache import cached_release_cuboids

    path = cuboids_json(root, frame)
    if path.is_file():
        try:
            boxes = json.loads(path.read_text())
        except ValueError as err:
            raise PandasetFormatError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(boxes, list) or not all(isinstance(b, dict) for b in boxes):
            raise PandasetFormatError(f"{path} must hold a list of boxes (one dict per object)")
        return boxes
    release = release_file(root, "cuboids", frame)
    if release.is_file():
        return cached_release_cuboids(release)
    raise PandasetFormatError(f"no boxes for frame {int(frame)} in {Path(root) / CUBOIDS_DIR}: neither {path.name} nor {release.name}")
