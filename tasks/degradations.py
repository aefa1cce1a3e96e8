"""Degradations: pure, batched torch functions that turn clean images into a task's low-quality input.

Every random choice comes from the ``torch.Generator`` passed in, so the same generator seed gives the same batch
(on the generator's device; pass ``None`` to use torch's global RNG). Images are (B, C, H, W) floats in [0, 1].

- :func:`bicubic_downscale`: MATLAB ``imresize(hr, 1/s, 'bicubic')`` (``tasks.imresize``), by default rounded to uint8
  levels after each pass like MATLAB on uint8 images, so training LR matches the official ``LR_bicubic`` files.
- :func:`add_gaussian_noise`: additive white Gaussian noise, sigma on the 0-255 scale, float, neither clipped nor
  quantised (the SwinIR / Restormer / EDT training and test protocol).
- :func:`numpy_seed0_noise`: the exact evaluation noise of SwinIR/KAIR and Restormer test scripts
  (``np.random.seed(0)`` for each image, ``np.random.normal(0, sigma/255, (H, W, C))`` added in float).
- :func:`add_rain`: synthetic rain streaks after the Rain100L/Rain100H recipe (Yang et al., "Deep joint rain detection
  and removal from a single image", CVPR 2017, JORDER; used by IPT and EDT pretraining): sparse noise seeds,
  motion-blurred along a random angle and length into streaks, screen-blended onto the image. Parameters are in
  :data:`RAIN_LIGHT` and :data:`RAIN_HEAVY`.
- :func:`sr_any_batch`: the arbitrary-scale SR training sample of LIIF/LTE (``sr-implicit-downsampled``): a scale
  drawn uniformly in [1, 4] per image, an HR crop of ``round(48 * s)`` px shrunk to 48 px with MATLAB bicubic, and
  2304 HR pixels sampled as (coordinate, cell, RGB) queries.
- :func:`random_mask` / :func:`mask_images`: the masked-image-modelling input of RAM (Qin et al., "Restore Anything
  with Masks", ECCV 2024): a random part of each image's pixels (or ``patch`` x ``patch`` cells) set to 0, and the
  mask that tells the loss which pixels to score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tasks.imresize import imresize

__all__ = [
    "bicubic_downscale",
    "add_gaussian_noise",
    "numpy_seed0_noise",
    "add_rain",
    "RainParams",
    "RAIN_LIGHT",
    "RAIN_HEAVY",
    "ArbitraryScaleBatch",
    "sr_any_batch",
    "check_mask_options",
    "random_mask",
    "mask_images",
]


def _check_images(x: torch.Tensor, name: str = "hr") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, C, H, W) in [0, 1], got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch (B, C, H, W), got shape {tuple(x.shape)}; use x[None] for one image")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a float tensor in [0, 1], got {x.dtype}; divide uint8 images by 255")


def _rand(shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor, normal: bool = False):
    """Random numbers drawn on the generator's device (so a seed means the same numbers anywhere), moved to ``like``."""
    device = generator.device if generator is not None else like.device
    fn = torch.randn if normal else torch.rand
    out = fn(tuple(shape), generator=generator, device=device, dtype=torch.float32)
    return out.to(device=like.device, dtype=like.dtype)


def bicubic_downscale(hr: torch.Tensor, scale: int, quantize: bool = True) -> torch.Tensor:
    """Bicubic LR of a batch, as MATLAB ``imresize(hr, 1/scale, 'bicubic')``.

    Args:
        hr: (B, C, H, W) float in [0, 1]; H and W should be multiples of ``scale`` (mod-crop) for an exact s-fold LR.
        scale: the integer SR factor.
        quantize: round to uint8 levels after each 1-D pass, like MATLAB on uint8 images (and the official LR files).
            On by default: models then train on the same kind of LR they are evaluated on.

    Returns:
        (B, C, ceil(H / scale), ceil(W / scale)) float in [0, 1].
    """
    _check_images(hr)
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if scale == 1:
        return hr
    return imresize(hr, 1.0 / scale, quantize=quantize)


def add_gaussian_noise(
    hr: torch.Tensor, sigma: float | Sequence[float] | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation ``sigma / 255`` to every pixel and channel; no clipping.

    Args:
        hr: (B, C, H, W) float in [0, 1].
        sigma: noise level on the 0-255 scale: one number, or one per image (B,) for blind-noise training.
        generator: source of randomness.
    """
    _check_images(hr)
    sig = torch.as_tensor(sigma, dtype=torch.float64)
    if sig.ndim > 1 or (sig.ndim == 1 and sig.numel() not in (1, hr.shape[0])) or bool((sig < 0).any()):
        raise ValueError(f"sigma must be >= 0: one value or one per image ({hr.shape[0]}), got {sigma}")
    sig = (sig / 255.0).to(device=hr.device, dtype=hr.dtype).reshape(-1, 1, 1, 1)
    # in place on the fresh draw: hr + noise * sig, bit for bit, without two more image-sized temporaries (half the
    # cost on CPU)
    return _rand(hr.shape, generator, hr, normal=True).mul_(sig).add_(hr)


def numpy_seed0_noise(hr: torch.Tensor, sigma: float, seed: int = 0, channel_order: str = "bgr") -> torch.Tensor:
    """The field's evaluation noise: the exact noisy image of the SwinIR / KAIR / Restormer test scripts.

    Those scripts reset ``np.random.seed(0)`` for each image and add ``np.random.normal(0, sigma/255, img.shape)`` to
    the float image in (H, W, C) layout; nothing is clipped or quantised. SwinIR and KAIR read images with OpenCV,
    so their channel order is BGR (the default here); Restormer converts to RGB first (``channel_order="rgb"``).
    The noise is drawn in float64 and added to the image in float64; the result is float32 as those scripts feed it.

    Args:
        hr: one image (C, H, W) float in [0, 1] (C = 1 or 3), RGB order.
        sigma: noise level on the 0-255 scale.
        seed: the NumPy seed (0 in every published script).
        channel_order: "bgr" (SwinIR, KAIR, EDT) or "rgb" (Restormer).
    """
    if not isinstance(hr, torch.Tensor) or hr.ndim != 3 or hr.shape[0] not in (1, 3):
        raise ValueError(f"numpy_seed0_noise takes one image (C, H, W) with C = 1 or 3, got {getattr(hr, 'shape', hr)}")
    if channel_order not in ("bgr", "rgb"):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    c, h, w = hr.shape
    rng = np.random.RandomState(seed)  # same stream as np.random.seed(seed); np.random.normal(...)
    noise = rng.normal(0, sigma / 255.0, (h, w, c))  # (H, W, C) as the scripts draw it
    if c == 3 and channel_order == "bgr":
        noise = noise[:, :, ::-1]  # the script's channel 0 is blue
    noise_t = torch.from_numpy(np.ascontiguousarray(noise.transpose(2, 0, 1)))  # (C, H, W)
    # the scripts hold the image as float32 (cv2 uint8 / 255.) and add float64 noise
    return (hr.detach().cpu().to(torch.float32).to(torch.float64) + noise_t).to(torch.float32).to(hr.device)


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
# uint8 level from float); an entry is at most 2^23, so 2^8 streaks of one layer can cross one pixel before int32
# overflows (heavy rain: about 1)
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


# ------------------------------------------------------------------------------------- arbitrary-scale SR


@dataclass(frozen=True)
class ArbitraryScaleBatch:
    """One ``sr_any`` training batch: LR patches and sampled HR query points (the model's ``query_points`` input).

    Attributes:
        lq: (B, C, lq_size, lq_size) LR patches in [0, 1] (uint8 levels, like the fixed-scale LR).
        coord: (B, Q, 2) (row, col) pixel centres of the sampled HR pixels in [-1, 1] over the patch extent.
        cell: (B, Q, 2) the HR pixel size in the same units, ``2 / hr_size`` (LIIF's cell).
        gt: (B, Q, C) the HR pixels' values in [0, 1].
        scale: (B,) the actual scale of each patch, ``hr_size / lq_size`` (the drawn one, rounded to whole pixels).
    """

    lq: torch.Tensor
    coord: torch.Tensor
    cell: torch.Tensor
    gt: torch.Tensor
    scale: torch.Tensor


def _pixel_centres(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Centres of ``n`` pixels in [-1, 1] (``restore.implicit.make_coord`` along one axis; tasks imports nothing
    of restore)."""
    return (2 * torch.arange(n, device=device, dtype=dtype) + 1) / n - 1


def sr_any_batch(
    hr: torch.Tensor,
    generator: torch.Generator | None = None,
    lq_size: int = 48,
    scale_range: tuple[float, float] = (1.0, 4.0),
    num_queries: int = 2304,
    quantize: bool = True,
) -> ArbitraryScaleBatch:
    """Arbitrary-scale SR samples from HR patches, the LIIF/LTE training protocol.

    Per image (LIIF ``datasets/wrappers.py`` ``SRImplicitDownsampled`` with ``inp_size=48``, ``scale_max=4``,
    ``sample_q=2304``): draw ``s ~ U(scale_range)``, crop ``round(lq_size * s)`` px square at a random place,
    shrink it to ``lq_size`` with MATLAB bicubic (`tasks.imresize`, uint8 levels like the fixed-scale LR; LIIF used
    PIL's bicubic on uint8 images) and sample ``num_queries`` HR pixels without replacement. Flips are left to the
    data stream's augmentation, as for the other tasks.

    Args:
        hr: (B, C, H, W) float in [0, 1], H and W at least ``round(lq_size * scale_range[1])`` (192 by default).
        generator: the source of every random draw (scale, crop, queries); same seed, same batch.
        lq_size: side of the LR patch.
        scale_range: (low, high) of the uniform scale distribution, 1 <= low <= high.
        num_queries: HR pixels sampled per patch, at most ``lq_size ** 2`` (the smallest HR crop's pixel count).
        quantize: round the LR to uint8 levels (as `bicubic_downscale`).
    """
    _check_images(hr)
    low, high = float(scale_range[0]), float(scale_range[1])
    if not (math.isfinite(low) and math.isfinite(high) and 1.0 <= low <= high):
        raise ValueError(f"scale_range must be (low, high) with 1 <= low <= high, got {scale_range}")
    if lq_size < 1 or not 1 <= num_queries <= lq_size * lq_size:
        raise ValueError(f"need lq_size >= 1 and 1 <= num_queries <= lq_size**2 = {lq_size * lq_size}, "
                         f"got lq_size={lq_size}, num_queries={num_queries}")
    need = round(lq_size * high)
    b, c, h, w = hr.shape
    if h < need or w < need:
        raise ValueError(f"hr patches of {h}x{w} are too small for scales up to {high} at lq_size {lq_size}: "
                         f"crop them to at least {need}x{need}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    draws = torch.rand(b, generator=generator, device=gen_device, dtype=torch.float64).cpu()
    lqs, coords, cells, gts, scales = [], [], [], [], []
    for i in range(b):
        s = low + (high - low) * float(draws[i])
        size = round(lq_size * s)
        top = int(torch.randint(0, h - size + 1, (1,), generator=generator, device=gen_device))
        left = int(torch.randint(0, w - size + 1, (1,), generator=generator, device=gen_device))
        crop = hr[i : i + 1, :, top : top + size, left : left + size]
        lqs.append(imresize(crop, size=(lq_size, lq_size), quantize=quantize))  # size 1:1 only quantizes
        pick = torch.randperm(size * size, generator=generator, device=gen_device)[:num_queries].to(hr.device)
        centres = _pixel_centres(size, hr.device, hr.dtype)
        coords.append(torch.stack([centres[pick // size], centres[pick % size]], dim=-1))
        gts.append(crop[0].reshape(c, -1)[:, pick].t())
        cells.append(torch.full((num_queries, 2), 2.0 / size, device=hr.device, dtype=hr.dtype))
        scales.append(size / lq_size)
    return ArbitraryScaleBatch(
        lq=torch.cat(lqs), coord=torch.stack(coords), cell=torch.stack(cells), gt=torch.stack(gts),
        scale=torch.tensor(scales, dtype=torch.float64),
    )


# ----------------------------------------------------------------------------- masked image modelling


def check_mask_options(ratio: float, patch: int) -> None:
    """Refuse a mask ratio outside (0, 1) or a patch side below 1 (ValueError naming RAM's values)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ValueError(f"mask ratio must be a fraction in (0, 1), got {ratio!r}; RAM masks 0.5 of the pixels")
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise ValueError(f"mask patch must be an integer side >= 1 in pixels, got {patch!r}; RAM masks single "
                         "pixels (1)")


def random_mask(
    hr: torch.Tensor, ratio: float = 0.5, patch: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random mask per image of a batch: (B, 1, H, W) in ``hr``'s dtype, 1 where a pixel is hidden, else 0.

    The masked-image-modelling mask of RAM (Qin et al., "Restore Anything with Masks", ECCV 2024; official
    ``ram/models/mim_util.py`` ``MaskGenerator``): the image is cut into ``patch`` x ``patch`` cells on a grid
    anchored at the top-left pixel, and exactly ``ceil(ratio * cells)`` of them are hidden, chosen uniformly (RAM's
    random permutation of the cells). RAM draws one mask per batch; here each image gets its own, so a batch shows
    the body more patterns. Where H or W is not a multiple of ``patch`` the last row or column of cells is cut off
    at the border, so the hidden fraction is then only close to ``ratio``.

    Args:
        hr: (B, C, H, W) float images (only the shape, dtype and device are used).
        ratio: the fraction of cells hidden, in (0, 1). RAM pretrains with 0.5.
        patch: the cell side in pixels; 1 masks single pixels, as RAM does.
        generator: the source of the draw; same seed, same mask.
    """
    _check_images(hr)
    check_mask_options(ratio, patch)
    b, _, h, w = hr.shape
    rows, cols = -(-h // patch), -(-w // patch)
    cells = rows * cols
    hidden = min(cells, math.ceil(ratio * cells - 1e-9))  # the tolerance keeps 0.3 * 10 at 3 cells, not 4
    device = generator.device if generator is not None else hr.device
    scores = torch.rand((b, cells), generator=generator, device=device)
    order = scores.argsort(dim=1)  # a uniform random permutation of the cells of each image
    grid = torch.zeros((b, cells), device=device, dtype=torch.bool).scatter_(1, order[:, :hidden], True)
    grid = grid.view(b, 1, rows, cols).repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return grid[:, :, :h, :w].to(device=hr.device, dtype=hr.dtype)


def mask_images(
    hr: torch.Tensor, ratio: float = 0.5, patch: int = 1, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide a random part of each image: (``hr`` with the hidden pixels set to 0, the (B, 1, H, W) mask).

    Zero is RAM's fill (its ``binary`` mask type: a mask token of zeros, on every channel); the model learns to
    fill in what the mask hides, and the loss scores only those pixels (`pretrain.data.masked_l1`). See
    `random_mask` for the mask itself.
    """
    mask = random_mask(hr, ratio, patch, generator)
    return hr.masked_fill(mask.bool(), 0.0), mask
