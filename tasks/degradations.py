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
    return (hr + _rand(hr.shape, generator, hr, normal=True) * sig).to(hr.dtype)


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


def _uniform(lo_hi: tuple[float, float], n: int, generator, like) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * _rand((n,), generator, like)


def _motion_blur_vertical(x: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Sum of (N, 1, H, W) over vertical segments of per-image ``length``, with anti-aliased (fractional) ends.

    The kernel is ``clamp(length/2 + 0.5 - |t|, 0, 1)``: ones over the middle, a fraction at both ends. Computed
    with a cumulative sum, so the cost does not grow with the length (a 61-tap grouped convolution was 20x slower).
    A lone seed of value v becomes a streak of value v.
    """
    n, _, h, w = x.shape
    a = length.to(torch.float64) / 2 + 0.5
    m = torch.floor(a).to(torch.int64)  # full-weight half-length is m - 1, fractional taps at +-m
    frac = a - m
    big = int(m.max())
    csum = torch.cumsum(x, dim=2)
    c_pad = torch.cat([x.new_zeros(n, 1, big + 1, w), csum, csum[:, :, -1:].expand(n, 1, big + 1, w)], dim=2)
    x_pad = F.pad(x, (0, 0, big, big))
    out = torch.empty_like(x)
    # a loop over the images with plain slices (each has its own length): faster than torch.gather on CPU
    for i, (mi, fi) in enumerate(zip(m.tolist(), frac.flatten().tolist())):
        full = c_pad[i, :, mi + big : mi + big + h] - c_pad[i, :, big + 1 - mi : big + 1 - mi + h]  # C[y+m-1] - C[y-m]
        ends = x_pad[i, :, big - mi : big - mi + h] + x_pad[i, :, big + mi : big + mi + h]  # x[y-m] + x[y+m]
        torch.add(full, ends, alpha=fi, out=out[i])
    return out


def _blur_1d(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Filter (N, 1, H, W) along ``dim`` (2: vertical, 3: horizontal) with a short (N, K) kernel, zero padding.

    Shifted multiply-adds: for a handful of taps this is several times faster than a grouped convolution on CPU.
    """
    k = kernel.shape[1]
    pad = (0, 0, k // 2, k // 2) if dim == 2 else (k // 2, k // 2, 0, 0)
    xp = F.pad(x, pad)
    size = x.shape[dim]
    shape = (-1, 1, 1, 1)
    out = xp.narrow(dim, 0, size) * kernel[:, 0].reshape(shape)
    for j in range(1, k):
        out = out + xp.narrow(dim, j, size) * kernel[:, j].reshape(shape)
    return out


def rain_streaks(
    shape: tuple[int, int, int], params: RainParams, generator: torch.Generator | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Streak layers and veil for a batch: ((B, 1, H, W) streak intensity in [0, 1], (B, 1, 1, 1) veil strength).

    The Rain100L/H recipe (noise -> threshold -> motion blur at an angle), computed in each layer's own frame:
    seeds are i.i.d., so drawing them on a canvas aligned with the streaks is the same as drawing them on the image.
    A vertical 1-D blur of the streak's length then replaces a 2-D line kernel (cost linear in the length, not
    quadratic) done with cumulative sums, and one bilinear ``grid_sample`` rotates each canvas onto the image.
    """
    b, h, w = shape
    n = b * params.layers
    base = _uniform(params.angle, b, generator, like).repeat_interleave(params.layers)
    angle = base + params.angle_spread * (2 * _rand((n,), generator, like) - 1)
    length = _uniform(params.length, n, generator, like)
    density = _uniform(params.density, n, generator, like).view(n, 1, 1, 1)
    bright = _uniform(params.brightness, n, generator, like).view(n, 1, 1, 1)
    d = int(math.ceil(math.hypot(h, w) + params.length[1])) + 1  # the rotated image plus a streak length
    # canvas sides with the image's parity: at angle 0 its pixel centres fall on the image's (crisp 1-px streaks)
    dh, dw = d + (d - h) % 2, d + (d - w) % 2
    u = _rand((n, 1, dh, dw), generator, like)
    # sparse seeds of random strength in [0.5, 1): the "add noise + threshold" step of the Photoshop recipe
    seeds = torch.where(u < density, 0.5 + 0.5 * u / density, 0.0)  # u / density is uniform where u < density
    canvas = _motion_blur_vertical(seeds, length)  # (n, 1, dh, dw)
    # rotation: the output pixel at (px, py) from the centre reads the canvas at R(angle) (px, py)
    theta = torch.deg2rad(angle)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    affine = torch.stack(
        [torch.stack([cos * w / dw, -sin * h / dw, zero], -1), torch.stack([sin * w / dh, cos * h / dh, zero], -1)], 1
    )  # (n, 2, 3), in grid_sample's normalised coordinates
    grid = F.affine_grid(affine, [n, 1, h, w], align_corners=False)
    streaks = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (n, 1, h, w)
    if params.width > 0:
        # thicker streaks: a Gaussian across (peak kept) and along (sum kept) the streak. Done after the rotation on
        # the image-sized layer (3-5x fewer pixels than the canvas), with across = horizontal: exact at angle 0 and
        # close for the +-35 degree angles used here.
        r = max(1, int(math.ceil(2 * params.width)))
        t = torch.arange(-r, r + 1, device=like.device, dtype=like.dtype)
        g = torch.exp(-(t**2) / (2 * params.width**2))
        streaks = _blur_1d(_blur_1d(streaks, g.expand(n, -1), dim=3), (g / g.sum()).expand(n, -1), dim=2)
    streaks = (streaks.clamp(0, 1) * bright).view(b, params.layers, h, w)
    layer = 1 - torch.prod(1 - streaks, dim=1, keepdim=True)  # screen-combine the layers: (B, 1, H, W)
    haze = _uniform(params.haze, b, generator, like).view(b, 1, 1, 1)
    return layer, haze


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
        streaks, haze = rain_streaks((b, h, w), level, generator, work)
    elif level == "mixed":
        heavy = (_rand((b,), generator, work) < 0.5).to(hr.device)
        streaks = work.new_empty((b, 1, h, w))
        haze = work.new_empty((b, 1, 1, 1))
        for mask, params in ((~heavy, RAIN_LIGHT), (heavy, RAIN_HEAVY)):
            if bool(mask.any()):
                streaks[mask], haze[mask] = rain_streaks((int(mask.sum()), h, w), params, generator, work)
    elif level in _RAIN_LEVELS:
        streaks, haze = rain_streaks((b, h, w), _RAIN_LEVELS[level], generator, work)
    else:
        raise ValueError(f"rain level must be 'light', 'heavy', 'mixed' or a RainParams, got {level!r}")
    out = 1 - (1 - work) * (1 - streaks)  # streaks are white: the same on every channel
    out = (1 - haze) * out + haze
    return out.to(hr.dtype)


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
