"""Implicit (arbitrary-scale) super-resolution tails: LIIF and LTE, queried at continuous coordinates.

Papers: Chen, Liu and Wang, "Learning Continuous Image Representation with Local Implicit Image Function" (LIIF),
CVPR 2021, reference code ``yinboc/liif`` ``models/liif.py``; Lee and Jin, "Local Texture Estimator for Implicit
Representation Function" (LTE), CVPR 2022, reference code ``jaewon-lee-b/lte`` ``models/lte.py``. Both were read for
this port; the numerics follow them (tests/restore/test_implicit.py checks ours against a transcription of their
math), the code is ours.

Conventions (those of both references, so their checkpoints' semantics carry over):

* A coordinate is (row, col) in [-1, 1] over the image extent; pixel ``i`` of ``n`` has its centre at
  ``-1 + (2 i + 1) / n`` (`make_coord`). ``grid_sample`` wants (x, y), hence the ``flip(-1)``.
* A cell is the size of one output pixel in the same units, ``(2 / out_h, 2 / out_w)``; the tails see it (and the
  offsets) multiplied by the feature size, i.e. in units of LR pixels, so a query means the same thing on a tile
  as on the whole image.
* Local ensemble: each query reads the 4 nearest feature vectors (the query shifted by half an LR pixel in each
  diagonal direction, nearest sampling), decodes each with its offset, and blends them with the area of the
  rectangle opposite each one (bilinear-like weights).

Both tails take the body's features (B, C, h, w) before any upsampler. Queries are decoded in chunks
(`DEFAULT_CHUNK` per chunk, as LIIF's ``batched_predict``) so memory stays bounded for large outputs.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["make_coord", "make_cell", "LIIFTail", "LTETail", "ImplicitMLP", "DEFAULT_CHUNK", "build_implicit_tail",
           "IMPLICIT_TAILS"]

DEFAULT_CHUNK = 30000  # queries per decoding chunk (LIIF's test-time bsize)
_EPS_SHIFT = 1e-6  # both references nudge the shifted queries off exact pixel borders and clamp inside (-1, 1)


def make_coord(shape: Sequence[int], device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates (H, W, 2) in [-1, 1], (row, col) order (LIIF ``utils.make_coord``)."""
    seqs = []
    for n in shape:
        r = 1.0 / n  # half a pixel: (1 - (-1)) / (2 n)
        seqs.append(-1 + r + 2 * r * torch.arange(n, device=device, dtype=dtype))
    return torch.stack(torch.meshgrid(*seqs, indexing="ij"), dim=-1)


def make_cell(out_size: Sequence[int], num: int, batch: int = 1, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Cells (batch, num, 2) of an ``out_size`` (H, W) output grid: every query's pixel is (2/H, 2/W)."""
    cell = torch.tensor([2.0 / out_size[0], 2.0 / out_size[1]], device=device, dtype=dtype)
    return cell.expand(batch, num, 2)


def _sample_nearest(grid: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour read of ``grid`` (B, C, h, w) at ``coord`` (B, Q, 2) -> (B, Q, C), in ``grid``'s dtype.

    The lookup runs in fp32 whatever the features' dtype: a bf16 coordinate is off by up to a third of an HR
    pixel of a 192 px crop, enough to pick the wrong neighbour."""
    out = F.grid_sample(grid.float(), coord.float().flip(-1).unsqueeze(1), mode="nearest", align_corners=False)
    return out[:, :, 0, :].permute(0, 2, 1).to(grid.dtype)  # (B, C, 1, Q) -> (B, Q, C)


def _feature_coord(feat: torch.Tensor) -> torch.Tensor:
    """Coordinates of the feature pixels as a (B, 2, h, w) map, so `_sample_nearest` returns a query's centre."""
    b, _, h, w = feat.shape
    return make_coord((h, w), feat.device, torch.float32).permute(2, 0, 1).unsqueeze(0).expand(b, 2, h, w)


def _ensemble_offsets(local_ensemble: bool) -> list[tuple[int, int]]:
    """The (vx, vy) shifts of the queries, in the references' loop order (row shift outer)."""
    return [(vx, vy) for vx in (-1, 1) for vy in (-1, 1)] if local_ensemble else [(0, 0)]


def _blend(preds: list[torch.Tensor], areas: list[torch.Tensor]) -> torch.Tensor:
    """Area-weighted sum of the 4 predictions: each is weighted by the area of the one diagonally opposite."""
    total = torch.stack(areas).sum(dim=0)
    if len(preds) == 4:  # swap 0<->3 and 1<->2: the farther the feature vector, the smaller its weight
        areas = [areas[3], areas[2], areas[1], areas[0]]
    out = 0
    for pred, area in zip(preds, areas):
        out = out + pred * (area / total).unsqueeze(-1)
    return out


class ImplicitMLP(nn.Module):
    """Linear + ReLU for each hidden width, then a linear to ``out_dim`` (LIIF ``models/mlp.py``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            layers += [nn.Linear(last, width), nn.ReLU()]
            last = width
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _ImplicitTail(nn.Module):
    """Shared driver: ``prepare`` the per-image maps once, then ``query`` coordinates chunk by chunk."""

    def prepare(self, feat: torch.Tensor, inp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def query(self, state: tuple[torch.Tensor, ...], coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, feat: torch.Tensor, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor,
                chunk: int | None = DEFAULT_CHUNK) -> torch.Tensor:
        """Decode ``coord``/``cell`` (B, Q, 2) from ``feat`` (B, C, h, w) and ``inp`` (B, 3, h, w) -> (B, Q, 3)."""
        state = self.prepare(feat, inp)
        q = coord.shape[1]
        if chunk is None or q <= chunk:
            return self.query(state, coord, cell)
        outs = [self.query(state, coord[:, i : i + chunk], cell[:, i : i + chunk]) for i in range(0, q, chunk)]
        return torch.cat(outs, dim=1)


class LIIFTail(_ImplicitTail):
    """LIIF: an MLP decodes (3x3-unfolded feature, offset to it, cell) into RGB, blended over 4 neighbours.

    Args:
        in_dim: channels of the body's features.
        hidden: widths of the MLP's hidden layers (LIIF: 256 x 4).
        out_dim: output channels.
        feat_unfold: concatenate each feature vector's 3x3 neighbourhood (zero-padded at the borders).
        local_ensemble: blend the 4 nearest feature vectors by area (else only the nearest one).
        cell_decode: give the MLP the cell size (the scale), which sharpens out-of-training-range scales.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (256, 256, 256, 256), out_dim: int = 3,
                 feat_unfold: bool = True, local_ensemble: bool = True, cell_decode: bool = True) -> None:
        super().__init__()
        self.feat_unfold, self.local_ensemble, self.cell_decode = feat_unfold, local_ensemble, cell_decode
        mlp_in = in_dim * (9 if feat_unfold else 1) + 2 + (2 if cell_decode else 0)
        self.imnet = ImplicitMLP(mlp_in, out_dim, hidden)

    def prepare(self, feat: torch.Tensor, inp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.feat_unfold:
            b, c, h, w = feat.shape
            feat = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)  # (B, 9C, h, w)
        return (feat,)

    def query(self, state: tuple[torch.Tensor, ...], coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        (feat,) = state
        h, w = feat.shape[-2:]
        size = torch.tensor([h, w], dtype=coord.dtype, device=coord.device)
        feat_coord = _feature_coord(feat)
        eps = _EPS_SHIFT if self.local_ensemble else 0.0
        preds, areas = [], []
        for vx, vy in _ensemble_offsets(self.local_ensemble):
            shift = torch.tensor([vx / h + eps, vy / w + eps], dtype=coord.dtype, device=coord.device)
            coord_ = (coord + shift).clamp(-1 + 1e-6, 1 - 1e-6)
            q_feat = _sample_nearest(feat, coord_)  # (B, Q, 9C)
            rel_coord = (coord - _sample_nearest(feat_coord, coord_)) * size  # in LR pixels (x2: [-1, 1] is 2 wide)
            parts = [q_feat, rel_coord]
            if self.cell_decode:
                parts.append(cell * size)
            preds.append(self.imnet(torch.cat(parts, dim=-1).to(feat.dtype)))  # geometry fp32, MLP its own
            areas.append(torch.abs(rel_coord[..., 0] * rel_coord[..., 1]) + 1e-9)
        return _blend(preds, areas)


class LTETail(_ImplicitTail):
    """LTE: a local texture estimator (amplitude, frequency, phase) feeding a sinusoidal basis to an MLP.

    ``coef`` (amplitudes) and ``freq`` (``dim / 2`` 2-D frequencies) are 3x3 convs of the features; the phase is a
    linear map of the cell. A query's basis is ``coef * [cos(pi (F . offset + phase)), sin(...)]``; the MLP maps it
    to RGB, the 4 neighbours are blended by area, and the bilinearly upsampled input is added (LTE's skip).

    Args:
        in_dim: channels of the body's features.
        dim: channels of the amplitude/frequency maps (LTE: 256; even).
        hidden: widths of the MLP's hidden layers (LTE: 256 x 3).
        out_dim: output channels (those of ``inp``).
    """

    def __init__(self, in_dim: int, dim: int = 256, hidden: Sequence[int] = (256, 256, 256), out_dim: int = 3) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"LTE dim must be an even number >= 2, got {dim}")
        self.coef = nn.Conv2d(in_dim, dim, 3, padding=1)
        self.freq = nn.Conv2d(in_dim, dim, 3, padding=1)
        self.phase = nn.Linear(2, dim // 2, bias=False)
        self.imnet = ImplicitMLP(dim, out_dim, hidden)

    def prepare(self, feat: torch.Tensor, inp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.coef(feat), self.freq(feat), inp

    def query(self, state: tuple[torch.Tensor, ...], coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        coef, freq, inp = state
        h, w = coef.shape[-2:]
        size = torch.tensor([h, w], dtype=coord.dtype, device=coord.device)
        feat_coord = _feature_coord(coef)
        phase = self.phase((cell * size).to(coef.dtype))  # (B, Q, dim/2): the same for the 4 neighbours
        preds, areas = [], []
        for vx, vy in _ensemble_offsets(True):
            shift = torch.tensor([vx / h + _EPS_SHIFT, vy / w + _EPS_SHIFT], dtype=coord.dtype, device=coord.device)
            coord_ = (coord + shift).clamp(-1 + 1e-6, 1 - 1e-6)
            q_coef = _sample_nearest(coef, coord_)  # (B, Q, dim)
            q_freq = _sample_nearest(freq, coord_)  # (B, Q, dim): consecutive pairs are (row, col) frequencies
            rel_coord = (coord - _sample_nearest(feat_coord, coord_)) * size  # (B, Q, 2)
            b, q = coord.shape[:2]
            pairs = q_freq.reshape(b, q, -1, 2)  # (B, Q, dim/2, 2)
            arg = (pairs * rel_coord.unsqueeze(-2)).sum(-1) + phase  # (B, Q, dim/2)
            basis = torch.cat([torch.cos(math.pi * arg), torch.sin(math.pi * arg)], dim=-1)
            preds.append(self.imnet((q_coef * basis).to(coef.dtype)))  # the basis in fp32, the MLP its own
            areas.append(torch.abs(rel_coord[..., 0] * rel_coord[..., 1]) + 1e-9)
        skip = F.grid_sample(inp.float(), coord.float().flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border",
                             align_corners=False)[:, :, 0, :].permute(0, 2, 1).to(inp.dtype)
        return _blend(preds, areas) + skip


IMPLICIT_TAILS = ("lte", "liif")


def build_implicit_tail(kind: str, in_dim: int, hidden: Sequence[int] | None = None,
                        dim: int | None = None) -> _ImplicitTail:
    """The implicit tail ``kind`` ("lte" or "liif") with the references' sizes unless ``hidden``/``dim`` are given."""
    if kind == "lte":
        return LTETail(in_dim, dim=256 if dim is None else dim, hidden=(256,) * 3 if hidden is None else hidden)
    if kind == "liif":
        if dim is not None:
            raise ValueError("implicit_dim applies to the LTE tail only (LIIF has no amplitude/frequency maps)")
        return LIIFTail(in_dim, hidden=(256,) * 4 if hidden is None else hidden)
    raise ValueError(f"implicit_tail must be one of {', '.join(IMPLICIT_TAILS)}, got {kind!r}")
