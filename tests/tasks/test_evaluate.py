"""tasks.evaluate: the published bicubic tables, the protocols per task, and clear errors."""

from __future__ import annotations

import pytest
import torch

import tasks
from tasks.errors import InputError
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


def _bird_and_gray(bench_root, folder):
    """A small RGB crop and a small grayscale crop (Set14's bridge.png) in ``folder``, no LR files."""
    save_image(tasks.read_image(bench_root / "Set14" / "HR" / "bridge.png")[:, :40, :36], folder / "gray.png")
    save_image(tasks.read_image(bench_root / "Set5" / "HR" / "bird.png")[:, :40, :36], folder / "rgb.png")


@pytest.mark.parametrize("bench, task", [("Set5", "sr_x4"), ("Set14", "sr_x3"), ("McMaster", "denoise_g25"),
                                         ("Rain100H", "derain")])
def test_benchmark_pairs_are_what_evaluate_scores(bench_root, bench, task):
    pairs = list(tasks.benchmark_pairs(bench, task, root=bench_root, limit=2))
    t = tasks.get_task(task)
    for _name, lq, gt in pairs:
        assert lq.dtype == gt.dtype == torch.float32 and lq.ndim == gt.ndim == 4 and lq.shape[:2] == gt.shape[:2]
        assert lq.shape[-2] * t.scale == gt.shape[-2] and lq.shape[-1] * t.scale == gt.shape[-1]
        assert 0 <= gt.min() and gt.max() <= 1
    baseline = bicubic_baseline(task)
    result = tasks.evaluate(baseline, bench, task, root=bench_root, limit=2)
    assert [r["name"] for r in result.per_image] == [name for name, _, _ in pairs]
    for r, (_name, lq, gt) in zip(result.per_image, pairs):
        assert r["psnr"] == tasks.psnr(baseline(lq), gt, **t.protocol).item()


def test_benchmark_pairs_use_stored_lr_and_check_limit(bench_root, tmp_path):
    name, lq, gt = next(tasks.benchmark_pairs("Set5", "sr_x2", root=bench_root))
    stored = tasks.read_image(bench_root / "Set5" / "LR_bicubic" / "X2" / f"{name}x2.png")
    assert torch.equal(lq[0], stored)
    _bird_and_gray(bench_root, tmp_path)
    gray = dict((n, (lq, gt)) for n, lq, gt in tasks.benchmark_pairs(tmp_path, "sr_x2"))["gray"]
    assert gray[0].shape[1] == gray[1].shape[1] == 1  # grayscale stays one channel
    with pytest.raises(InputError, match="limit"):
        tasks.benchmark_pairs("Set5", "sr_x2", root=bench_root, limit=0)


def test_plain_callables_are_tiled_and_ensembled_by_wrapping(bench_root):
    inference = pytest.importorskip("restore.inference")
    base = tasks.evaluate(bicubic_baseline("sr_x4"), "Set5", "sr_x4", root=bench_root, limit=1)
    with pytest.raises(InputError, match="restore.inference.restorer"):
        tasks.evaluate(bicubic_baseline("sr_x4"), "Set5", "sr_x4", root=bench_root, limit=1, tile=32)
    # bicubic is local: overlapping tiles reproduce it; it is flip/rotation symmetric up to the uint8 rounding of
    # ties, so the x8 ensemble nearly does (its uint8 outputs must be averaged as images, not as 0-255 floats)
    tiled = inference.restorer(bicubic_baseline("sr_x4"), "sr_x4", tile=32, overlap=16)
    assert tasks.evaluate(tiled, "Set5", "sr_x4", root=bench_root, limit=1).psnr == pytest.approx(base.psnr, abs=1e-6)
    ensembled = inference.restorer(bicubic_baseline("sr_x4"), "sr_x4", ensemble=True)
    assert tasks.evaluate(ensembled, "Set5", "sr_x4", root=bench_root, limit=1).psnr == pytest.approx(
        base.psnr, abs=0.02)


def test_model_restorer_replicates_gray_and_runs_restore_image(bench_root, tmp_path):
    restore = pytest.importorskip("restore")
    from restore.inference import restorer

    model = restore.create_model("edt_tiny", tasks=["sr_x2"]).eval()
    _bird_and_gray(bench_root, tmp_path)
    fn = restorer(model, "sr_x2")
    assert fn.lq_channels == 3
    result = tasks.evaluate(fn, tmp_path, "sr_x2")
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    for r, (name, lq, gt) in zip(result.per_image, tasks.benchmark_pairs(tmp_path, "sr_x2")):
        out = restore.restore_image(model, lq.expand(-1, 3, -1, -1), "sr_x2")
        out = (out.double() * w.double()).sum(1, keepdim=True).float() if name == "gray" else out
        assert r["psnr"] == pytest.approx(tasks.psnr(out, gt, **tasks.get_task("sr_x2").protocol).item(), abs=1e-6)
    with pytest.raises(ValueError, match="serves tasks"):
        restorer(model, "sr_x4")
