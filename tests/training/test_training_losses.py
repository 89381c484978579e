"""Each loss against a value computed by hand on tiny tensors (random-init backbones only)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from difix_refiner.training.discriminator import (
    bce_discriminator_loss,
    bce_generator_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from difix_refiner.training.losses import (
    CLIPSimilarityLoss,
    GramLoss,
    clip_similarity_loss,
    gram_loss,
    gram_matrix,
    l1_loss,
    l2_loss,
)
from difix_refiner.training.perceptual import (
    VGG16_LAYER_INDEX,
    PerceptualBackbones,
    PerceptualConfig,
    RandomInitWarning,
    imagenet_normalize,
    lpips_package_weights,
)

TINY_CLIP = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16
)


@pytest.fixture(scope="module")
def backbones() -> PerceptualBackbones:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        b = PerceptualBackbones(PerceptualConfig(random_init=True, search_caches=False), clip_random_overrides=TINY_CLIP)
        b.lpips()
        b.clip(text=True)
    return b


def test_l2_and_l1_by_hand():
    a = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]]).expand(1, 3, 2, 2)
    b = torch.tensor([[[[0.5, 0.5], [0.0, 0.75]]]]).expand(1, 3, 2, 2)
    # per-pixel differences 0.5, 0, 1, 0.5 (same in all channels)
    assert l2_loss(a, b).item() == pytest.approx((0.25 + 0 + 1 + 0.25) / 4)
    assert l1_loss(a, b).item() == pytest.approx((0.5 + 0 + 1 + 0.5) / 4)


def test_gram_matrix_of_known_features():
    # Two channels over 2x2 positions: F0 = [1, 2, 3, 4], F1 = [0, 1, 0, 1].
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])  # [1, 2, 2, 2]
    g = gram_matrix(f)
    norm = 2 * 2 * 2  # C * H * W
    expected = torch.tensor([[[1 + 4 + 9 + 16, 2 + 4], [2 + 4, 2]]]) / norm
    assert torch.allclose(g, expected)


def test_gram_loss_sums_layer_mses():
    f1a = torch.tensor([[[[1.0, 0.0]]]])  # [1, 1, 1, 2]: G = 1/2
    f1b = torch.tensor([[[[0.0, 0.0]]]])  # G = 0
    f2a = torch.tensor([[[[1.0]], [[1.0]]]])  # [1, 2, 1, 1]: G = all 1/2
    f2b = torch.tensor([[[[1.0]], [[-1.0]]]])  # G = [[1/2, -1/2], [-1/2, 1/2]]
    expected = (0.5**2) + (0 + 1 + 1 + 0) / 4
    assert gram_loss([f1a, f2a], [f1b, f2b]).item() == pytest.approx(expected)
    assert gram_loss({"x": f1a}, {"x": f1a}).item() == 0.0


def test_gram_module_uses_vgg_features(backbones):
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24)
    vgg = backbones.vgg()
    feats_x = vgg(imagenet_normalize(x))
    feats_y = vgg(imagenet_normalize(y))
    expected = sum(
        torch.mean((gram_matrix(feats_x[n][i : i + 1]) - gram_matrix(feats_y[n][i : i + 1])) ** 2)
        for n in feats_x
        for i in range(2)
    ) / 2  # mean over the batch of the per-image sums over layers
    value = GramLoss(vgg)(x, y)
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)
    assert GramLoss(vgg)(x, x).item() == pytest.approx(0.0, abs=1e-12)


def test_cosine_similarity_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    # cos = 0 and 1/sqrt(2)
    assert clip_similarity_loss(a, b).item() == pytest.approx(((1 - 0) + (1 - 1 / math.sqrt(2))) / 2)
    # one reference broadcast over the batch
    assert clip_similarity_loss(a, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(((1 - 1) + (1 - 1 / math.sqrt(2))) / 2)


def test_clip_similarity_module(backbones):
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 40, 48), torch.rand(2, 3, 40, 48)
    clip = backbones.clip(text=True)
    loss = CLIPSimilarityLoss(clip, "image")
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    expected = clip_similarity_loss(clip.encode_image(x), clip.encode_image(y))
    assert loss(x, y).item() == pytest.approx(expected.item(), rel=1e-5)
    by_prompt = CLIPSimilarityLoss(clip, "prompt")
    text = clip.encode_text(["remove degradation"])  # [1, D]
    assert by_prompt(x, prompts="remove degradation").item() == pytest.approx(
        clip_similarity_loss(clip.encode_image(x), text).item(), rel=1e-5
    )
    with pytest.raises(ValueError, match="prompts"):
        by_prompt(x)


def test_gan_losses_on_known_logits():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([0.5, -3.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731  softplus
    assert bce_discriminator_loss(real, fake).item() == pytest.approx((sp(-2) + sp(1)) / 2 + (sp(0.5) + sp(-3)) / 2)
    assert bce_generator_loss(fake).item() == pytest.approx((sp(-0.5) + sp(3)) / 2)
    # -log(sigmoid(0)) = log 2
    assert bce_generator_loss(torch.zeros(3)).item() == pytest.approx(math.log(2))
    # hinge: relu(1 - real) = [0, 2]; relu(1 + fake) = [1.5, 0]
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(1.0 + 0.75)
    assert hinge_generator_loss(fake).item() == pytest.approx(1.25)


def _lpips_by_hand(backbones: PerceptualBackbones, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The LPIPS definition written out: scale, VGG features, unit-normalise, weighted squared diff, mean."""
    lp = backbones.lpips()
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fx = backbones.vgg()((2 * x - 1 - shift) / scale)
    fy = backbones.vgg()((2 * y - 1 - shift) / scale)
    total = torch.zeros(x.shape[0])
    for k, name in enumerate(VGG16_LAYER_INDEX):
        a = fx[name] / (fx[name].norm(dim=1, keepdim=True) + 1e-10)
        b = fy[name] / (fy[name].norm(dim=1, keepdim=True) + 1e-10)
        w = lp.lins[k].weight.view(1, -1, 1, 1)
        total += ((a - b) ** 2 * w).sum(dim=1).mean(dim=(1, 2))
    return total


def test_lpips_matches_definition(backbones):
    torch.manual_seed(2)
    x, y = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24)
    ours = backbones.lpips()(x, y)
    assert ours.shape == (2,)
    assert torch.allclose(ours, _lpips_by_hand(backbones, x, y), rtol=1e-4)
    assert torch.allclose(backbones.lpips()(x, x), torch.zeros(2))


def test_lpips_matches_lpips_package_with_same_weights(monkeypatch):
    lpips = pytest.importorskip("lpips")
    lin_file = lpips_package_weights()
    if lin_file is None:
        pytest.skip("the lpips package ships no vgg.pth")
    import torchvision
    from torchvision.models.vgg import cfgs, make_layers

    # The package only uses vgg16().features; skip building (and randomly initialising) the
    # 120M-parameter classifier, which would dominate this test's time.
    monkeypatch.setattr(torchvision.models, "vgg16", lambda *a, **k: SimpleNamespace(features=make_layers(cfgs["D"])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = PerceptualBackbones(PerceptualConfig(random_init=True, lpips_weights=str(lin_file))).lpips()
        ref = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)  # its lin layers come from the same file
    # Copy our random trunk into the package's sliced VGG (slice k holds torchvision indices [lo, hi)).
    bounds = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
    mapped = {}
    for key, value in ours.trunk.features.state_dict().items():
        idx = int(key.split(".")[0])
        k = next(s for s, (lo, hi) in enumerate(bounds) if lo <= idx < hi)
        mapped[f"net.slice{k + 1}.{key}"] = value
    missing, unexpected = ref.load_state_dict(mapped, strict=False)
    assert not unexpected and not [m for m in missing if m.startswith("net.")]
    torch.manual_seed(3)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    expected = ref(x, y, normalize=True).view(-1)
    assert torch.allclose(ours(x, y), expected, rtol=1e-4, atol=1e-7)


def test_vgg_weights_load_from_torchvision_format(tmp_path: Path, backbones):
    # A full-model state_dict with torchvision's key names ("features.N.*" plus a classifier).
    state = {f"features.{k}": v.clone() + 1.0 for k, v in backbones.vgg().features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    loaded = PerceptualBackbones(PerceptualConfig(vgg_weights=str(path), search_caches=False)).vgg()
    assert torch.equal(loaded.features[0].weight, state["features.0.weight"])
    assert not any(p.requires_grad for p in loaded.parameters())
