"""The building blocks of the blind degradations (`tasks.blind`): blur kernels and the image operations.

Kernels follow BasicSR ``basicsr/data/degradations.py`` (Real-ESRGAN) and cszn/BSRGAN ``utils/utils_blindsr.py``;
each function cites the reference it matches, and ``tests/tasks/test_blind.py`` checks them numerically against
basicsr-fixed. Everything is pure torch and takes its randomness from an explicit ``torch.Generator``. The
pipelines that draw the parameters and chain these steps are in `tasks.blind`, which re-exports these names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from tasks.errors import InputError

__all__ = [
    "bivariate_gaussian",
    "bivariate_generalized_gaussian",
    "bivariate_plateau",
    "circular_lowpass_kernel",
    "KernelSpec",
    "build_kernel",
    "bsrgan_anisotropic_gaussian",
    "bsrgan_fspecial_gaussian",
    "bsrgan_shift_kernel",
    "filter2d",
    "gaussian_noise",
    "poisson_noise",
    "jpeg_roundtrip",
    "cv2_resize",
]

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale, used by BasicSR's Poisson noise


# --------------------------------------------------------------------------------------------------- kernels
# All kernels are built in float64 (the references use NumPy float64) and normalised to sum 1.


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(xx, yy), each (size, size), centred on 0: x along columns, y along rows (BasicSR ``mesh_grid``)."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _quad_form(size: int, sig_x: float, sig_y: float, theta: float, isotropic: bool) -> torch.Tensor:
    """(x, y) Sigma^-1 (x, y)^T on the kernel grid, Sigma = R(theta) diag(sig_x^2, sig_y^2) R(theta)^T.

    BasicSR ``sigma_matrix2`` / ``pdf2``; isotropic kernels use sig_x alone, as there.
    """
    xx, yy = _grid(size)
    if isotropic:
        sig_y, theta = sig_x, 0.0
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    sigma = rot @ torch.diag(torch.tensor([sig_x**2, sig_y**2], dtype=torch.float64)) @ rot.T
    inv = torch.linalg.inv(sigma)
    return inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy


def bivariate_gaussian(size: int, sig_x: float, sig_y: float, theta: float, isotropic: bool = True) -> torch.Tensor:
    """Isotropic or anisotropic Gaussian kernel (size, size); theta in radians (BasicSR ``bivariate_Gaussian``)."""
    k = torch.exp(-0.5 * _quad_form(size, sig_x, sig_y, theta, isotropic))
    return k / k.sum()


def bivariate_generalized_gaussian(
    size: int, sig_x: float, sig_y: float, theta: float, beta: float, isotropic: bool = True
) -> torch.Tensor:
    """``exp(-0.5 q^beta)``: beta = 1 is the Gaussian (BasicSR ``bivariate_generalized_Gaussian``)."""
    k = torch.exp(-0.5 * _quad_form(size, sig_x, sig_y, theta, isotropic).pow(beta))
    return k / k.sum()


def bivariate_plateau(
    size: int, sig_x: float, sig_y: float, theta: float, beta: float, isotropic: bool = True
) -> torch.Tensor:
    """``1 / (1 + q^beta)``: a flat top and heavy tails (BasicSR ``bivariate_plateau``)."""
    k = 1.0 / (_quad_form(size, sig_x, sig_y, theta, isotropic).pow(beta) + 1)
    return k / k.sum()


def circular_lowpass_kernel(cutoff: float, size: int, pad_to: int = 0) -> torch.Tensor:
    """2-D sinc (circularly symmetric ideal low-pass) of cut-off ``cutoff`` radians (pi: none), zero-padded to
    ``pad_to`` (BasicSR ``circular_lowpass_kernel``): ``c J1(c r) / (2 pi r)``, ``c^2 / (4 pi)`` at r = 0.
    """
    if size % 2 != 1:
        raise InputError(f"sinc kernel size must be odd, got {size}")
    xx, yy = _grid(size)
    r = torch.sqrt(xx * xx + yy * yy)
    k = cutoff * torch.special.bessel_j1(cutoff * r) / (2 * math.pi * r)
    k[size // 2, size // 2] = cutoff**2 / (4 * math.pi)  # the r -> 0 limit (the formula is 0/0 there)
    k = k / k.sum()
    if pad_to > size:
        p = (pad_to - size) // 2
        k = F.pad(k, (p, p, p, p))
    return k


@dataclass(frozen=True)
class KernelSpec:
    """One drawn blur kernel: its type and parameters (theta in radians; omega: the sinc cut-off)."""

    kind: str  # one of KERNEL_TYPES or "sinc"
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    theta: float = 0.0
    beta: float = 1.0
    omega: float = 0.0


def build_kernel(spec: KernelSpec) -> torch.Tensor:
    """The (size, size) float64 kernel of a :class:`KernelSpec`."""
    if spec.kind == "sinc":
        return circular_lowpass_kernel(spec.omega, spec.size)
    iso = spec.kind.endswith("iso") and not spec.kind.endswith("aniso")
    if spec.kind in ("iso", "aniso"):
        return bivariate_gaussian(spec.size, spec.sigma_x, spec.sigma_y, spec.theta, iso)
    if spec.kind.startswith("generalized"):
        return bivariate_generalized_gaussian(spec.size, spec.sigma_x, spec.sigma_y, spec.theta, spec.beta, iso)
    if spec.kind.startswith("plateau"):
        return bivariate_plateau(spec.size, spec.sigma_x, spec.sigma_y, spec.theta, spec.beta, iso)
    raise InputError(f"unknown kernel type {spec.kind!r}; valid: {list(KERNEL_TYPES) + ['sinc']}")


def bsrgan_anisotropic_gaussian(size: int, theta: float, l1: float, l2: float) -> torch.Tensor:
    """BSRGAN ``anisotropic_Gaussian``: covariance V diag(l1, l2) V^-1 with V's columns (cos, sin), (sin, -cos)."""
    c, s = math.cos(theta), math.sin(theta)
    v = torch.tensor([[c, s], [s, -c]], dtype=torch.float64)  # symmetric and orthogonal: V^-1 = V
    sigma = v @ torch.diag(torch.tensor([max(l1, 1e-12), max(l2, 1e-12)], dtype=torch.float64)) @ v
    inv = torch.linalg.inv(sigma)
    xx, yy = _grid(size)  # gm_blur_kernel: k[y, x] = pdf([x - c, y - c])
    k = torch.exp(-0.5 * (inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy))
    return k / k.sum()


def bsrgan_fspecial_gaussian(size: int, sigma: float) -> torch.Tensor:
    """MATLAB ``fspecial('gaussian', size, sigma)`` as BSRGAN's ``fspecial_gaussian`` (tiny values zeroed)."""
    xx, yy = _grid(size)
    h = torch.exp(-(xx * xx + yy * yy) / (2 * max(sigma, 1e-12) ** 2))
    h[h < torch.finfo(torch.float64).eps * h.max()] = 0
    return h / h.sum()


def _shift_matrix(n: int, shift: float) -> torch.Tensor:
    """(n, n) linear interpolation at positions clip(i + shift, 0, n - 1) of a length-n signal."""
    pos = (torch.arange(n, dtype=torch.float64) + shift).clamp(0, n - 1)
    i0 = pos.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    f = pos - i0
    m = torch.zeros(n, n, dtype=torch.float64)
    m[torch.arange(n), i0] += 1 - f
    m[torch.arange(n), i1] += f
    return m


def bsrgan_shift_kernel(k: torch.Tensor, sf: int) -> torch.Tensor:
    """BSRGAN ``shift_pixel(k, sf)``: the kernel resampled (bilinear, ``interp2d``) (sf-1)/2 px toward the upper
    left, so that blur + ``[0::sf]`` subsampling is centred like a resize; then renormalised."""
    shift = (sf - 1) * 0.5
    out = _shift_matrix(k.shape[0], shift) @ k @ _shift_matrix(k.shape[1], shift).T
    return out / out.sum()


# ------------------------------------------------------------------------------------------- image operations


def _pad_mode(x: torch.Tensor, pad: int) -> str:
    # reflect needs pad < size; the references crash on such tiny images, replicate keeps them going
    return "reflect" if pad < min(x.shape[-2:]) else "replicate"


def filter2d(x: torch.Tensor, kernel: torch.Tensor, convolve: bool = False) -> torch.Tensor:
    """Filter (1, C, H, W) with one (k, k) kernel, reflect padding (``cv2.filter2D`` / BasicSR ``filter2D``:
    correlation); ``convolve=True`` flips the kernel first (``scipy.ndimage.convolve``, mode 'mirror')."""
    k = kernel.shape[-1]
    if convolve:
        kernel = kernel.flip(-1, -2)
    c = x.shape[1]
    w = kernel.to(device=x.device, dtype=x.dtype).expand(c, 1, k, k)
    p = k // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode=_pad_mode(x, p)), w, groups=c)


def gaussian_noise(
    x: torch.Tensor, sigma: float, gray: bool, generator: torch.Generator | None = None,
    normal: torch.Tensor | None = None,
) -> torch.Tensor:
    """The noise (not the noisy image) of BasicSR ``generate_gaussian_noise_pt`` for one image (1, C, H, W).

    ``sigma`` is on the 0-255 scale; gray noise is one (H, W) field shared by all channels. ``normal`` (standard
    normal, (1, 1, H, W) for gray, (1, C, H, W) otherwise) replaces the draw, for tests.
    """
    _, c, h, w = x.shape
    if normal is None:
        normal = _randn((1, 1 if gray else c, h, w), generator, x)
    return (normal.to(x.dtype) * sigma / 255.0).expand_as(x)


def _randn(shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float32).to(like.device)


def poisson_noise(x: torch.Tensor, scale: float, gray: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """The noise of BasicSR ``generate_poisson_noise_pt`` for one image (1, C, H, W) in [0, 1].

    The image is rounded to 255 levels; counts are ``img * vals`` with ``vals`` the number of distinct levels rounded
    up to a power of two; gray noise is drawn on the BT.601 luma (torchvision weights) and shared by the channels.
    """
    if gray:
        wts = torch.tensor(_GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        src = (x * wts).sum(dim=1, keepdim=True) if x.shape[1] == 3 else x
    else:
        src = x
    src = torch.clamp((src * 255.0).round(), 0, 255) / 255.0
    vals = 2.0 ** math.ceil(math.log2(len(torch.unique(src))))
    rates = (src * vals).to(generator.device if generator is not None else x.device)
    out = torch.poisson(rates, generator=generator).to(x.device) / vals
    return ((out - src) * scale).expand_as(x)


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A real JPEG encode + decode (libjpeg through torchvision, on CPU) of (1, C, H, W) in [0, 1], C = 1 or 3."""
    from torchvision.io import decode_jpeg, encode_jpeg  # late: only the blind tasks need the codec

    from tasks.io import quiet_codecs

    u8 = (x[0].clamp(0, 1) * 255.0).round().to(device="cpu", dtype=torch.uint8)
    with quiet_codecs():
        out = decode_jpeg(encode_jpeg(u8, quality=int(min(100, max(1, round(quality))))))
    return (out.to(device=x.device, dtype=x.dtype) / 255.0)[None]


def _area_weights(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) exact area-overlap weights of cv2 INTER_AREA shrinking (each row sums to 1)."""
    r = n_in / n_out
    lo = torch.arange(n_out, dtype=torch.float64) * r
    hi = lo + r
    j = torch.arange(n_in, dtype=torch.float64)
    overlap = (torch.minimum(hi[:, None], j[None] + 1) - torch.maximum(lo[:, None], j[None])).clamp(min=0)
    return (overlap / r).to(device=device, dtype=dtype)


def cv2_resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``cv2.resize`` of (1, C, H, W) to ``size`` (H, W) for BSRGAN: linear and cubic are torch's (same sampling
    positions, a = -0.75, no antialiasing); area is cv2's exact area average when shrinking."""
    h, w = max(1, int(size[0])), max(1, int(size[1]))
    if (h, w) == tuple(x.shape[-2:]):
        return x
    if mode == "area" and h <= x.shape[-2] and w <= x.shape[-1]:
        wh = _area_weights(x.shape[-2], h, x.dtype, x.device)
        ww = _area_weights(x.shape[-1], w, x.dtype, x.device)
        return torch.einsum("oh,bchw,pw->bcop", wh, x, ww)
    torch_mode = {"linear": "bilinear", "cubic": "bicubic", "area": "bilinear"}[mode]
    return F.interpolate(x, size=(h, w), mode=torch_mode, align_corners=False)
