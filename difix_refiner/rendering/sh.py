"""Real spherical-harmonics colours (degrees 0 to 4), as evaluated by gsplat 1.4.0.

The basis ordering and signs follow Sloan's "Efficient Spherical Harmonic
Evaluation" (JCGT 2013), which is what gsplat and the original 3DGS code use.
"""

import torch
from torch import Tensor

MAX_SH_DEGREE = 4

_C0 = 0.2820947917738781
_C1 = 0.48860251190292


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """Evaluate the first ``(degree + 1) ** 2`` SH bases at unit directions.

    Args:
        degree: SH degree in [0, 4].
        dirs: [..., 3] unit directions.

    Returns:
        [..., (degree + 1) ** 2] basis values.
    """
    assert 0 <= degree <= MAX_SH_DEGREE, degree
    assert dirs.shape[-1] == 3, dirs.shape
    out = [torch.full_like(dirs[..., 0], _C0)]
    if degree == 0:
        return out[0][..., None]
    x, y, z = dirs.unbind(-1)
    out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        z2 = z * z
        tmp_b = -1.092548430592079 * z
        c1 = x * x - y * y
        s1 = 2.0 * x * y
        sh6 = 0.9461746957575601 * z2 - 0.3153915652525201
        out += [0.5462742152960395 * s1, tmp_b * y, sh6, tmp_b * x, 0.5462742152960395 * c1]
    if degree >= 3:
        tmp_c = -2.285228997322329 * z2 + 0.4570457994644658
        tmp_b = 1.445305721320277 * z
        c2 = x * c1 - y * s1
        s2 = x * s1 + y * c1
        sh12 = z * (1.865881662950577 * z2 - 1.119528997770346)
        out += [
            -0.5900435899266435 * s2, tmp_b * s1, tmp_c * y, sh12,
            tmp_c * x, tmp_b * c1, -0.5900435899266435 * c2,
        ]  # fmt: skip
    if degree >= 4:
        tmp_d = z * (-4.683325804901025 * z2 + 2.007139630671868)
        tmp_c = 3.31161143515146 * z2 - 0.47308734787878
        tmp_b = -1.770130769779931 * z
        c3 = x * c2 - y * s2
        s3 = x * s2 + y * c2
        sh20 = 1.984313483298443 * z * sh12 - 1.006230589874905 * sh6
        out += [
            0.6258357354491763 * s3, tmp_b * s2, tmp_c * s1, tmp_d * y, sh20,
            tmp_d * x, tmp_c * c1, tmp_b * c2, 0.6258357354491763 * c3,
        ]  # fmt: skip
    return torch.stack(out, dim=-1)


def sh_to_color(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Raw SH colour ``sum_k basis_k(dir) * coeffs_k`` (no offset, no clamping).

    Only the first ``(degree + 1) ** 2`` coefficients are used.

    Args:
        degree: SH degree in [0, 4].
        dirs: [..., 3] view directions (need not be normalised).
        coeffs: [..., K, 3] SH coefficients with K >= (degree + 1) ** 2.

    Returns:
        [..., 3] colours.
    """
    n_bases = (degree + 1) ** 2
    assert coeffs.shape[-1] == 3 and coeffs.shape[-2] >= n_bases, coeffs.shape
    assert dirs.shape[:-1] == coeffs.shape[:-2], (dirs.shape, coeffs.shape)
    # The clamp only matters for zero-length directions (camera centre on the
    # mean, always culled), where it keeps values and derivatives finite.
    sq_norm = (dirs * dirs).sum(-1, keepdim=True).clamp_min(1e-24)
    unit = dirs * torch.rsqrt(sq_norm)  # [..., 3]
    bases = sh_bases(degree, unit)  # [..., n_bases]
    return (bases[..., None] * coeffs[..., :n_bases, :]).sum(-2)


def view_dependent_colors(
    sh_degree: int,
    means: Tensor,  # [N, 3]
    coeffs: Tensor,  # [N, K, 3] or [C, N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
) -> Tensor:
    """Per-camera RGB from SH: direction from camera centre to mean, +0.5, clamp_min(0).

    Returns:
        [C, N, 3] colours.
    """
    C = viewmats.shape[0]
    cam_centers = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
    dirs = means[None, :, :] - cam_centers[:, None, :]  # [C, N, 3]
    if coeffs.dim() == 3:
        coeffs = coeffs.expand(C, -1, -1, -1)  # [C, N, K, 3]
    return torch.clamp_min(sh_to_color(sh_degree, dirs, coeffs) + 0.5, 0.0)
