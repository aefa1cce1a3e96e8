"""tasks.degradations: determinism per generator seed, noise statistics, the seed-0 protocol, rain, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tasks
from tasks import degradations as D


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", tasks.list_tasks())
def test_every_task_degrades_deterministically(name):
    task = tasks.get_task(name)
    hr = torch.rand(2, 3, 48, 48, generator=_gen(0))
    a, b, c = task.degrade(hr, _gen(1)), task.degrade(hr, _gen(1)), task.degrade(hr, _gen(2))
    assert a.shape == (2, 3, 48 // task.scale, 48 // task.scale) and a.dtype == hr.dtype
    assert torch.equal(a, b)
    if task.kind != "sr":
        assert not torch.equal(a, c)
        assert not torch.equal(a, hr)


def test_bicubic_lr_is_quantised_like_the_official_files():
    hr8 = torch.randint(0, 256, (2, 3, 48, 48), generator=_gen(0), dtype=torch.uint8)
    lr = D.bicubic_downscale(hr8.float() / 255, 4)
    levels = lr * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    diff = (levels.round() - tasks.imresize(hr8, 1 / 4).float()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    assert not torch.allclose(D.bicubic_downscale(hr8.float() / 255, 4, quantize=False) * 255, levels, atol=1e-3)


def test_gaussian_noise_has_the_requested_std_and_is_not_clipped():
    hr = torch.full((4, 3, 128, 128), 0.5)
    for sigma in (15, 50):
        noisy = D.add_gaussian_noise(hr, sigma, generator=_gen(sigma))
        noise = noisy - hr
        assert noise.std().item() * 255 == pytest.approx(sigma, rel=0.01)
        assert abs(noise.mean().item()) * 255 < 0.2
    assert (D.add_gaussian_noise(torch.zeros(1, 3, 32, 32), 25, _gen(0)) < 0).any()  # no clipping


def test_per_image_sigma():
    hr = torch.zeros(2, 3, 128, 128)
    noisy = D.add_gaussian_noise(hr, [10, 40], generator=_gen(0))
    assert noisy[0].std().item() * 255 == pytest.approx(10, rel=0.02)
    assert noisy[1].std().item() * 255 == pytest.approx(40, rel=0.02)
    with pytest.raises(ValueError, match="one per image"):
        D.add_gaussian_noise(hr, [1, 2, 3])


def test_numpy_seed0_noise_matches_the_published_scripts():
    hr = torch.rand(3, 12, 10, generator=_gen(0))
    out = D.numpy_seed0_noise(hr, 25)
    # SwinIR main_test_swinir.py: img (H, W, C) BGR float32; np.random.seed(0); img + np.random.normal(0, s/255, shape)
    img_bgr = hr.numpy().transpose(1, 2, 0)[:, :, ::-1].astype(np.float32)
    np.random.seed(0)
    ref = img_bgr + np.random.normal(0, 25 / 255.0, img_bgr.shape)
    np.testing.assert_allclose(out.numpy(), ref[:, :, ::-1].transpose(2, 0, 1).astype(np.float32), rtol=0, atol=0)
    # Restormer order: RGB
    np.random.seed(0)
    ref_rgb = hr.numpy().transpose(1, 2, 0) + np.random.normal(0, 25 / 255.0, (12, 10, 3))
    np.testing.assert_allclose(D.numpy_seed0_noise(hr, 25, channel_order="rgb").numpy(),
                               ref_rgb.transpose(2, 0, 1).astype(np.float32), rtol=0, atol=0)
    assert torch.equal(D.numpy_seed0_noise(hr, 25), out)  # reset for every image


@pytest.mark.parametrize("level", ["light", "heavy", "mixed"])
def test_rain_is_deterministic_bounded_and_only_adds_light(level):
    hr = torch.rand(3, 3, 48, 48, generator=_gen(0))
    a = D.add_rain(hr, level, generator=_gen(5))
    assert torch.equal(a, D.add_rain(hr, level, generator=_gen(5)))
    assert not torch.equal(a, D.add_rain(hr, level, generator=_gen(6)))
    assert a.min() >= 0 and a.max() <= 1 and (a >= hr - 1e-6).all()


def test_heavy_rain_is_heavier_than_light_rain():
    hr = torch.full((16, 3, 64, 64), 0.2)
    light = (D.add_rain(hr, "light", _gen(0)) - hr).mean().item()
    heavy = (D.add_rain(hr, "heavy", _gen(0)) - hr).mean().item()
    assert 0 < light < heavy


def test_streaks_run_along_their_angle():
    params = D.RainParams(layers=1, density=(0.003, 0.003), length=(31, 31), angle=(0, 0), angle_spread=0,
                          width=0, brightness=(1, 1))
    streaks, _ = D.rain_streaks((1, 96, 96), params, _gen(0), torch.zeros(1))
    s = streaks[0, 0]
    vertical = (s[1:, :] * s[:-1, :]).sum()  # neighbours along a vertical streak are both lit
    horizontal = (s[:, 1:] * s[:, :-1]).sum()
    assert vertical > 5 * horizontal


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        D.add_gaussian_noise(torch.zeros(3, 8, 8), 25)
    with pytest.raises(TypeError, match="float"):
        D.bicubic_downscale(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="positive integer"):
        D.bicubic_downscale(torch.zeros(1, 3, 8, 8), 1.5)
    with pytest.raises(ValueError, match="rain level"):
        D.add_rain(torch.zeros(1, 3, 8, 8), "drizzle")
    with pytest.raises(ValueError, match="unknown task"):
        tasks.get_task("sr_x1")
    with pytest.raises(ValueError, match="denoise_g25"):
        tasks.get_task("deblur")
