"""HAT family: numerical equality with the official architecture (spandrel's copy) and published sizes."""

from __future__ import annotations

import pytest
import torch

from restore.convert import convert_checkpoint
from restore.model import RestorationModel
from tests.restore.reference import max_diff, perturbed

HAT = pytest.importorskip("spandrel.architectures.HAT").HAT


@pytest.mark.parametrize(
    "kw, task, sizes",
    [
        (dict(window_size=4, upscale=2, img_size=16), "sr_x2", [(16, 16), (13, 18)]),
        (dict(window_size=8, upscale=3, img_size=64, overlap_ratio=0.25), "sr_x3", [(16, 8), (9, 12)]),
        (dict(window_size=4, upscale=4, img_size=16, img_range=255.0), "sr_x4", [(12, 8)]),
    ],
)
def test_equals_official_small(kw: dict, task: str, sizes: list) -> None:
    ref = perturbed(HAT(embed_dim=24, depths=[2, 2], num_heads=[2, 3], compress_ratio=3, squeeze_factor=6,
                         mlp_ratio=2.0, **kw))
    model = convert_checkpoint(ref.state_dict(), "hat", img_range=kw.get("img_range", 1.0))
    assert model.tasks == [task]
    for h, w in sizes:
        assert max_diff(ref, model, task, h, w) <= 1e-5


def test_equals_official_published_hat_s() -> None:
    ref = perturbed(HAT(embed_dim=144, depths=[6] * 6, num_heads=[6] * 6, window_size=16, compress_ratio=24,
                         squeeze_factor=24, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2.0, upscale=4,
                         img_size=64))
    model = convert_checkpoint(ref.state_dict(), "hat")
    assert model.variant == "hat_s" and model.tasks == ["sr_x4"]
    assert max_diff(ref, model, "sr_x4", 16, 12) <= 1e-5  # 12 pads to 16


@pytest.mark.parametrize("variant, published", [("hat_s", 9.6e6), ("hat", 20.8e6), ("hat_l", 40.8e6)])
def test_parameter_counts_x4(variant: str, published: float) -> None:
    with torch.device("meta"):
        n = sum(p.numel() for p in RestorationModel(variant, tasks=["sr_x4"]).parameters())
    assert abs(n - published) / published < 0.02, n


def test_denoise_tail_and_multi_task_body() -> None:
    model = RestorationModel("hat", tasks=["sr_x2", "denoise_g25"],
                             arch=dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4, squeeze_factor=6)).eval()
    x = torch.rand(1, 3, 10, 6)
    with torch.no_grad():
        assert model(x, "sr_x2").shape == (1, 3, 20, 12)
        assert model(x, "denoise_g25").shape == (1, 3, 10, 6)
    assert not [k for k in model.state_dict() if "relative_position_index" in k]


def test_only_pixelshuffle_upsampler() -> None:
    with pytest.raises(ValueError, match="pixelshuffle"):
        RestorationModel("hat_s", tasks=["sr_x2"], arch={"upsampler": "pixelshuffledirect"})
