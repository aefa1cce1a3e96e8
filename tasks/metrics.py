"""PSNR and SSIM with the image-restoration field's conventions, vectorised in torch over batches.

Conventions (ANCHORS.md section 5; BasicSR ``basicsr/metrics/psnr_ssim.py``, SwinIR ``utils_calculate_psnr_ssim``,
Wang et al. 2004 ``ssim_index.m``):
- images are quantised first: clamp to [0, 1], ``round(x * 255)`` (uint8 input is used as is);
- Y channel (``y_channel=True``): ITU-R BT.601 as MATLAB ``rgb2ycbcr``, Y = 16 + (65.481 R + 128.553 G + 24.966 B)/255
  on the 0-255 scale. A one-channel (grayscale) image is scored on its own channel, never on the Y of a replicated RGB
  image (that would compress its range to [16, 235] and move Set14's bridge.png by about 1 dB);
- ``round_y=False`` keeps Y in float: BasicSR / SwinIR / HAT / EDT Python evaluation.
  ``round_y=True`` rounds Y to uint8 as MATLAB's ``rgb2ycbcr`` does on uint8 images: the MATLAB scripts behind most
  published tables (EDSR/RCAN ``Evaluate_PSNR_SSIM.m`` style). The two differ by about 0.01-0.02 dB;
- ``crop_border`` pixels are removed at every side (the SR scale for SR, 0 for denoising and deraining);
- SSIM: 11x11 Gaussian window, sigma 1.5, 'valid' filtering, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2; for several
  channels the per-channel SSIMs are averaged.
Both functions return one value per image: shape (B,) for (B, C, H, W) input, a 0-d tensor for (C, H, W).
"""

from __future__ import annotations

import torch

__all__ = ["psnr", "ssim", "rgb_to_y", "quantize"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Images as float64 on the 0-255 scale, rounded: clamp(x, 0, 1) * 255 rounded for float, uint8 values as is."""
    if x.dtype == torch.uint8:
        return x.to(torch.float64)
    if not x.dtype.is_floating_point:
        raise TypeError(f"metrics expect float images in [0, 1] or uint8 images, got dtype {x.dtype}")
    return (x.detach().to(torch.float64).clamp(0, 1) * 255).round()


def rgb_to_y(x: torch.Tensor, round_y: bool = False) -> torch.Tensor:
    """BT.601 luma of (..., 3, H, W) images on the 0-255 scale -> (..., 1, H, W): MATLAB ``rgb2ycbcr``'s Y."""
    r, g, b = x.unbind(-3)
    y = 16.0 + (_Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b) / 255.0
    if round_y:
        y = torch.floor(y + 0.5)  # MATLAB's double -> uint8 rounding (Y is in [16, 235], no saturation needed)
    return y.unsqueeze(-3)


def _prepare(a: torch.Tensor, b: torch.Tensor, crop_border: int, y_channel: bool, round_y: bool) -> tuple:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("metrics expect torch tensors (C, H, W) or (B, C, H, W); use tasks.io.read_image to load files")
    if a.shape != b.shape:
        raise ValueError(f"images to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim not in (3, 4):
        raise ValueError(f"metrics expect (C, H, W) or (B, C, H, W) images, got shape {tuple(a.shape)}")
    single = a.ndim == 3
    a, b = quantize(a), quantize(b.to(a.device))
    if single:
        a, b = a[None], b[None]
    if a.shape[1] not in (1, 3):
        raise ValueError(f"metrics expect 1 (grayscale) or 3 (RGB) channels, got {a.shape[1]}")
    if y_channel and a.shape[1] == 3:
        a, b = rgb_to_y(a, round_y), rgb_to_y(b, round_y)
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        c = crop_border
        if a.shape[-2] <= 2 * c or a.shape[-1] <= 2 * c:
            raise ValueError(f"crop_border={c} leaves nothing of a {a.shape[-2]}x{a.shape[-1]} image")
        a, b = a[..., c:-c, c:-c], b[..., c:-c, c:-c]
    return a, b, single


def psnr(
    a: torch.Tensor, b: torch.Tensor, crop_border: int = 0, y_channel: bool = False, round_y: bool = False
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB on the 0-255 scale (inf for identical images).

    Args:
        a, b: restored and reference images, float in [0, 1] or uint8, (C, H, W) or (B, C, H, W), C = 1 or 3.
        crop_border: pixels removed at each border before scoring (the scale for SR).
        y_channel: score the BT.601 Y channel of RGB images (grayscale images use their own channel).
        round_y: round Y to uint8 like MATLAB (see the module docstring for which tables use which).

    Returns:
        PSNR per image, float64: shape (B,) for batched input, 0-d otherwise.
    """
    a, b, single = _prepare(a, b, crop_border, y_channel, round_y)
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))  # (B,)
    out = 10.0 * torch.log10(255.0**2 / mse)  # mse = 0 gives inf, as the field reports identical images
    return out[0] if single else out


def _gaussian_window(device: torch.device) -> torch.Tensor:
    """``cv2.getGaussianKernel(11, 1.5)``: the 1-D factor of SSIM's 11x11 window, float64, sums to 1."""
    x = torch.arange(11, dtype=torch.float64, device=device) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    return g / g.sum()


def ssim(
    a: torch.Tensor, b: torch.Tensor, crop_border: int = 0, y_channel: bool = False, round_y: bool = False
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5) and 'valid' filtering.

    Arguments as for :func:`psnr`. Per-channel SSIM is averaged over channels. Returns SSIM per image, float64.
    """
    a, b, single = _prepare(a, b, crop_border, y_channel, round_y)
    if a.shape[-2] < 11 or a.shape[-1] < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 after cropping, got {a.shape[-2]}x{a.shape[-1]}")
    n, c, h, w = a.shape
    g = _gaussian_window(a.device).tolist()

    def blur(t: torch.Tensor) -> torch.Tensor:
        """Separable 'valid' 11x11 Gaussian filter over the last two dims.

        Written as 22 shifted multiply-adds: float64 conv2d has no fast CPU kernel and is 10x slower here.
        """
        h, w = t.shape[-2] - 10, t.shape[-1] - 10
        rows = t[..., 0:h, :] * g[0]
        for k in range(1, 11):
            rows.add_(t[..., k : h + k, :], alpha=g[k])
        out = rows[..., 0:w] * g[0]
        for k in range(1, 11):
            out.add_(rows[..., k : w + k], alpha=g[k])
        return out

    # the five local statistics filtered in one go, stacked along a new leading dim
    stats = blur(torch.stack([a, b, a * a, b * b, a * b]))  # (5, N, C, H - 10, W - 10)
    mu_a, mu_b, aa, bb, ab = stats.chunk(5, dim=0)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    out = ssim_map.reshape(n, c, -1).mean(dim=2).mean(dim=1)  # per-channel mean, then over channels
    return out[0] if single else out

