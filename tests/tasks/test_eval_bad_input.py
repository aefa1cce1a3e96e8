"""Bad input to `restore eval` / `tasks.evaluate`: unreadable or tiny benchmark images, bad options, an unusable
``-o``, unknown names. Every benchmark here is built in tmp_path; nothing is read from the shared benchmarks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tasks
from tasks.errors import InputError
from tasks.evaluate import bicubic_baseline


def _png(path: Path, size: int = 24) -> None:
    rng = np.random.default_rng(len(path.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def root(tmp_path) -> Path:
    """A benchmark root: Good (3 images), Broken (3 good + a zero-byte and a truncated png), Tiny (one 1x1 image)."""
    r = tmp_path / "bench"
    for name in ("a", "b", "c"):
        _png(r / "Good" / "HR" / f"{name}.png")
        _png(r / "Broken" / "HR" / f"{name}.png")
    (r / "Broken" / "HR" / "zero.png").write_bytes(b"")
    full = (r / "Good" / "HR" / "a.png").read_bytes()
    (r / "Broken" / "HR" / "trunc.png").write_bytes(full[: len(full) // 2])
    _png(r / "Tiny" / "HR" / "ok.png")
    _png(r / "Tiny" / "HR" / "one.png", size=1)
    return r


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _eval(*args) -> int:
    from restore.cli import main  # the real entry point, with the exit-code policy

    return main(["eval", *map(str, args)])


@pytest.fixture(scope="module")
def corrupt_model(tmp_path_factory) -> Path:
    """A model folder whose weights are empty: loading it would fail, so an error about anything else proves that
    thing was checked before the model loads."""
    restore = pytest.importorskip("restore")
    d = tmp_path_factory.mktemp("m") / "model"
    restore.create_model("edt_tiny", tasks=["sr_x2"]).save_pretrained(d)
    (d / "model.safetensors").write_bytes(b"")
    return d


def test_unreadable_images_are_skipped_by_name(root, tmp_path, capsys):
    before = _digest(root)
    out = tmp_path / "res" / "r.json"
    assert _eval("--bicubic", "--task", "sr_x2", "--benchmark", "Broken", "Good", "--root", root, "-o", out) == 1
    captured = capsys.readouterr()
    assert "| Broken | " in captured.out and "(3 of 5 images)" in captured.out  # the table, marked partial
    good_row = next(line for line in captured.out.splitlines() if line.startswith("| Good |"))
    assert "of" not in good_row
    assert "2 benchmark image(s) skipped" in captured.err
    assert str(root / "Broken" / "HR" / "zero.png") in captured.err and "empty (0 bytes)" in captured.err
    assert str(root / "Broken" / "HR" / "trunc.png") in captured.err
    data = json.loads(out.read_text())
    assert sorted(s["name"] for s in data["results"][0]["skipped"]) == ["trunc", "zero"]
    assert len(data["results"][0]["per_image"]) == 3 and data["results"][1]["skipped"] == []
    assert _digest(root) == before


def test_api_raises_naming_the_file_unless_skipping(root):
    with pytest.raises(InputError, match="trunc.png"):  # the first by name
        tasks.evaluate(bicubic_baseline("sr_x2"), "Broken", "sr_x2", root=root)
    result = tasks.evaluate(bicubic_baseline("sr_x2"), "Broken", "sr_x2", root=root, skip_unreadable=True)
    assert [r["name"] for r in result.per_image] == ["a", "b", "c"]
    assert [s["name"] for s in result.skipped] == ["trunc", "zero"]
    with pytest.raises(InputError, match="limit"):
        tasks.evaluate(bicubic_baseline("sr_x2"), "Good", "sr_x2", root=root, limit=0)
    with pytest.raises(InputError, match="tpu9"):
        tasks.evaluate(bicubic_baseline("sr_x2"), "Good", "sr_x2", root=root, device="tpu9")


def test_too_small_image_names_the_file_and_the_minimum(root, capsys):
    with pytest.raises(InputError) as err:
        tasks.evaluate(bicubic_baseline("sr_x4"), "Tiny", "sr_x4", root=root)
    msg = str(err.value)
    assert str(root / "Tiny" / "HR" / "one.png") in msg and "1x1" in msg and "at least 20x20" in msg
    assert "imresize" not in msg
    assert _eval("--bicubic", "--task", "sr_x2", "--benchmark", "Tiny", "--root", root) == 1
    captured = capsys.readouterr()
    assert "one.png" in captured.err and "at least 16x16" in captured.err and "(1 of 2 images)" in captured.out


def test_all_images_unreadable_is_bad_input(tmp_path, capsys):
    (tmp_path / "b" / "Empty").mkdir(parents=True)
    (tmp_path / "b" / "Empty" / "x.png").write_bytes(b"")
    assert _eval("--bicubic", "--task", "sr_x2", "--benchmark", "Empty", "--root", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "no images were evaluated" in err and "x.png is empty" in err


def test_unknown_names_list_the_valid_ones(root, tmp_path, capsys):
    assert _eval("--bicubic", "--task", "sr_x2", "--benchmark", "Nope", "--root", root) == 2
    assert "available under" in (err := capsys.readouterr().err) and "Broken, Good, Tiny" in err
    assert _eval("--bicubic", "--task", "deblur", "--benchmark", "Good", "--root", root) == 2
    assert "sr_x<scale>" in capsys.readouterr().err
    (tmp_path / "f").write_text("x")
    assert _eval("--bicubic", "--task", "sr_x2", "--benchmark", "Good", "--root", tmp_path / "f") == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--limit", "0"), ("--limit", "-1"), ("--tile", "0"),
                                           ("--overlap", "-1"), ("--threads", "0"), ("--limit", "two")])
def test_numeric_options_are_refused_by_argparse(root, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        _eval("--bicubic", "--task", "sr_x2", "--benchmark", "Good", "--root", root, option, value)
    assert exc.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_output_and_device_are_checked_before_the_model_loads(root, tmp_path, corrupt_model, capsys):
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    cases = [
        (["-o", tmp_path / "a_folder"], "is a folder"),
        (["-o", tmp_path / "a_file" / "r.json"], "is a file, not a folder"),
        (["--device", "tpu9"], "not a torch device"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "no cuda device is usable"))
    for extra, words in cases:
        assert _eval("--model", corrupt_model, "--task", "sr_x2", "--benchmark", "Good", "--root", root, *extra) == 2
        err = capsys.readouterr().err
        assert words in err and "model.safetensors" not in err, err  # refused before loading the model
    assert (tmp_path / "a_file").read_text() == "x" and not list((tmp_path / "a_folder").iterdir())
    # and the model error itself names the weights file
    assert _eval("--model", corrupt_model, "--task", "sr_x2", "--benchmark", "Good", "--root", root) == 2
    assert "model.safetensors is empty" in capsys.readouterr().err
