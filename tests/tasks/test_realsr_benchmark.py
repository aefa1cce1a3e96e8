"""tasks.blind_benchmark: a blind-degraded benchmark stored once (byte-identical per seed) and read by evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tasks
from tasks.blind_benchmark import main, make_blind_benchmark
from tasks.errors import InputError
from tasks.evaluate import bicubic_baseline


@pytest.fixture
def source(tmp_path):
    """Two small HR images, one RGB and one grayscale, sizes not multiples of 4."""
    g = torch.Generator().manual_seed(0)
    folder = tmp_path / "Tiny"
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 11, generator=g), size=(50, 45), mode="bicubic")
    tasks.save_image(smooth[0].clamp(0, 1), folder / "HR" / "colour.png")
    tasks.save_image(torch.rand(1, 42, 47, generator=g), folder / "HR" / "gray.png")
    return folder


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_lr(source, tmp_path):
    a = make_blind_benchmark(source, tmp_path / "a", "realsr_x4", seed=3)
    b = make_blind_benchmark(source, tmp_path / "b", "realsr_x4", seed=3)
    c = make_blind_benchmark(source, tmp_path / "c", "realsr_x4", seed=4)
    assert a.name == "Tiny-realsr_x4"
    files = _files(a)
    assert sorted(map(str, files)) == ["HR/colour.png", "HR/gray.png", "LR_realsr/X4/colourx4.png",
                                       "LR_realsr/X4/grayx4.png", "degradation.json"]
    assert files == _files(b)
    lr = Path("LR_realsr/X4/colourx4.png")
    assert _files(c)[lr] != files[lr]
    assert files[Path("HR/gray.png")] == (source / "HR" / "gray.png").read_bytes()


def test_evaluate_reads_the_stored_lr(source, tmp_path):
    made = make_blind_benchmark(source, tmp_path / "out", "realsr_x4", seed=5)
    pairs = {name: (lq, gt) for name, lq, gt in tasks.benchmark_pairs(made, "realsr_x4")}
    for name, (lq, gt) in pairs.items():
        stored = tasks.read_image(made / "LR_realsr" / "X4" / f"{name}x4.png")[None]
        assert torch.equal(lq, stored) and lq.shape[1] == gt.shape[1]
        assert gt.shape[-2:] == (lq.shape[-2] * 4, lq.shape[-1] * 4)
    assert pairs["gray"][0].shape[1] == 1
    result = tasks.evaluate(bicubic_baseline("realsr_x4"), made, "realsr_x4")
    assert result.protocol["lq"] == "LR_realsr/X4" and len(result.per_image) == 2


def test_unstored_benchmark_gets_the_seed0_files(source, tmp_path):
    # without LR_realsr the pairs are degraded on the fly with seed 0: the files the script stores with seed 0,
    # and not the bicubic LR a fixed-scale task would read
    made = make_blind_benchmark(source, tmp_path / "out", "realsr_x4")
    stored = {n: lq for n, lq, _ in tasks.benchmark_pairs(made, "realsr_x4")}
    on_the_fly = tasks.benchmark_pairs(source, "realsr_x4")
    fresh = {n: lq for n, lq, _ in on_the_fly}
    assert on_the_fly.sources == {"realsr_x4 seed 0 (made now)"}
    assert stored.keys() == fresh.keys() and all(torch.equal(stored[n], fresh[n]) for n in stored)
    bicubic = {n: lq for n, lq, _ in tasks.benchmark_pairs(source, "sr_x4")}
    assert not torch.equal(bicubic["colour"], fresh["colour"])


def test_bad_requests_are_refused(source, tmp_path, capsys):
    with pytest.raises(InputError, match="not a blind task"):
        make_blind_benchmark(source, tmp_path / "out", "sr_x4")
    with pytest.raises(InputError, match="inside the source benchmark"):
        make_blind_benchmark(source, source / "derived", "realsr_x4")
    assert not (source / "derived").exists()
    assert main([str(source), "--task", "realsr_x4", "-o", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "Tiny-realsr_x4" / "LR_realsr" / "X4" / "grayx4.png").is_file()
    assert main([str(source), "--task", "derain", "-o", str(tmp_path / "cli")]) == 2
    assert "not a blind task" in capsys.readouterr().err
