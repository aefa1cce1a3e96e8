"""The sparse rain of tasks.degradations against the dense recipe it replaced: same look in distribution.

`_old_rain_streaks` is the previous implementation (one uniform per canvas pixel, threshold, cumulative-sum motion
blur, bilinear rotation with ``grid_sample``, separable width blur), kept here as the reference. The new one draws
other random numbers, so the comparison is statistical: over many draws the streak coverage, the mean intensity and
the streaks' orientation must agree. Run the file as a script for old/new timings on one thread.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tasks import degradations as D
from tasks import rain


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- the reference (previous version)


def _old_motion_blur_vertical(x: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    a = length.to(torch.float64) / 2 + 0.5
    m = torch.floor(a).to(torch.int64)
    frac = a - m
    big = int(m.max())
    csum = torch.cumsum(x, dim=2)
    c_pad = torch.cat([x.new_zeros(n, 1, big + 1, w), csum, csum[:, :, -1:].expand(n, 1, big + 1, w)], dim=2)
    x_pad = F.pad(x, (0, 0, big, big))
    out = torch.empty_like(x)
    for i, (mi, fi) in enumerate(zip(m.tolist(), frac.flatten().tolist())):
        full = c_pad[i, :, mi + big : mi + big + h] - c_pad[i, :, big + 1 - mi : big + 1 - mi + h]
        ends = x_pad[i, :, big - mi : big - mi + h] + x_pad[i, :, big + mi : big + mi + h]
        torch.add(full, ends, alpha=fi, out=out[i])
    return out


def _old_blur_1d(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    k = kernel.shape[1]
    xp = F.pad(x, (0, 0, k // 2, k // 2) if dim == 2 else (k // 2, k // 2, 0, 0))
    out = xp.narrow(dim, 0, x.shape[dim]) * kernel[:, 0].reshape(-1, 1, 1, 1)
    for j in range(1, k):
        out = out + xp.narrow(dim, j, x.shape[dim]) * kernel[:, j].reshape(-1, 1, 1, 1)
    return out


def _old_rain_streaks(shape, params: D.RainParams, generator, like):
    b, h, w = shape
    n = b * params.layers

    def uniform(lo_hi, k):
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * torch.rand(k, generator=generator)

    base = uniform(params.angle, b).repeat_interleave(params.layers)
    angle = base + params.angle_spread * (2 * torch.rand(n, generator=generator) - 1)
    length = uniform(params.length, n)
    density = uniform(params.density, n).view(n, 1, 1, 1)
    bright = uniform(params.brightness, n).view(n, 1, 1, 1)
    d = int(math.ceil(math.hypot(h, w) + params.length[1])) + 1
    dh, dw = d + (d - h) % 2, d + (d - w) % 2
    u = torch.rand((n, 1, dh, dw), generator=generator)
    seeds = torch.where(u < density, 0.5 + 0.5 * u / density, 0.0)
    canvas = _old_motion_blur_vertical(seeds, length)
    theta = torch.deg2rad(angle)
    cos, sin, zero = torch.cos(theta), torch.sin(theta), torch.zeros(n)
    affine = torch.stack(
        [torch.stack([cos * w / dw, -sin * h / dw, zero], -1), torch.stack([sin * w / dh, cos * h / dh, zero], -1)], 1
    )
    grid = F.affine_grid(affine, [n, 1, h, w], align_corners=False)
    streaks = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if params.width > 0:
        r = max(1, int(math.ceil(2 * params.width)))
        t = torch.arange(-r, r + 1, dtype=like.dtype)
        g = torch.exp(-(t**2) / (2 * params.width**2))
        streaks = _old_blur_1d(_old_blur_1d(streaks, g.expand(n, -1), dim=3), (g / g.sum()).expand(n, -1), dim=2)
    streaks = (streaks.clamp(0, 1) * bright).view(b, params.layers, h, w)
    return 1 - torch.prod(1 - streaks, dim=1, keepdim=True), uniform(params.haze, b).view(b, 1, 1, 1)


def _old_add_rain(hr: torch.Tensor, level: str, generator) -> torch.Tensor:
    b, _, h, w = hr.shape
    heavy = torch.rand(b, generator=generator) < 0.5
    streaks, haze = hr.new_empty((b, 1, h, w)), hr.new_empty((b, 1, 1, 1))
    for mask, params in ((~heavy, D.RAIN_LIGHT), (heavy, D.RAIN_HEAVY)):
        if level == "mixed" and bool(mask.any()):
            streaks[mask], haze[mask] = _old_rain_streaks((int(mask.sum()), h, w), params, generator, hr)
    if level != "mixed":
        streaks, haze = _old_rain_streaks((b, h, w), rain._RAIN_LEVELS[level], generator, hr)
    return (1 - haze) * (1 - (1 - hr) * (1 - streaks)) + haze


def test_the_reference_blur_is_the_line_kernel_convolution():
    """The transcribed reference is the old recipe: its motion blur is the anti-aliased segment kernel."""
    g = _gen(0)
    x = (torch.rand(3, 1, 40, 9, generator=g) < 0.05).double() * torch.rand(3, 1, 40, 9, generator=g).double()
    length = torch.tensor([1.0, 7.3, 20.6], dtype=torch.float64)
    ours = _old_motion_blur_vertical(x, length)
    for i, ell in enumerate(length.tolist()):
        t = torch.arange(-12, 13, dtype=torch.float64)
        kernel = (ell / 2 + 0.5 - t.abs()).clamp(0, 1)
        ref = F.conv2d(x[i : i + 1], kernel.view(1, 1, -1, 1), padding=(12, 0))
        torch.testing.assert_close(ours[i : i + 1], ref, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- statistics


def _at_angle(params: D.RainParams, angle: float) -> D.RainParams:
    """``params`` with its angle pinned (the layers still spread around it)."""
    return D.RainParams(params.layers, params.density, params.length, (angle, angle), params.angle_spread,
                        params.width, params.brightness, params.haze)


def _orientation(s: torch.Tensor) -> float:
    """Dominant streak angle from vertical in degrees (structure tensor of the streak images, (N, 1, H, W))."""
    gx = s[..., 1:-1, 2:] - s[..., 1:-1, :-2]
    gy = s[..., 2:, 1:-1] - s[..., :-2, 1:-1]
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    # gradients are across the streak: their dominant direction is the streak's normal
    normal = 0.5 * math.atan2(2 * float(jxy), float(jxx - jyy))
    return -math.degrees(normal)  # streak direction (dx, dy) = (tan a, 1)


def _stats(fn, params, seeds, size=96):
    cover, mean, strong = [], [], []
    layers = []
    for s in seeds:
        streaks, _ = fn((4, size, size), params, _gen(s), torch.zeros(1))
        layers.append(streaks)
        cover.append((streaks > 0.05).float().mean())
        mean.append(streaks.mean())
        strong.append((streaks > 0.5).float().mean())
    return (torch.stack(cover).mean().item(), torch.stack(mean).mean().item(), torch.stack(strong).mean().item(),
            _orientation(torch.cat(layers)))


@pytest.mark.parametrize("level", ["light", "heavy"])
@pytest.mark.parametrize("angle", [0.0, 20.0, -20.0])
def test_sparse_rain_matches_the_dense_recipe_in_distribution(level, angle):
    params = _at_angle(rain._RAIN_LEVELS[level], angle)
    old = _stats(_old_rain_streaks, params, range(0, 12))
    new = _stats(D.rain_streaks, params, range(100, 112))
    # 48 images of 96 x 96: draw-to-draw spread of the means is ~2% (light) and <1% (heavy). Measured gaps: light
    # < 3%, heavy 1-5% (the new heavy streaks are a little fuller: Gaussian cross-section instead of tent x kernel)
    assert new[0] == pytest.approx(old[0], rel=0.08)  # coverage: streak > 0.05
    assert new[1] == pytest.approx(old[1], rel=0.08)  # mean intensity
    assert new[2] == pytest.approx(old[2], rel=0.12)  # strong-streak fraction (> 0.5)
    # the structure tensor of thin lines on a pixel grid overstates slanted angles (the old gives ~32 at 20 degrees
    # for light rain), so compare against the old recipe, and the sign against the requested angle
    assert new[3] == pytest.approx(old[3], abs=2.5)
    assert abs(new[3]) < 2 if angle == 0 else new[3] * angle > 0 and abs(new[3]) > 10


@pytest.mark.parametrize("level", ["light", "heavy", "mixed"])
def test_rain_is_deterministic_and_keeps_dtype_shape_and_range(level):
    for dtype in (torch.float32, torch.float64):
        hr = torch.rand(3, 3, 40, 56, generator=_gen(0), dtype=dtype)
        a = D.add_rain(hr, level, generator=_gen(5))
        assert a.shape == hr.shape and a.dtype == dtype
        assert torch.equal(a, D.add_rain(hr, level, generator=_gen(5)))
        assert not torch.equal(a, D.add_rain(hr, level, generator=_gen(6)))
        assert a.min() >= 0 and a.max() <= 1 and (a >= hr - 1e-6).all() and (a > hr + 0.1).any()
    streaks, haze = D.rain_streaks((2, 40, 56), D.RAIN_HEAVY, _gen(1), torch.zeros(1))
    assert streaks.shape == (2, 1, 40, 56) and haze.shape == (2, 1, 1, 1)
    assert streaks.min() >= 0 and streaks.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rain_runs_on_cuda_with_a_cuda_generator():
    hr = torch.rand(2, 3, 64, 64, device="cuda")
    g = lambda: torch.Generator(device="cuda").manual_seed(3)  # noqa: E731
    a = D.add_rain(hr, "mixed", generator=g())
    assert a.device.type == "cuda" and torch.equal(a, D.add_rain(hr, "mixed", generator=g()))
    assert a.min() >= 0 and a.max() <= 1 and (a >= hr - 1e-6).all()


if __name__ == "__main__":
    import time

    torch.set_num_threads(1)
    hr = torch.rand(4, 3, 192, 192, generator=_gen(0))
    for level in ("light", "heavy", "mixed"):
        times = {}
        for name, fn in (("old", _old_add_rain), ("new", D.add_rain)):
            g = _gen(1)
            fn(hr, level, g)
            runs = []
            for _ in range(10 if name == "old" else 40):
                t0 = time.perf_counter()
                fn(hr, level, g)
                runs.append(time.perf_counter() - t0)
            times[name] = sorted(runs)[len(runs) // 2] / 4 * 1e3  # median, per patch
        print(f"{level}: old {times['old']:.2f} ms/patch, new {times['new']:.3f} ms/patch "
              f"({times['old'] / times['new']:.0f}x), 192x192, batch 4, one thread")
