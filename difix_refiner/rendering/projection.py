"""EWA projection of 3D Gaussians to the image plane (pinhole), in plain torch.

Follows gsplat 1.4.0's ``fully_fused_projection`` (non-packed): the Jacobian of
the perspective map is evaluated at a mean whose x/z and y/z are clamped to
1.3x the field of view, ``eps2d`` is added to the diagonal of the 2D
covariance, the radius is ``ceil(3 * sqrt(largest eigenvalue))`` and culled
entries get radius 0. Gradients come from autograd.
"""

from typing import NamedTuple, Optional

import torch
from torch import Tensor

# Lower bound on det(before blur) / det(after blur) inside the sqrt of the
# antialiasing compensation, so that degenerate Gaussians (zero area) get a
# finite derivative; gsplat's hand-written backward uses a similar epsilon.
_MIN_COMPENSATION_SQ = 1e-12


class Projection(NamedTuple):
    """Per camera and Gaussian projection results (entries with radius 0 are culled)."""

    radii: Tensor  # [C, N] int32
    means2d: Tensor  # [C, N, 2]
    depths: Tensor  # [C, N]
    conics: Tensor  # [C, N, 3] upper triangle (a, b, c) of the inverse 2D covariance
    compensations: Optional[Tensor]  # [C, N] or None


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices from (not necessarily normalised) wxyz quaternions.

    Args:
        quats: [N, 4] quaternions, real part first.

    Returns:
        [N, 3, 3] rotation matrices.
    """
    assert quats.dim() == 2 and quats.shape[1] == 4, quats.shape
    q = quats / quats.norm(dim=-1, keepdim=True)  # [N, 4]
    w, x, y, z = q.unbind(-1)  # [N] each
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(-1, 3, 3)


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariances ``R S S^T R^T`` from quaternions and scales.

    Args:
        quats: [N, 4] wxyz quaternions (normalised internally).
        scales: [N, 3] standard deviations along the local axes.

    Returns:
        [N, 3, 3] covariance matrices.
    """
    assert scales.shape == (quats.shape[0], 3), scales.shape
    rs = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3]
    return rs @ rs.transpose(-1, -2)


def symmetric_from_upper(covars: Tensor) -> Tensor:
    """Symmetric matrices built from the upper triangle of ``covars`` [N, 3, 3].

    gsplat only reads the upper triangle of user-given covariances; doing the
    same keeps values and gradients identical.
    """
    upper = torch.triu(covars)  # [N, 3, 3]
    return upper + torch.triu(covars, diagonal=1).transpose(-1, -2)


def project_gaussians(
    means: Tensor,  # [N, 3]
    covars3d: Tensor,  # [N, 3, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    calc_compensations: bool = False,
) -> Projection:
    """Project 3D Gaussians to 2D with a pinhole camera (EWA splatting).

    Culled entries (depth outside [near_plane, far_plane], non-positive 2D
    determinant, radius <= radius_clip, or bounding square fully off screen)
    have radius 0 and zeros in every other output. Their local derivatives are
    kept finite so that zero upstream gradients stay zero.

    Args:
        means: [N, 3] world-space centres.
        covars3d: [N, 3, 3] world-space covariances.
        viewmats: [C, 4, 4] world-to-camera transforms.
        Ks: [C, 3, 3] intrinsics.
        width, height: image size in pixels.
        eps2d: value added to the diagonal of each 2D covariance.
        near_plane, far_plane: depth range kept.
        radius_clip: Gaussians with radius <= this (pixels) are culled.
        calc_compensations: also return sqrt(det(cov2d) / det(cov2d + eps2d I)).

    Returns:
        A :class:`Projection`.
    """
    N = means.shape[0]
    C = viewmats.shape[0]
    assert means.shape == (N, 3), means.shape
    assert covars3d.shape == (N, 3, 3), covars3d.shape
    assert viewmats.shape == (C, 4, 4), viewmats.shape
    assert Ks.shape == (C, 3, 3), Ks.shape

    rot = viewmats[:, :3, :3]  # [C, 3, 3]
    trans = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", rot, means) + trans[:, None, :]  # [C, N, 3]
    x, y, z = means_c.unbind(-1)  # [C, N] each
    valid = (z >= near_plane) & (z <= far_plane)  # [C, N]
    # A harmless depth for culled entries keeps every derivative finite.
    z = torch.where(valid, z, torch.ones_like(z))

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]  # [C, 1]
    # The Jacobian is evaluated at a mean clamped to 1.3x the field of view, so
    # that Gaussians far outside the image do not get huge 2D footprints.
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.clamp(x * rz, min=-lim_x_neg, max=lim_x_pos)  # [C, N]
    ty = z * torch.clamp(y * rz, min=-lim_y_neg, max=lim_y_pos)  # [C, N]
    zeros = torch.zeros_like(z)
    jac = torch.stack(
        [fx * rz, zeros, -fx * tx * rz * rz, zeros, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(C, N, 2, 3)
    # cov2d = (J W) Sigma (J W)^T, with W the camera rotation.
    jw = jac @ rot[:, None]  # [C, N, 2, 3]
    jw_sigma = torch.einsum("cnij,njk->cnik", jw, covars3d)  # [C, N, 2, 3]
    cov_xx = (jw_sigma[..., 0, :] * jw[..., 0, :]).sum(-1)  # [C, N]
    cov_xy = (jw_sigma[..., 0, :] * jw[..., 1, :]).sum(-1)
    cov_yy = (jw_sigma[..., 1, :] * jw[..., 1, :]).sum(-1)
    mean2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)  # [C, N, 2]

    det_orig = cov_xx * cov_yy - cov_xy * cov_xy
    cov_xx = cov_xx + eps2d
    cov_yy = cov_yy + eps2d
    det = cov_xx * cov_yy - cov_xy * cov_xy  # [C, N]
    valid = valid & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([cov_yy / det, -cov_xy / det, cov_xx / det], dim=-1)  # [C, N, 3]

    with torch.no_grad():
        half_trace = 0.5 * (cov_xx + cov_yy)
        v1 = half_trace + torch.sqrt(torch.clamp(half_trace * half_trace - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1))  # [C, N]
        mx, my = mean2d.unbind(-1)
        valid = (
            valid
            & (radius > radius_clip)
            & (mx + radius > 0)
            & (mx - radius < width)
            & (my + radius > 0)
            & (my - radius < height)
        )
        radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)

    compensations = None
    if calc_compensations:
        ratio = torch.clamp(det_orig / det, min=_MIN_COMPENSATION_SQ)
        compensations = torch.where(valid, torch.sqrt(ratio), torch.zeros_like(ratio))
    vmask = valid[..., None]
    return Projection(
        radii=radii,
        means2d=torch.where(vmask, mean2d, torch.zeros_like(mean2d)),
        depths=torch.where(valid, z, torch.zeros_like(z)),
        conics=torch.where(vmask, conics, torch.zeros_like(conics)),
        compensations=compensations,
    )
