"""`restore run`: folders with a corrupt file, atomic outputs, exit codes; command dispatch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from restore.cli import main


@pytest.fixture
def model_dir(tiny_model, tmp_path):
    d = tmp_path / "model"
    tiny_model.save_pretrained(d)
    return d


def _png(path, size=(20, 16), mode="RGB"):
    rng = np.random.default_rng(len(str(path)))
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def test_run_folder_with_corrupt_file(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _png(src / "a.png")
    _png(src / "sub" / "b.jpg")
    _png(src / "gray.png", mode="L")
    full = (src / "a.png").read_bytes()
    (src / "truncated.png").write_bytes(full[: len(full) // 2])
    (src / "notes.png").write_text("not an image")
    out = tmp_path / "out"
    code = main(["run", "--model", str(model_dir), "--task", "sr_x2", str(src), "-o", str(out), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "truncated.png" in err and "notes.png" in err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "gray.png", "sub/b.png"]  # jpeg written as png; no temp or partial files
    assert Image.open(out / "a.png").size == (40, 32)
    assert Image.open(out / "gray.png").mode == "L"


def test_run_tiled_and_ok_exit(model_dir, tmp_path):
    _png(tmp_path / "x.png", size=(60, 50))
    out = tmp_path / "o"
    code = main(["run", "--model", str(model_dir), "--task", "denoise_g25", str(tmp_path / "x.png"), "-o", str(out),
                 "--tile", "48", "--overlap", "8", "--no-progress"])
    assert code == 0
    assert Image.open(out / "x.png").size == (60, 50)


def test_run_bad_task_and_missing_model(model_dir, tmp_path, capsys):
    _png(tmp_path / "x.png")
    assert main(["run", "--model", str(model_dir), "--task", "sr_x4", str(tmp_path / "x.png"), "-o",
                 str(tmp_path / "o")]) == 2
    assert "sr_x2" in capsys.readouterr().err
    assert main(["run", "--model", str(tmp_path / "nope"), "--task", "sr_x2", str(tmp_path / "x.png"), "-o",
                 str(tmp_path / "o")]) == 2


def test_unknown_command(capsys):
    assert main(["bogus"]) == 2
    assert "run" in capsys.readouterr().err
