"""CPU rasteriser against the dense reference: values and gradients.

Comparisons run in float64, where both implementations agree to rounding:
values within 1e-9 (absolute), gradients within 1e-7 of the largest gradient
of the same tensor (they differ in summation order, and in sums of
log(1 - alpha) versus products). A float32 run is checked against the float64
reference: 99.9% of pixels within 2e-5 and all within 5e-3 (a pair within
float32 rounding of alpha = 1/255 may flip), gradients within 2e-3 of the
largest gradient.
"""

import itertools

import pytest
import torch

from difix_refiner.rendering import (
    compositing,
    random_scene,
    rasterize,
    reference_rasterize,
)

PARAMS = ("means", "quats", "scales", "opacities", "colors")
VALUE_ATOL = 1e-9
GRAD_RTOL = 1e-7


def _scene(**kwargs):
    kwargs.setdefault("n", 60)
    return random_scene(**kwargs)


def _fresh(scene):
    """Same scene with new leaf tensors (so that two renders get separate grads)."""
    out = dict(scene)
    for key in PARAMS:
        out[key] = scene[key].detach().clone().requires_grad_()
    for key in ("backgrounds", "viewmats"):
        if scene.get(key) is not None and scene[key].requires_grad:
            out[key] = scene[key].detach().clone().requires_grad_()
    return out


def _render_both(scene, **options):
    """Render with rasterize and the reference, backprop the same random loss through both."""
    ours, ref = _fresh(scene), _fresh(scene)
    colors, alphas, meta = rasterize(**ours, packed=False, **options)
    meta["means2d"].retain_grad()
    ref_colors, ref_alphas, info = reference_rasterize(**ref, **options)
    info["means2d"].retain_grad()
    g = torch.Generator().manual_seed(123)
    w_colors = torch.randn(ref_colors.shape, generator=g, dtype=ref_colors.dtype)
    w_alphas = torch.randn(ref_alphas.shape, generator=g, dtype=ref_alphas.dtype)
    ((colors * w_colors).sum() + (alphas * w_alphas).sum()).backward()
    ((ref_colors * w_colors).sum() + (ref_alphas * w_alphas).sum()).backward()
    return (ours, colors, alphas, meta), (ref, ref_colors, ref_alphas, info)


def _assert_grads_close(name, got, want, rtol=GRAD_RTOL):
    if want is None:  # the input does not affect the outputs (e.g. colours in depth mode)
        assert got is None or not got.any(), name
        return
    assert got is not None, name
    scale = want.abs().max().clamp_min(1e-12)
    err = (got - want).abs().max()
    assert err <= rtol * scale, f"{name}: max error {err:.3g} vs scale {scale:.3g}"


def _check(scene, **options):
    (ours, colors, alphas, meta), (ref, ref_colors, ref_alphas, info) = _render_both(scene, **options)
    assert colors.shape == ref_colors.shape and alphas.shape == ref_alphas.shape
    torch.testing.assert_close(colors, ref_colors, rtol=0, atol=VALUE_ATOL)
    torch.testing.assert_close(alphas, ref_alphas, rtol=0, atol=VALUE_ATOL)
    assert torch.equal(meta["radii"], info["radii"])
    assert (meta["radii"] > 0).any(), "scene has no visible splat"
    for key in PARAMS + (("backgrounds",) if scene.get("backgrounds") is not None else ()):
        _assert_grads_close(key, ours[key].grad, ref[key].grad)
    _assert_grads_close("means2d", meta["means2d"].grad, info["means2d"].grad)
    return colors, alphas, meta


@pytest.mark.parametrize(
    "seed,size,n_cameras",
    [(0, (40, 30), 1), (1, (37, 29), 2), (2, (64, 48), 1), (3, (17, 50), 3), (4, (33, 16), 1)],
)
def test_rgb_matches_reference(seed, size, n_cameras):
    colors, alphas, _ = _check(_scene(seed=seed, width=size[0], height=size[1], n_cameras=n_cameras))
    assert colors.shape == (n_cameras, size[1], size[0], 3)
    assert alphas.shape == (n_cameras, size[1], size[0], 1)


@pytest.mark.parametrize("render_mode", ["RGB", "D", "ED", "RGB+D", "RGB+ED"])
@pytest.mark.parametrize("rasterize_mode", ["classic", "antialiased"])
def test_render_and_rasterize_modes_with_backgrounds(render_mode, rasterize_mode):
    scene = _scene(seed=5, width=41, height=35, n_cameras=2)
    scene["backgrounds"] = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=torch.float64)
    scene["backgrounds"].requires_grad_()
    colors, _, _ = _check(scene, render_mode=render_mode, rasterize_mode=rasterize_mode)
    assert colors.shape[-1] == {"RGB": 3, "D": 1, "ED": 1, "RGB+D": 4, "RGB+ED": 4}[render_mode]


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_spherical_harmonics_match_reference(sh_degree):
    _check(_scene(seed=10 + sh_degree, width=39, height=31, n_cameras=2, sh_degree=sh_degree))


def test_partial_sh_bands_and_per_camera_colors():
    # Degree 1 out of 16 coefficients, then per-camera [C, N, D] features.
    scene = _scene(seed=20, width=32, height=32, n_cameras=2, sh_degree=3)
    scene["sh_degree"] = 1
    _check(scene)
    scene = _scene(seed=21, width=32, height=24, n_cameras=2, channels=5)
    per_camera = torch.rand(2, 60, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scene["colors"] = per_camera.requires_grad_()
    colors, _, _ = _check(scene)
    assert colors.shape == (2, 24, 32, 5)


def test_culling_options_match_reference():
    scene = _scene(seed=30, width=48, height=40, n_cameras=1)
    _, _, meta = _check(scene, near_plane=3.0, far_plane=6.0, radius_clip=2.0, eps2d=0.1)
    depths = meta["depths"][meta["radii"] > 0]
    assert depths.min() >= 3.0 and depths.max() <= 6.0
    assert meta["radii"][meta["radii"] > 0].min() > 2


def test_stopping_rule_and_clamp_are_exercised():
    colors, alphas, _ = _check(_scene(seed=0, width=40, height=30))
    # The opaque stack drives transmittance to the 1e-4 limit but never past it.
    assert alphas.max() > 0.9995
    assert alphas.max() < 1.0 - 1e-4


def test_packed_matches_unpacked():
    scene = _scene(seed=40, width=45, height=33, n_cameras=2)
    a, b = _fresh(scene), _fresh(scene)
    colors_u, alphas_u, meta_u = rasterize(**a, packed=False, render_mode="RGB+ED")
    colors_p, alphas_p, meta_p = rasterize(**b, packed=True, render_mode="RGB+ED")
    torch.testing.assert_close(colors_p, colors_u, rtol=0, atol=1e-12)
    torch.testing.assert_close(alphas_p, alphas_u, rtol=0, atol=1e-12)
    visible = meta_u["radii"] > 0
    assert torch.equal(meta_p["camera_ids"], torch.nonzero(visible)[:, 0])
    assert torch.equal(meta_p["gaussian_ids"], torch.nonzero(visible)[:, 1])
    assert torch.equal(meta_p["radii"], meta_u["radii"][visible])
    assert meta_p["means2d"].shape == (int(visible.sum()), 2)
    (colors_u.sum() + alphas_u.sum()).backward()
    (colors_p.sum() + alphas_p.sum()).backward()
    for key in PARAMS:
        _assert_grads_close(key, b[key].grad, a[key].grad, rtol=1e-10)


def test_meta_matches_gsplat_layout():
    scene = _scene(seed=50, width=50, height=35, n_cameras=2)
    _, _, meta = rasterize(**scene, packed=False)
    C, N = 2, 60
    assert meta["radii"].dtype == torch.int32 and meta["radii"].shape == (C, N)
    assert meta["means2d"].shape == (C, N, 2) and meta["means2d"].grad_fn is not None
    assert meta["depths"].shape == (C, N) and meta["conics"].shape == (C, N, 3)
    assert meta["opacities"].shape == (C, N)
    assert meta["camera_ids"] is None and meta["gaussian_ids"] is None
    assert (meta["width"], meta["height"], meta["n_cameras"], meta["tile_size"]) == (50, 35, C, 16)
    assert (meta["tile_width"], meta["tile_height"]) == (4, 3)
    assert meta["tiles_per_gauss"].shape == (C, N) and meta["tiles_per_gauss"].dtype == torch.int32
    assert meta["isect_ids"].dtype == torch.int64 and meta["flatten_ids"].dtype == torch.int32
    assert int(meta["tiles_per_gauss"].sum()) == meta["isect_ids"].numel() == meta["flatten_ids"].numel()
    assert meta["isect_offsets"].shape == (C, 3, 4) and meta["isect_offsets"].dtype == torch.int32
    assert torch.all(meta["isect_ids"][1:] >= meta["isect_ids"][:-1])


def test_absgrad_sums_absolute_per_pixel_gradients():
    scene = _scene(seed=60, width=40, height=32)
    colors, alphas, meta = rasterize(**scene, packed=False, absgrad=True)
    meta["means2d"].retain_grad()
    colors.sum().backward()
    absgrad, grad = meta["means2d"].absgrad, meta["means2d"].grad
    assert absgrad.shape == grad.shape
    assert torch.all(absgrad >= grad.abs() - 1e-12)
    assert (absgrad > grad.abs() + 1e-9).any()  # cancellations between pixels do happen


def test_covars_input_matches_quats_and_scales():
    scene = _scene(seed=70, width=36, height=28)
    from difix_refiner.rendering.projection import quat_scale_to_covar

    covars = quat_scale_to_covar(scene["quats"], scene["scales"]).detach()
    # gsplat only reads the upper triangle: garbage below the diagonal must not matter.
    covars = covars + torch.tril(torch.randn(covars.shape, dtype=covars.dtype), diagonal=-1)
    colors_a, alphas_a, _ = rasterize(**scene, packed=False)
    colors_b, alphas_b, _ = rasterize(**scene, packed=False, covars=covars)
    torch.testing.assert_close(colors_b, colors_a, rtol=0, atol=1e-12)
    torch.testing.assert_close(alphas_b, alphas_a, rtol=0, atol=1e-12)


def test_chunking_does_not_change_results(monkeypatch):
    scene = _scene(seed=80, width=70, height=52, n_cameras=2)
    a, b = _fresh(scene), _fresh(scene)
    colors_a, alphas_a, _ = rasterize(**a, packed=False)
    (colors_a.square().sum() + alphas_a.sum()).backward()
    monkeypatch.setattr(compositing, "DEFAULT_CHUNK_STRIPS", 7)  # one tile per chunk
    colors_b, alphas_b, _ = rasterize(**b, packed=False)
    (colors_b.square().sum() + alphas_b.sum()).backward()
    torch.testing.assert_close(colors_b, colors_a, rtol=0, atol=1e-12)
    torch.testing.assert_close(alphas_b, alphas_a, rtol=0, atol=1e-12)
    for key in PARAMS:
        _assert_grads_close(key, b[key].grad, a[key].grad, rtol=1e-10)


@pytest.mark.parametrize("tile_size", [8, 12])
def test_other_tile_sizes_match_reference(tile_size):
    _check(_scene(seed=90, width=45, height=38, n_cameras=1), tile_size=tile_size)


def test_viewmat_gradients_match_reference():
    scene = _scene(seed=95, width=40, height=30, n_cameras=2, sh_degree=2)
    (ours, _, _, _), (ref, _, _, _) = _render_both(dict(scene, viewmats=scene["viewmats"].requires_grad_()))
    _assert_grads_close("viewmats", ours["viewmats"].grad, ref["viewmats"].grad)


def test_float32_close_to_float64_reference():
    scene64 = _scene(seed=100, width=48, height=40, n_cameras=2, sh_degree=1)
    scene32 = dict(scene64, viewmats=scene64["viewmats"].float(), Ks=scene64["Ks"].float())
    for key in PARAMS:
        scene32[key] = scene64[key].detach().float().requires_grad_()
    colors, alphas, meta = rasterize(**scene32, packed=False)
    meta["means2d"].retain_grad()
    ref_colors, ref_alphas, info = reference_rasterize(**scene64)
    info["means2d"].retain_grad()
    (colors.sum() + alphas.sum()).backward()
    (ref_colors.sum() + ref_alphas.sum()).backward()
    # A pair within float32 rounding of alpha = 1/255 may be kept by one and not the
    # other (a <= 1/255 change at one pixel); require float32 accuracy elsewhere.
    err = (colors.double() - ref_colors).abs().flatten()
    assert err.max() < 5e-3
    assert torch.quantile(err, 0.999) < 2e-5
    assert (alphas.double() - ref_alphas).abs().max() < 5e-3
    for key in PARAMS:
        _assert_grads_close(key, scene32[key].grad.double(), scene64[key].grad, rtol=2e-3)


def test_no_gaussians_and_nothing_visible():
    scene = _scene(seed=110, width=20, height=20)
    for key in PARAMS:
        scene[key] = scene[key].detach()[:0].requires_grad_()
    bg = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    colors, alphas, meta = rasterize(**scene, packed=False, backgrounds=bg)
    assert torch.equal(colors, bg[:, None, None, :].expand(1, 20, 20, 3))
    assert torch.all(alphas == 0)
    assert meta["isect_ids"].numel() == 0
    scene = _scene(seed=111, width=20, height=20)
    with torch.no_grad():
        scene["means"][:, 2] = -5.0  # everything behind the camera
    colors, alphas, meta = rasterize(**scene, packed=False)
    colors.sum().backward()
    assert torch.all(meta["radii"] == 0) and torch.all(alphas == 0)
    assert torch.all(scene["means"].grad == 0) and torch.isfinite(scene["quats"].grad).all()


def test_all_options_combined_is_deterministic():
    scene = _scene(seed=120, width=30, height=22, n_cameras=2, sh_degree=2)
    outs = []
    for _ in range(2):
        colors, alphas, _ = rasterize(
            **_fresh(scene), packed=False, render_mode="RGB+ED", rasterize_mode="antialiased"
        )
        outs.append((colors, alphas))
    assert all(torch.equal(x, y) for x, y in zip(*outs))


@pytest.mark.parametrize("seed,n", list(itertools.product([200, 201], [150])))
def test_denser_scenes_match_reference(seed, n):
    _check(_scene(seed=seed, n=n, width=52, height=44, n_cameras=2), rasterize_mode="antialiased")


def test_reference_pixel_chunks_match_unchunked():
    scene = _scene(seed=130, width=30, height=20, n_cameras=2)
    a, b = _fresh(scene), _fresh(scene)
    colors_a, alphas_a, _ = reference_rasterize(**a)
    colors_b, alphas_b, _ = reference_rasterize(**b, pixel_chunk=37)
    torch.testing.assert_close(colors_b, colors_a, rtol=0, atol=1e-12)
    (colors_a.sum() + alphas_a.sum()).backward()
    (colors_b.sum() + alphas_b.sum()).backward()
    for key in PARAMS:
        _assert_grads_close(key, b[key].grad, a[key].grad, rtol=1e-10)


def test_chunks_stay_bounded_with_large_splats(monkeypatch):
    """Large splats touch many tiles; every chunk holds at most the budget or a single tile."""
    scene = _scene(seed=140, width=96, height=64, n=80)
    with torch.no_grad():
        scene["scales"] *= 6.0  # splats spanning a large part of the image
    budget = 500
    monkeypatch.setattr(compositing, "DEFAULT_CHUNK_STRIPS", budget)
    seen = []
    real_tile_chunks = compositing._tile_chunks

    def recording_tile_chunks(strips, plan):
        chunks = real_tile_chunks(strips, plan)
        seen.append((chunks, strips, plan))
        return chunks

    monkeypatch.setattr(compositing, "_tile_chunks", recording_tile_chunks)
    colors, alphas, meta = rasterize(**_fresh(scene), packed=False)
    (chunks, strips, plan), = seen
    assert meta["tiles_per_gauss"].float().mean() > 4
    tile_of_isect = (plan.bins.isect_ids >> 32).tolist()
    covered = 0
    for lo, hi in chunks:
        assert lo == covered  # contiguous, whole list, in order
        covered = hi
        n_strips = int(strips.count[lo:hi].sum())
        assert n_strips <= budget or tile_of_isect[lo] == tile_of_isect[hi - 1]
    assert covered == len(tile_of_isect) and len(chunks) > 5


def test_extreme_splats_match_reference():
    """Needles, splats at the near plane covering the image, and tiny splats set by eps2d."""
    g = torch.Generator().manual_seed(0)
    f64 = dict(dtype=torch.float64)
    means = torch.cat(
        [
            torch.tensor([[0.0, 0.0, 0.02], [0.1, 0.0, 0.05]], **f64),
            torch.rand(10, 3, generator=g, **f64) * 2.0 + torch.tensor([-1.0, -1.0, 1.0], **f64),
            torch.rand(28, 3, generator=g, **f64) * 4.0 + torch.tensor([-2.0, -2.0, 0.5], **f64),
        ]
    )
    scales = torch.cat(
        [
            torch.tensor([[0.01, 0.01, 0.01], [0.001, 0.02, 0.0001]], **f64),
            torch.tensor([[3.0, 1e-4, 1e-4]], **f64).repeat(10, 1),
            torch.exp(2.0 * torch.randn(28, 3, generator=g, **f64) - 4.0),
        ]
    )
    opacities = torch.rand(40, generator=g, **f64)
    opacities[:5] = 1.0
    scene = dict(
        means=means.requires_grad_(),
        quats=torch.randn(40, 4, generator=g, **f64).requires_grad_(),
        scales=scales.requires_grad_(),
        opacities=opacities.requires_grad_(),
        colors=torch.rand(40, 1, generator=g, **f64).requires_grad_(),
        viewmats=torch.eye(4, **f64)[None],
        Ks=torch.tensor([[[60.0, 0.0, 25.0], [0.0, 60.0, 18.0], [0.0, 0.0, 1.0]]], **f64),
        width=50,
        height=37,
    )
    _, _, meta = _check(scene, rasterize_mode="antialiased")
    assert meta["radii"].max() > 100  # some splats span far more than the image


def test_no_grad_render_matches():
    scene = _scene(seed=150, width=40, height=30, n_cameras=2, sh_degree=1)
    colors, alphas, _ = rasterize(**scene, packed=False)
    with torch.no_grad():
        colors_ng, alphas_ng, meta = rasterize(**scene, packed=False)
    assert not colors_ng.requires_grad and meta["means2d"].grad_fn is None
    assert torch.equal(colors_ng, colors.detach()) and torch.equal(alphas_ng, alphas.detach())
