"""tasks.evaluate: the published bicubic tables, the protocols per task, and clear errors."""

from __future__ import annotations

import pytest
import torch

import tasks
from tasks.evaluate import bicubic_baseline, list_benchmarks
from tasks.io import save_image

# EDSR / RCAN papers, "Bicubic" rows: (PSNR, SSIM) at x2, x3, x4.
PUBLISHED_BICUBIC = {
    "Set5": [(33.66, 0.9299), (30.39, 0.8682), (28.42, 0.8104)],
    "Set14": [(30.24, 0.8688), (27.55, 0.7742), (26.00, 0.7027)],
    "B100": [(29.56, 0.8431), (27.21, 0.7385), (25.96, 0.6675)],
}


def _check_table(root, bench):
    for scale, (ref_psnr, ref_ssim) in zip((2, 3, 4), PUBLISHED_BICUBIC[bench]):
        task = f"sr_x{scale}"
        result = tasks.evaluate(bicubic_baseline(task), bench, task, root=root)
        assert result.protocol["lq"] == f"LR_bicubic/X{scale}"
        assert abs(result.psnr - ref_psnr) <= 0.02, f"{bench} x{scale}: {result.psnr:.4f} dB vs {ref_psnr}"
        assert abs(result.ssim - ref_ssim) <= 0.001, f"{bench} x{scale}: SSIM {result.ssim:.5f} vs {ref_ssim}"


@pytest.mark.parametrize("bench", ["Set5", "Set14"])
def test_bicubic_baseline_reproduces_published_table(bench_root, bench):
    _check_table(bench_root, bench)


@pytest.mark.slow
def test_bicubic_baseline_reproduces_published_table_b100(bench_root):
    _check_table(bench_root, "B100")


def test_gray_bridge_is_scored_on_its_own_channel(bench_root):
    result = tasks.evaluate(bicubic_baseline("sr_x2"), "Set14", "sr_x2", root=bench_root)
    bridge = next(r for r in result.per_image if r["name"] == "bridge")
    hr = tasks.read_image(bench_root / "Set14" / "HR" / "bridge.png", torch.uint8)[None]
    lr = tasks.read_image(bench_root / "Set14" / "LR_bicubic" / "X2" / "bridgex2.png", torch.uint8)[None]
    assert hr.shape[1] == 1
    sr = tasks.imresize(lr, 2)
    assert bridge["psnr"] == pytest.approx(tasks.psnr(sr, hr, crop_border=2).item())
    as_rgb = tasks.psnr(sr.expand(-1, 3, -1, -1), hr.expand(-1, 3, -1, -1), crop_border=2, y_channel=True).item()
    assert abs(as_rgb - bridge["psnr"]) > 0.5


def test_round_y_moves_results_slightly(bench_root):
    a = tasks.evaluate(bicubic_baseline("sr_x4"), "Set5", "sr_x4", root=bench_root)
    b = tasks.evaluate(bicubic_baseline("sr_x4"), "Set5", "sr_x4", root=bench_root, round_y=True)
    assert 0 < abs(a.psnr - b.psnr) < 0.05 and b.protocol["round_y"]


def test_any_folder_of_images_gets_imresize_lr(bench_root, tmp_path):
    # a plain folder (no HR/, no LR files) must give the same scores as the official LR: imresize is bit-exact
    for name in ("baby", "bird"):
        save_image(tasks.read_image(bench_root / "Set5" / "HR" / f"{name}.png"), tmp_path / f"{name}.png")
    ours = tasks.evaluate(bicubic_baseline("sr_x3"), tmp_path, "sr_x3")
    official = tasks.evaluate(bicubic_baseline("sr_x3"), "Set5", "sr_x3", root=bench_root, limit=2)
    assert ours.protocol["lq"] == "imresize"
    assert [r["psnr"] for r in ours.per_image] == [r["psnr"] for r in official.per_image]


def test_denoising_uses_seed0_noise_and_rgb(bench_root):
    result = tasks.evaluate(lambda lq: lq, "McMaster", "denoise_g50", root=bench_root, limit=2)
    assert result.protocol["y_channel"] is False and result.protocol["crop_border"] == 0
    hr = tasks.read_image(sorted((bench_root / "McMaster" / "HR").iterdir())[0])
    noisy = tasks.degradations.numpy_seed0_noise(hr, 50)
    assert result.per_image[0]["psnr"] == pytest.approx(tasks.psnr(noisy, hr).item())
    assert 13 < result.psnr < 16  # sigma 50 noise: about 14.2 dB after clipping


def test_deraining_uses_paired_folders(bench_root):
    result = tasks.evaluate(lambda lq: lq, "Rain100H", "derain", root=bench_root, limit=3)
    assert result.protocol["lq"] == "rainy/" and len(result.per_image) == 3
    assert 8 < result.psnr < 20


def test_restoration_model_goes_through_restore_image(bench_root, tmp_path):
    restore = pytest.importorskip("restore")
    if not hasattr(restore, "restore_image") or not hasattr(restore, "create_model"):
        pytest.skip("restore.restore_image / restore.create_model are not available yet")
    model = restore.create_model("edt_tiny", tasks=["sr_x2"]).eval()
    hr = tasks.read_image(bench_root / "Set14" / "HR" / "bridge.png")  # grayscale: replicated for the model
    save_image(hr[:, :40, :36], tmp_path / "gray.png")
    save_image(tasks.read_image(bench_root / "Set5" / "HR" / "bird.png")[:, :40, :36], tmp_path / "rgb.png")
    result = tasks.evaluate(model, tmp_path, "sr_x2", limit=2)
    assert [r["name"] for r in result.per_image] == ["gray", "rgb"] and result.psnr > 0


def test_root_from_environment(bench_root, monkeypatch, tmp_path):
    monkeypatch.setenv(tasks.evaluate.__globals__["ENV_VAR"], str(tmp_path))
    (tmp_path / "Mine").mkdir()
    assert list_benchmarks() == ["Mine"]
    monkeypatch.setenv(tasks.evaluate.__globals__["ENV_VAR"], str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="RESTORE_BENCHMARKS"):
        list_benchmarks()


def test_bad_inputs_are_reported(bench_root, tmp_path):
    with pytest.raises(ValueError, match="available under .*Set14"):
        tasks.evaluate(lambda x: x, "Set15", "sr_x2", root=bench_root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images in"):
        tasks.evaluate(lambda x: x, tmp_path / "empty", "sr_x2")
    with pytest.raises(ValueError, match=r"returned shape \(1, 3, \d+, \d+\).*expected \(1, 3, \d+, \d+\)"):
        tasks.evaluate(lambda x: x, "Set5", "sr_x2", root=bench_root, limit=1)  # forgot to upscale
    with pytest.raises(TypeError, match="callable"):
        tasks.evaluate(42, "Set5", "sr_x2", root=bench_root)
