"""`finetune` with bad input: unreadable images are skipped and named (as pretraining skips them), bad arguments exit
2 before training with one line naming the option, and a run that dies before its first checkpoint leaves nothing.

Every input is built here in ``tmp_path`` (tiny images with numpy + PIL, shards with `pretrain.shards.build_shards`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from finetune.cli import main
from finetune.data import PairStream, build_stream, scan_training_data

TINY = ["lr_patch=8", "batch_size=2", "steps=2", "ckpt_every=2", "log_every=1", "val_every=0"]


def _noise(side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def _good(folder: Path, n: int = 3, side: int = 40, ext: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"good{i}.{ext}" for i in range(n)]
    for i, p in enumerate(paths):
        Image.fromarray(_noise(side, i)).save(p)
    return paths


def _cut(path: Path, fmt: str, keep: float = 0.6) -> Path:
    """An image file cut to ``keep`` of its bytes (noise: the header is a small part of it)."""
    buf = io.BytesIO()
    Image.fromarray(_noise(40, 7)).save(buf, format=fmt)
    path.write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * keep)])
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_scan_names_each_unreadable_file_and_trains_on_the_rest(tmp_path, caplog):
    root = tmp_path / "train"
    good = _good(root)
    (root / "zero.png").write_bytes(b"")
    _cut(root / "cut.png", "PNG")
    (root / "text.jpg").write_text("not an image")
    late = _cut(root / "late.jpg", "JPEG")  # its header reads: the scan keeps it, training finds it out
    with caplog.at_level(logging.WARNING, logger="finetune.pairs"):
        data = scan_training_data([str(root)], ["sr_x2"], lr_patch=8, dn_patch=16)
    skipped = dict(data.skipped)
    assert sorted(Path(p).name for p in skipped) == ["cut.png", "text.jpg", "zero.png"]
    assert skipped[str(root / "zero.png")] == "empty file (0 bytes)"
    assert all(why for why in skipped.values())
    assert sorted(p.gt for p in data.pairs["sr_x2"]) == sorted(map(str, [*good, late]))
    assert sum("skipped" in r.message for r in caplog.records) == 3


def test_a_bad_file_of_a_pair_drops_that_pair_not_the_run(tmp_path):
    root = tmp_path / "div2k"
    hr = _good(root / "HR", n=2, side=32)
    lr_dir = root / "LR_bicubic" / "X2"
    lr_dir.mkdir(parents=True)
    Image.fromarray(_noise(16, 1)).save(lr_dir / "good1x2.png")
    (lr_dir / "good0x2.png").write_bytes(b"")
    data = scan_training_data([str(root)], ["sr_x2"], lr_patch=8, dn_patch=16)
    assert [(p.gt, p.lq) for p in data.pairs["sr_x2"]] == [(str(hr[1]), str(lr_dir / "good1x2.png"))]
    assert [Path(p).name for p, _ in data.skipped] == ["good0x2.png"]


def test_decode_failure_in_training_redraws_deterministically_and_resumes_exactly(tmp_path, caplog):
    root = tmp_path / "train"
    _good(root)
    _cut(root / "late.jpg", "JPEG")
    data = scan_training_data([str(root)], ["sr_x2"], lr_patch=8, dn_patch=16)
    kw = dict(batch_size=2, lr_patch=8, dn_patch=16, seed=0)
    first = PairStream(data.pairs, **kw)
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        steps = [next(first) for _ in range(6)]  # 12 draws over 4 files: late.jpg is met 3 times
    assert first.skips()["corrupt"] == 3 and list(first.bad_files) == [str(root / "late.jpg")]
    assert [r.message.count("late.jpg") for r in caplog.records] == [1], "one warning per file, naming it"
    assert not any("late.jpg" in k for s in steps for k in s.keys) and all(s.images == 2 for s in steps)
    saved = PairStream(data.pairs, **kw)
    for _ in range(3):
        next(saved)
    resumed = PairStream(data.pairs, **kw, state=json.loads(json.dumps(saved.state_dict())))  # through JSON
    again = [next(resumed) for _ in range(3)]
    assert resumed.state_dict() == first.state_dict()
    for a, b in zip(steps[3:], again):
        assert a.keys == b.keys and torch.equal(a.batches["sr_x2"].lq, b.batches["sr_x2"].lq)


def test_two_shard_specs_are_one_stream_over_both(tmp_path):
    """`--train a.tar b.tar`: both shards are read (they used to be joined by a space into one unreadable URL)."""
    from pretrain.shards import build_shards

    shards = []
    for name in ("a", "b"):
        _good(tmp_path / name, n=3, side=24)
        shards += build_shards(tmp_path / name, str(tmp_path / f"{name}-%02d.tar"), maxcount=10, workers=1,
                               progress=False).shards
    assert len(shards) == 2
    stream = build_stream([str(s) for s in shards], ["sr_x2"], batch_size=2, lr_patch=8, dn_patch=16, seed=0,
                          rank=0, world_size=1, num_workers=0)
    read = {k.rsplit(":", 1)[0] for _ in range(3) for k in next(stream).keys}  # 6 records: every one of both
    assert read == {str(s) for s in shards}


@pytest.fixture()
def train_dir(tmp_path) -> Path:
    _good(tmp_path / "train", n=2)
    return tmp_path / "train"


def _bench_root(tmp_path: Path) -> Path:
    (tmp_path / "bench" / "Tiny" / "HR").mkdir(parents=True)
    return tmp_path / "bench"


@pytest.mark.parametrize("case", ["init_missing", "init_not_a_model", "task_unknown", "val_missing", "out_file",
                                  "out_users_files", "val_limit_0", "val_limit_neg", "resume_not_ckpt", "recipe",
                                  "all_unreadable", "shard_range"])
def test_bad_arguments_exit_2_before_training(case, train_dir, tmp_path, capsys):
    out = tmp_path / "run"
    base = {"--init": "none", "--variant": "edt_tiny", "--task": "sr_x2", "--train": str(train_dir),
            "--recipe": "smoke", "--out": str(out)}
    expect = {
        "init_missing": ({"--init": str(tmp_path / "nope"), "--variant": None}, ["--init", "nope"]),
        "init_not_a_model": ({"--init": str(train_dir), "--variant": None}, ["--init", "neither a model"]),
        "task_unknown": ({"--task": "sr_xx"}, ["unknown task 'sr_xx'", "sr_x2", "denoise_g25"]),
        "val_missing": ({"--val": "Set55", "--benchmarks-root": str(_bench_root(tmp_path))},
                        ["'Set55'", "available", "Tiny"]),
        "out_file": ({"--out": str(train_dir / "good0.png")}, ["--out", "is a file"]),
        "out_users_files": ({"--out": str(train_dir)}, ["--out", "good0.png", "not a training run"]),
        "val_limit_0": ({"--val-limit": "0"}, ["--val-limit", "an integer >= 1"]),
        "val_limit_neg": ({"--val-limit": "-1"}, ["--val-limit", "an integer >= 1"]),
        "resume_not_ckpt": ({"--resume": str(train_dir)}, ["--resume", "not a step-N checkpoint"]),
        "recipe": ({"--recipe": "smok"}, ["unknown fine-tuning recipe 'smok'", "smoke"]),
        "all_unreadable": ({"--train": str(tmp_path / "bad")}, ["no readable training image", "zero.png",
                                                                 "empty file"]),
        "shard_range": ({"--train": str(tmp_path / "sh" / "train-{000000..000004}.tar")},
                        ["5 of 5 shards do not exist", "train-000000.tar", "brace range"]),
    }
    changes, words = expect[case]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "zero.png").write_bytes(b"")
    (tmp_path / "bad" / "text.png").write_text("no")
    args = {**base, **changes}
    before = _digest(tmp_path)
    try:
        code = main([x for k, v in args.items() if v is not None for x in (k, v)])
    except SystemExit as exc:  # argparse's own errors (usage + one line) leave through SystemExit(2)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]  # argparse prints its usage first; our errors are one line
    assert all(w in last for w in words), last
    assert not out.exists(), "nothing is written for a refused run"
    assert _digest(tmp_path) == before, "an input was modified"


def test_mid_training_decode_failure_is_skipped_counted_and_named(tmp_path, capsys):
    """The one DeepSpeed run of this file (`smoke`, 2 steps): a scan-time skip and a training-time skip."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    root = tmp_path / "train"
    _good(root)
    (root / "zero.png").write_bytes(b"")
    _cut(root / "late.jpg", "JPEG")
    before = _digest(root)
    out = tmp_path / "run"
    code = main(["--init", "none", "--variant", "edt_tiny", "--task", "sr_x2", "--train", str(root),
                 "--recipe", "smoke", "--out", str(out), *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 2 and summary["skips"]["corrupt"] >= 1  # 4 draws over a 4-file epoch meet late.jpg
    assert {Path(s["path"]).name for s in summary["skipped"]} == {"zero.png", "late.jpg"}
    assert "skipped" in captured.out and "zero.png: empty file" in captured.out and "late.jpg" in captured.out
    assert (out / "last" / "model.safetensors").is_file()
    assert _digest(root) == before

    # the same data, every image now unreadable in training: the run dies before its first checkpoint (exit 1)
    # and takes what it wrote with it, leaving the folder the user made (empty) as it was
    bad = tmp_path / "all_late"
    bad.mkdir()
    for i in range(2):
        _cut(bad / f"late{i}.jpg", "JPEG")
    mine = tmp_path / "mine"
    mine.mkdir()
    code = main(["--init", "none", "--variant", "edt_tiny", "--task", "sr_x2", "--train", str(bad),
                 "--recipe", "smoke", "--out", str(mine), *TINY])
    err = capsys.readouterr().err
    assert code == 1 and "none of the 2 training images of sr_x2 decodes" in err, err
    assert mine.is_dir() and not any(mine.iterdir()), sorted(p.name for p in mine.iterdir())
