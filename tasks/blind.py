"""Blind (real-world) degradations: Real-ESRGAN's second-order pipeline and BSRGAN's shuffled pipeline.

- Real-ESRGAN (Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic Data",
  ICCVW 2021): blur -> resize -> noise -> JPEG, twice, then [resize to HR / scale + sinc] and JPEG in a random
  order. Kernels as BasicSR ``basicsr/data/degradations.py``, drawn as Real-ESRGAN
  ``realesrgan/data/realesrgan_dataset.py`` ``__getitem__``; the image steps as
  ``realesrgan/models/realesrgan_model.py`` ``feed_data``; defaults from ``options/train_realesrgan_x4plus.yml``
  (the x2plus file has the same values).
- BSRGAN (Zhang et al., "Designing a Practical Degradation Model for Deep Blind Image Super-Resolution", ICCV 2021):
  two blurs, a random downsample, the final downsample (kept after it), Gaussian noise and JPEG in a shuffled
  order, then a final JPEG: ``degradation_bsrgan`` in cszn/BSRGAN ``utils/utils_blindsr.py``.

Both are pure torch, every random number comes from the ``torch.Generator`` passed in. The kernels and image
operations are in `tasks.blind_ops` (re-exported here); this module draws the parameters and chains the steps. Design: a batch is degraded
image by image (each image has its own kernel, resize factors and operation order, as the references do per
sample; Real-ESRGAN's batch-shared choices exist only because it runs batched on the GPU, and its training-pair
queue is there to undo that). The batch generator draws one seed per image; image i is then degraded with its own
generator ``torch.Generator(device).manual_seed(seed_i)``, so :func:`degrade` of a batch equals
:func:`degrade_image` of each image with that image's generator. Parameter draws (:func:`sample_realesrgan`,
:func:`sample_bsrgan`) are separate from the image work, so their distributions can be checked without images.

Deliberate differences from the references (each noted where it happens): JPEG is a real libjpeg round trip at an
integer quality (Real-ESRGAN uses BasicSR's DiffJPEG with a float quality); Real-ESRGAN's USM sharpening of the
ground truth is not applied (it sharpens the training *target* as well, a loss-side choice this function, which only
sees HR, cannot make); BSRGAN's camera-ISP step is absent (its released training passes ``isp_model=None``);
reflect padding falls back to replicate on images smaller than the kernel radius (the references crash there).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from tasks._batch import _check_images
from tasks.blind_ops import (  # re-exported: the kernels and image operations live there
    KERNEL_TYPES, KernelSpec, _randn, bivariate_gaussian, bivariate_generalized_gaussian, bivariate_plateau,
    bsrgan_anisotropic_gaussian, bsrgan_fspecial_gaussian, bsrgan_shift_kernel, build_kernel, circular_lowpass_kernel,
    cv2_resize, filter2d, gaussian_noise, jpeg_roundtrip, poisson_noise,
)
from tasks.errors import InputError

__all__ = [
    "KERNEL_TYPES",
    "RealESRGANParams",
    "BSRGANParams",
    "KernelSpec",
    "RealESRGANSample",
    "BSRGANSample",
    "bivariate_gaussian",
    "bivariate_generalized_gaussian",
    "bivariate_plateau",
    "circular_lowpass_kernel",
    "build_kernel",
    "bsrgan_anisotropic_gaussian",
    "bsrgan_fspecial_gaussian",
    "bsrgan_shift_kernel",
    "gaussian_noise",
    "poisson_noise",
    "jpeg_roundtrip",
    "filter2d",
    "cv2_resize",
    "sample_realesrgan",
    "sample_bsrgan",
    "apply_realesrgan",
    "apply_bsrgan",
    "degrade_image",
    "degrade",
    "image_seeds",
    "PIPELINES",
]

_RESIZE_MODES = ("area", "bilinear", "bicubic")  # Real-ESRGAN: random.choice(['area', 'bilinear', 'bicubic'])
_CV2_MODES = ("linear", "cubic", "area")  # BSRGAN: random.choice([1, 2, 3]) = INTER_LINEAR, INTER_CUBIC, INTER_AREA


# ----------------------------------------------------------------------------------------------- parameters


def _pair(v: Any, name: str) -> tuple[float, float]:
    v = tuple(float(x) for x in v)
    if len(v) != 2 or v[0] > v[1]:
        raise InputError(f"{name} must be a (low, high) pair with low <= high, got {v}")
    return v  # type: ignore[return-value]


def _probs(v: Any, n: int, name: str) -> tuple[float, ...]:
    v = tuple(float(x) for x in v)
    if len(v) != n or any(p < 0 for p in v) or abs(sum(v) - 1) > 1e-6:
        raise InputError(f"{name} must be {n} non-negative probabilities summing to 1, got {v}")
    return v


def _prob(v: Any, name: str) -> float:
    v = float(v)
    if not 0 <= v <= 1:
        raise InputError(f"{name} must be a probability in [0, 1], got {v}")
    return v


class _FromDict:
    """``from_dict`` for recipe overrides: unknown keys are an error that names the valid ones."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown {cls.__name__} option(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)  # type: ignore[call-arg]


@dataclass(frozen=True)
class RealESRGANParams(_FromDict):
    """Every setting of the Real-ESRGAN pipeline; defaults are the published ones.

    Source: xinntao/Real-ESRGAN ``options/train_realesrgan_x4plus.yml`` lines 14-31 (resize, noise, JPEG of both
    stages) and 46-62 (kernels), identical in ``train_realesrgan_x2plus.yml``; the kernel sizes 7..21 and the sinc
    cut-off ranges are hard-coded in ``realesrgan/data/realesrgan_dataset.py`` lines 78 and 129-181.
    Resize probabilities are (up, down, keep).
    """

    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    second_blur_prob: float = 0.8
    kernel_list2: tuple[str, ...] = KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    final_sinc_prob: float = 0.8

    def __post_init__(self) -> None:
        sizes = tuple(int(k) for k in self.kernel_sizes)
        if not sizes or any(k < 1 or k % 2 == 0 for k in sizes):
            raise InputError(f"kernel_sizes must be odd positive sizes, got {self.kernel_sizes}")
        object.__setattr__(self, "kernel_sizes", sizes)
        for stage in ("", "2"):
            kl = tuple(getattr(self, f"kernel_list{stage}"))
            bad = [k for k in kl if k not in KERNEL_TYPES]
            if bad:
                raise InputError(f"kernel_list{stage} has unknown kernel types {bad}; valid: {list(KERNEL_TYPES)}")
            object.__setattr__(self, f"kernel_list{stage}", kl)
            object.__setattr__(self, f"kernel_prob{stage}", _probs(getattr(self, f"kernel_prob{stage}"), len(kl),
                                                                   f"kernel_prob{stage}"))
            object.__setattr__(self, f"resize_prob{stage}", _probs(getattr(self, f"resize_prob{stage}"), 3,
                                                                   f"resize_prob{stage} (up, down, keep)"))
            for name in ("blur_sigma", "betag_range", "betap_range", "resize_range", "noise_range",
                         "poisson_scale_range", "jpeg_range"):
                object.__setattr__(self, name + stage, _pair(getattr(self, name + stage), name + stage))
            for name in ("sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
                object.__setattr__(self, name + stage, _prob(getattr(self, name + stage), name + stage))
            lo, hi = getattr(self, f"jpeg_range{stage}")
            if lo < 1 or hi > 100:
                raise InputError(f"jpeg_range{stage} must lie in [1, 100], got {(lo, hi)}")
        for name in ("second_blur_prob", "final_sinc_prob"):
            object.__setattr__(self, name, _prob(getattr(self, name), name))


@dataclass(frozen=True)
class BSRGANParams(_FromDict):
    """Every setting of the BSRGAN pipeline (``degradation_bsrgan``); defaults are the published ones.

    Source: cszn/BSRGAN ``utils/utils_blindsr.py``: ``add_blur`` lines 335-346 (kernel sizes 2*randint(2, 11)+3,
    widths 4+sf and 2+0.2 sf), ``add_Gaussian_noise`` 363-377 (levels 2..25), ``add_JPEG_noise`` 412-418
    (quality 30..95), ``degradation_bsrgan`` 446-514 (probabilities; downsample ranges).
    """

    scale2_prob: float = 0.25  # x4 only: first halve the image (cv2 or MATLAB bicubic, 1/2 each) and work at x2
    blur_aniso_prob: float = 0.5
    blur_size_range: tuple[int, int] = (2, 11)  # kernel size 2 * randint(lo, hi) + 3
    down2_resize_prob: float = 0.75  # else: shifted Gaussian blur + nearest subsampling
    down2_sigma_range: tuple[float, float] = (0.1, 0.6)  # times sf
    noise_level_range: tuple[int, int] = (2, 25)
    noise_color_prob: float = 0.4  # rnum > 0.6
    noise_gray_prob: float = 0.4  # rnum < 0.4; the rest is channel-correlated noise
    jpeg_prob: float = 0.9
    jpeg_range: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        for name in ("scale2_prob", "blur_aniso_prob", "down2_resize_prob", "noise_color_prob", "noise_gray_prob",
                     "jpeg_prob"):
            object.__setattr__(self, name, _prob(getattr(self, name), name))
        if self.noise_color_prob + self.noise_gray_prob > 1 + 1e-9:
            raise InputError("noise_color_prob + noise_gray_prob must be <= 1 (the rest is correlated noise)")
        for name in ("blur_size_range", "noise_level_range", "jpeg_range"):
            lo, hi = _pair(getattr(self, name), name)
            if lo != int(lo) or hi != int(hi):
                raise InputError(f"{name} must hold integers, got {(lo, hi)}")
            object.__setattr__(self, name, (int(lo), int(hi)))
        object.__setattr__(self, "down2_sigma_range", _pair(self.down2_sigma_range, "down2_sigma_range"))
        if self.jpeg_range[0] < 1 or self.jpeg_range[1] > 100:
            raise InputError(f"jpeg_range must lie in [1, 100], got {self.jpeg_range}")


# ------------------------------------------------------------------------------------------- random draws


class _Draws:
    """A fixed block of uniform numbers from the generator, handed out one by one.

    One ``torch.rand`` per image instead of one per choice (60x faster for a few dozen scalars), and every sample
    consumes the generator by the same amount whatever branches it takes.
    """

    def __init__(self, generator: torch.Generator | None, n: int) -> None:
        dev = generator.device if generator is not None else None
        self._u = torch.rand(n, generator=generator, device=dev, dtype=torch.float64).tolist()
        self._i = 0

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        """One uniform number in [lo, hi) (NumPy's ``uniform(lo, hi)``)."""
        v = self._u[self._i]  # an IndexError here means the block size below is too small: a bug
        self._i += 1
        return lo + (hi - lo) * v

    def randint(self, lo: int, hi: int) -> int:
        """One integer in [lo, hi], both ends included (Python's ``random.randint``)."""
        return min(lo + int(self.u() * (hi - lo + 1)), hi)

    def choice(self, n: int, probs: Sequence[float] | None = None) -> int:
        """An index in [0, n): uniform (``random.choice``) or by ``probs`` (``random.choices``)."""
        u = self.u()
        if probs is None:
            return min(int(u * n), n - 1)
        acc = 0.0
        for i, p in enumerate(probs):
            acc += p
            if u < acc:
                return i
        return n - 1

    def perm(self, n: int) -> list[int]:
        """A uniformly random permutation of range(n) (``random.sample(range(n), n)``): the order of n uniforms."""
        keys = [self.u() for _ in range(n)]
        return sorted(range(n), key=keys.__getitem__)


# ------------------------------------------------------------------------------------------------ Real-ESRGAN


@dataclass(frozen=True)
class RealESRGANSample:
    """One image's draws for the Real-ESRGAN pipeline.

    Resize entries are (factor, mode); noise entries are (kind "gaussian" | "poisson", sigma or scale, gray).
    ``kernel2`` is None when the second blur is skipped, ``sinc`` None when the final sinc is (a pulse in the
    reference). ``resize_first``: the final order [resize + sinc] -> JPEG (True) or JPEG -> [resize + sinc].
    """

    kernel1: KernelSpec
    resize1: tuple[float, str]
    noise1: tuple[str, float, bool]
    jpeg1: float
    kernel2: KernelSpec | None
    resize2: tuple[float, str]
    noise2: tuple[str, float, bool]
    sinc: KernelSpec | None
    resize_first: bool
    final_mode: str
    jpeg2: float


def _draw_kernel(d: _Draws, p: RealESRGANParams, stage: str) -> KernelSpec:
    """Real-ESRGAN ``realesrgan_dataset.py`` lines 129-146 (152-168 for stage 2) with BasicSR
    ``random_mixed_kernels`` and its ``random_bivariate_*`` (degradations.py lines 176-383): draw order kept."""
    size = p.kernel_sizes[d.choice(len(p.kernel_sizes))]
    if d.u() < getattr(p, f"sinc_prob{stage}"):
        # "this sinc filter setting is for kernels ranging from [7, 21]"
        omega = d.u(math.pi / 3, math.pi) if size < 13 else d.u(math.pi / 5, math.pi)
        return KernelSpec("sinc", size, omega=omega)
    kinds = getattr(p, f"kernel_list{stage}")
    kind = kinds[d.choice(len(kinds), getattr(p, f"kernel_prob{stage}"))]
    lo, hi = getattr(p, f"blur_sigma{stage}")
    sig_x = d.u(lo, hi)
    if kind.endswith("aniso"):
        sig_y, theta = d.u(lo, hi), d.u(-math.pi, math.pi)
    else:
        sig_y, theta = sig_x, 0.0
    beta = 1.0
    if kind not in ("iso", "aniso"):
        blo, bhi = getattr(p, f"betag_range{stage}" if kind.startswith("generalized") else f"betap_range{stage}")
        beta = d.u(blo, 1.0) if d.u() < 0.5 else d.u(1.0, bhi)  # "assume beta_range[0] < 1 < beta_range[1]"
    return KernelSpec(kind, size, sig_x, sig_y, theta, beta)


def _draw_resize(d: _Draws, probs, rng) -> tuple[float, str]:
    kind = d.choice(3, probs)  # up, down, keep
    factor = d.u(1.0, rng[1]) if kind == 0 else d.u(rng[0], 1.0) if kind == 1 else 1.0
    return factor, _RESIZE_MODES[d.choice(3)]


def _draw_noise(d: _Draws, gauss_prob, sigma_range, poisson_range, gray_prob) -> tuple[str, float, bool]:
    if d.u() < gauss_prob:
        return "gaussian", d.u(*sigma_range), d.u() < gray_prob
    return "poisson", d.u(*poisson_range), d.u() < gray_prob


def sample_realesrgan(params: RealESRGANParams, generator: torch.Generator | None = None) -> RealESRGANSample:
    """Draw one image's Real-ESRGAN parameters: the kernels of ``realesrgan_dataset.py`` lines 128-181 and the
    resize / noise / JPEG / order choices of ``realesrgan_model.py`` ``feed_data`` lines 84-163."""
    p, d = params, _Draws(generator, 40)  # at most 2 * 8 (kernels) + 3 (sinc) + 2 * 6 (resize, noise) + 5 = 36
    kernel1 = _draw_kernel(d, p, "")
    kernel2 = _draw_kernel(d, p, "2")
    sinc = None
    if d.u() < p.final_sinc_prob:
        size = p.kernel_sizes[d.choice(len(p.kernel_sizes))]
        sinc = KernelSpec("sinc", size, omega=d.u(math.pi / 3, math.pi))
    resize1 = _draw_resize(d, p.resize_prob, p.resize_range)
    noise1 = _draw_noise(d, p.gaussian_noise_prob, p.noise_range, p.poisson_scale_range, p.gray_noise_prob)
    jpeg1 = d.u(*p.jpeg_range)
    if not d.u() < p.second_blur_prob:
        kernel2 = None
    resize2 = _draw_resize(d, p.resize_prob2, p.resize_range2)
    noise2 = _draw_noise(d, p.gaussian_noise_prob2, p.noise_range2, p.poisson_scale_range2, p.gray_noise_prob2)
    resize_first = d.u() < 0.5
    final_mode = _RESIZE_MODES[d.choice(3)]
    jpeg2 = d.u(*p.jpeg_range2)
    return RealESRGANSample(kernel1, resize1, noise1, jpeg1, kernel2, resize2, noise2, sinc, resize_first,
                            final_mode, jpeg2)


def _add_noise(x: torch.Tensor, noise: tuple[str, float, bool], g) -> torch.Tensor:
    kind, level, gray = noise
    if kind == "gaussian":
        return torch.clamp(x + gaussian_noise(x, level, gray, g), 0, 1)  # clip=True, rounds=False
    return torch.clamp(x + poisson_noise(x, level, gray, g), 0, 1)


def _interp(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    size = (max(1, int(size[0])), max(1, int(size[1])))
    return F.interpolate(x, size=size, mode=mode)


def apply_realesrgan(
    hr: torch.Tensor, sample: RealESRGANSample, scale: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Degrade one image (1, C, H, W) in [0, 1] with drawn parameters; (1, C, H // scale, W // scale) out.

    ``realesrgan_model.py`` ``feed_data`` lines 79-166: the two stages, then either [resize + sinc] -> JPEG or
    JPEG -> [resize + sinc], then rounding to 255 levels. Noise comes from ``generator``.
    """
    s, g = sample, generator
    ori_h, ori_w = hr.shape[-2:]
    out = filter2d(hr, build_kernel(s.kernel1))
    factor, mode = s.resize1
    if min(math.floor(ori_h * factor), math.floor(ori_w * factor)) >= 1:
        out = F.interpolate(out, scale_factor=factor, mode=mode)  # as the reference: scale_factor, not size
    else:  # a tiny image would shrink to nothing
        out = _interp(out, (ori_h * factor, ori_w * factor), mode)
    out = _add_noise(out, s.noise1, g)
    out = jpeg_roundtrip(out.clamp(0, 1), s.jpeg1)
    if s.kernel2 is not None:
        out = filter2d(out, build_kernel(s.kernel2))
    factor, mode = s.resize2
    out = _interp(out, (int(ori_h / scale * factor), int(ori_w / scale * factor)), mode)
    out = _add_noise(out, s.noise2, g)

    def resize_sinc(y: torch.Tensor) -> torch.Tensor:
        y = _interp(y, (ori_h // scale, ori_w // scale), s.final_mode)
        return filter2d(y, build_kernel(s.sinc)) if s.sinc is not None else y  # a pulse kernel is the identity

    if s.resize_first:
        out = jpeg_roundtrip(resize_sinc(out).clamp(0, 1), s.jpeg2)
    else:
        out = resize_sinc(jpeg_roundtrip(out.clamp(0, 1), s.jpeg2))
    return torch.clamp((out * 255.0).round(), 0, 255) / 255.0


# ---------------------------------------------------------------------------------------------------- BSRGAN


@dataclass(frozen=True)
class BSRGANSample:
    """One image's draws for ``degradation_bsrgan``.

    ``down1``: None, or the x4 pre-halving method ("linear" | "cubic" | "area" for cv2, "matlab" for
    ``imresize_np``). ``order``: the shuffled steps 0..6 (0, 1 blur; 2 downsample2; 3 downsample3; 4 noise;
    5 JPEG; 6 camera ISP, a no-op here). ``blur1``/``blur2``: ("aniso", size, theta, l1, l2) or ("iso", size, sigma).
    ``down2``: ("resize", factor, mode) or ("shifted", sigma). ``noise``: (kind "color" | "gray" | "correlated",
    level, D diagonal (3,), A (3, 3)); ``jpeg``: the in-order JPEG quality or None; ``final_jpeg``: the last one.
    """

    sf: int
    down1: str | None
    order: tuple[int, ...]
    blur1: tuple
    blur2: tuple
    down2: tuple
    down3_mode: str
    noise: tuple
    jpeg: int | None
    final_jpeg: int


def _draw_bsrgan_blur(d: _Draws, p: BSRGANParams, sf: int) -> tuple:
    """``add_blur`` lines 335-343, draw order kept (l1, l2, size, theta / size, sigma)."""
    wd2, wd = 4.0 + sf, 2.0 + 0.2 * sf
    lo, hi = p.blur_size_range
    if d.u() < p.blur_aniso_prob:
        l1, l2 = wd2 * d.u(), wd2 * d.u()
        size = 2 * d.randint(lo, hi) + 3
        return ("aniso", size, d.u() * math.pi, l1, l2)
    size = 2 * d.randint(lo, hi) + 3
    return ("iso", size, wd * d.u())


def sample_bsrgan(params: BSRGANParams, scale: int, generator: torch.Generator | None = None) -> BSRGANSample:
    """Draw one image's BSRGAN parameters (``degradation_bsrgan`` lines 446-514). The reference draws lazily
    inside the shuffled loop; drawing them all up front in a fixed order gives the same distribution."""
    p, d = params, _Draws(generator, 48)  # at most 3 + 7 + 2 * 5 + 3 + 1 + 14 + 2 + 1 = 41
    sf, down1 = scale, None
    if scale == 4 and d.u() < p.scale2_prob:
        down1 = _CV2_MODES[d.choice(3)] if d.u() < 0.5 else "matlab"
        sf = 2
    order = d.perm(7)
    i2, i3 = order.index(2), order.index(3)
    if i2 > i3:  # "keep downsample3 last"
        order[i2], order[i3] = order[i3], order[i2]
    blur1, blur2 = _draw_bsrgan_blur(d, p, sf), _draw_bsrgan_blur(d, p, sf)
    if d.u() < p.down2_resize_prob:
        down2 = ("resize", d.u(1.0, 2.0 * sf), _CV2_MODES[d.choice(3)])
    else:
        down2 = ("shifted", d.u(p.down2_sigma_range[0] * sf, p.down2_sigma_range[1] * sf))
    down3_mode = _CV2_MODES[d.choice(3)]
    level = d.randint(*p.noise_level_range)
    rnum = d.u()
    kind = "color" if rnum > 1 - p.noise_color_prob else "gray" if rnum < p.noise_gray_prob else "correlated"
    diag = tuple(d.u() for _ in range(3))  # D = diag(np.random.rand(3)), A = np.random.rand(3, 3)
    a = tuple(tuple(d.u() for _ in range(3)) for _ in range(3))
    noise = (kind, level, diag, a)
    jpeg = d.randint(*p.jpeg_range) if d.u() < p.jpeg_prob else None
    final_jpeg = d.randint(*p.jpeg_range)
    return BSRGANSample(sf, down1, tuple(order), blur1, blur2, down2, down3_mode, noise, jpeg, final_jpeg)


def _bsrgan_blur(x: torch.Tensor, blur: tuple) -> torch.Tensor:
    if blur[0] == "aniso":
        _, size, theta, l1, l2 = blur
        k = bsrgan_anisotropic_gaussian(size, theta, l1, l2)
    else:
        _, size, sigma = blur
        k = bsrgan_fspecial_gaussian(size, sigma)
    return filter2d(x, k, convolve=True)  # ndimage.filters.convolve(..., mode='mirror')


def _correlated_cov(level_max: float, diag: Sequence[float], a: Sequence[Sequence[float]]) -> torch.Tensor:
    """``np.abs(L**2 * U^T D U)``, ``L = level_max / 255``, ``U = scipy.linalg.orth(A)`` (A's left singular vectors;
    their signs do not matter after ``abs``)."""
    u, _, _ = torch.linalg.svd(torch.tensor(a, dtype=torch.float64))
    conv = u.T @ torch.diag(torch.tensor(diag, dtype=torch.float64)) @ u
    return ((level_max / 255.0) ** 2 * conv).abs()


def _bsrgan_noise(x: torch.Tensor, noise: tuple, level_max: int, g) -> torch.Tensor:
    """``add_Gaussian_noise`` lines 363-377: colour, gray, or channel-correlated with the fixed maximum level."""
    kind, level, diag, a = noise
    _, c, h, w = x.shape
    if kind == "color":
        n = _randn((1, c, h, w), g, x) * (level / 255.0)
    elif kind == "gray":
        n = (_randn((1, 1, h, w), g, x) * (level / 255.0)).expand_as(x)
    else:
        cov = _correlated_cov(level_max, diag, a)  # the maximum level, not the drawn one
        # numpy's multivariate_normal (method 'svd'): z @ (sqrt(s)[:, None] * vh)
        _, s, vh = torch.linalg.svd(cov)
        z = _randn((h * w, 3), g, x).to(torch.float64)
        n = (z @ (s.sqrt()[:, None] * vh).to(z.device)).T.reshape(1, 3, h, w).to(x.dtype)
    return torch.clamp(x + n, 0, 1)


def apply_bsrgan(hr: torch.Tensor, sample: BSRGANSample, scale: int, params: BSRGANParams,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Degrade one image (1, 3, H, W) in [0, 1] with drawn parameters; (1, 3, H // scale, W // scale) out.

    ``degradation_bsrgan`` lines 449-514, without the random crop (the caller crops HR before degrading).
    """
    from tasks.imresize import imresize

    s, g = sample, generator
    out_size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    x = hr
    if s.down1 is not None:
        half = (hr.shape[-2] // 2, hr.shape[-1] // 2)
        x = imresize(x, size=half) if s.down1 == "matlab" else cv2_resize(x, half, s.down1)
        x = x.clamp(0, 1)
    sf = s.sf
    for step in s.order:
        if step in (0, 1):
            x = _bsrgan_blur(x, s.blur1 if step == 0 else s.blur2)
        elif step == 2:
            if s.down2[0] == "resize":
                _, factor, mode = s.down2
                x = cv2_resize(x, (int(x.shape[-2] / factor), int(x.shape[-1] / factor)), mode)
            else:
                k = bsrgan_shift_kernel(bsrgan_fspecial_gaussian(25, s.down2[1]), sf)
                x = filter2d(x, k, convolve=True)[..., 0::sf, 0::sf]  # nearest downsampling
            x = x.clamp(0, 1)
        elif step == 3:
            x = cv2_resize(x, out_size, s.down3_mode).clamp(0, 1)  # int(1/sf * size before downsample2)
        elif step == 4:
            x = _bsrgan_noise(x, s.noise, params.noise_level_range[1], g)
        elif step == 5 and s.jpeg is not None:
            x = jpeg_roundtrip(x, s.jpeg)
    return jpeg_roundtrip(x, s.final_jpeg)


# ------------------------------------------------------------------------------------------------- entry points

PIPELINES = ("realesrgan", "bsrgan")


def degrade_image(
    hr: torch.Tensor, pipeline: str, scale: int, generator: torch.Generator | None = None,
    params: RealESRGANParams | BSRGANParams | None = None,
) -> torch.Tensor:
    """Degrade one image (1, 3, H, W) in [0, 1]: draw its parameters, then apply them, both from ``generator``."""
    want = {"realesrgan": RealESRGANParams, "bsrgan": BSRGANParams}.get(pipeline)
    if params is not None and want is not None and not isinstance(params, want):
        raise InputError(f"the {pipeline} pipeline takes {want.__name__}, got {type(params).__name__}")
    if pipeline == "realesrgan":
        p = params or RealESRGANParams()
        return apply_realesrgan(hr, sample_realesrgan(p, generator), scale, generator)
    if pipeline == "bsrgan":
        p = params or BSRGANParams()
        return apply_bsrgan(hr, sample_bsrgan(p, scale, generator), scale, p, generator)
    raise InputError(f"unknown blind pipeline {pipeline!r}; valid: {', '.join(PIPELINES)}")


def image_seeds(batch: int, generator: torch.Generator | None) -> list[int]:
    """The per-image seeds :func:`degrade` derives from the batch generator."""
    dev = generator.device if generator is not None else None
    return torch.randint(0, 2**62, (batch,), generator=generator, device=dev).tolist()


def degrade(
    hr: torch.Tensor, pipeline: str, scale: int, generator: torch.Generator | None = None,
    params: RealESRGANParams | BSRGANParams | None = None,
) -> torch.Tensor:
    """Blind degradation of a batch (B, 3, H, W) in [0, 1] -> (B, 3, H // scale, W // scale) in [0, 1].

    Image i is ``degrade_image(hr[i:i+1], ..., torch.Generator(device).manual_seed(image_seeds(B, generator)[i]))``.
    """
    _check_images(hr)
    if hr.shape[1] != 3:
        raise InputError(f"blind degradations take RGB batches (B, 3, H, W), got {hr.shape[1]} channels")
    if int(scale) != scale or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale}")
    if min(hr.shape[-2:]) < scale:
        raise InputError(f"images of {tuple(hr.shape[-2:])} are smaller than the scale {scale}")
    work = hr.float() if hr.dtype != torch.float32 else hr
    dev = generator.device if generator is not None else work.device
    outs = []
    for i, seed in enumerate(image_seeds(hr.shape[0], generator)):
        g = torch.Generator(device=dev).manual_seed(seed)
        outs.append(degrade_image(work[i : i + 1], pipeline, scale, g, params))
    return torch.cat(outs).to(hr.dtype)
