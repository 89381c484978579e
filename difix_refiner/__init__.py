"""difix-refiner: make Gaussian-splatting driving scenes hold up off the recorded path.

Packages, in pipeline order; each imports only packages before it:

- ``core``: errors, atomic writes, image metrics, contact sheets and video.
- ``data``: PandaSet reading, LiDAR, the ``pandaset-data`` dataparser.
- ``rendering``: the gsplat-compatible rasteriser (CUDA via gsplat, CPU via torch).
- ``cameras``: pose maths: shifted trajectories in metres, stepping, camera paths, the reference picker.
- ``scene``: the splatfacto-based model, a trained run (load, cameras, render), the ns-train runner.
- ``fixer``: the one-step diffusion fixer (Difix / pix2pix-turbo variants) and running it on renders.
- ``pairs``: training pairs for the fixer: the pair format and the make-pairs strategies.
- ``training``: objectives, losses, backbones and the fixer trainer.
- ``distillation``: the refine loop (progressive pseudo views) as a nerfstudio pipeline.
- ``evaluation``: LiDAR-anchored and photo metrics of trained runs, reports, the demo comparison.
- ``commands``: the ``difix-refiner`` console script, one thin module per subcommand.

``method_configs`` holds the nerfstudio method specifications (``difix-refiner``, ``difix-refiner-cpu``).
"""

__version__ = "0.1.0"
