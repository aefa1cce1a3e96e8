"""Arbitrary-scale evaluation (``sr_any`` at any scale): the LIIF/LTE benchmark protocol with MATLAB bicubic LR."""

from __future__ import annotations

import json
import math

import pytest
import torch

import tasks
from tasks.cli import eval_main
from tasks.errors import InputError
from tasks.evaluate import bicubic_baseline
from tasks.io import save_image


def _folder(bench_root, folder):
    """Two odd-sized crops of Set5 (no LR files), so every scale needs its own HR crop."""
    for name, (h, w) in (("baby", (61, 53)), ("bird", (47, 58))):
        save_image(tasks.read_image(bench_root / "Set5" / "HR" / f"{name}.png")[:, :h, :w], folder / f"{name}.png")
    return folder


def test_integer_scale_is_scored_as_sr_x(bench_root):
    for s in (2, 3):
        fixed = tasks.evaluate(bicubic_baseline(f"sr_x{s}"), "Set5", f"sr_x{s}", root=bench_root, limit=2)
        any_ = tasks.evaluate(bicubic_baseline("sr_any", scale=s), "Set5", "sr_any", root=bench_root, limit=2,
                              scale=float(s))
        assert any_.per_image == fixed.per_image
        assert any_.protocol["crop_border"] == s and any_.protocol["lq"] == f"LR_bicubic/X{s}"
        assert any_.task == "sr_any" and any_.scale == s and any_.label == f"sr_any x{s}"


@pytest.mark.parametrize("scale", [2.5, 3.7])
def test_non_integer_scale_follows_the_protocol(bench_root, tmp_path, scale):
    folder = _folder(bench_root, tmp_path)
    result = tasks.evaluate(bicubic_baseline("sr_any", scale=scale), folder, "sr_any", scale=scale)
    crop = math.ceil(scale)
    assert result.protocol["crop_border"] == crop and result.protocol["y_channel"] is True
    for r, (name, lq, gt) in zip(result.per_image, tasks.benchmark_pairs(folder, "sr_any", scale=scale)):
        hr = tasks.read_image(folder / f"{name}.png", torch.uint8)[None]
        h_lr, w_lr = (int(n // scale) for n in hr.shape[-2:])  # LIIF: floor(side / scale)
        out = (math.ceil(h_lr * scale), math.ceil(w_lr * scale))  # MATLAB: ceil(scale * side)
        assert tuple(lq.shape[-2:]) == (h_lr, w_lr) and tuple(gt.shape[-2:]) == out
        assert torch.equal(tasks.io.to_uint8(gt), hr[..., : out[0], : out[1]])
        want_lq = tasks.imresize(hr[..., : out[0], : out[1]], size=(h_lr, w_lr))
        assert torch.equal(tasks.io.to_uint8(lq), want_lq)
        sr = tasks.imresize(want_lq, scale)
        assert r["psnr"] == tasks.psnr(sr, hr[..., : out[0], : out[1]], crop_border=crop, y_channel=True).item()


def test_psnr_falls_between_the_neighbouring_integer_scales(bench_root):
    scores = {s: tasks.evaluate(bicubic_baseline("sr_any", scale=s), "Set5", "sr_any", root=bench_root,
                                scale=s).psnr for s in (2, 2.5, 3)}
    assert scores[2] > scores[2.5] > scores[3]


def test_bad_scales_are_refused(bench_root, tmp_path):
    folder = _folder(bench_root, tmp_path)
    with pytest.raises(InputError, match="scale= is for task sr_any"):
        tasks.evaluate(bicubic_baseline("sr_x2"), folder, "sr_x2", scale=2)
    for bad in (1, 0.5, float("nan")):
        with pytest.raises(InputError, match="number > 1"):
            tasks.evaluate(bicubic_baseline("sr_any"), folder, "sr_any", scale=bad)
    with pytest.raises(InputError, match="too small"):
        tasks.evaluate(bicubic_baseline("sr_any", scale=20.5), folder, "sr_any", scale=20.5)


def test_model_is_asked_for_the_scale(bench_root, tmp_path):
    restore = pytest.importorskip("restore")
    folder = _folder(bench_root, tmp_path)
    torch.manual_seed(0)
    model = restore.create_model("edt_tiny", tasks=["sr_any"]).eval()
    for scale in (2.5, 3.0):
        result = tasks.evaluate(model, folder, "sr_any", scale=scale)
        crop = math.ceil(scale)
        for r, (_name, lq, gt) in zip(result.per_image, tasks.benchmark_pairs(folder, "sr_any", scale=scale)):
            out = restore.restore_image(model, lq, "sr_any", scale=scale)
            assert r["psnr"] == pytest.approx(tasks.psnr(out, gt, crop_border=crop, y_channel=True).item(), abs=1e-9)


def test_cli_one_column_per_scale(bench_root, tmp_path, capsys):
    folder = _folder(bench_root, tmp_path / "imgs")
    out = tmp_path / "r.json"
    rc = eval_main(["--bicubic", "--task", "sr_any", "--scale", "2", "2.5", "4", "--benchmark", str(folder),
                    "-o", str(out)])
    assert rc == 0
    assert "| benchmark | sr_any x2 | sr_any x2.5 | sr_any x4 |" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [r["scale"] for r in data["results"]] == [2.0, 2.5, 4.0]
    direct = tasks.evaluate(bicubic_baseline("sr_any", scale=2.5), folder, "sr_any", scale=2.5)
    assert data["results"][1]["psnr"] == direct.psnr
    assert eval_main(["--bicubic", "--task", "sr_x2", "--scale", "2", "--benchmark", str(folder)]) == 2
    assert "--scale is for --task sr_any" in capsys.readouterr().err
    assert eval_main(["--bicubic", "--task", "sr_any", "--scale", "0.5", "--benchmark", str(folder)]) == 2
    assert "number > 1" in capsys.readouterr().err


def test_cli_scores_a_saved_sr_any_model(bench_root, tmp_path, capsys):
    restore = pytest.importorskip("restore")
    from restore.cli import main as restore_main

    folder = _folder(bench_root, tmp_path / "imgs")
    restore.create_model("edt_tiny", tasks=["sr_any"]).save_pretrained(tmp_path / "model")
    rc = restore_main(["eval", "--model", str(tmp_path / "model"), "--task", "sr_any", "--scale", "2", "3.5",
                       "--benchmark", str(folder), "-o", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "r.json").read_text())
    assert [(r["task"], r["scale"]) for r in data["results"]] == [("sr_any", 2.0), ("sr_any", 3.5)]
