"""gsplat-compatible Gaussian rasteriser: CUDA via gsplat, CPU via a torch implementation.

``rasterize`` has the signature and outputs of ``gsplat.rasterization`` (1.4.0).
``reference_rasterize`` is a slow dense version of the same maths and
``random_scene`` a small test scene, for tests and benchmarks.
"""

from .rasterize import rasterize
from .reference import random_scene, reference_rasterize

__all__ = ["rasterize", "reference_rasterize", "random_scene"]
