"""Safe half precision in `restore.restore_image` / ``restore run --dtype``: a tile whose fp16 output overflows is
recomputed in float32 (one `FallbackWarning` naming the image); a finite fp16 tile is kept."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from restore.cli import main
from restore.inference import FallbackWarning, restore_image


def _overflowing(model: nn.Module) -> nn.Module:
    """``model`` with its sr_x2 head's first conv weight scaled so that fp16 activations overflow (|x| > 65504),
    while float32 (range 3e38) still gives a finite output."""
    with torch.no_grad():
        model.heads["sr_x2"].blocks[0].weight.mul_(1e6)
    return model


def _fallbacks(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, FallbackWarning)]


@pytest.mark.parametrize("tile", [None, 24])
def test_fp16_overflow_is_recomputed_in_fp32_with_one_warning(tiny_model, tile):
    model = _overflowing(tiny_model)
    x = torch.rand(3, 40, 44, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):  # the overflow this test is about
        assert not torch.isfinite(model(x[None], "sr_x2")).all()
    ref = restore_image(model, x, "sr_x2", tile=tile, overlap=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = restore_image(model, x, "sr_x2", tile=tile, overlap=8, dtype="fp16")
    assert torch.equal(out, ref)  # every tile overflowed: every tile is the float32 one
    messages = _fallbacks(caught)
    assert len(messages) == 1 and messages[0].startswith("input: ")
    assert "float32" in messages[0]


def test_finite_half_precision_gives_no_warning(tiny_model):
    x = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(1))
    ref = restore_image(tiny_model, x, "sr_x2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = restore_image(tiny_model, x, "sr_x2", dtype="bf16")
    assert not _fallbacks(caught)
    assert not torch.equal(out, ref) and (out - ref).abs().max() < 0.05  # bf16 was really used, and kept


@pytest.mark.parametrize("tile", [None, 24])
def test_a_model_cast_to_bf16_takes_its_input_in_bf16(tiny_model, tile):
    """``model.to(torch.bfloat16)`` (weights stored in bf16) restores float and uint8 images; the float32 input
    was fed to bf16 weights and failed."""
    import copy

    x = torch.rand(3, 40, 44, generator=torch.Generator().manual_seed(2))
    ref = restore_image(tiny_model, x, "sr_x2", tile=tile, overlap=8)
    cast = copy.deepcopy(tiny_model).to(torch.bfloat16)
    out = restore_image(cast, x, "sr_x2", tile=tile, overlap=8)
    assert out.dtype == torch.float32 and not torch.equal(out, ref) and (out - ref).abs().max() < 0.05
    u8 = restore_image(cast, (x * 255).round().to(torch.uint8), "sr_x2", tile=tile, overlap=8)
    assert u8.dtype == torch.uint8 and u8.shape == (3, 80, 88)


class _Amplifier(nn.Module):
    """A 3x3 conv with weights near 1e4 (fp16 holds them; its sums over an image overflow 65504) and no bias,
    then a 1x1 conv with weights near 1e-4 (an output of about 1e2 in float32): fp16 overflows wherever the input
    is not zero, so a tile of zeros stays finite in fp16 and the others overflow. It has the `RestorationModel`
    calls `restore_image` uses, for one x1 task."""

    tasks = ["denoise_g25"]

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.down = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.up.weight.uniform_(0.5e4, 1e4)
            self.down.weight.uniform_(1e-4, 2e-4)

    def scale(self, task: str) -> int:
        return 1

    def pad_multiple(self, task: str) -> int:
        return 1

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.down(self.up(x))


def test_only_the_overflowing_tiles_are_recomputed():
    torch.manual_seed(0)
    model = _Amplifier()
    x = torch.zeros(3, 16, 64)
    x[..., 40:] = torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(2))
    ref = restore_image(model, x, "denoise_g25", tile=16, overlap=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = restore_image(model, x, "denoise_g25", tile=16, overlap=4, dtype="fp16", name="left-dark.png")
    (message,) = _fallbacks(caught)
    recomputed, total = (int(n) for n in message.split(" in ")[1].split(" tile")[0].split(" of "))
    assert message.startswith("left-dark.png: ") and 0 < recomputed < total
    assert torch.isfinite(out).all()
    assert torch.equal(out[..., 48:], ref[..., 48:])  # past the last fp16 tile's reach: float32 tiles only
    assert torch.allclose(out, ref, atol=1e-2)


def test_run_dtype_fp16_warns_once_naming_the_file(tiny_model, tmp_path, capsys):
    model_dir = tmp_path / "model"
    _overflowing(tiny_model).save_pretrained(model_dir)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 34, 3), dtype=np.uint8)).save(tmp_path / "pic.png")
    base = ["run", "--model", str(model_dir), "--task", "sr_x2", str(tmp_path / "pic.png"), "--no-progress",
            "--tile", "24", "--overlap", "8"]
    assert main([*base, "-o", str(tmp_path / "fp32")]) == 0
    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "fp16"), "--dtype", "fp16"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "pic.png" in lines[0] and "float32" in lines[0]
    fp16, fp32 = (np.asarray(Image.open(tmp_path / d / "pic.png")) for d in ("fp16", "fp32"))
    np.testing.assert_array_equal(fp16, fp32)  # every tile overflowed: the float32 image
