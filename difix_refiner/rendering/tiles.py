"""Tile binning of projected Gaussians (gsplat 1.4.0's ``isect_tiles`` / ``isect_offset_encode``).

Every projected Gaussian ("splat") with a positive radius is listed in each
tile touched by its bounding square ``mean +- radius``. Intersections are
sorted by (camera, tile, depth); ties keep splat order, as with a stable radix
sort on the CUDA side.
"""

import math
from typing import NamedTuple

import torch
from torch import Tensor


class TileBins(NamedTuple):
    """Sorted tile intersections of a set of splats."""

    tiles_per_gauss: Tensor  # [M] int32, number of tiles touched by each splat
    isect_ids: Tensor  # [I] int64, camera | tile | float32 depth bits (gsplat's encoding)
    flatten_ids: Tensor  # [I] int32, splat index of each intersection
    isect_offsets: Tensor  # [C, tile_height, tile_width] int32, first intersection per tile
    tile_width: int
    tile_height: int


def tile_grid(width: int, height: int, tile_size: int):
    """Number of tiles (horizontally, vertically) covering a width x height image."""
    return math.ceil(width / float(tile_size)), math.ceil(height / float(tile_size))


@torch.no_grad()
def splat_tile_bounds(
    means2d: Tensor, radii: Tensor, tile_size: int, tile_width: int, tile_height: int
):
    """Tile range [lo, hi) of each splat's bounding square, clipped to the grid.

    Args:
        means2d: [M, 2] pixel positions.
        radii: [M] integer radii (0 = culled; such splats get an empty range).

    Returns:
        (lo, hi): [M, 2] int64 each, (x, y) tile indices.
    """
    assert means2d.dim() == 2 and means2d.shape[1] == 2, means2d.shape
    assert radii.shape == means2d.shape[:1], radii.shape
    # Same operation order as gsplat (divide first) so that tile ranges agree
    # bit for bit in float32.
    tile_means = means2d / tile_size  # [M, 2]
    tile_radii = (radii.to(means2d.dtype) / tile_size)[:, None]  # [M, 1]
    limits = torch.tensor([tile_width, tile_height], device=means2d.device)
    lo = torch.floor(tile_means - tile_radii).long().clamp(min=0)
    lo = torch.minimum(lo, limits)
    hi = torch.ceil(tile_means + tile_radii).long().clamp(min=0)
    hi = torch.minimum(hi, limits)
    hi = torch.where((radii > 0)[:, None], hi, lo)
    return lo, hi


@torch.no_grad()
def bin_splats(
    means2d: Tensor,  # [M, 2]
    radii: Tensor,  # [M]
    depths: Tensor,  # [M]
    camera_ids: Tensor,  # [M] int64
    n_cameras: int,
    width: int,
    height: int,
    tile_size: int,
) -> TileBins:
    """List (camera, tile, splat) intersections sorted front to back per tile.

    Args:
        means2d, radii, depths: flattened projection outputs of M splats.
        camera_ids: camera of each splat.
        n_cameras: C.
        width, height, tile_size: image and tile size in pixels.

    Returns:
        A :class:`TileBins`.
    """
    M = means2d.shape[0]
    assert depths.shape == (M,) and camera_ids.shape == (M,), (depths.shape, camera_ids.shape)
    device = means2d.device
    tile_width, tile_height = tile_grid(width, height, tile_size)
    n_tiles = tile_width * tile_height
    tile_bits = n_tiles.bit_length()
    cam_bits = max(n_cameras, 1).bit_length()
    if tile_bits + cam_bits > 32:
        raise ValueError(
            f"too many tiles ({n_tiles}) and cameras ({n_cameras}) to encode intersection ids"
        )

    lo, hi = splat_tile_bounds(means2d, radii, tile_size, tile_width, tile_height)
    span = hi - lo  # [M, 2]
    counts = span[:, 0] * span[:, 1]  # [M]
    splat_ids = torch.nonzero(counts > 0).squeeze(1)  # [M']
    per_splat = counts[splat_ids]  # [M']
    rep = torch.repeat_interleave(splat_ids, per_splat)  # [I] splat of each intersection
    n_isects = rep.shape[0]
    first = torch.cumsum(per_splat, 0) - per_splat  # [M']
    local = torch.arange(n_isects, device=device) - torch.repeat_interleave(first, per_splat)
    span_x = span[rep, 0]
    tile_y = lo[rep, 1] + torch.div(local, span_x, rounding_mode="floor")
    tile_x = lo[rep, 0] + local % span_x
    tile_ids = tile_y * tile_width + tile_x  # [I]
    # gsplat sorts on the raw float32 bits of the depth (monotonic for depth >= 0).
    depth_bits = depths.float().view(torch.int32).long() & 0xFFFFFFFF  # [M]
    isect_ids = (camera_ids[rep] << (32 + tile_bits)) | (tile_ids << 32) | depth_bits[rep]
    isect_ids, order = torch.sort(isect_ids, stable=True)
    flatten_ids = rep[order].to(torch.int32)

    dense_tiles = (isect_ids >> (32 + tile_bits)) * n_tiles + ((isect_ids >> 32) & ((1 << tile_bits) - 1))
    tile_counts = torch.bincount(dense_tiles, minlength=n_cameras * n_tiles)
    isect_offsets = (torch.cumsum(tile_counts, 0) - tile_counts).to(torch.int32)
    return TileBins(
        tiles_per_gauss=counts.to(torch.int32),
        isect_ids=isect_ids,
        flatten_ids=flatten_ids,
        isect_offsets=isect_offsets.reshape(n_cameras, tile_height, tile_width),
        tile_width=tile_width,
        tile_height=tile_height,
    )
