"""SwinIR family: numerical equality with the official architecture (spandrel's copy), variants, caches."""

from __future__ import annotations

import pytest
import torch

from restore.convert import convert_checkpoint
from restore.model import RestorationModel
from tests.restore.reference import max_diff, perturbed

SwinIR = pytest.importorskip("spandrel.architectures.SwinIR").SwinIR


SMALL = dict(embed_dim=24, depths=[2, 2], num_heads=[2, 3], window_size=4, mlp_ratio=2.0, img_size=16)


@pytest.mark.parametrize(
    "kw, task",
    [
        (dict(upsampler="pixelshuffle", upscale=2), "sr_x2"),
        (dict(upsampler="pixelshuffle", upscale=3), "sr_x3"),
        (dict(upsampler="pixelshuffledirect", upscale=4), "sr_x4"),
        (dict(upsampler="nearest+conv", upscale=4, resi_connection="3conv"), "sr_x4"),
        (dict(upsampler="", upscale=1, img_range=255.0), "denoise_g25"),
    ],
)
def test_equals_official_small(kw: dict, task: str) -> None:
    ref = perturbed(SwinIR(**SMALL, **kw))
    model = convert_checkpoint(ref.state_dict(), "swinir", tasks=[task], img_range=kw.get("img_range", 1.0))
    assert model.tasks == [task]
    for h, w in [(16, 16), (13, 18)]:  # 13x18 needs padding to the window multiple
        assert max_diff(ref, model, task, h, w) <= 1e-5


def test_equals_official_published_swinir_m() -> None:
    ref = perturbed(SwinIR(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=8, mlp_ratio=2.0,
                            upsampler="pixelshuffle", upscale=4, img_size=64))
    model = convert_checkpoint(ref.state_dict(), "swinir")
    assert model.variant == "swinir_m" and model.tasks == ["sr_x4"]
    assert max_diff(ref, model, "sr_x4", 16, 12) <= 1e-5  # 12 pads to 16


def test_equals_official_published_swinir_s() -> None:
    ref = perturbed(SwinIR(embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, window_size=8, mlp_ratio=2.0,
                            upsampler="pixelshuffledirect", upscale=2, img_size=64))
    model = convert_checkpoint(ref.state_dict(), "swinir")
    assert model.variant == "swinir_s"
    assert max_diff(ref, model, "sr_x2", 20, 24) <= 1e-5


@pytest.mark.parametrize("variant, task, published", [("swinir_s", "sr_x2", 0.897e6), ("swinir_m", "sr_x4", 11.9e6)])
def test_parameter_counts(variant: str, task: str, published: float) -> None:
    with torch.device("meta"):
        n = sum(p.numel() for p in RestorationModel(variant, tasks=[task]).parameters())
    # SwinIR-S: 897K published without the relative position tables; with them 0.91M (ANCHORS §1)
    assert abs(n - published) / published < 0.02, n


def test_derived_buffers_are_not_saved_and_masks_are_cached() -> None:
    model = RestorationModel("swinir", tasks=["sr_x2", "denoise_g15"],
                             arch=dict(embed_dim=12, depths=[2], num_heads=[2], window_size=4)).eval()
    keys = model.state_dict().keys()
    assert not [k for k in keys if "relative_position_index" in k or "attn_mask" in k]
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8), "sr_x2")
        model(torch.rand(1, 3, 7, 5), "denoise_g15")  # pads to 8x8: same mask
        model(torch.rand(1, 3, 12, 8), "sr_x2")
    assert len(model.body.shift_masks._masks) == 2


def test_scale_one_checkpoint_needs_a_task_name() -> None:
    ref = SwinIR(**SMALL, upsampler="", upscale=1)
    with pytest.raises(ValueError, match="denoise_g25"):
        convert_checkpoint(ref.state_dict(), "swinir")


def test_unknown_arch_argument_is_an_error() -> None:
    with pytest.raises(ValueError, match="embed_dimm"):
        RestorationModel("swinir_s", tasks=["sr_x2"], arch={"embed_dimm": 3})
