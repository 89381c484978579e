"""Naive dense reference rasteriser, for tests and benchmarks only.

Every splat is evaluated at every pixel and composited with a plain
``cumprod`` over depth-sorted splats; gradients come from autograd. It shares
the projection and SH code with :mod:`.rasterize` (those are checked against
gsplat's own torch implementation in the tests) but re-implements tile
membership, render modes, backgrounds and compositing independently.

Memory is O(pixels x Gaussians) per camera unless ``pixel_chunk`` is given.
:func:`random_scene` builds small scenes that exercise the rasteriser's rules.
"""

import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .splats import prepare_splats


def _composite_pixels(
    pixels: Tensor,  # [P, 2] integer (x, y)
    means2d: Tensor,  # [n, 2] sorted front to back
    conics: Tensor,  # [n, 3]
    opacities: Tensor,  # [n]
    colors: Tensor,  # [n, D]
    radii: Tensor,  # [n]
    tile_size: int,
) -> Tuple[Tensor, Tensor]:
    """Composite splats at the given pixels: colours [P, D], final transmittance [P]."""
    dtype = means2d.dtype
    px = pixels[:, :1].to(dtype)  # [P, 1]
    py = pixels[:, 1:].to(dtype)
    # A splat only reaches the tiles overlapped by its square mean +- radius.
    r = radii.to(dtype) / tile_size  # [n]
    tile_lo_x = torch.floor(means2d[:, 0] / tile_size - r)
    tile_hi_x = torch.ceil(means2d[:, 0] / tile_size + r)
    tile_lo_y = torch.floor(means2d[:, 1] / tile_size - r)
    tile_hi_y = torch.ceil(means2d[:, 1] / tile_size + r)
    pixel_tile = torch.div(pixels, tile_size, rounding_mode="floor")  # [P, 2]
    in_tiles = (
        (pixel_tile[:, :1] >= tile_lo_x)
        & (pixel_tile[:, :1] < tile_hi_x)
        & (pixel_tile[:, 1:] >= tile_lo_y)
        & (pixel_tile[:, 1:] < tile_hi_y)
    )  # [P, n]

    dx = means2d[:, 0] - (px + 0.5)  # [P, n]
    dy = means2d[:, 1] - (py + 0.5)
    a, b, c = conics.unbind(-1)
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(opacities * torch.exp(-sigma), max=0.999)
    valid = in_tiles & (sigma >= 0) & (alpha >= 1.0 / 255.0)
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
    trans_after = torch.cumprod(1.0 - alpha, dim=1)  # [P, n]
    trans_before = torch.cat([torch.ones_like(trans_after[:, :1]), trans_after[:, :-1]], 1)
    # Sequential rule: stop before the first splat leaving transmittance <= 1e-4.
    used = valid & (trans_after > 1e-4)
    weights = torch.where(used, alpha * trans_before, torch.zeros_like(alpha))
    t_final = torch.where(used, 1.0 - alpha, torch.ones_like(alpha)).prod(dim=1)  # [P]
    return weights @ colors, t_final


def _composite_dense(
    means2d: Tensor,  # [n, 2] sorted front to back
    conics: Tensor,  # [n, 3]
    opacities: Tensor,  # [n]
    colors: Tensor,  # [n, D]
    radii: Tensor,  # [n]
    width: int,
    height: int,
    tile_size: int,
    pixel_chunk: Optional[int],
) -> Tuple[Tensor, Tensor]:
    """Composite one camera's visible splats over all pixels: colours [H*W, D], T_final [H*W].

    With ``pixel_chunk``, pixels are processed in chunks under activation
    checkpointing, so that memory stays O(pixel_chunk x n).
    """
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)  # [H*W, 2]
    args = (means2d, conics, opacities, colors, radii, tile_size)
    if pixel_chunk is None:
        return _composite_pixels(pixels, *args)
    parts = [
        checkpoint(_composite_pixels, chunk, *args, use_reentrant=False)
        for chunk in pixels.split(pixel_chunk)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def reference_rasterize(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    tile_size: int = 16,
    backgrounds: Optional[Tensor] = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    covars: Optional[Tensor] = None,
    pixel_chunk: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
    """Dense reference with the semantics of gsplat 1.4.0's ``rasterization`` (packed=False).

    ``pixel_chunk`` bounds memory (pixels per checkpointed chunk); the other
    arguments are those of :func:`~difix_refiner.rendering.rasterize`.

    Returns:
        render_colors [C, H, W, X], render_alphas [C, H, W, 1] and a dict with
        ``means2d`` (non-leaf, [C, N, 2]), ``radii``, ``depths``, ``conics``, ``opacities``.
    """
    C = viewmats.shape[0]
    proj, opac, feats = prepare_splats(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        covars=covars, sh_degree=sh_degree, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        radius_clip=radius_clip, antialiased=rasterize_mode == "antialiased",
    )  # fmt: skip
    depth = proj.depths[..., None]  # [C, N, 1]
    if render_mode in ("D", "ED"):
        feats = depth
    elif render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([feats, depth], -1)

    images, alphas = [], []
    for cam in range(C):
        visible = torch.nonzero(proj.radii[cam] > 0).squeeze(1)
        # Front to back by float32 depth, ties by index (gsplat's stable sort on depth bits).
        order = torch.sort(proj.depths[cam, visible].float(), stable=True)[1]
        ids = visible[order]
        rgb, t_final = _composite_dense(
            proj.means2d[cam, ids],
            proj.conics[cam, ids],
            opac[cam, ids],
            feats[cam, ids],
            proj.radii[cam, ids],
            width,
            height,
            tile_size,
            pixel_chunk,
        )
        if backgrounds is not None:
            bg = backgrounds[cam]
            if render_mode in ("D", "ED"):
                bg = torch.zeros_like(bg[:1])
            elif render_mode in ("RGB+D", "RGB+ED"):
                bg = torch.cat([bg, torch.zeros_like(bg[:1])])
            rgb = rgb + t_final[:, None] * bg
        alpha = 1.0 - t_final
        if render_mode in ("ED", "RGB+ED"):
            rgb = torch.cat([rgb[:, :-1], rgb[:, -1:] / alpha[:, None].clamp(min=1e-10)], 1)
        images.append(rgb.reshape(height, width, -1))
        alphas.append(alpha.reshape(height, width, 1))
    info = {
        "means2d": proj.means2d,
        "radii": proj.radii,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": opac,
    }
    return torch.stack(images), torch.stack(alphas), info


def random_scene(
    n: int,
    width: int,
    height: int,
    n_cameras: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    sh_degree: Optional[int] = None,
    channels: int = 3,
) -> Dict:
    """Small random scene exercising the rasteriser's rules, as ``rasterize`` keyword arguments.

    Splats are 0.3 to 6 px (standard deviation) with random orientations and
    opacities; some are off screen, behind the cameras or opaque (opacity 1, so
    the 0.999 clamp triggers), and a stack of opaque splats at the image centre
    drives transmittance below 1e-4 so that the stopping rule is exercised.
    The cameras are slightly rotated and shifted copies of an identity pose.
    Gaussian parameters require grad.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    focal = 0.8 * width
    n_stack = min(n // 5, 16)
    n_free = n - n_stack
    z = 1.5 + 6.5 * rand(n_free)
    xy = (rand(n_free, 2) * 2 - 1) * 0.75 * z[:, None]  # some outside the field of view
    free = torch.cat([xy, z[:, None]], 1)
    free[: n_free // 10, 2] = -2.0 * rand(n_free // 10)  # behind the cameras: culled
    stack = torch.cat([0.05 * (rand(n_stack, 2) - 0.5), 3.0 + rand(n_stack, 1)], 1)
    means = torch.cat([free, stack])  # [N, 3]
    sigma_px = torch.exp(math.log(0.3) + (math.log(6.0) - math.log(0.3)) * rand(n))
    sigma_px[n_free:] = 3.0 + 2.0 * rand(n_stack)
    scales = (sigma_px * means[:, 2].abs().clamp_min(1.0) / focal)[:, None] * torch.exp(rand(n, 3) - 0.5)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    opacities = 0.05 + 0.95 * rand(n)
    opacities[: max(n // 10, 1)] = 1.0
    opacities[n_free:] = 0.9
    if sh_degree is None:
        colors = rand(n, channels)
    else:
        colors = 0.5 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=torch.float64)

    viewmats = torch.eye(4, dtype=torch.float64).repeat(n_cameras, 1, 1)
    for cam in range(1, n_cameras):
        angles = 0.15 * (rand(3) * 2 - 1)
        rot = torch.linalg.matrix_exp(
            torch.tensor(
                [[0.0, -angles[2], angles[1]], [angles[2], 0.0, -angles[0]], [-angles[1], angles[0], 0.0]],
                dtype=torch.float64,
            )
        )
        viewmats[cam, :3, :3] = rot
        viewmats[cam, :3, 3] = 0.3 * (rand(3) * 2 - 1)
    Ks = torch.tensor(
        [[focal, 0.0, 0.5 * width + 1.3], [0.0, 1.05 * focal, 0.5 * height - 0.7], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    ).repeat(n_cameras, 1, 1)

    def leaf(t):
        return t.to(dtype).requires_grad_()

    return dict(
        means=leaf(means),
        quats=leaf(quats),
        scales=leaf(scales),
        opacities=leaf(opacities),
        colors=leaf(colors),
        viewmats=viewmats.to(dtype),
        Ks=Ks.to(dtype),
        width=width,
        height=height,
        sh_degree=sh_degree,
    )
