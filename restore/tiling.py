"""Tiled and self-ensembled forward passes: any model, any image size, without seams.

Tiling answers the field's most common request (out of memory on large images: HAT #4, SwinIR #36) without the
seams of pasted or uniformly averaged tiles (HAT #16, SwinIR #69; ANCHORS.md §6-7). Each tile's output is
weighted by a separable window that is zero in a margin along inner tile borders (where the tile lacks context)
and rises with a raised-cosine ramp across the rest of the overlap; the weights of neighbouring tiles sum to one,
and outputs accumulate tile by tile into one preallocated buffer, so peak memory is the output plus one tile.
The x8 self-ensemble (flips and 90-degree rotations, averaged) is the one of EDT/SwinIR/HAT test scripts.

Arbitrary-scale SR (``sr_any``) tiles the same input grid; each output pixel belongs to the tiles whose input span
holds its centre, is queried there at its own coordinate (mapped into the tile's frame, so a tile that covers the
image computes exactly the untiled output) and is blended with the same ramp evaluated at that centre
(`tiled_query`). `restore.inference.restore_image` puts images of any kind through them.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["tiled_forward", "tiled_query", "self_ensemble", "round_tile", "effective_tile", "smaller_tile",
           "tile_covers", "MIN_RETRY_TILE"]

MIN_RETRY_TILE = 64  # the smallest tile an out-of-memory retry asks for (input pixels)


def round_tile(tile: int, multiple: int) -> int:
    """The tile size used for a requested ``tile``: the nearest multiple of ``multiple``, at least one multiple."""
    if tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    return max(multiple, int(round(tile / multiple)) * multiple)


def effective_tile(tile: int, overlap: int, multiple: int) -> int:
    """The side of the tiles `tiled_forward` runs for a requested ``tile`` (see `_tile_grid`)."""
    return _tile_grid(tile, overlap, multiple)[0]


def tile_covers(tile: int, image_side: int, multiple: int) -> bool:
    """Whether tiles of ``tile`` take an image whose longer side is ``image_side`` at once: it then runs untiled."""
    return round_tile(tile, multiple) >= image_side


def smaller_tile(tile: int | None, image_side: int, overlap: int, multiple: int) -> int | None:
    """The tile to retry with after running out of memory at ``tile`` (None: the whole image): half the tiles
    that ran, if that makes them smaller (tiles are whole multiples of the model's window) and asks for at least
    `MIN_RETRY_TILE`; else None. A tile that covers the image ran the whole image."""
    whole = tile is None or tile_covers(tile, image_side, multiple)
    ran = image_side if whole else effective_tile(tile, overlap, multiple)
    smaller = ran // 2
    if smaller < MIN_RETRY_TILE or effective_tile(smaller, overlap, multiple) >= ran:
        return None
    return smaller


def _tile_grid(tile: int, overlap: int, multiple: int) -> tuple[int, int]:
    """(tile, stride) in input pixels: both multiples of ``multiple``, stride <= tile - overlap.

    Window transformers partition each input from its top-left corner, so tiles that start on multiples of the
    window see the same window grid as the whole image; tiles that start elsewhere would give different results
    everywhere, not only near their borders. The tile grows by whole multiples when the overlap leaves no stride.
    """
    tile = round_tile(tile, multiple)
    while tile - overlap < multiple:
        tile += multiple
    stride = (tile - overlap) // multiple * multiple
    return tile, stride


def _spans(length: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(start, size) of the tiles along one axis; the last one may be shorter (the model pads it like the image)."""
    spans, start = [], 0
    while True:
        spans.append((start, min(tile, length - start)))
        if start + tile >= length:
            return spans
        start += stride


def _edge_ramp(width: int, device: torch.device) -> torch.Tensor:
    """Weights rising from 0 to 1 over an overlap of ``width`` output pixels.

    A quarter of the overlap at the tile border gets weight 0 (these pixels see padding instead of image, so a
    model whose receptive field is under that margin is reproduced exactly), the middle half a raised cosine,
    which with the mirrored ramp of the neighbouring tile sums to exactly one.
    """
    margin = width // 4
    ramp = width - 2 * margin
    i = torch.arange(ramp, device=device, dtype=torch.float64)
    rise = 0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / ramp)
    zeros = torch.zeros(margin, dtype=torch.float64, device=device)
    return torch.cat([zeros, rise, torch.ones(margin, dtype=torch.float64, device=device)])


def _axis_weights(start: int, size: int, length: int, overlap: int, scale: int, device: torch.device) -> torch.Tensor:
    """1-D blending weights (size*scale,) of one tile along one axis (no ramp on image borders)."""
    w = torch.ones(size * scale, dtype=torch.float64, device=device)
    width = overlap * scale
    if width == 0:
        return w
    ramp = _edge_ramp(width, device)
    if start > 0:
        w[:width] *= ramp
    if start + size < length:
        w[-width:] *= ramp.flip(0)
    return w


def tiled_forward(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scale: int,
    tile: int,
    overlap: int,
    multiple: int = 1,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` and blend the outputs seamlessly.

    Args:
        fn: maps a tile (B, C, h, w) to its restoration (B, C', scale*h, scale*w).
        x: the input (B, C, H, W); it stays where it is (e.g. on the CPU) and only tiles move to ``device``.
        scale: output size over input size.
        tile: tile side in input pixels, rounded to the nearest multiple of ``multiple`` (see `round_tile`).
        overlap: at least this many pixels are shared by neighbouring tiles (tiles start on multiples of
            ``multiple``, so the actual overlap can be larger; the tile grows if the overlap leaves no stride).
        multiple: the model's padding multiple (window size); tiles are sized in its multiples.
        device: where ``fn`` runs (default: ``x``'s device).

    Returns:
        (B, C', scale*H, scale*W) float32 on ``x``'s device. If the tile covers the whole image, ``fn(x)`` itself.
    """
    h, w = x.shape[-2:]
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if h <= round_tile(tile, multiple) and w <= round_tile(tile, multiple):
        out = fn(x if device is None else x.to(device))
        return out.to(x.device)
    tile, stride = _tile_grid(tile, overlap, multiple)
    overlap = tile - stride  # the overlap actually used, at least the one asked for
    rows, cols = _spans(h, tile, stride), _spans(w, tile, stride)
    out = None
    # the blending weights in float64 where the image is; MPS has no float64, so there on the CPU
    wdev = torch.device("cpu") if x.device.type == "mps" else x.device
    norm_h = torch.zeros(h * scale, dtype=torch.float64, device=wdev)
    norm_w = torch.zeros(w * scale, dtype=torch.float64, device=wdev)
    for y0, th in rows:
        wy = _axis_weights(y0, th, h, overlap, scale, wdev)
        norm_h[y0 * scale : (y0 + th) * scale] += wy
        for x0, tw in cols:
            wx = _axis_weights(x0, tw, w, overlap, scale, wdev)
            if y0 == 0:
                norm_w[x0 * scale : (x0 + tw) * scale] += wx
            patch = x[..., y0 : y0 + th, x0 : x0 + tw]
            y = fn(patch if device is None else patch.to(device)).to(device=x.device, dtype=torch.float32)
            if out is None:
                out = torch.zeros(y.shape[0], y.shape[1], h * scale, w * scale, dtype=torch.float32, device=x.device)
            weight = (wy[:, None] * wx[None, :]).to(device=x.device, dtype=torch.float32)  # (th*s, tw*s)
            out[..., y0 * scale : (y0 + th) * scale, x0 * scale : (x0 + tw) * scale].addcmul_(y, weight)
    # separable weights: the per-pixel sum over all tiles is the outer product of the per-axis sums
    out /= (norm_h[:, None] * norm_w[None, :]).to(device=x.device, dtype=torch.float32)
    return out


def _ramp_at(t: torch.Tensor) -> torch.Tensor:
    """`_edge_ramp` as a function of the position ``t`` in [0, 1] across the overlap: 0, raised cosine, 1."""
    rise = 0.5 - 0.5 * torch.cos(math.pi * (t - 0.25) / 0.5)
    return torch.where(t < 0.25, torch.zeros_like(t), torch.where(t < 0.75, rise, torch.ones_like(t)))


def _query_axis(pos: torch.Tensor, start: int, size: int, length: int, overlap: int):
    """For one tile along one axis: the output index range whose centres ``pos`` (input px) lie in the tile, their
    coordinates in the tile's [-1, 1] frame and their blending weights (float64)."""
    inside = torch.nonzero((pos >= start) & (pos < start + size)).flatten()
    if inside.numel() == 0:  # an output smaller than the input can leave a tile without pixel centres
        return None
    lo, hi = int(inside[0]), int(inside[-1]) + 1
    p = pos[lo:hi]
    w = torch.ones_like(p)
    if overlap > 0 and start > 0:
        w = w * _ramp_at((p - start) / overlap)
    if overlap > 0 and start + size < length:
        w = w * _ramp_at((start + size - p) / overlap)
    return lo, hi, 2 * (p - start) / size - 1, w


def tiled_query(
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    out_size: tuple[int, int],
    tile: int,
    overlap: int,
    multiple: int = 1,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Arbitrary-scale tiling: query ``fn`` tile by tile and blend into an ``out_size`` output.

    Args:
        fn: ``fn(patch, coord, cell)`` -> (B, Q, C') for a patch (B, C, h, w) and (B, Q, 2) (row, col) points in
            the patch's [-1, 1] frame with their cells (`restore.RestorationModel.query_points`).
        x: the input (B, C, H, W); only tiles move to ``device``.
        out_size: (out_h, out_w) of the whole output.
        tile, overlap, multiple: as in `tiled_forward` (input pixels).

    Returns:
        (B, C', out_h, out_w) float32 on ``x``'s device.
    """
    h, w = x.shape[-2:]
    out_h, out_w = out_size
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    tile, stride = _tile_grid(tile, overlap, multiple)
    overlap = tile - stride
    rows, cols = _spans(h, tile, stride), _spans(w, tile, stride)
    # output pixel centres in input pixels (make_coord's centres, scaled to the input extent)
    pos_h = (torch.arange(out_h, dtype=torch.float64) + 0.5) * (h / out_h)
    pos_w = (torch.arange(out_w, dtype=torch.float64) + 0.5) * (w / out_w)
    out = None
    norm_h = torch.zeros(out_h, dtype=torch.float64)
    norm_w = torch.zeros(out_w, dtype=torch.float64)
    first_row = True  # the column weights are the same for every tile row: sum them over one
    for y0, th in rows:
        row = _query_axis(pos_h, y0, th, h, overlap)
        if row is None:
            continue
        r0, r1, cy, wy = row
        norm_h[r0:r1] += wy
        count_cols, first_row = first_row, False
        for x0, tw in cols:
            col = _query_axis(pos_w, x0, tw, w, overlap)
            if col is None:
                continue
            c0, c1, cx, wx = col
            if count_cols:
                norm_w[c0:c1] += wx
            patch = x[..., y0 : y0 + th, x0 : x0 + tw]
            patch = patch if device is None else patch.to(device)
            b, nr, nc = patch.shape[0], r1 - r0, c1 - c0
            coord = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), dim=-1).reshape(1, -1, 2)
            coord = coord.to(device=patch.device, dtype=patch.dtype).expand(b, -1, -1)
            # a pixel's cell in the patch frame: (2 / out) of the image extent, rescaled to the patch extent
            cell = torch.tensor([2 * h / (out_h * th), 2 * w / (out_w * tw)], dtype=torch.float64)
            cell = cell.to(device=patch.device, dtype=patch.dtype).expand(b, coord.shape[1], 2)
            y = fn(patch, coord, cell).to(device=x.device, dtype=torch.float32)  # (B, nr*nc, C')
            y = y.transpose(1, 2).reshape(b, -1, nr, nc)
            if out is None:
                out = torch.zeros(b, y.shape[1], out_h, out_w, dtype=torch.float32, device=x.device)
            weight = (wy[:, None] * wx[None, :]).to(device=x.device, dtype=torch.float32)
            out[..., r0:r1, c0:c1].addcmul_(y, weight)
    out /= (norm_h[:, None] * norm_w[None, :]).to(device=x.device, dtype=torch.float32)
    return out


# 8 dihedral transforms as (rotations k, flip): applied as rot90(flip(x)); inverted in reverse order
_DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]


def self_ensemble(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Average ``fn`` over the 8 flips/rotations of ``x`` (B, C, H, W), each output transformed back."""
    acc = None
    for k, flip in _DIHEDRAL:
        t = x.flip(-1) if flip else x
        y = fn(torch.rot90(t, k, dims=(-2, -1)))
        y = torch.rot90(y, -k, dims=(-2, -1))
        y = (y.flip(-1) if flip else y).float()
        acc = y if acc is None else acc + y
    return acc / len(_DIHEDRAL)
