"""A tiny object-centric capture in nerfstudio's transforms.json format, rendered from random Gaussians.

Imported by tests (``pythonpath = ["tests"]``); not a test module itself. The images are renders of a
fixed random Gaussian blob by the project's CPU rasteriser, seen from an orbit of cameras around it,
so that a model trained on them has something consistent to learn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np


def orbit_poses(count: int, radius: float = 2.5, height: float = 0.6) -> np.ndarray:
    """``[count, 4, 4]`` OpenGL camera-to-world poses on a circle, looking at the origin (z up)."""
    poses = []
    for angle in np.linspace(0.0, 2.0 * np.pi, count, endpoint=False):
        centre = np.array([radius * np.cos(angle), radius * np.sin(angle), height])
        back = centre / np.linalg.norm(centre)  # OpenGL cameras look along -z
        right = np.cross([0.0, 0.0, 1.0], back)
        right /= np.linalg.norm(right)
        up = np.cross(back, right)
        pose = np.eye(4)
        pose[:3, :3] = np.column_stack([right, up, back])
        pose[:3, 3] = centre
        poses.append(pose)
    return np.stack(poses)


def render_blob(poses: np.ndarray, width: int, height: int, focal: float, seed: int = 0) -> List[np.ndarray]:
    """``[H, W, 3]`` uint8 renders of a seeded random Gaussian blob (radius ~0.6) on a grey background."""
    import torch

    from difix_refiner.rendering.rasterize import rasterize

    gen = torch.Generator().manual_seed(seed)
    n = 300
    means = (torch.rand(n, 3, generator=gen) - 0.5) * 1.2  # [N, 3]
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1)  # [N, 4]
    scales = torch.full((n, 3), 0.06) * (0.5 + torch.rand(n, 3, generator=gen))  # [N, 3]
    opacities = torch.full((n,), 0.9)  # [N]
    colors = torch.rand(n, 3, generator=gen)  # [N, 3]
    opengl_to_opencv = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    viewmats = torch.linalg.inv(torch.from_numpy(poses).float() @ opengl_to_opencv)  # [C, 4, 4]
    K = torch.tensor([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    Ks = K.expand(len(poses), 3, 3)  # [C, 3, 3]
    background = torch.full((len(poses), 3), 0.5)  # [C, 3]
    with torch.no_grad():
        rgb, _, _ = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds=background)
    return [(img.clamp(0, 1).numpy() * 255).round().astype(np.uint8) for img in rgb]


def write_orbit_scene(folder: Path, count: int = 10, width: int = 64, height: int = 48, focal: float = 60.0) -> Path:
    """Write ``folder/transforms.json`` and ``folder/images/frame_NNNNN.png``; returns ``folder``."""
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    poses = orbit_poses(count)
    frames = []
    for i, image in enumerate(render_blob(poses, width, height, focal)):
        name = f"images/frame_{i + 1:05d}.png"
        Image.fromarray(image).save(folder / name)
        frames.append({"file_path": name, "transform_matrix": poses[i].tolist()})
    meta = {"fl_x": focal, "fl_y": focal, "cx": width / 2.0, "cy": height / 2.0, "w": width, "h": height, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta, indent=1))
    return folder
