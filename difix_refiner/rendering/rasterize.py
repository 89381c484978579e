"""``rasterize``: gsplat 1.4.0's ``rasterization`` with a CPU implementation.

CUDA tensors are handed to ``gsplat.rasterization`` unchanged. CPU tensors go
through the torch implementation in this package (projection, SH, tile
binning, tile-based compositing with a hand-written backward), which follows
gsplat's rules and returns the same outputs and ``meta`` keys.
"""

from typing import Dict, Literal, Optional, Tuple

import torch
from torch import Tensor

from .compositing import RasterPlan, rasterize_to_pixels
from .sh import MAX_SH_DEGREE
from .splats import prepare_splats
from .tiles import bin_splats

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
CAMERA_MODELS = ("pinhole", "ortho", "fisheye")


def rasterize(
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
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Optional[Tensor] = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: Literal["pinhole", "ortho", "fisheye"] = "pinhole",
    covars: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Dict]:
    """Rasterise 3D Gaussians into C images; drop-in for ``gsplat.rasterization`` (1.4.0).

    Arguments, defaults and outputs are gsplat's. On CUDA the call is forwarded
    to gsplat. On CPU: pinhole cameras only, no ``distributed`` and no
    ``sparse_grad`` (these raise ``NotImplementedError``); ``channel_chunk``
    has no effect (all channels are composited at once).

    Args:
        means: [N, 3] Gaussian centres.
        quats: [N, 4] wxyz quaternions (normalised internally); ignored with ``covars``.
        scales: [N, 3] scales; ignored with ``covars``.
        opacities: [N] opacities in [0, 1].
        colors: [(C,) N, D] features, or [(C,) N, K, 3] SH coefficients when
            ``sh_degree`` is set ((sh_degree + 1)^2 <= K, sh_degree <= 4).
        viewmats: [C, 4, 4] world-to-camera matrices.
        Ks: [C, 3, 3] intrinsics.
        width, height: image size.
        near_plane, far_plane: depth range kept.
        radius_clip: splats with pixel radius <= this are skipped.
        eps2d: added to the 2D covariance diagonal.
        sh_degree: SH degree in use, or None for plain features.
        packed: use [nnz, ...] intermediate tensors instead of [C, N, ...].
        tile_size: tile edge in pixels.
        backgrounds: [C, D] colours behind the Gaussians.
        render_mode: "RGB", "D" (accumulated depth), "ED" (depth / alpha),
            "RGB+D" or "RGB+ED" (depth as the last channel).
        sparse_grad: gsplat-only (CUDA, packed).
        absgrad: also compute ``meta["means2d"].absgrad`` in the backward pass.
        rasterize_mode: "classic" or "antialiased" (opacity times
            sqrt(det(cov2d) / det(cov2d + eps2d I))).
        channel_chunk: channels per CUDA kernel call.
        distributed: gsplat-only multi-GPU mode.
        camera_model: "pinhole" ("ortho" and "fisheye" are CUDA-only).
        covars: optional [N, 3, 3] covariances replacing quats and scales.

    Returns:
        render_colors [C, H, W, X], render_alphas [C, H, W, 1] and a ``meta``
        dict with gsplat's keys (``means2d`` is the graph node whose ``.grad``
        densification strategies read; ``radii`` is int32 [C, N] or [nnz]).
    """
    call = dict(locals())  # every argument, forwarded unchanged to gsplat or to the CPU path
    _check_inputs(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        sh_degree=sh_degree, tile_size=tile_size, backgrounds=backgrounds, render_mode=render_mode,
        rasterize_mode=rasterize_mode, camera_model=camera_model, covars=covars,
    )  # fmt: skip
    if means.is_cuda:
        from gsplat import (
            rasterization,  # lazy: gsplat's CUDA build is only needed here
        )

        return rasterization(**call)
    if camera_model != "pinhole":
        raise NotImplementedError(f"camera_model={camera_model!r} is only supported on CUDA (gsplat)")
    if distributed:
        raise NotImplementedError("distributed=True is only supported on CUDA (gsplat)")
    if sparse_grad:
        raise NotImplementedError("sparse_grad=True is only supported on CUDA (gsplat)")
    return _rasterize_cpu(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree,
        packed=packed, tile_size=tile_size, backgrounds=backgrounds, render_mode=render_mode, absgrad=absgrad,
        rasterize_mode=rasterize_mode, covars=covars,
    )  # fmt: skip


def _rasterize_cpu(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    near_plane: float,
    far_plane: float,
    radius_clip: float,
    eps2d: float,
    sh_degree: Optional[int],
    packed: bool,
    tile_size: int,
    backgrounds: Optional[Tensor],
    render_mode: str,
    absgrad: bool,
    rasterize_mode: str,
    covars: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Dict]:
    """The torch path of :func:`rasterize` (checked inputs, pinhole cameras)."""
    C, N = viewmats.shape[0], means.shape[0]
    proj, opac, feats = prepare_splats(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        covars=covars, sh_degree=sh_degree, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        radius_clip=radius_clip, antialiased=rasterize_mode == "antialiased",
    )  # fmt: skip
    feats, backgrounds = _mode_features(render_mode, feats, proj.depths, backgrounds, C)

    radii, means2d, depths, conics = proj.radii, proj.means2d, proj.depths, proj.conics
    if packed:
        camera_ids, gaussian_ids = torch.nonzero(radii > 0, as_tuple=True)  # [nnz] each
        radii, means2d = radii[camera_ids, gaussian_ids], means2d[camera_ids, gaussian_ids]
        depths, conics = depths[camera_ids, gaussian_ids], conics[camera_ids, gaussian_ids]
        opac, feats = opac[camera_ids, gaussian_ids], feats[camera_ids, gaussian_ids]
        splat_cameras = camera_ids
    else:
        camera_ids, gaussian_ids = None, None
        splat_cameras = torch.arange(C, device=means.device).repeat_interleave(N)

    bins = bin_splats(
        means2d.detach().reshape(-1, 2), radii.reshape(-1), depths.detach().reshape(-1), splat_cameras,
        n_cameras=C, width=width, height=height, tile_size=tile_size,
    )  # fmt: skip
    plan = RasterPlan(
        width=width, height=height, tile_size=tile_size, n_cameras=C, bins=bins,
        splat_cameras=splat_cameras, absgrad=absgrad,
    )  # fmt: skip
    render_colors, render_alphas = rasterize_to_pixels(means2d, conics, feats, opac, plan, backgrounds=backgrounds)
    if render_mode in ("ED", "RGB+ED"):
        # Expected depth: accumulated depth over accumulated alpha, as gsplat.
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], -1
        )

    meta = {
        "camera_ids": camera_ids,
        "gaussian_ids": gaussian_ids,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opac,
        "tile_width": bins.tile_width,
        "tile_height": bins.tile_height,
        "tiles_per_gauss": bins.tiles_per_gauss.reshape(radii.shape),
        "isect_ids": bins.isect_ids,
        "flatten_ids": bins.flatten_ids,
        "isect_offsets": bins.isect_offsets,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_cameras": C,
    }
    return render_colors, render_alphas, meta


def _mode_features(
    render_mode: str, feats: Tensor, depths: Tensor, backgrounds: Optional[Tensor], n_cameras: int
) -> Tuple[Tensor, Optional[Tensor]]:
    """The per-splat channels to composite for ``render_mode`` (depth appended or alone), and matching backgrounds."""
    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([feats, depths[..., None]], -1)  # [C, N, D + 1]
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(n_cameras, 1)], -1)
    elif render_mode in ("D", "ED"):
        feats = depths[..., None]  # [C, N, 1]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(n_cameras, 1)
    return feats, backgrounds


def _shape_error(name: str, expected: str, tensor: Tensor) -> ValueError:
    return ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")


def _check_inputs(
    means,
    quats,
    scales,
    opacities,
    colors,
    viewmats,
    Ks,
    width,
    height,
    *,
    sh_degree,
    tile_size,
    backgrounds,
    render_mode,
    rasterize_mode,
    camera_model,
    covars,
) -> None:
    """Raise a clear error for malformed arguments (shapes, dtypes, devices, values)."""
    if render_mode not in RENDER_MODES:
        raise ValueError(f"unknown render_mode {render_mode!r}, expected one of {RENDER_MODES}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}, expected one of {RASTERIZE_MODES}")
    if camera_model not in CAMERA_MODELS:
        raise ValueError(f"unknown camera_model {camera_model!r}, expected one of {CAMERA_MODELS}")
    for name, value in (("width", width), ("height", height), ("tile_size", tile_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")

    tensors = {"means": means, "opacities": opacities, "colors": colors, "viewmats": viewmats, "Ks": Ks}
    if covars is None:
        tensors.update(quats=quats, scales=scales)
    else:
        tensors["covars"] = covars
    if backgrounds is not None:
        tensors["backgrounds"] = backgrounds
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor, got {t.dtype}")
        if t.dtype != means.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but means has dtype {means.dtype}")
        if t.device != means.device:
            raise ValueError(f"{name} is on {t.device} but means is on {means.device}")

    if means.dim() != 2 or means.shape[1] != 3:
        raise _shape_error("means", "[N, 3]", means)
    N = means.shape[0]
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise _shape_error("viewmats", "[C, 4, 4]", viewmats)
    C = viewmats.shape[0]
    if C == 0:
        raise ValueError("viewmats must hold at least one camera")
    if Ks.shape != (C, 3, 3):
        raise _shape_error("Ks", f"[C, 3, 3] with C={C}", Ks)
    if covars is None:
        if quats.shape != (N, 4):
            raise _shape_error("quats", f"[N, 4] with N={N}", quats)
        if scales.shape != (N, 3):
            raise _shape_error("scales", f"[N, 3] with N={N}", scales)
    elif covars.shape != (N, 3, 3):
        raise _shape_error("covars", f"[N, 3, 3] with N={N}", covars)
    if opacities.shape != (N,):
        raise _shape_error("opacities", f"[N] with N={N}", opacities)

    if sh_degree is None:
        if not ((colors.dim() == 2 and colors.shape[0] == N) or (colors.dim() == 3 and colors.shape[:2] == (C, N))):
            raise _shape_error("colors", f"[N, D] or [C, N, D] with C={C}, N={N} (sh_degree=None)", colors)
        n_channels = colors.shape[-1]
    else:
        if isinstance(sh_degree, bool) or not isinstance(sh_degree, int) or not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree must be None or an int in [0, {MAX_SH_DEGREE}], got {sh_degree!r}")
        per_gaussian = colors.dim() == 3 and colors.shape[0] == N and colors.shape[2] == 3
        per_camera = colors.dim() == 4 and colors.shape[:2] == (C, N) and colors.shape[3] == 3
        if not (per_gaussian or per_camera):
            raise _shape_error("colors", f"[N, K, 3] or [C, N, K, 3] SH coefficients with C={C}, N={N}", colors)
        if colors.shape[-2] < (sh_degree + 1) ** 2:
            raise ValueError(
                f"sh_degree={sh_degree} needs K >= {(sh_degree + 1) ** 2} SH coefficients, "
                f"colors has K={colors.shape[-2]}"
            )
        n_channels = 3
    if n_channels == 0:
        raise _shape_error("colors", "a non-empty last dimension", colors)
    if backgrounds is not None and backgrounds.shape != (C, n_channels):
        raise _shape_error("backgrounds", f"[C, D] with C={C}, D={n_channels}", backgrounds)

    finite_checked = {k: v for k, v in tensors.items() if k not in ("colors", "backgrounds")}
    bad = [name for name, t in finite_checked.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"non-finite values (nan or inf) in {', '.join(bad)}")
    if covars is None and N > 0 and bool((quats.detach().norm(dim=-1) == 0).any()):
        raise ValueError("quats contains zero-norm quaternions")
