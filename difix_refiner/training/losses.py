"""Reconstruction losses: L2, L1, MS-SSIM, image gradients, LPIPS, Gram (style) on VGG16 features and
CLIP similarity. L2, L1, MS-SSIM and the gradient loss need no downloaded weights.

All image arguments are [B, 3, H, W] in [0, 1]; every loss returns a scalar (mean over the
batch). The pure functions (``gram_matrix``, ``gram_loss``, ``clip_similarity_loss``) take
features or embeddings so that they can be checked by hand; the modules wrap them around a
frozen backbone from :mod:`difix_refiner.training.perceptual`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from difix_refiner.training.perceptual import (
    LPIPS,
    VGG16_LAYERS,
    CLIPEncoder,
    VGG16Features,
    imagenet_normalize,
)


def check_images(output: torch.Tensor, target: torch.Tensor) -> None:
    """Raise a clear error unless both are [B, 3, H, W] of the same shape."""
    if output.ndim != 4 or output.shape[1] != 3:
        raise ValueError(f"Expected images [B, 3, H, W], got output of shape {tuple(output.shape)}.")
    if output.shape != target.shape:
        raise ValueError(f"Output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape.")


def l2_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements."""
    return F.mse_loss(output.float(), target.float())


def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all elements."""
    return F.l1_loss(output.float(), target.float())


# --------------------------------------------------------------------------- MS-SSIM and gradients

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Per-scale exponents of MS-SSIM (Wang, Simoncelli and Bovik 2003), finest scale first."""
_SSIM_K = (0.01, 0.03)
_SSIM_FLOOR = 1e-6  # per-scale terms are floored here: a power of 0 has an infinite derivative


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    """Normalised 1-D Gaussian as a depthwise kernel [C, 1, 1, size]."""
    x = torch.arange(size, dtype=torch.float32, device=like.device) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).reshape(1, 1, 1, size).repeat(channels, 1, 1, 1)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and its contrast-structure part, each averaged over pixels: [B, C] (valid Gaussian filtering)."""
    c = x.shape[1]

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, win, groups=c)  # along the width
        return F.conv2d(t, win.transpose(2, 3), groups=c)  # along the height

    c1, c2 = _SSIM_K[0] ** 2, _SSIM_K[1] ** 2  # data range 1
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs = (2.0 * cov + c2) / (var_x + var_y + c2)  # [B, C, h, w]
    ssim = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
    return ssim.flatten(2).mean(-1), cs.flatten(2).mean(-1)


def ms_ssim(
    output: torch.Tensor, target: torch.Tensor, win_size: int = 11, sigma: float = 1.5, weights: Sequence[float] = MS_SSIM_WEIGHTS
) -> torch.Tensor:
    """Multi-scale SSIM per image, [B] (images [B, C, H, W] in [0, 1]).

    The 5-scale definition needs a side above ``(win_size - 1) * 16`` (160 px); on smaller images the
    coarsest scales that do not hold a window are left out and the exponents renormalised, and the
    window shrinks (odd, at least 3) to fit the smallest side. Each scale's term is floored at 1e-6
    (where the usual definition takes max(0, .)), so gradients stay finite for any input.
    """
    check_images(output, target)
    x, y = output.float(), target.float()
    side = min(x.shape[-2:])
    win_size = max(3, min(win_size, side if side % 2 else side - 1))
    levels = len(weights)
    while levels > 1 and side / 2 ** (levels - 1) < win_size:
        levels -= 1
    w = torch.tensor(weights[:levels], dtype=torch.float32, device=x.device)
    w = w / w.sum()
    win = _gaussian_window(win_size, sigma, x.shape[1], x)
    terms = []
    for level in range(levels):
        ssim, cs = _ssim_terms(x, y, win)
        terms.append(ssim if level == levels - 1 else cs)
        if level < levels - 1:
            pad = [s % 2 for s in x.shape[2:]]
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
    stacked = torch.stack(terms).clamp_min(_SSIM_FLOOR)  # [L, B, C]
    return torch.prod(stacked ** w[:, None, None], dim=0).mean(dim=1)


def ms_ssim_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch mean of 1 - MS-SSIM."""
    return (1.0 - ms_ssim(output, target)).mean()


def image_gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x [B, C, H, W-1] and y [B, C, H-1, W]."""
    return images[..., :, 1:] - images[..., :, :-1], images[..., 1:, :] - images[..., :-1, :]


def gradient_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the image gradients (x and y, averaged): edges where the target has them."""
    check_images(output, target)
    (ox, oy), (tx, ty) = image_gradients(output.float()), image_gradients(target.float())
    return 0.5 * (F.l1_loss(ox, tx) + F.l1_loss(oy, ty))


def lpips_loss(lpips: LPIPS, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch mean of the LPIPS distance."""
    return lpips(output.float(), target.float()).mean()


# --------------------------------------------------------------------------- Gram


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Channel correlations of a feature map.

    features: [B, C, H, W] -> [B, C, C] with G[c, d] = sum_hw F[c] F[d] / (C * H * W).
    Dividing by C*H*W keeps the values comparable across layers and image sizes.
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w).float()  # [B, C, HW]
    return torch.bmm(flat, flat.transpose(1, 2)) / float(c * h * w)


def gram_loss(
    features_a: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    features_b: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """Sum over layers of the mean squared difference between the two Gram matrices."""
    a = list(features_a.values()) if isinstance(features_a, Mapping) else list(features_a)
    b = list(features_b.values()) if isinstance(features_b, Mapping) else list(features_b)
    if len(a) != len(b) or not a:
        raise ValueError(f"Gram loss needs the same non-zero number of layers on both sides ({len(a)} vs {len(b)}).")
    total = a[0].new_zeros((), dtype=torch.float32)
    for fa, fb in zip(a, b):
        total = total + F.mse_loss(gram_matrix(fa), gram_matrix(fb))
    return total


class GramLoss(nn.Module):
    """Gram (style) loss on VGG16 relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (Difix3D+).

    crop: when set and the image is larger, both images are cut to the same random square of
      this side first (Difix3D+ does this at 576x1024 to save memory); ``None`` uses the whole image.
    """

    def __init__(self, vgg: VGG16Features, layers: Sequence[str] = VGG16_LAYERS, crop: int | None = None) -> None:
        super().__init__()
        self.vgg = vgg
        self.layers = tuple(layers)
        self.crop = crop

    def _random_crop(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = output.shape[-2:]
        ch, cw = min(self.crop, h), min(self.crop, w)
        if (ch, cw) == (h, w):
            return output, target
        top = int(torch.randint(0, h - ch + 1, ()).item())
        left = int(torch.randint(0, w - cw + 1, ()).item())
        return output[..., top : top + ch, left : left + cw], target[..., top : top + ch, left : left + cw]

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """output, target: [B, 3, H, W] in [0, 1] -> scalar."""
        if self.crop:
            output, target = self._random_crop(output, target)
        feats_out = self.vgg(imagenet_normalize(output.float()), self.layers)
        # A constant target needs no graph: halves the activation memory.
        with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
            feats_tgt = self.vgg(imagenet_normalize(target.float()), self.layers)
        return gram_loss([feats_out[n] for n in self.layers], [feats_tgt[n] for n in self.layers])


# --------------------------------------------------------------------------- CLIP similarity


def clip_similarity_loss(embeds: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Batch mean of 1 - cos(embeds, reference).

    embeds: [B, D]; reference: [B, D] or [1, D] (broadcast, e.g. one prompt for the batch).
    """
    return (1.0 - F.cosine_similarity(embeds.float(), reference.float().expand_as(embeds), dim=-1)).mean()


class CLIPSimilarityLoss(nn.Module):
    """1 - cosine similarity of CLIP embeddings of the output and a reference.

    mode="image": the reference is the target image's embedding. Our paired data always has a
      target, and our prompts ("remove degradation") are instructions that describe no content,
      so comparing with the target is the informative choice; it is the default.
    mode="prompt": the reference is the prompt's text embedding, as pix2pix-turbo does with
      its captions (it uses 1 - logit/100, i.e. the same cosine). Needs a CLIP text model.
    """

    def __init__(self, clip: CLIPEncoder, mode: str = "image") -> None:
        super().__init__()
        if mode not in ("image", "prompt"):
            raise ValueError(f"CLIP similarity mode must be 'image' or 'prompt', got {mode!r}.")
        self.clip = clip
        self.mode = mode
        self._text_cache: dict[str, torch.Tensor] = {}

    def _prompt_embeds(self, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            for p, e in zip(missing, self.clip.encode_text(missing)):
                self._text_cache[p] = e.detach()
        return torch.stack([self._text_cache[p] for p in prompts]).to(device)  # [B, D]

    def forward(
        self,
        output: torch.Tensor,
        target: torch.Tensor | None = None,
        prompts: str | Sequence[str] | None = None,
    ) -> torch.Tensor:
        """output [B, 3, H, W] in [0, 1]; ``target`` for mode "image", ``prompts`` for mode "prompt"."""
        emb = self.clip.encode_image(output.float())  # [B, D]
        if self.mode == "image":
            if target is None:
                raise ValueError("CLIP similarity in 'image' mode needs the target image.")
            with torch.no_grad():
                ref = self.clip.encode_image(target.float())  # [B, D]
        else:
            if prompts is None:
                raise ValueError("CLIP similarity in 'prompt' mode needs prompts (one string or one per image).")
            if isinstance(prompts, str):
                prompts = [prompts] * output.shape[0]
            if len(prompts) != output.shape[0]:
                raise ValueError(f"Got {len(prompts)} prompts for a batch of {output.shape[0]} images.")
            ref = self._prompt_embeds(list(prompts), emb.device)
        return clip_similarity_loss(emb, ref)
