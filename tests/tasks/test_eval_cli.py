"""tasks.cli.eval_main (``restore eval``): the table, the JSON file, ``--metric lpips`` and errors, with the bicubic
baseline."""

from __future__ import annotations

import json

import pytest

import tasks
from tasks.cli import eval_main
from tasks.evaluate import bicubic_baseline
from tasks.io import save_image


def test_bicubic_table_and_json(bench_root, tmp_path, capsys):
    out = tmp_path / "res" / "eval.json"
    rc = eval_main(["--bicubic", "--task", "sr_x2", "sr_x4", "--benchmark", "Set5", "--root", str(bench_root),
                    "--limit", "2", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| benchmark | sr_x2 | sr_x4 |" in text and "| Set5 |" in text
    data = json.loads(out.read_text())
    assert data["model"] == "bicubic" and len(data["results"]) == 2
    direct = tasks.evaluate(bicubic_baseline("sr_x4"), "Set5", "sr_x4", root=bench_root, limit=2)
    assert data["results"][1]["psnr"] == pytest.approx(direct.psnr)
    assert [r["name"] for r in data["results"][1]["per_image"]] == ["baby", "bird"]
    assert f"{direct.psnr:.2f} / {direct.ssim:.4f}" in text
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # the temporary file is gone


def test_saved_model_from_a_folder(bench_root, tmp_path, capsys):
    restore = pytest.importorskip("restore")
    if not hasattr(restore, "create_model") or not hasattr(restore, "RestorationModel"):
        pytest.skip("restore.create_model / RestorationModel are not available yet")
    model = restore.create_model("edt_tiny", tasks=["sr_x2", "denoise_g25"])
    model.save_pretrained(tmp_path / "model")
    images = tmp_path / "imgs"
    save_image(tasks.read_image(bench_root / "Set5" / "HR" / "bird.png")[:, :32, :40], images / "bird.png")
    from restore.cli import main as restore_main

    rc = restore_main(["eval", "--model", str(tmp_path / "model"), "--task", "sr_x2", "denoise_g25", "--benchmark",
                       str(images), "-o", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "r.json").read_text())
    assert [r["task"] for r in data["results"]] == ["sr_x2", "denoise_g25"]
    assert restore_main(["eval", "--model", str(tmp_path / "model"), "--task", "sr_x4", "--benchmark", str(images)]) == 2
    assert "no head for ['sr_x4']" in capsys.readouterr().err
    # the package below the model library has no loader of its own
    assert eval_main(["--model", str(tmp_path / "model"), "--task", "sr_x2", "--benchmark", str(images)]) == 2
    assert "restore eval --model" in capsys.readouterr().err


def test_errors_exit_2_with_a_message(bench_root, capsys):
    assert eval_main(["--bicubic", "--task", "sr_x2", "--benchmark", "Nope", "--root", str(bench_root)]) == 2
    assert "available under" in capsys.readouterr().err
    assert eval_main(["--bicubic", "--task", "deblur", "--benchmark", "Set5"]) == 2
    assert "unknown task" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_main(["--task", "sr_x2", "--benchmark", "Set5"])  # neither --model nor --bicubic
    assert eval_main(["--bicubic", "--task", "sr_x2", "--benchmark", "Set5", "--tile", "32"]) == 2
    assert "inference options of --model" in capsys.readouterr().err


def _bird(bench_root, folder):
    save_image(tasks.read_image(bench_root / "Set5" / "HR" / "bird.png")[:, :48, :40], folder / "bird.png")
    return folder


def test_metric_lpips_adds_a_score_to_cells_and_json(bench_root, tmp_path, capsys):
    pytest.importorskip("lpips")
    from tasks.perceptual import LPIPSMetric

    images, out = _bird(bench_root, tmp_path / "imgs"), tmp_path / "r.json"
    rc = eval_main(["--bicubic", "--task", "sr_x2", "--benchmark", str(images), "--metric", "lpips",
                    "--lpips-backbone", "random", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    direct = tasks.evaluate(bicubic_baseline("sr_x2"), images, "sr_x2", lpips=LPIPSMetric(backbone="random"))
    assert f"{direct.psnr:.2f} / {direct.ssim:.4f} / {direct.lpips:.4f}" in text and "LPIPS" in text
    result = json.loads(out.read_text())["results"][0]
    assert result["lpips"] == direct.lpips and result["psnr"] == direct.psnr
    assert result["protocol"]["lpips"] == {"net": "alex", "version": "0.1", "backbone": "random",
                                           "input": "RGB in [-1, 1]"}


def test_metric_lpips_without_backbone_weights_exits_2_before_scoring(bench_root, tmp_path, monkeypatch, capsys):
    pytest.importorskip("lpips")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    images, out = _bird(bench_root, tmp_path / "imgs"), tmp_path / "r.json"
    rc = eval_main(["--bicubic", "--task", "sr_x2", "--benchmark", str(images), "--metric", "lpips", "-o", str(out)])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "alexnet-owt-7be5be79.pth" in err and str(tmp_path / "torch" / "hub" / "checkpoints") in err
    assert len(err.strip().splitlines()) == 1
