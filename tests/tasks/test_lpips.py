"""tasks.perceptual.LPIPSMetric: equal to the lpips package's own network, the missing-weights error, evaluate's
LPIPS column."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import tasks
from tasks.evaluate import bicubic_baseline
from tasks.perceptual import LPIPSMetric, backbone_weights_path

lpips = pytest.importorskip("lpips")


def _images(seed: int, shape=(2, 3, 64, 72)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g)
    return a, (a + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)


def _reference(net: str, pnet_rand: bool, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The package itself on the uint8 levels we score, mapped to [-1, 1] by its own ``normalize=True``."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision on the package's `pretrained=`
        ref = lpips.LPIPS(pretrained=True, net=net, pnet_rand=pnet_rand, verbose=False)
    with torch.no_grad():
        return ref(tasks.io.to_uint8(a).float() / 255, tasks.io.to_uint8(b).float() / 255, normalize=True).flatten()


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_random_backbone_equals_the_package(net):
    a, b = _images(1)
    ours = LPIPSMetric(net, backbone="random")(a, b)
    assert ours.shape == (2,) and (ours > 0).all()
    torch.testing.assert_close(ours, _reference(net, True, a, b).double(), atol=1e-6, rtol=0)


def test_imagenet_backbone_is_read_from_the_hub_cache_like_the_package(tmp_path, monkeypatch):
    # a stand-in ImageNet file under torchvision's name: the package loads it through torchvision (which finds it
    # cached and does not download); ours reads the same tensors with weights_only=True
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torchvision

    torch.manual_seed(7)
    path = backbone_weights_path("alex")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), path)
    a, b = _images(2, (1, 3, 48, 48))
    ours = LPIPSMetric("alex")(a, b)
    torch.testing.assert_close(ours, _reference("alex", False, a, b).double(), atol=1e-6, rtol=0)
    assert (ours - LPIPSMetric("alex", backbone="random")(a, b)).abs().max() > 1e-4  # the file was used


def test_identical_images_score_zero_and_gray_is_replicated():
    metric = LPIPSMetric(backbone="random")
    a, b = _images(3, (1, 1, 40, 44))
    assert metric(a, a).item() == 0
    assert metric(a[0], b[0]).item() == pytest.approx(metric(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)).item())


def test_missing_backbone_names_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as err:
        LPIPSMetric("alex")
    message = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in message and str(folder) in message and "\n" not in message
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        LPIPSMetric("vgg")
    with pytest.raises(ValueError, match="valid: alex, vgg, squeeze"):
        LPIPSMetric("resnet")


def test_without_the_package_the_error_names_the_extra():
    script = ("import sys; sys.modules['lpips'] = None\n"
              "from tasks.perceptual import LPIPSMetric\n"
              "try:\n    LPIPSMetric(backbone='random')\nexcept ImportError as e:\n    print(e)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "pip install restore[metrics]" in run.stdout


def test_evaluate_adds_lpips_and_keeps_psnr_ssim(tmp_path):
    g = torch.Generator().manual_seed(4)
    for name in ("a", "b"):
        tasks.save_image(torch.rand(3, 40, 36, generator=g), tmp_path / f"{name}.png")
    tasks.save_image(torch.rand(1, 40, 36, generator=g), tmp_path / "gray.png")
    metric = LPIPSMetric(backbone="random")
    plain = tasks.evaluate(bicubic_baseline("sr_x2"), tmp_path, "sr_x2")
    with_lpips = tasks.evaluate(bicubic_baseline("sr_x2"), tmp_path, "sr_x2", lpips=metric)
    assert plain.lpips is None and "lpips" not in plain.per_image[0]
    assert [(r["psnr"], r["ssim"]) for r in with_lpips.per_image] == [(r["psnr"], r["ssim"]) for r in plain.per_image]
    for r, (_name, lq, gt) in zip(with_lpips.per_image, tasks.benchmark_pairs(tmp_path, "sr_x2")):
        assert r["lpips"] == metric(bicubic_baseline("sr_x2")(lq), gt).item() > 0
    assert with_lpips.lpips == pytest.approx(sum(r["lpips"] for r in with_lpips.per_image) / 3)
    assert with_lpips.protocol["lpips"]["backbone"] == "random"
