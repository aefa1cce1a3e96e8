"""Degradations: pure, batched torch functions that turn clean images into a task's low-quality input.

Every random choice comes from the ``torch.Generator`` passed in, so the same generator seed gives the same batch
(on the generator's device; pass ``None`` to use torch's global RNG). Images are (B, C, H, W) floats in [0, 1].

- :func:`bicubic_downscale`: MATLAB ``imresize(hr, 1/s, 'bicubic')`` (``tasks.imresize``), by default rounded to uint8
  levels after each pass like MATLAB on uint8 images, so training LR matches the official ``LR_bicubic`` files.
- :func:`add_gaussian_noise`: additive white Gaussian noise, sigma on the 0-255 scale, float, neither clipped nor
  quantised (the SwinIR / Restormer / EDT training and test protocol).
- :func:`numpy_seed0_noise`: the exact evaluation noise of SwinIR/KAIR and Restormer test scripts
  (``np.random.seed(0)`` for each image, ``np.random.normal(0, sigma/255, (H, W, C))`` added in float).
- :func:`add_rain` (`tasks.rain`, re-exported here): synthetic rain streaks after the Rain100L/Rain100H recipe.
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

from tasks._batch import _check_images, _rand
from tasks.imresize import imresize
from tasks.rain import RAIN_HEAVY, RAIN_LIGHT, RainParams, add_rain, rain_streaks

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
    sig = sig / 255.0
    if sig.numel() == 1 and hr.dtype in (torch.float32, torch.float64):
        # one level as a number: the same product (the kernel rounds it to hr's dtype as the copy did), with no
        # copy to the device, which on a GPU waits for everything queued there
        sig = float(sig)
    else:
        sig = sig.to(device=hr.device, dtype=hr.dtype).reshape(-1, 1, 1, 1)
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
    # every image's scale and crop corner in one draw, read back once: on a CUDA generator each value read on the
    # host is a device sync, and two reads per image stalled the step once per patch
    draws = torch.rand((b, 3), generator=generator, device=gen_device, dtype=torch.float64).tolist()
    lqs, coords, cells, gts, scales = [], [], [], [], []
    for i, (u_scale, u_top, u_left) in enumerate(draws):
        size = round(lq_size * (low + (high - low) * u_scale))
        # a uniform integer in [0, n) from u in [0, 1) (min(): float rounding can reach n in theory)
        top = min(int(u_top * (h - size + 1)), h - size)
        left = min(int(u_left * (w - size + 1)), w - size)
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
