"""Tile-based front-to-back alpha compositing of 2D Gaussians on the CPU.

Semantics are those of gsplat 1.4.0's ``rasterize_to_pixels`` kernels: a splat
only reaches pixels of the tiles it was binned to, the pixel centre is
(x + 0.5, y + 0.5), ``alpha = min(0.999, opacity * exp(-sigma))`` with
``sigma = 0.5 * (a dx^2 + c dy^2) + b dx dy``, splats with ``sigma < 0`` or
``alpha < 1/255`` are skipped, and a pixel stops before the first splat that
would bring its transmittance to <= 1e-4 (that splat is not composited).

How it is vectorised: each tile row is cut into "slots" of ``STRIP`` pixels.
For every (tile, splat) intersection, in gsplat's (camera, tile, depth) order,
we list the slots crossed by the splat's ``alpha >= 1/255`` bounding box
("strips", one per slot and splat) and stably sort them by slot within the
tile; the strips of a slot are then contiguous and front to back. Alphas are
evaluated densely on [STRIP, strips] tensors ("lanes" x strips), and
transmittances are segmented float64 cumulative sums of ``log(1 - alpha)``
along strips, per lane. Gathers and scatters thus happen once per strip, not
once per pixel. Work is split into chunks of whole tiles with a bounded number
of strips (a tile holding more strips than the budget is one chunk).

The backward pass is hand written. The forward keeps the strips that
composited something (splat and slot as int32, plus a bit mask of lanes), recomputes
alphas from them and gets d(loss)/d(alpha) from reverse cumulative sums:

    dL/dalpha_i = T_i g_i - (sum_{j > i} w_j g_j - T_final (dL/dA - bg . G)) / (1 - alpha_i)

with ``G`` the pixel's colour gradient, ``g_i = G . colour_i``, ``w_i = alpha_i T_i``
and ``A`` the pixel alpha.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .tiles import TileBins

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
TRANSMITTANCE_MIN = 1e-4
_LOG_TRANSMITTANCE_MIN = math.log(TRANSMITTANCE_MIN)
# Widening of the alpha >= 1/255 ellipse used to pick candidate pixels, so that
# float rounding in sigma can never drop a pixel that the alpha test keeps
# (except at the tips of extremely elongated splats, within float error of 1/255).
_ELLIPSE_MARGIN_REL = 0.02
_ELLIPSE_MARGIN_ABS = 0.02
# Pixels per slot (strip width; the gcd with the tile size is used). Narrow
# strips waste fewer lanes on small splats, wide ones need fewer gathers; 4 was
# fastest on street scenes with splats of a few pixels.
STRIP = 4
# Strips per chunk: trades per-op overhead (and thread synchronisations)
# against cache locality; the chunk's temporaries take about 100 MB.
DEFAULT_CHUNK_STRIPS = 1 << 16


@dataclass
class RasterPlan:
    """Non-differentiable inputs of :func:`rasterize_to_pixels`."""

    width: int
    height: int
    tile_size: int
    n_cameras: int
    bins: TileBins  # sorted tile intersections of the M splats
    splat_cameras: Tensor  # [M] int64, camera of each splat
    absgrad: bool = False
    chunk_strips: Optional[int] = None  # None: DEFAULT_CHUNK_STRIPS


def rasterize_to_pixels(
    means2d: Tensor,  # [C, N, 2] or [M, 2]
    conics: Tensor,  # [C, N, 3] or [M, 3]
    colors: Tensor,  # [C, N, D] or [M, D]
    opacities: Tensor,  # [C, N] or [M]
    plan: RasterPlan,
    backgrounds: Optional[Tensor] = None,  # [C, D]
) -> Tuple[Tensor, Tensor]:
    """Composite projected splats into images, differentiably.

    Splat tensors may be per camera ([C, N, ...]) or flat ([M, ...], M = C*N
    or packed); ``plan.bins.flatten_ids`` index the flattened splats.

    Returns:
        render_colors [C, H, W, D] and render_alphas [C, H, W, 1].
        With ``plan.absgrad`` the backward also sets ``means2d.absgrad``.
    """
    M = plan.splat_cameras.shape[0]
    D = colors.shape[-1]
    assert means2d.numel() == 2 * M and means2d.shape[-1] == 2, means2d.shape
    assert conics.numel() == 3 * M and conics.shape[-1] == 3, conics.shape
    assert colors.numel() == D * M, colors.shape
    assert opacities.numel() == M, opacities.shape
    if backgrounds is not None:
        assert backgrounds.shape == (plan.n_cameras, D), backgrounds.shape
    inputs = (means2d, conics, colors, opacities, backgrounds)
    needs_backward = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    return _RasterizeToPixels.apply(*inputs, plan, needs_backward)


@dataclass
class _Layout:
    """Slot geometry: slot index = (camera * H + y) * slots_per_row + x // strip."""

    width: int
    height: int
    tile_size: int
    strip: int
    slots_per_row: int  # padded to whole tiles
    n_slots: int

    @staticmethod
    def of(plan: RasterPlan) -> "_Layout":
        strip = math.gcd(plan.tile_size, STRIP)
        per_row = plan.bins.tile_width * (plan.tile_size // strip)
        return _Layout(
            width=plan.width,
            height=plan.height,
            tile_size=plan.tile_size,
            strip=strip,
            slots_per_row=per_row,
            n_slots=plan.n_cameras * plan.height * per_row,
        )


class _Groups:
    """Runs of equal keys in a sorted-by-run key vector, for segmented scans along dim 1."""

    def __init__(self, key: Tensor, lanes: int):
        S = key.shape[0]
        change = key[1:] != key[:-1]  # [S - 1]
        self.starts = torch.nonzero(torch.cat([change.new_ones(1), change])).squeeze(1)  # [G]
        self.ends = torch.cat([self.starts[1:] - 1, self.starts.new_tensor([S - 1])])  # [G]
        n_groups = self.starts.shape[0]
        seg = torch.cumsum(torch.cat([change.new_zeros(1), change]), 0)  # [S], group of each strip
        # Flat gather indices that broadcast a [lanes, G] tensor to [lanes, S].
        lane_offsets = torch.arange(lanes, device=key.device)[:, None] * n_groups
        self._expand_index = (seg[None, :] + lane_offsets).reshape(-1)  # [lanes * S]

    def _expand(self, per_group: Tensor) -> Tensor:
        """[lanes, G] -> [lanes, S], each strip getting its group's value."""
        out = per_group.reshape(-1).index_select(0, self._expand_index)
        return out.reshape(per_group.shape[0], -1)

    def exclusive(self, values: Tensor) -> Tensor:
        """Sum of the earlier strips of each group, per lane (float64 accumulation)."""
        v64 = values.double()
        cs = torch.cumsum(v64, 1)  # [lanes, S]
        before_start = cs.index_select(1, self.starts) - v64.index_select(1, self.starts)
        return (cs - v64 - self._expand(before_start)).to(values.dtype)

    def later(self, values: Tensor) -> Tensor:
        """Sum of the later strips of each group, per lane (float64 accumulation)."""
        cs = torch.cumsum(values.double(), 1)  # [lanes, S]
        return (self._expand(cs.index_select(1, self.ends)) - cs).to(values.dtype)

    def totals(self, values: Tensor) -> Tensor:
        """Per-group sums of [K, S] values: [K, G] (float64 accumulation)."""
        cs = torch.cumsum(values.double(), 1)
        at_end = cs.index_select(1, self.ends)  # [K, G]
        return torch.diff(at_end, dim=1, prepend=at_end.new_zeros(at_end.shape[0], 1)).to(values.dtype)


def _splat_pixel_bounds(params: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pixel range [x0, x1) x [y0, y1) that can hold alpha >= 1/255, per splat.

    alpha >= 1/255 needs sigma <= log(255 opacity); that ellipse of the 2D
    covariance (the inverse conic) has half-widths sqrt(2 s cov_xx), sqrt(2 s cov_yy).

    Args:
        params: [M, 6] (mean x, mean y, conic a, b, c, opacity).
    """
    mx, my, a, b, c, o = params.unbind(1)  # [M] each
    det = (a * c - b * b).clamp_min(1e-30)
    s = torch.log((o * 255.0).clamp_min(1e-30))  # <= 0: no pixel passes
    s = (s * (1.0 + _ELLIPSE_MARGIN_REL) + _ELLIPSE_MARGIN_ABS).clamp_min(0.0)
    ext_x = torch.sqrt(2.0 * s * c / det)
    ext_y = torch.sqrt(2.0 * s * a / det)
    # Pixel x is a candidate when its centre x + 0.5 lies in [mx - ext, mx + ext].
    x0 = torch.ceil(mx - ext_x - 0.5)
    x1 = torch.floor(mx + ext_x - 0.5) + 1
    y0 = torch.ceil(my - ext_y - 0.5)
    y1 = torch.floor(my + ext_y - 0.5) + 1
    x1 = torch.where(o * 255.0 < 1.0, x0, x1)
    big = float(1 << 30)  # clamp before the cast: degenerate splats have huge extents
    return tuple(v.clamp(-big, big).long() for v in (x0, x1, y0, y1))  # type: ignore[return-value]


@dataclass
class _IsectStrips:
    """Strips of each (tile, splat) intersection; all int64 [I]."""

    count: Tensor  # strips (rows x slots) of the intersection's pixel box
    slots: Tensor  # slots per row
    slot_base: Tensor  # slot index of the box's top-left slot
    key_base: Tensor  # slot index within the tile of the top-left slot
    splat: Tensor


def _intersection_strips(params: Tensor, plan: RasterPlan, layout: _Layout) -> _IsectStrips:
    bins = plan.bins
    W, H, ts, L = plan.width, plan.height, plan.tile_size, layout.strip
    tile_bits = (bins.tile_width * bins.tile_height).bit_length()
    splat = bins.flatten_ids.long()  # [I]
    cam = bins.isect_ids >> (32 + tile_bits)  # [I]
    tile = (bins.isect_ids >> 32) & ((1 << tile_bits) - 1)  # [I]
    tile_x0 = (tile % bins.tile_width) * ts
    tile_y0 = torch.div(tile, bins.tile_width, rounding_mode="floor") * ts
    sx0, sx1, sy0, sy1 = (v.index_select(0, splat) for v in _splat_pixel_bounds(params))
    # Pixel box of the intersection: tile, image and alpha ellipse box. Lanes of
    # a strip outside the box need no mask: they are in the same tile and either
    # fail the alpha test or lie right of the image (cropped).
    x0 = torch.maximum(tile_x0, sx0)
    x1 = torch.minimum(torch.clamp(tile_x0 + ts, max=W), sx1)
    y0 = torch.maximum(tile_y0, sy0)
    y1 = torch.minimum(torch.clamp(tile_y0 + ts, max=H), sy1)
    nonempty = (x1 > x0) & (y1 > y0)
    first_slot = torch.div(x0, L, rounding_mode="floor")
    slots = torch.div(x1 - 1, L, rounding_mode="floor") - first_slot + 1
    count = torch.where(nonempty, (y1 - y0) * slots, torch.zeros_like(slots))
    slots_per_tile_row = ts // L
    return _IsectStrips(
        count=count,
        slots=slots.clamp_min(1),
        slot_base=(cam * H + y0) * layout.slots_per_row + first_slot,
        key_base=(y0 - tile_y0) * slots_per_tile_row + (first_slot - tile_x0 // L),
        splat=splat,
    )


def _tile_chunks(strips: _IsectStrips, plan: RasterPlan) -> List[Tuple[int, int]]:
    """Split the intersection list into ranges of whole tiles holding about ``chunk_strips`` strips."""
    n_isects = strips.count.shape[0]
    if n_isects == 0:
        return []
    budget = plan.chunk_strips or DEFAULT_CHUNK_STRIPS
    offsets = plan.bins.isect_offsets.reshape(-1).long()  # [C * n_tiles]
    tile_starts = torch.unique(torch.cat([offsets[offsets < n_isects], offsets.new_tensor([n_isects])]))
    cum = torch.cat([strips.count.new_zeros(1), torch.cumsum(strips.count, 0)])  # [I + 1]
    cum_at_starts = cum.index_select(0, tile_starts)  # [T + 1]
    bounds = tile_starts.tolist()
    # Greedy split at tile boundaries; a single tile over budget forms its own chunk.
    targets = torch.arange(budget, int(cum_at_starts[-1]) + budget, budget)
    cut = torch.searchsorted(cum_at_starts, targets, right=True).tolist()
    chunks, lo = [], 0
    for j in cut:
        hi = min(max(j - 1, lo + 1), len(bounds) - 1)
        if hi > lo:
            chunks.append((bounds[lo], bounds[hi]))
            lo = hi
    return chunks


def _bits_dtype(lanes: int) -> torch.dtype:
    """Smallest integer dtype holding one bit per lane."""
    for dtype, bits in ((torch.uint8, 8), (torch.int16, 15), (torch.int32, 31)):
        if lanes <= bits:
            return dtype
    return torch.int64


def _key_dtype(n_keys: int) -> torch.dtype:
    """Smallest integer dtype for slot-within-tile sort keys (radix sorts are faster on it)."""
    if n_keys <= 256:
        return torch.uint8
    if n_keys <= 1 << 15:
        return torch.int16
    return torch.int32


def _chunk_strips(strips: _IsectStrips, lo: int, hi: int, layout: _Layout) -> Tuple[Tensor, Tensor]:
    """Strips of intersections [lo, hi), ordered so that each slot's strips are contiguous, front to back.

    Returns:
        splat, slot: int64 [S] each.
    """
    count = strips.count[lo:hi]
    n_strips = int(count.sum())
    device = count.device
    owner = torch.repeat_interleave(torch.arange(lo, hi, device=device), count, output_size=n_strips)
    first = torch.cumsum(count, 0) - count
    local = torch.arange(n_strips, device=device) - first.index_select(0, owner - lo)
    slots = strips.slots.index_select(0, owner)
    row = torch.div(local, slots, rounding_mode="floor")
    col = local - row * slots
    per_tile_row = layout.tile_size // layout.strip
    key = strips.key_base.index_select(0, owner) + row * per_tile_row + col
    # Intersections come in (camera, tile, depth) order, so a stable sort on the
    # slot within the tile gives (slot-in-tile, camera, tile, depth) order.
    order = torch.sort(key.to(_key_dtype(layout.tile_size * per_tile_row)), stable=True)[1]
    owner = owner.index_select(0, order)
    slot = strips.slot_base.index_select(0, owner) + (row * layout.slots_per_row + col).index_select(0, order)
    return strips.splat.index_select(0, owner), slot


class _StripFalloff:
    """Gaussian falloff over the lanes of strips: [L, S] tensors, per-strip values [S].

    ``sigma`` is +inf where gsplat skips the pixel for sigma < 0, so that the
    falloff is 0 there.
    """

    def __init__(self, params_t: Tensor, splat: Tensor, slot: Tensor, layout: _Layout):
        mx, my, self.a, self.b, self.c, self.o = (params_t[i].index_select(0, splat) for i in range(6))
        dtype = mx.dtype
        x_slot = slot % layout.slots_per_row
        y = torch.div(slot, layout.slots_per_row, rounding_mode="floor") % layout.height
        self.dy = my - (y.to(dtype) + 0.5)  # [S]
        lanes = torch.arange(layout.strip, device=mx.device, dtype=dtype)[:, None]  # [L, 1]
        self.dx = (mx - (x_slot * layout.strip).to(dtype) - 0.5)[None, :] - lanes  # [L, S]
        # sigma = 0.5 a dx^2 + b dx dy + 0.5 c dy^2, in Horner form along dx.
        inner = torch.addcmul((self.b * self.dy)[None, :], (0.5 * self.a)[None, :], self.dx)
        sigma = torch.addcmul((0.5 * self.c * self.dy * self.dy)[None, :], inner, self.dx)
        self.sigma = F.threshold(sigma, -torch.finfo(dtype).tiny, math.inf)
        self.gauss = torch.exp(-self.sigma)  # [L, S]
        self.falloff = self.o[None, :] * self.gauss  # [L, S]


def _alpha(falloff: Tensor) -> Tensor:
    """min(0.999, falloff), set to 0 below 1/255 (gsplat skips those)."""
    alpha_min = torch.tensor(ALPHA_MIN, dtype=falloff.dtype)
    below_min = float(torch.nextafter(alpha_min, torch.zeros_like(alpha_min)))
    return F.threshold(torch.clamp(falloff, max=ALPHA_MAX), below_min, 0.0)


class _RasterizeToPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, backgrounds, plan: RasterPlan, needs_backward: bool):
        M = plan.splat_cameras.shape[0]
        D = colors.shape[-1]
        C, H, W = plan.n_cameras, plan.height, plan.width
        layout = _Layout.of(plan)
        L = layout.strip
        params = torch.cat(
            [means2d.reshape(M, 2), conics.reshape(M, 3), opacities.reshape(M, 1)], 1
        )  # [M, 6]
        params_t = params.t().contiguous()  # [6, M]
        colors_t = colors.reshape(M, D).t().contiguous()  # [D, M]
        strips = _intersection_strips(params, plan, layout)

        lane_values = torch.pow(2, torch.arange(L, device=params.device))[:, None]  # [L, 1]
        # Rows: (channel, lane) for the D colour sums, then (lane) for the weight sums.
        accum = params.new_zeros((D + 1) * L, layout.n_slots)
        kept: List[Tuple[Tensor, Tensor, Tensor]] = []
        for lo, hi in _tile_chunks(strips, plan):
            splat, slot = _chunk_strips(strips, lo, hi, layout)
            if splat.shape[0] == 0:
                continue
            alpha = _alpha(_StripFalloff(params_t, splat, slot, layout).falloff)  # [L, S]
            one_minus = 1.0 - alpha
            log1m = torch.log(one_minus)
            groups = _Groups(slot, L)
            log_t_after = groups.exclusive(log1m) + log1m
            # weight = alpha * T_before, or 0 once T_after <= 1e-4: gsplat stops
            # there, and transmittance never increases along a slot's strips.
            stop = F.threshold(log_t_after, _LOG_TRANSMITTANCE_MIN, -math.inf)
            weight = alpha / one_minus * torch.exp(stop)  # [L, S]
            col = colors_t.index_select(1, splat)  # [D, S]
            rows = torch.cat([(col[:, None, :] * weight[None]).reshape(D * L, -1), weight], 0)
            accum.index_copy_(1, slot.index_select(0, groups.starts), groups.totals(rows))
            if not needs_backward:
                continue
            # Lanes composited, as one bit per lane, for the strips with any.
            lane_bits = ((weight > 0) * lane_values).sum(0)  # [S]
            has_used = torch.nonzero(lane_bits).squeeze(1)
            if has_used.shape[0] > 0:
                kept.append(
                    (
                        splat.index_select(0, has_used).to(torch.int32),
                        slot.index_select(0, has_used).to(torch.int32),
                        lane_bits.index_select(0, has_used).to(_bits_dtype(L)),
                    )
                )

        # [(D + 1) * L, C * H * slots_per_row] -> [C, H, padded W, D + 1] -> crop.
        image = accum.reshape(D + 1, L, C, H, layout.slots_per_row).permute(2, 3, 4, 1, 0)
        image = image.reshape(C, H, layout.slots_per_row * L, D + 1)[:, :, :W]
        # Weights telescope: their sum is 1 - T_final.
        render_alphas = image[..., D:].contiguous()  # [C, H, W, 1]
        t_final = 1.0 - render_alphas[..., 0]  # [C, H, W]
        render_colors = image[..., :D]
        if backgrounds is not None:
            render_colors = render_colors + t_final[..., None] * backgrounds[:, None, None, :]

        ctx.plan = plan
        ctx.kept = kept
        ctx.has_backgrounds = backgrounds is not None
        ctx.save_for_backward(means2d, conics, colors, opacities, backgrounds, t_final)
        return render_colors.contiguous(), render_alphas

    @staticmethod
    def backward(ctx, v_render_colors, v_render_alphas):
        means2d, conics, colors, opacities, backgrounds, t_final = ctx.saved_tensors
        plan: RasterPlan = ctx.plan
        M = plan.splat_cameras.shape[0]
        D = colors.shape[-1]
        C, H, W = plan.n_cameras, plan.height, plan.width
        layout = _Layout.of(plan)
        L = layout.strip
        dtype = means2d.dtype
        params_t = torch.cat(
            [means2d.reshape(M, 2), conics.reshape(M, 3), opacities.reshape(M, 1)], 1
        ).t().contiguous()  # [6, M]
        colors_t = colors.reshape(M, D).t().contiguous()  # [D, M]

        v_colors_px = v_render_colors.to(dtype)  # [C, H, W, D]
        # Gradient reaching each pixel's final transmittance through the
        # background and the alpha output: T_final * (dL/dA - bg . dL/dcolor).
        through_t = v_render_alphas[..., 0].to(dtype)
        if backgrounds is not None:
            through_t = through_t - (v_colors_px * backgrounds[:, None, None, :]).sum(-1)
        pixel_grads = torch.cat([v_colors_px, (t_final * through_t)[..., None]], -1)  # [C, H, W, D+1]
        pad = layout.slots_per_row * L - W
        pixel_grads = F.pad(pixel_grads, (0, 0, 0, pad)).reshape(C, H, layout.slots_per_row, L, D + 1)
        pixel_grads = pixel_grads.permute(4, 3, 0, 1, 2).reshape((D + 1) * L, layout.n_slots).contiguous()

        n_abs = 2 if plan.absgrad else 0
        # Columns: means2d (2), conics (3), opacity (1), |means2d| (n_abs), colours (D).
        grads = params_t.new_zeros(M, 6 + n_abs + D)
        lanes = torch.arange(L, device=means2d.device)[:, None]  # [L, 1]
        for splat, slot, lane_bits in ctx.kept:
            splat, slot = splat.long(), slot.long()
            used = ((lane_bits.long()[None, :] >> lanes) & 1).bool()  # [L, S]
            f = _StripFalloff(params_t, splat, slot, layout)
            alpha = torch.clamp(f.falloff, max=ALPHA_MAX) * used  # [L, S]
            one_minus = 1.0 - alpha
            groups = _Groups(slot, L)
            trans = torch.exp(groups.exclusive(torch.log(one_minus)))
            weight = alpha * trans
            g = pixel_grads.index_select(1, slot).reshape(D + 1, L, -1)  # [D+1, L, S]
            g_dot_c = (g[:D] * colors_t.index_select(1, splat)[:, None, :]).sum(0)  # [L, S]
            behind = groups.later(weight * g_dot_c)
            v_alpha = trans * g_dot_c - (behind - g[D]) / one_minus
            # No gradient through the 0.999 clamp (as gsplat).
            v_falloff = v_alpha * (used & (f.falloff <= ALPHA_MAX))
            v_sigma = -f.falloff * v_falloff  # [L, S]
            s0 = v_sigma.sum(0)
            s1 = (v_sigma * f.dx).sum(0)
            s2 = (v_sigma * f.dx * f.dx).sum(0)
            cols = [
                f.a * s1 + f.b * f.dy * s0,
                f.b * s1 + f.c * f.dy * s0,
                0.5 * s2,
                f.dy * s1,
                0.5 * f.dy * f.dy * s0,
                (f.gauss * v_falloff).sum(0),
            ]
            if plan.absgrad:
                cols.append((v_sigma * (f.a * f.dx + f.b * f.dy)).abs().sum(0))
                cols.append((v_sigma * (f.b * f.dx + f.c * f.dy)).abs().sum(0))
            v_col = (weight[None] * g[:D]).sum(1)  # [D, S]
            grads.index_add_(0, splat, torch.cat([torch.stack(cols, 0), v_col], 0).t())

        if plan.absgrad:
            means2d.absgrad = grads[:, 6:8].reshape(means2d.shape)
        v_means2d = grads[:, 0:2].reshape(means2d.shape)
        v_conics = grads[:, 2:5].reshape(conics.shape)
        v_opacities = grads[:, 5].reshape(opacities.shape)
        v_colors = grads[:, 6 + n_abs :].reshape(colors.shape)
        v_backgrounds = None
        if ctx.has_backgrounds and ctx.needs_input_grad[4]:
            v_backgrounds = (v_colors_px * t_final[..., None]).sum((1, 2))
        return v_means2d, v_conics, v_colors, v_opacities, v_backgrounds, None, None
