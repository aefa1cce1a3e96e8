"""tasks.psnr / tasks.ssim: the field's conventions, checked against closed forms and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from tasks import psnr, ssim
from tasks.metrics import rgb_to_y


def test_psnr_closed_form_and_identical_images():
    a = torch.zeros(1, 3, 8, 8)
    b = torch.full((1, 3, 8, 8), 5 / 255)  # every pixel off by 5 levels: mse = 25
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    assert math.isinf(psnr(a, a).item())


def test_quantisation_clamps_and_rounds_float_input():
    a = torch.full((1, 1, 4, 4), 0.5)
    # 1.7 clamps to 255 levels, -0.2 to 0: the same as the uint8 images
    b = torch.tensor([[1.7, -0.2], [0.5, 0.5]]).repeat(2, 2).view(1, 1, 4, 4)
    b8 = torch.tensor([[255, 0], [128, 128]], dtype=torch.uint8).repeat(2, 2).view(1, 1, 4, 4)
    assert psnr(a, b).item() == pytest.approx(psnr(a, b8).item(), abs=1e-12)


def test_y_channel_is_bt601_and_gray_uses_its_own_channel():
    rgb = torch.tensor([255.0, 0.0, 0.0]).view(3, 1, 1)
    assert rgb_to_y(rgb).item() == pytest.approx(16 + 65.481)
    assert rgb_to_y(torch.full((3, 1, 1), 255.0)).item() == pytest.approx(235.0)
    g = torch.Generator().manual_seed(0)
    gray = torch.rand(1, 1, 16, 16, generator=g)
    noisy = (gray + 0.05 * torch.randn(1, 1, 16, 16, generator=g)).clamp(0, 1)
    own = psnr(noisy, gray, y_channel=True).item()
    assert own == pytest.approx(psnr(noisy, gray).item())
    replicated = psnr(noisy.expand(1, 3, -1, -1), gray.expand(1, 3, -1, -1), y_channel=True).item()
    assert replicated > own + 1  # Y of a replicated image squeezes the range to 219/255: the trap we avoid


def test_round_y_rounds_luma():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 3, 24, 24, generator=g)
    ya = rgb_to_y(a * 255, round_y=True)
    assert torch.equal(ya, ya.round())
    assert (psnr(a, b, y_channel=True, round_y=True) != psnr(a, b, y_channel=True)).all()


def test_crop_border_and_batches():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 4, 3, 20, 20, generator=g)
    b[..., :2, :] = 1 - a[..., :2, :]  # damage only the border
    batch = psnr(a, b, crop_border=2)
    assert batch.shape == (4,)
    for i in range(4):
        assert batch[i].item() == pytest.approx(psnr(a[i], b[i], crop_border=2).item())
        assert psnr(a[i, :, 2:-2, 2:-2], b[i, :, 2:-2, 2:-2]).item() == pytest.approx(batch[i].item())


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image_gaussian_ssim(channels):
    g = torch.Generator().manual_seed(3)
    a = torch.rand(channels, 40, 50, generator=g)
    b = (a + 0.1 * torch.randn(channels, 40, 50, generator=g)).clamp(0, 1)
    a8, b8 = [(t * 255).round().numpy().astype(np.float64) for t in (a, b)]
    ref = np.mean([
        structural_similarity(a8[c], b8[c], data_range=255, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for c in range(channels)
    ])
    assert ssim(a, b).item() == pytest.approx(ref, abs=1e-9)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_batches_match_single_images():
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(2, 3, 3, 30, 30, generator=g)
    batch = ssim(a, b, crop_border=3, y_channel=True)
    assert batch.shape == (3,)
    for i in range(3):
        assert batch[i].item() == pytest.approx(ssim(a[i], b[i], crop_border=3, y_channel=True).item(), abs=1e-12)


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3"):
        psnr(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), crop_border=4)
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(3, 10, 40), torch.zeros(3, 10, 40))
    with pytest.raises(TypeError, match="float images"):
        psnr(torch.zeros(3, 8, 8, dtype=torch.int64), torch.zeros(3, 8, 8, dtype=torch.int64))
