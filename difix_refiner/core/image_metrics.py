"""Image metrics: PSNR/SSIM(/LPIPS) against photos, sharpness, fixer agreement, and optional FID/KID.

Images are ``[H, W, 3]`` arrays (uint8, or float in [0, 1]) or torch tensors of the same layout.
Metrics that need network weights never download them: LPIPS goes through
:class:`~difix_refiner.core.lpips.LazyLPIPS` and FID/KID need an Inception weights file
given explicitly; otherwise they are reported as skipped with the reason.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from difix_refiner.core.errors import InputError

LUMA = np.array([0.299, 0.587, 0.114])
"""ITU-R BT.601 luma weights (what OpenCV's RGB-to-grey conversion uses)."""


def as_float_image(image: Any) -> np.ndarray:
    """``[H, W, 3]`` float64 in [0, 1] from uint8 / float numpy arrays or torch tensors."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an image [H, W, 3], got shape {list(arr.shape)}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return np.clip(arr.astype(np.float64), 0.0, 1.0)


def as_uint8_image(image: Any) -> np.ndarray:
    """``[H, W, 3]`` uint8 (rounded) from any accepted image."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:
        return image[..., :3]
    return (as_float_image(image) * 255.0 + 0.5).astype(np.uint8)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {list(a.shape)} vs {list(b.shape)}")


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
"""SSIM constants (Wang et al. 2004), as nerfstudio's splatfacto and ``pytorch_msssim`` use them."""


def psnr_batch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of ``[B, C, H, W]`` images in [0, 1] -> ``[B]``, peak 1.

    Capped at 100 dB (identical images) so that means and JSON stay finite.
    """
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)  # float64 stays float64
    mse = (a.to(dtype) - b.to(dtype)).pow(2).flatten(1).mean(1).clamp_min(1e-10)  # [B]
    return -10.0 * torch.log10(mse)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).float()  # [size]


def ssim_batch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of ``[B, C, H, W]`` images in [0, 1] -> ``[B]``.

    The standard Gaussian-window SSIM (11x11, sigma 1.5, K1 0.01, K2 0.03, data range 1, valid
    convolution, mean over pixels and channels): the definition of ``pytorch_msssim.ssim`` and of
    scikit-image with ``gaussian_weights=True``. Images smaller than the window use a window of their
    smaller side (made odd).
    """
    a, b = a.float(), b.float()
    channels = a.shape[1]
    size = min(SSIM_WINDOW, a.shape[-2], a.shape[-1])
    size -= 1 - size % 2  # odd, so the window has a centre
    g = _gaussian_window(size, SSIM_SIGMA, a.device)
    # Separable Gaussian, one filter per channel (groups=C), no padding ("valid").
    gh = g.view(1, 1, 1, size).expand(channels, 1, 1, size)
    gv = g.view(1, 1, size, 1).expand(channels, 1, size, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, gh, groups=channels), gv, groups=channels)

    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).flatten(1).mean(1)  # [B]


def _to_bchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None]  # [1, 3, H, W]


def psnr(pred: Any, target: Any) -> float:
    """PSNR in dB with peak 1 of two ``[H, W, 3]`` images; capped at 100 dB for identical images."""
    p, t = as_float_image(pred), as_float_image(target)
    _check_same_shape(p, t)
    return float(psnr_batch(_to_bchw(p).double(), _to_bchw(t).double())[0])


def ssim(pred: Any, target: Any) -> float:
    """SSIM of two ``[H, W, 3]`` images (:func:`ssim_batch`), as nerfstudio's splatfacto computes it."""
    p, t = as_float_image(pred), as_float_image(target)
    _check_same_shape(p, t)
    return float(ssim_batch(_to_bchw(p), _to_bchw(t))[0])


def laplacian_variance(image: Any) -> float:
    """No-reference sharpness: variance of the 3x3 Laplacian of the grey image (0..255 scale).

    Blur removes high frequencies, so a blurred image has a smaller value than the sharp one. Only
    interior pixels are used (no padding), so image borders add nothing.
    """
    grey = as_float_image(image) @ LUMA * 255.0  # [H, W]
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        raise ValueError(f"sharpness needs an image of at least 3x3 pixels, got {grey.shape[1]}x{grey.shape[0]}")
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]  # [H-2, W-2]
    return float(lap.var())


def fixer_agreement(fixed: Any, unfixed: Any) -> Dict[str, float]:
    """How much the fixer changed a render: PSNR (dB) and mean absolute difference (0..1) between them.

    High PSNR / low difference means the fixer found little to repair.
    """
    f, u = as_float_image(fixed), as_float_image(unfixed)
    _check_same_shape(f, u)
    return {"psnr": psnr(f, u), "mean_abs_diff": float(np.mean(np.abs(f - u)))}


def mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of the non-None values, or None when there are none."""
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


# --------------------------------------------------------------------------------------------
# Photo metrics over a set of views


@dataclass
class PhotoMetrics:
    """Accumulates PSNR, SSIM and (when its weights exist) LPIPS of renders against photos."""

    lpips: Any = None
    """A :class:`LazyLPIPS` (or None for no LPIPS); it returns None when its weights are absent."""
    psnr: List[float] = field(default_factory=list)
    ssim: List[float] = field(default_factory=list)
    lpips_values: List[float] = field(default_factory=list)
    lpips_skipped: bool = False

    def add(self, render: Any, photo: Any) -> Dict[str, float]:
        """Score one render against its photo; returns that view's metrics."""
        r, p = as_float_image(render), as_float_image(photo)
        out = {"psnr": psnr(r, p), "ssim": ssim(r, p)}
        self.psnr.append(out["psnr"])
        self.ssim.append(out["ssim"])
        if self.lpips is not None and not self.lpips_skipped:
            value = self.lpips(_to_bchw(r), _to_bchw(p))
            if value is None:
                self.lpips_skipped = True
            else:
                out["lpips"] = float(value)
                self.lpips_values.append(out["lpips"])
        return out

    def summary(self) -> Dict[str, Any]:
        """Means over the views: ``{"psnr", "ssim", "lpips"?, "num_views"}``."""
        out: Dict[str, Any] = {"psnr": mean_or_none(self.psnr), "ssim": mean_or_none(self.ssim)}
        if self.lpips_values and not self.lpips_skipped:
            out["lpips"] = float(np.mean(self.lpips_values))
        out["num_views"] = len(self.psnr)
        return out


def lpips_skip_reason() -> str:
    """Why LPIPS is skipped (its AlexNet weights are not on disk; nothing is downloaded)."""
    from difix_refiner.core.lpips import alexnet_weights_path

    return (
        f"LPIPS needs torchvision's AlexNet weights at {alexnet_weights_path()} (no download is attempted; "
        "`difix-refiner weights fetch lpips-alex` puts them there)"
    )


# --------------------------------------------------------------------------------------------
# FID / KID


class InceptionWeightsError(InputError):
    """The Inception weights file for FID/KID is missing or unreadable."""


def inception_extractor(weights_path: Path) -> torch.nn.Module:
    """torch-fidelity's InceptionV3 (2048-d pool features) from a local weights file; never downloads.

    The file is torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (a state dict).
    """
    path = Path(weights_path)
    if not path.is_file():
        raise InceptionWeightsError(f"Inception weights not found: {path}")
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path))
    except Exception as err:  # torch.load / load_state_dict raise several types
        raise InceptionWeightsError(f"cannot load Inception weights from {path}: {err}") from err


def _uint8_batch(images: Sequence[Any]) -> torch.Tensor:
    return torch.from_numpy(np.stack([as_uint8_image(i) for i in images])).permute(0, 3, 1, 2).contiguous()  # [B, 3, H, W]


def inception_features(images: Sequence[Any], extractor: torch.nn.Module, batch_size: int = 16) -> torch.Tensor:
    """Features of images with ``extractor`` (uint8 ``[B, 3, H, W]`` -> ``[B, D]``). # [N, D] float64

    Images of different sizes are batched separately (the extractor resizes each).
    """
    feats = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            shapes = {as_uint8_image(i).shape for i in chunk}
            groups = [chunk] if len(shapes) == 1 else [[i] for i in chunk]
            for group in groups:
                feats.append(extractor(_uint8_batch(group)).reshape(len(group), -1).double())
    return torch.cat(feats) if feats else torch.zeros((0, 0), dtype=torch.float64)


class _Precomputed(torch.nn.Module):
    """Hands precomputed features to torchmetrics' FID/KID as if it were the feature network."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid_kid_from_features(real: torch.Tensor, fake: torch.Tensor, kid_subsets: int = 100, seed: int = 0) -> Dict[str, Any]:
    """FID and KID (torchmetrics' definitions) from features ``[N, D]`` of real and generated images.

    KID uses subsets of ``min(1000, #real, #fake)`` images. With few images both are noisy (FID is
    biased upwards): compare runs only at equal image counts.

    Returns:
        ``{"fid", "kid_mean", "kid_std", "num_real", "num_fake"}``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID/KID need at least 2 images per set, got {len(real)} real and {len(fake)} fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} vs {fake.shape[1]}")
    torch.manual_seed(seed)  # KID draws random subsets
    network = _Precomputed(int(real.shape[1]))
    fid = FrechetInceptionDistance(feature=network)
    with warnings.catch_warnings():  # its "keeps all features in memory" notice: we pass features already
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=network, subsets=kid_subsets, subset_size=min(1000, len(real), len(fake)))
    for feats, is_real in ((real, True), (fake, False)):
        fid.update(feats, real=is_real)
        kid.update(feats, real=is_real)
    kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "num_real": int(len(real)),
        "num_fake": int(len(fake)),
    }


def fid_kid(
    real_images: Sequence[Any],
    fake_images: Sequence[Any],
    extractor: torch.nn.Module,
    batch_size: int = 16,
    kid_subsets: int = 100,
    seed: int = 0,
) -> Dict[str, Any]:
    """FID and KID between two image sets with a feature ``extractor`` (see :func:`fid_kid_from_features`)."""
    if len(real_images) < 2 or len(fake_images) < 2:
        raise ValueError(f"FID/KID need at least 2 images per set, got {len(real_images)} real and {len(fake_images)} fake")
    real = inception_features(real_images, extractor, batch_size)
    fake = inception_features(fake_images, extractor, batch_size)
    return fid_kid_from_features(real, fake, kid_subsets=kid_subsets, seed=seed)
