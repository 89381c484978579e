"""difix-refiner: make Gaussian-splatting driving scenes hold up off the recorded path.

Subpackages:
- ``rendering``: gsplat-compatible rasteriser (CUDA via gsplat, CPU via a torch implementation).
- ``data``: the PandaSet dataparser and LiDAR helpers.
- ``cameras``: shifted trajectories in metres and camera paths.
- ``fixer``: the one-step diffusion fixer (Difix / pix2pix-turbo variants).
- ``nerfstudio``: the splatfacto-based model and the pipeline pieces nerfstudio loads.
"""

__version__ = "0.1.0"
