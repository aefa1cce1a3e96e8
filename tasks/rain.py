"""Synthetic rain streaks after the Rain100L/Rain100H recipe (Yang et al., "Deep joint rain detection and removal
from a single image", CVPR 2017, JORDER; used by IPT and EDT pretraining): sparse noise seeds, motion-blurred along a
random angle and length into streaks, screen-blended onto the image.

- :func:`add_rain`: a batch with rain, ``"light"`` (:data:`RAIN_LIGHT`), ``"heavy"`` (:data:`RAIN_HEAVY`), ``"mixed"``
  or any :class:`RainParams`; also ``tasks.degradations.add_rain``.
- :func:`rain_streaks`: the streak layers and veil alone.

Like every degradation (`tasks.degradations`), a pure batched function of the images and a ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tasks._batch import _check_images, _rand

__all__ = ["RainParams", "RAIN_LIGHT", "RAIN_HEAVY", "rain_streaks", "add_rain"]


@dataclass(frozen=True)
class RainParams:
    """Parameters of the rain-streak synthesis (lengths in pixels, intensities on the [0, 1] scale).

    Attributes:
        layers: streak layers per image; each layer has its own angle (heavy rain looks multi-directional).
        density: (low, high) fraction of pixels that seed a streak, drawn per image and layer.
        length: (low, high) streak length, drawn per image and layer.
        angle: (low, high) streak angle from vertical in degrees, drawn per image; layers deviate from it by up to
            ``angle_spread`` degrees.
        angle_spread: maximum angle difference between the layers of one image.
        width: streak thickness: sigma of a Gaussian blur of the seeds (0 for one-pixel streaks).
        brightness: (low, high) peak streak intensity, drawn per image and layer.
        haze: (low, high) strength of a uniform bright veil (rain accumulation in heavy rain), drawn per image.
    """

    layers: int
    density: tuple[float, float]
    length: tuple[float, float]
    angle: tuple[float, float]
    angle_spread: float
    width: float
    brightness: tuple[float, float]
    haze: tuple[float, float] = (0.0, 0.0)


# Rain100L-like: one layer of thin streaks. Rain100H-like: three layers of long, wider streaks in nearby directions
# plus a veil (rain accumulation). Values were set by eye against Rain100H test images (docs/rain_sample.png).
RAIN_LIGHT = RainParams(
    layers=1, density=(0.004, 0.010), length=(10, 30), angle=(-25, 25), angle_spread=0.0, width=0.0,
    brightness=(0.5, 0.9),
)
RAIN_HEAVY = RainParams(
    layers=3, density=(0.006, 0.014), length=(25, 60), angle=(-25, 25), angle_spread=10.0, width=0.7,
    brightness=(0.35, 0.75), haze=(0.05, 0.25),
)
_RAIN_LEVELS = {"light": RAIN_LIGHT, "heavy": RAIN_HEAVY}


def _lerp(lo_hi: tuple[float, float], u: torch.Tensor) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * u


def _gauss_taps(sigma: float) -> torch.Tensor:
    """The streak-width kernel: ``exp(-t^2 / (2 sigma^2))`` at integer t, peak 1, radius ``max(1, ceil(2 sigma))``."""
    r = max(1, math.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    return torch.exp(-(t**2) / (2 * sigma**2))


# the streaks' fixed point (`_rain_transmittance`): profile steps of 2^-13, strength steps of 2^-10 (under 0.15 of a
# uint8 level from float); an entry is at most 2^23, so 255 streaks of one layer can cross one pixel before int32
# overflows (heavy rain: about 1; a custom RainParams would need a density and length far beyond rain's)
_PROFILE_BITS, _STRENGTH_BITS = 13, 10


def _fixed(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` in [0, 1] as int32 multiples of ``2^-bits`` (rounded)."""
    return (x * 2.0**bits).round_().to(torch.int32)


def _rain_transmittance(
    shape: tuple[int, int, int], params: RainParams, generator: torch.Generator | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) product over the layers of ``1 - layer`` (what the streaks let through) and (B, 1, 1, 1) veil.

    The Rain100L/H recipe (sparse seeds -> motion blur at an angle -> screen), drawn sparsely: a layer's seeds are
    i.i.d. per pixel with probability ``density`` (about 1% of the pixels), so instead of one uniform per pixel we draw
    their count, Binomial(pixels, density), and that many positions and strengths (with replacement: two seeds on
    one pixel, a few per layer, add up instead of being one). Each streak is then written straight into the image:
    in the sheared frame ``x' = x - tan(angle) * y`` it is vertical, so its row profile (the anti-aliased segment
    ``clamp(length/2 + 0.5 - |t|, 0, 1)`` along the streak, ``t = dy / cos``) is a per-layer table and it lands in
    each row at ``x' + round(tan * y)``; the row's sub-pixel rest, the same for every streak of the layer, becomes a
    few per-row horizontal taps. Those taps are the cross-section of a 1-px line rotated with bilinear sampling
    (the previous ``grid_sample`` version: a tent of half-width ``1 / cos`` across), or with ``width`` a Gaussian
    of the same mass and variance as that tent blurred by the width kernel across and along (the previous version
    blurred vertically after rotating; its sideways part is folded into that variance). Cost: one scatter of
    (seeds x rows) entries and a few image-sized ops.
    """
    b, h, w = shape
    n = b * params.layers
    g_dev = generator.device if generator is not None else like.device
    dev, dt = like.device, like.dtype
    per_image = torch.rand((b, 2), generator=generator, device=g_dev, dtype=torch.float64)
    per_layer = torch.rand((n, 4), generator=generator, device=g_dev, dtype=torch.float64)
    base = _lerp(params.angle, per_image[:, 0]).repeat_interleave(params.layers)
    theta = torch.deg2rad(base + params.angle_spread * (2 * per_layer[:, 0] - 1))
    length = _lerp(params.length, per_layer[:, 1])
    density = _lerp(params.density, per_layer[:, 2])
    bright = _lerp(params.brightness, per_layer[:, 3])
    haze = _lerp(params.haze, per_image[:, 1]).to(dev, dt).view(b, 1, 1, 1)

    tan, cos = torch.tan(theta).to(dev), torch.cos(theta).to(dev)
    wr = max(1, math.ceil(2 * params.width)) if params.width > 0 else 0  # width kernel radius
    tr = max(1, wr)  # horizontal taps radius
    # rows a streak spans on either side of its seed (its profile is 0 from (length/2 + 0.5) cos on), and the most
    # it drifts sideways over them: per layer, and the largest of them, which sizes the tensors
    half = torch.ceil((length / 2 + 0.5) * torch.cos(theta)).long() + wr  # (n,) on the generator's device
    drift = torch.ceil(half * torch.tan(theta).abs()).long() + 1
    rows, cols = h + 2 * half, w + 2 * tr + 2 * drift  # seed rows [-half, h + half), columns [-tr - drift, ...)
    rh, tmax = (float(v) for v in torch.stack([half.max().double(), torch.tan(theta).abs().max()]).tolist())
    rh = int(rh)
    dr = math.ceil(rh * tmax) + 1  # >= every layer's drift, over the largest span
    hp, wa, c0 = h + 2, w + 2 * tr + 4 * dr, tr + 2 * dr  # the layers' buffer: rows -1 and h take what falls off

    counts = torch.binomial((rows * cols).float(), density.float(), generator=generator).long()
    seeds = torch.rand((int(counts.sum()), 3), generator=generator, device=g_dev, dtype=torch.float64)
    lid = torch.repeat_interleave(torch.arange(n, device=g_dev), counts)  # (S,) layer of each seed
    y = (seeds[:, 0] * rows[lid]).long() - half[lid]
    c = (seeds[:, 1] * cols[lid]).long() - (tr + drift[lid])  # column where the streak crosses its seed row
    lid, y, c = lid.to(dev), y.to(dev), c.to(dev)
    # the old seeds' strength, uniform in [0.5, 1), in fixed point
    strength = _fixed(0.5 + 0.5 * seeds[:, 2], _STRENGTH_BITS).to(dev)

    yy = torch.arange(-2 * rh, h + 2 * rh, device=dev)  # every row an entry can reach
    shift = tan[:, None] * (yy - (h - 1) / 2)  # (n, h + 4 rh): a streak's offset at each row, 0 mid-image
    whole = torch.round(shift)
    frac = (shift - whole)[:, 2 * rh : 2 * rh + h]  # (n, h) sub-pixel rest on the image rows
    whole = whole.long()
    ht, span = h + 4 * rh, 2 * rh + 1
    # flat buffer index of (row, x' + whole shift) for each layer and row (rows off the image clamped), and its
    # windows of `span` rows: one row of `windows` per (layer, first row) is all a streak's entries but x'
    row_at = (torch.arange(n, device=dev)[:, None] * hp + yy.clamp(-1, h) + 1) * wa + whole + c0  # (n, ht)
    windows = row_at.unfold(1, span, 1).reshape(-1, span)  # (n * (ht - span + 1), span)
    first = y + rh  # the streak's first row (y - rh) in row_at
    x_sheared = c - whole.view(-1)[lid * ht + first + rh]  # x' of each streak
    idx = windows.index_select(0, lid * (ht - span + 1) + first).add_(x_sheared[:, None])  # (S, span)

    t = torch.arange(-rh, rh + 1, device=dev, dtype=torch.float64)
    profile = (length.to(dev)[:, None] / 2 + 0.5 - t.abs() / cos[:, None]).clamp(0, 1)  # (n, span) along it
    g = _gauss_taps(params.width).to(dev) if wr else None
    if g is not None:  # the width kernel along the streak (sum kept)
        profile = F.conv1d(profile[:, None], (g / g.sum()).view(1, 1, -1), padding=wr)[:, 0]
    # in fixed point: integer sums are exact in any order, so the scatter gives the same bits on CUDA too, where a
    # float scatter_add_ adds in the order of its atomics and a resumed run would not replay its rain
    values = _fixed(profile, _PROFILE_BITS).index_select(0, lid).mul_(strength[:, None])
    buf = torch.zeros(n * hp * wa, device=dev, dtype=torch.int32)
    buf.scatter_add_(0, idx.view(-1), values.view(-1))
    buf = buf.view(n, hp, wa)

    d = torch.arange(-tr, tr + 1, device=dev) - frac[..., None]  # (n, h, taps) pixel minus crossing, per row
    if g is None:  # the bilinear tent of a rotated 1-px line: 1 - |dx| cos
        taps = (1 - d.abs() * cos[:, None, None]).clamp(min=0)
    else:  # across: the tent, the width kernel (peak kept) and the old vertical blur's sideways part
        gt = torch.arange(-wr, wr + 1, device=dev, dtype=torch.float64)
        var_g = float((g * gt**2).sum() / g.sum())
        var = 1 / (6 * cos**2) + var_g * (1 + tan**2)
        taps = torch.exp(-(d**2) / (2 * var[:, None, None]))
        taps = taps * (float(g.sum()) / cos[:, None, None] / taps.sum(-1, keepdim=True))
    taps = (taps * 2.0 ** -(_PROFILE_BITS + _STRENGTH_BITS)).to(dt)  # back from fixed point
    area = buf[:, 1 : h + 1, c0 - tr : c0 + tr + w].to(dt)  # the columns the taps read, back to float once
    layer = area[..., 2 * tr :] * taps[..., 0:1]
    for k in range(1, 2 * tr + 1):  # pixel x reads the buffer at x - (k - tr)
        layer.addcmul_(area[..., 2 * tr - k : 2 * tr - k + w], taps[..., k : k + 1])
    layer = layer.clamp_(0, 1).mul_(-bright.to(dev, dt).view(n, 1, 1)).add_(1)  # 1 - streak intensity
    through = layer.view(b, params.layers, h, w)
    through = through[:, :1] if params.layers == 1 else through.prod(dim=1, keepdim=True)  # screen-combine
    return through, haze


def rain_streaks(
    shape: tuple[int, int, int], params: RainParams, generator: torch.Generator | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Streak layers and veil for a batch: ((B, 1, H, W) streak intensity in [0, 1], (B, 1, 1, 1) veil strength).

    The layers of an image are screen-combined; see `_rain_transmittance` for how they are drawn.
    """
    through, haze = _rain_transmittance(shape, params, generator, like)
    return 1 - through, haze


def add_rain(hr: torch.Tensor, level: str = "light", generator: torch.Generator | None = None) -> torch.Tensor:
    """Add synthetic rain streaks to a batch.

    Args:
        hr: (B, C, H, W) float in [0, 1].
        level: ``"light"`` (:data:`RAIN_LIGHT`), ``"heavy"`` (:data:`RAIN_HEAVY`) or ``"mixed"`` (each image light
            or heavy with probability 1/2), or a :class:`RainParams`.
        generator: source of randomness.

    Returns:
        (B, C, H, W) in [0, 1]: ``1 - (1 - hr) * (1 - streaks)`` (screen blend, white rain), then a veil
        ``(1 - a) * x + a`` of strength ``a``.
    """
    _check_images(hr)
    b, _, h, w = hr.shape
    work = hr if hr.dtype in (torch.float32, torch.float64) else hr.float()
    if isinstance(level, RainParams):
        through, haze = _rain_transmittance((b, h, w), level, generator, work)
    elif level == "mixed":
        heavy = (_rand((b,), generator, work) < 0.5).to(hr.device)
        through = work.new_empty((b, 1, h, w))
        haze = work.new_empty((b, 1, 1, 1))
        for mask, params in ((~heavy, RAIN_LIGHT), (heavy, RAIN_HEAVY)):
            which = mask.nonzero().flatten()
            if which.numel():
                through[which], haze[which] = _rain_transmittance((which.numel(), h, w), params, generator, work)
    elif level in _RAIN_LEVELS:
        through, haze = _rain_transmittance((b, h, w), _RAIN_LEVELS[level], generator, work)
    else:
        raise ValueError(f"rain level must be 'light', 'heavy', 'mixed' or a RainParams, got {level!r}")
    keep = through * (1 - haze)  # the share of the clean image that shows: 1 - (1 - a)(1 - hr)(1 - s) in one pass
    return torch.addcmul(1 - keep, work, keep).to(hr.dtype)
