"""Inference: exact and seamless tiling, self-ensemble, image kinds (PIL, numpy 8/16-bit, tensors, gray, RGBA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import restore
from restore.inference import self_ensemble, tiled_forward


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


def test_tile_at_least_image_is_bit_identical(tiny_model):
    x = torch.rand(1, 3, 40, 50)
    with torch.no_grad():
        ref = tiny_model(x, "sr_x2")
    out = restore.restore_image(tiny_model, x, "sr_x2", tile=64, overlap=16)
    assert torch.equal(out, ref.clamp(0, 1))
    assert torch.equal(restore.restore_image(tiny_model, x, "sr_x2"), ref.clamp(0, 1))


def test_conv_only_model_tiled_equals_untiled():
    torch.manual_seed(0)
    net = torch.nn.Sequential(  # receptive field radius 2 (< the zero-weight margin of a 16 px overlap)
        torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(12, 12, 3, padding=1),
        torch.nn.PixelShuffle(2),
    )
    x = torch.rand(2, 3, 70, 93)
    with torch.no_grad():
        full = net(x)
        tiled = tiled_forward(net, x, scale=2, tile=32, overlap=16)
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max() < 1e-6


def test_tiles_never_exceed_tile_size():
    seen = []

    def fn(t):
        seen.append(tuple(t.shape[-2:]))
        return t

    x = torch.rand(1, 3, 200, 300)
    out = tiled_forward(fn, x, scale=1, tile=64, overlap=16, multiple=24)
    assert torch.allclose(out, x, atol=1e-6)  # identity blends back to the image
    assert max(max(s) for s in seen) <= 72 and len(seen) > 4


def test_transformer_tiling_is_close_and_seamless():
    torch.manual_seed(0)
    model = restore.create_model("edt_tiny", tasks=["sr_x2"]).eval()
    with torch.no_grad():  # make the transformer path matter: scale up the tail's output conv
        model.tails["sr_x2"].blocks[-2][0].weight.mul_(5)
    x = torch.rand(1, 3, 200, 300)
    with torch.no_grad():
        full = model(x, "sr_x2")
        tiled = restore.restore_image(model, x, "sr_x2", tile=64, overlap=16)
    assert psnr(tiled, full.clamp(0, 1)) >= 45
    err = (tiled - full.clamp(0, 1)).abs().mean(dim=(0, 1))  # (2H, 2W)
    # tiles are 72 px (3 windows) with stride 48: inner tile borders at multiples of 48 plus 72 (input px)
    border_cols = sorted({c for b in range(48, 300, 48) for c in (2 * b, 2 * (b + 24) - 1) if c < 600})
    band = torch.zeros(err.shape[1], dtype=torch.bool)
    for c in border_cols:
        band[max(c - 2, 0) : c + 3] = True
    assert err[:, band].mean() <= err[:, ~band].mean() * 1.5 + 1e-6


def test_self_ensemble_inverts_its_transforms():
    x = torch.rand(1, 3, 9, 14)
    torch.testing.assert_close(self_ensemble(lambda t: 2 * t, x), 2 * x)
    up = self_ensemble(lambda t: torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest"), x)
    assert up.shape == (1, 3, 18, 28)


def test_ensemble_runs_through_restore_image(tiny_model):
    x = torch.rand(1, 3, 20, 30)
    out = restore.restore_image(tiny_model, x, "sr_x2", ensemble=True)
    assert out.shape == (1, 3, 40, 60)


def test_pil_rgb_gray_rgba(tiny_model):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    out = restore.restore_image(tiny_model, rgb, "sr_x2")
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (60, 40)
    gray = restore.restore_image(tiny_model, rgb.convert("L"), "sr_x2")
    assert gray.mode == "L" and gray.size == (60, 40)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.full((20, 30), 77, np.uint8)))
    out = restore.restore_image(tiny_model, rgba, "denoise_g25")
    assert out.mode == "RGBA" and np.all(np.asarray(out)[..., 3] == 77)
    out = restore.restore_image(tiny_model, rgba, "sr_x2")
    assert out.mode == "RGBA" and out.size == (60, 40) and np.all(np.asarray(out)[..., 3] == 77)


def test_numpy_16bit_stays_16bit(tiny_model):
    arr = np.random.default_rng(1).integers(0, 65536, (16, 18, 3), dtype=np.uint16)
    out = restore.restore_image(tiny_model, arr, "denoise_g25")
    assert out.dtype == np.uint16 and out.shape == (16, 18, 3)
    assert len(np.unique(out)) > 256  # really 16-bit values, not 8-bit ones scaled up
    gray = restore.restore_image(tiny_model, arr[..., 0], "sr_x2")
    assert gray.dtype == np.uint16 and gray.shape == (32, 36)


def test_gray_is_mean_of_replicated_restoration(tiny_model):
    g = torch.rand(1, 1, 24, 24)
    out = restore.restore_image(tiny_model, g, "denoise_g25")
    with torch.no_grad():
        ref = tiny_model(g.expand(-1, 3, -1, -1), "denoise_g25").clamp(0, 1).mean(1, keepdim=True)
    assert out.shape == (1, 1, 24, 24)
    torch.testing.assert_close(out, ref)


def test_tensor_kinds(tiny_model):
    x = torch.rand(3, 10, 12)
    assert restore.restore_image(tiny_model, x, "sr_x2").shape == (3, 20, 24)
    u8 = (torch.rand(3, 10, 12) * 255).to(torch.uint8)
    out = restore.restore_image(tiny_model, u8, "sr_x2")
    assert out.dtype == torch.uint8


def test_bad_inputs(tiny_model):
    with pytest.raises(ValueError, match="sr_x2"):
        restore.restore_image(tiny_model, torch.rand(3, 8, 8), "sr_x4")
    with pytest.raises(ValueError, match="dtype"):
        restore.restore_image(tiny_model, np.zeros((8, 8, 3), np.int32), "sr_x2")
    with pytest.raises(TypeError):
        restore.restore_image(tiny_model, [1, 2, 3], "sr_x2")



def test_float_images_outside_unit_range_are_refused_not_clamped_to_white(tiny_model):
    x = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    for image in (x * 255, torch.from_numpy(x * 255).permute(2, 0, 1)):
        with pytest.raises(ValueError, match="divide by 255"):
            restore.restore_image(tiny_model, image, "sr_x2")
    with pytest.raises(ValueError, match="divide by 65535"):
        restore.restore_image(tiny_model, x * 65535, "sr_x2")
    with pytest.raises(ValueError, match="NaN"):
        restore.restore_image(tiny_model, np.full((8, 8, 3), np.nan, np.float32), "sr_x2")
    # another model's output overshooting [0, 1] a little is used as it is
    assert restore.restore_image(tiny_model, x * 1.05 - 0.02, "sr_x2").shape == (16, 16, 3)


def test_restore_image_keeps_training_mode(tiny_model):
    tiny_model.train()
    restore.restore_image(tiny_model, torch.rand(3, 8, 8), "sr_x2")
    assert tiny_model.training


def test_fit_memory_retries_in_half_size_tiles(tiny_model, monkeypatch):
    """``fit_memory=True``: out of memory at the whole image, then at each tile above what fits, retried with half
    the tile that ran (one FallbackWarning per retry) until it fits; the output is that tile's. Without it, or where
    no smaller tile exists, the error comes through. Out-of-memory is injected above an input side (no GPU here);
    edt_tiny tiles are whole multiples of 24 px, so tile 260 runs 264 px tiles, 132 runs 144 and 72 runs 72."""
    from restore.inference import FallbackWarning
    from restore.model import RestorationModel

    forward, limit = RestorationModel.forward, {"side": 150}

    def small_inputs_only(self, x, *args, **kwargs):
        if max(x.shape[-2:]) > limit["side"]:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB ({tuple(x.shape)})")
        return forward(self, x, *args, **kwargs)

    x = torch.rand(1, 3, 150, 520)
    monkeypatch.setattr(RestorationModel, "forward", small_inputs_only)
    with pytest.raises(torch.OutOfMemoryError):
        restore.restore_image(tiny_model, x, "sr_x2", overlap=8)
    with pytest.warns(FallbackWarning) as caught:
        out = restore.restore_image(tiny_model, x, "sr_x2", overlap=8, fit_memory=True, name="big")
    assert [str(w.message) for w in caught] == ["big: out of memory at the whole image; retrying with tile 260",
                                                "big: out of memory at tile 260; retrying with tile 132"]
    monkeypatch.setattr(RestorationModel, "forward", forward)
    assert torch.equal(out, restore.restore_image(tiny_model, x, "sr_x2", tile=132, overlap=8))
    monkeypatch.setattr(RestorationModel, "forward", small_inputs_only)
    limit["side"] = 48  # not even the 72 px tiles fit, and 36 would be under MIN_RETRY_TILE
    with pytest.warns(FallbackWarning) as caught, pytest.raises(torch.OutOfMemoryError):
        restore.restore_image(tiny_model, x, "sr_x2", overlap=8, fit_memory=True, name="big")
    assert str(caught[-1].message) == "big: out of memory at tile 132; retrying with tile 72"


def test_fit_memory_from_a_tile_that_covers_the_image_halves_the_image(tiny_model, monkeypatch):
    """A tile at least the image's size runs the whole image: the retry halves the image's side (260 for 520 px),
    not the tile that never ran (1024 -> 516 -> 264 would rerun the whole image twice)."""
    from restore.inference import FallbackWarning
    from restore.model import RestorationModel

    forward = RestorationModel.forward

    def small_inputs_only(self, x, *args, **kwargs):
        if max(x.shape[-2:]) > 300:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(RestorationModel, "forward", small_inputs_only)
    with pytest.warns(FallbackWarning) as caught:
        restore.restore_image(tiny_model, torch.rand(1, 3, 150, 520), "sr_x2", tile=1024, overlap=8, fit_memory=True,
                              name="big")
    assert [str(w.message) for w in caught] == ["big: out of memory at tile 1024; retrying with tile 260"]


def test_fit_memory_reports_only_the_attempt_that_gave_the_output(tiny_model, monkeypatch):
    """bf16 overflows on the whole image and its float32 recompute runs out of memory; the tiled retry overflows
    nowhere: no overflow warning (it would describe an attempt whose output was thrown away)."""
    from restore.inference import FallbackWarning
    from restore.model import RestorationModel

    forward = RestorationModel.forward

    def overflow_then_oom(self, x, *args, **kwargs):
        if max(x.shape[-2:]) > 150:
            if torch.is_autocast_enabled("cpu"):
                return torch.full((x.shape[0], 3, x.shape[-2] * 2, x.shape[-1] * 2), float("inf"))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(RestorationModel, "forward", overflow_then_oom)
    with pytest.warns(FallbackWarning) as caught:
        restore.restore_image(tiny_model, torch.rand(1, 3, 150, 520), "sr_x2", overlap=8, dtype="bf16",
                              fit_memory=True, name="big")
    messages = [str(w.message) for w in caught]
    assert messages[0] == "big: out of memory at the whole image; retrying with tile 260"
    assert not any("overflowed" in m for m in messages), messages
