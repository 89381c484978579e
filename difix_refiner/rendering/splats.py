"""Per-camera splat attributes shared by the tile rasteriser and the dense reference."""

from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor

from .projection import (
    Projection,
    project_gaussians,
    quat_scale_to_covar,
    symmetric_from_upper,
)
from .sh import view_dependent_colors


def prepare_splats(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D], [C, N, D] or SH [N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    covars: Optional[Tensor],
    sh_degree: Optional[int],
    eps2d: float,
    near_plane: float,
    far_plane: float,
    radius_clip: float,
    antialiased: bool,
) -> Tuple[Projection, Tensor, Tensor]:
    """Project the Gaussians and evaluate their colours in every camera.

    Returns the projection, the opacities [C, N] (times the antialiasing compensation when asked)
    and the colour features [C, N, D] (SH evaluated toward each camera when ``sh_degree`` is set).
    """
    C, N = viewmats.shape[0], means.shape[0]
    covars3d = symmetric_from_upper(covars) if covars is not None else quat_scale_to_covar(quats, scales)
    proj = project_gaussians(
        means,
        covars3d,
        viewmats,
        Ks,
        width,
        height,
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        calc_compensations=antialiased,
    )
    opac = opacities[None, :].expand(C, N)  # [C, N]
    if proj.compensations is not None:
        opac = opac * proj.compensations
    if sh_degree is None:
        feats = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)  # [C, N, D]
    else:
        feats = view_dependent_colors(sh_degree, means, colors, viewmats)  # [C, N, 3]
    return proj, opac, feats
