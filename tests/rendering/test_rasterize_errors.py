"""Bad inputs to rasterize raise clear errors on the CPU path."""

import pytest
import torch

from difix_refiner.rendering import random_scene, rasterize


@pytest.fixture
def scene():
    s = random_scene(10, 16, 12, n_cameras=2, seed=0, dtype=torch.float32)
    return {k: (v.detach() if torch.is_tensor(v) else v) for k, v in s.items()}


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("means", torch.zeros(10, 2), r"means must have shape \[N, 3\], got \(10, 2\)"),
        ("quats", torch.ones(9, 4), r"quats must have shape \[N, 4\] with N=10, got \(9, 4\)"),
        ("scales", torch.ones(10, 2), r"scales must have shape \[N, 3\] with N=10"),
        ("opacities", torch.ones(10, 1), r"opacities must have shape \[N\] with N=10"),
        ("colors", torch.ones(11, 3), r"colors must have shape \[N, D\] or \[C, N, D\] with C=2, N=10"),
        ("viewmats", torch.eye(4)[:3], r"viewmats must have shape \[C, 4, 4\]"),
        ("Ks", torch.eye(3)[None], r"Ks must have shape \[C, 3, 3\] with C=2, got \(1, 3, 3\)"),
        ("backgrounds", torch.zeros(2, 4), r"backgrounds must have shape \[C, D\] with C=2, D=3"),
    ],
)
def test_wrong_shapes(scene, key, value, match):
    scene[key] = value
    with pytest.raises(ValueError, match=match):
        rasterize(**scene)


def test_wrong_sh_inputs(scene):
    scene["colors"] = torch.zeros(10, 4, 3)
    with pytest.raises(ValueError, match=r"sh_degree=2 needs K >= 9 SH coefficients, colors has K=4"):
        rasterize(**dict(scene, sh_degree=2))
    with pytest.raises(ValueError, match=r"sh_degree must be None or an int in \[0, 4\], got 5"):
        rasterize(**dict(scene, sh_degree=5))
    with pytest.raises(ValueError, match=r"colors must have shape \[N, K, 3\] or \[C, N, K, 3\]"):
        rasterize(**dict(scene, colors=torch.zeros(10, 4, 2), sh_degree=1))


@pytest.mark.parametrize("key", ["means", "quats", "scales", "opacities", "viewmats", "Ks"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values(scene, key, bad):
    scene[key] = scene[key].clone()
    scene[key].view(-1)[3] = bad
    with pytest.raises(ValueError, match=rf"non-finite values \(nan or inf\) in {key}"):
        rasterize(**scene)


def test_zero_quaternion(scene):
    scene["quats"][4] = 0.0
    with pytest.raises(ValueError, match="quats contains zero-norm quaternions"):
        rasterize(**scene)


def test_dtype_and_device_mismatch(scene):
    with pytest.raises(TypeError, match=r"scales has dtype torch.float64 but means has dtype torch.float32"):
        rasterize(**dict(scene, scales=scene["scales"].double()))
    with pytest.raises(TypeError, match=r"opacities must be a floating point tensor, got torch.int64"):
        rasterize(**dict(scene, opacities=torch.ones(10, dtype=torch.int64)))
    with pytest.raises(ValueError, match=r"Ks is on meta but means is on cpu"):
        rasterize(**dict(scene, Ks=scene["Ks"].to("meta")))
    with pytest.raises(TypeError, match=r"colors must be a torch.Tensor, got list"):
        rasterize(**dict(scene, colors=[[0.0, 0.0, 0.0]] * 10))


def test_unknown_modes(scene):
    with pytest.raises(ValueError, match=r"unknown render_mode 'RGBD'"):
        rasterize(**scene, render_mode="RGBD")
    with pytest.raises(ValueError, match=r"unknown rasterize_mode 'mip'"):
        rasterize(**scene, rasterize_mode="mip")
    with pytest.raises(ValueError, match=r"unknown camera_model 'panorama'"):
        rasterize(**scene, camera_model="panorama")
    with pytest.raises(ValueError, match=r"width must be a positive int, got 0"):
        rasterize(**dict(scene, width=0))


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(camera_model="ortho"), r"camera_model='ortho' is only supported on CUDA"),
        (dict(camera_model="fisheye"), r"camera_model='fisheye' is only supported on CUDA"),
        (dict(distributed=True), r"distributed=True is only supported on CUDA"),
        (dict(sparse_grad=True), r"sparse_grad=True is only supported on CUDA"),
    ],
)
def test_cuda_only_options(scene, options, match):
    with pytest.raises(NotImplementedError, match=match):
        rasterize(**scene, **options)
