"""gsplat's DefaultStrategy (densification) driven by CPU rasteriser outputs."""

import pytest
import torch
from gsplat.strategy import DefaultStrategy

from difix_refiner.rendering import random_scene, rasterize


def _splats(n: int = 120):
    """Parameters and optimizers laid out like gsplat's examples (activations applied at render)."""
    scene = random_scene(n, 64, 48, n_cameras=2, seed=7, dtype=torch.float32, sh_degree=1)
    params = torch.nn.ParameterDict(
        {
            "means": torch.nn.Parameter(scene["means"].detach()),
            "scales": torch.nn.Parameter(torch.log(scene["scales"].detach())),
            "quats": torch.nn.Parameter(scene["quats"].detach()),
            "opacities": torch.nn.Parameter(torch.logit(scene["opacities"].detach().clamp(0.01, 0.99))),
            "sh0": torch.nn.Parameter(scene["colors"].detach()[:, :1]),
            "shN": torch.nn.Parameter(scene["colors"].detach()[:, 1:]),
        }
    )
    lrs = {"means": 1e-4, "scales": 5e-3, "quats": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3, "shN": 1e-4}
    optimizers = {key: torch.optim.Adam([{"params": params[key], "lr": lr, "name": key}]) for key, lr in lrs.items()}
    return scene, params, optimizers


def _render(scene, params, absgrad):
    return rasterize(
        means=params["means"],
        quats=params["quats"],
        scales=torch.exp(params["scales"]),
        opacities=torch.sigmoid(params["opacities"]),
        colors=torch.cat([params["sh0"], params["shN"]], 1),
        viewmats=scene["viewmats"],
        Ks=scene["Ks"],
        width=scene["width"],
        height=scene["height"],
        sh_degree=1,
        packed=False,
        absgrad=absgrad,
    )


@pytest.mark.parametrize("absgrad", [False, True])
def test_default_strategy_densifies(absgrad):
    scene, params, optimizers = _splats()
    strategy = DefaultStrategy(
        refine_start_iter=0,
        refine_every=2,
        reset_every=1000,
        grow_grad2d=1e-7,  # low enough that every visible splat with a gradient grows
        grow_scale3d=0.005,  # about half of the splats get split, the rest duplicated
        absgrad=absgrad,
    )
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    target = torch.rand(2, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    n_before = params["means"].shape[0]

    for step in (1, 2):
        colors, alphas, info = _render(scene, params, absgrad)
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss = (colors - target).abs().mean() + alphas.mean()
        loss.backward()
        if step == 1:
            visible = (info["radii"] > 0).any(0)
            assert info["means2d"].grad is not None and info["means2d"].grad.shape == (2, n_before, 2)
            if absgrad:
                assert info["means2d"].absgrad.shape == (2, n_before, 2)
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        if step == 1:
            # Running statistics are filled for the visible splats only.
            assert state["grad2d"].shape == (n_before,) and state["count"].shape == (n_before,)
            assert torch.all(state["count"][visible] > 0) and torch.all(state["count"][~visible] == 0)
            assert (state["grad2d"][visible] > 0).float().mean() > 0.5
            assert torch.all(state["grad2d"][~visible] == 0)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)

    n_after = params["means"].shape[0]
    assert n_after > n_before
    assert all(p.shape[0] == n_after for p in params.values())
    # The densified model still renders and backpropagates.
    colors, alphas, info = _render(scene, params, absgrad)
    colors.mean().backward()
    assert torch.isfinite(params["means"].grad).all()
