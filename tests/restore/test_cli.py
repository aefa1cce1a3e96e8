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


def test_run_retries_in_smaller_tiles_when_the_device_runs_out_of_memory(model_dir, tmp_path, capsys, monkeypatch):
    """A GPU runs out of memory on a large image: `restore run` halves the tile (starting from the whole image)
    while that makes the tiles smaller, noting each retry, and writes what that tile gives; an image that fits no
    tile is skipped by name. Out-of-memory is injected for inputs above a size (no GPU here to fill); edt_tiny
    runs tiles of whole 192 px multiples, so 150 runs 192 px tiles and nothing smaller exists."""
    import torch

    from restore.model import RestorationModel

    forward, limit = RestorationModel.forward, {"side": 200}

    def small_inputs_only(self, x, *args, **kwargs):
        if max(x.shape[-2:]) > limit["side"]:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB ({tuple(x.shape)})")
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(RestorationModel, "forward", small_inputs_only)
    (tmp_path / "in").mkdir()
    _png(tmp_path / "in" / "big.png", size=(300, 260))
    out = tmp_path / "o"
    args = ["run", "--model", str(model_dir), "--task", "denoise_g25", str(tmp_path / "in"), "--overlap", "8",
            "--no-progress"]
    assert main([*args, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "big.png: out of memory at the whole image; retrying with tile 150" in err
    monkeypatch.setattr(RestorationModel, "forward", forward)
    assert main([*args, "-o", str(tmp_path / "ref"), "--tile", "150"]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "big.png")), np.asarray(Image.open(tmp_path / "ref" / "big.png")))
    monkeypatch.setattr(RestorationModel, "forward", small_inputs_only)
    limit["side"] = 100  # not even one 192 px tile fits
    assert main([*args, "-o", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.count("retrying") == 1 and "skipped" in err and "big.png" in err and "OutOfMemoryError" in err
    assert main([*args, "-o", str(tmp_path / "none2"), "--tile", "150"]) == 1  # already the smallest tiles
    assert "retrying" not in capsys.readouterr().err


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
