"""Building blocks against gsplat 1.4.0's own pure-torch implementations, and CUDA parity.

``gsplat.cuda._torch_impl`` mirrors the CUDA kernels' maths in plain torch
(CPU friendly), which gives an oracle independent of this package for the
projection, the SH colours and the tile binning. The full pipeline is compared
with ``gsplat.rasterization`` only where CUDA is available.
"""

import pytest
import torch

from difix_refiner.rendering import random_scene, rasterize
from difix_refiner.rendering.projection import project_gaussians, quat_scale_to_covar
from difix_refiner.rendering.sh import sh_to_color, view_dependent_colors
from difix_refiner.rendering.tiles import bin_splats

torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")


@pytest.mark.parametrize("calc_compensations", [False, True])
def test_projection_matches_gsplat_torch_impl(calc_compensations):
    scene = random_scene(80, 64, 48, n_cameras=3, seed=1)
    means, quats, scales = scene["means"], scene["quats"], scene["scales"]
    viewmats = scene["viewmats"].clone().requires_grad_()
    Ks, W, H = scene["Ks"], scene["width"], scene["height"]

    our_covars = quat_scale_to_covar(quats, scales)
    ours = project_gaussians(
        means, our_covars, viewmats, Ks, W, H, eps2d=0.3, calc_compensations=calc_compensations
    )
    leaves = [means, quats, scales, viewmats]
    copies = [t.detach().clone().requires_grad_() for t in leaves]
    covars, _ = torch_impl._quat_scale_to_covar_preci(copies[1], copies[2], True, False)
    radii, means2d, depths, conics, comps = torch_impl._fully_fused_projection(
        copies[0], covars, copies[3], Ks, W, H, eps2d=0.3, calc_compensations=calc_compensations
    )
    assert torch.equal(ours.radii, radii)
    valid = radii > 0
    assert valid.sum() > 50 and (~valid).sum() > 10  # both visible and culled entries
    torch.testing.assert_close(our_covars, covars, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.means2d[valid], means2d[valid], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(ours.depths[valid], depths[valid], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.conics[valid], conics[valid], rtol=1e-10, atol=1e-12)
    if calc_compensations:
        torch.testing.assert_close(ours.compensations[valid], comps[valid], rtol=1e-10, atol=1e-12)

    # Same random loss on the visible entries: gradients w.r.t. all inputs.
    g = torch.Generator().manual_seed(0)
    outs_a = [ours.means2d, ours.depths, ours.conics] + ([ours.compensations] if calc_compensations else [])
    outs_b = [means2d, depths, conics] + ([comps] if calc_compensations else [])
    loss_a = loss_b = 0.0
    for a, b in zip(outs_a, outs_b):
        w = torch.randn(a.shape, generator=g, dtype=a.dtype)
        mask = valid.reshape(valid.shape + (1,) * (a.dim() - 2)).to(a.dtype)
        loss_a = loss_a + (a * w * mask).sum()
        loss_b = loss_b + (b * w * mask).sum()
    loss_a.backward()
    loss_b.backward()
    for a, b in zip(leaves, copies):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4])
def test_sh_matches_gsplat_torch_impl(degree):
    g = torch.Generator().manual_seed(degree)
    dirs = torch.randn(200, 3, generator=g, dtype=torch.float64) * 3.0
    coeffs = torch.randn(200, 25, 3, generator=g, dtype=torch.float64)
    dirs_a, coeffs_a = dirs.clone().requires_grad_(), coeffs.clone().requires_grad_()
    dirs_b, coeffs_b = dirs.clone().requires_grad_(), coeffs.clone().requires_grad_()
    ours = sh_to_color(degree, dirs_a, coeffs_a)
    theirs = torch_impl._spherical_harmonics(degree, dirs_b, coeffs_b)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    w = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    (ours * w).sum().backward()
    (theirs * w).sum().backward()
    torch.testing.assert_close(coeffs_a.grad, coeffs_b.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dirs_a.grad, dirs_b.grad, rtol=1e-10, atol=1e-12)


def test_view_dependent_colors_match_gsplat_recipe():
    # gsplat: directions from the camera centre (inverse viewmat) to the means, SH, +0.5, clamp at 0.
    scene = random_scene(50, 32, 24, n_cameras=3, seed=2, sh_degree=3)
    means, coeffs, viewmats = scene["means"].detach(), scene["colors"].detach(), scene["viewmats"]
    ours = view_dependent_colors(2, means, coeffs, viewmats)
    dirs = means[None] - torch.inverse(viewmats)[:, None, :3, 3]
    theirs = torch_impl._spherical_harmonics(2, dirs, coeffs.expand(3, -1, -1, -1))
    torch.testing.assert_close(ours, torch.clamp_min(theirs + 0.5, 0.0), rtol=1e-12, atol=1e-12)
    assert (ours == 0).any()  # the clamp is exercised


def test_tile_binning_matches_gsplat_torch_impl():
    scene = random_scene(70, 75, 50, n_cameras=2, seed=3, dtype=torch.float32)
    covars = quat_scale_to_covar(scene["quats"], scene["scales"]).detach()
    proj = project_gaussians(
        scene["means"].detach(), covars, scene["viewmats"], scene["Ks"], 75, 50
    )
    C, N = proj.radii.shape
    tile_size = 16
    bins = bin_splats(
        proj.means2d.reshape(-1, 2),
        proj.radii.reshape(-1),
        proj.depths.reshape(-1),
        torch.arange(C).repeat_interleave(N),
        n_cameras=C,
        width=75,
        height=50,
        tile_size=tile_size,
    )
    tiles_per_gauss, isect_ids, flatten_ids = torch_impl._isect_tiles(
        proj.means2d, proj.radii, proj.depths, tile_size, bins.tile_width, bins.tile_height
    )
    offsets = torch_impl._isect_offset_encode(isect_ids, C, bins.tile_width, bins.tile_height)
    assert isect_ids.numel() > 100
    assert torch.equal(bins.tiles_per_gauss.reshape(C, N), tiles_per_gauss)
    assert torch.equal(bins.isect_ids, isect_ids)
    assert torch.equal(bins.flatten_ids, flatten_ids)
    assert torch.equal(bins.isect_offsets, offsets)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for gsplat's kernels")
@pytest.mark.parametrize("render_mode", ["RGB", "RGB+ED"])
@pytest.mark.parametrize("rasterize_mode", ["classic", "antialiased"])
def test_cpu_matches_gsplat_cuda(render_mode, rasterize_mode):
    from gsplat import rasterization

    scene = random_scene(400, 96, 64, n_cameras=2, seed=4, dtype=torch.float32, sh_degree=2)
    params = ("means", "quats", "scales", "opacities", "colors")
    cpu, gpu = dict(scene), dict(scene, viewmats=scene["viewmats"].cuda(), Ks=scene["Ks"].cuda())
    for key in params:
        cpu[key] = scene[key].detach().clone().requires_grad_()
        gpu[key] = scene[key].detach().cuda().requires_grad_()
    options = dict(packed=False, render_mode=render_mode, rasterize_mode=rasterize_mode)
    colors_c, alphas_c, meta_c = rasterize(**cpu, **options)
    colors_g, alphas_g, meta_g = rasterization(**gpu, **options)
    # float32 on both sides, with different summation orders and exp/sqrt
    # implementations: a radius may round differently, moving a splat's tile
    # range, and a pair may fall on either side of alpha = 1/255.
    radii_diff = (meta_c["radii"] - meta_g["radii"].cpu()).abs()
    assert radii_diff.max() <= 1 and (radii_diff > 0).sum() <= 2
    for ours, theirs in ((colors_c, colors_g), (alphas_c, alphas_g)):
        err = (ours - theirs.cpu()).abs().flatten()
        assert torch.quantile(err, 0.999) < 1e-3 and err.max() < 5e-2
    g = torch.Generator().manual_seed(0)
    w = torch.randn(colors_c.shape, generator=g)
    (colors_c * w).sum().backward()
    (colors_g * w.cuda()).sum().backward()
    for key in params:
        got, want = cpu[key].grad, gpu[key].grad.cpu()
        rel = (got - want).norm() / want.norm()
        assert rel < 1e-2, (key, float(rel))


def test_signature_matches_gsplat_rasterization():
    import inspect

    from gsplat import rasterization

    ours = inspect.signature(rasterize).parameters
    theirs = inspect.signature(rasterization).parameters
    assert [(name, p.default, p.kind) for name, p in ours.items()] == [
        (name, p.default, p.kind) for name, p in theirs.items()
    ]
