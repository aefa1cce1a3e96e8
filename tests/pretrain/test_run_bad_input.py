"""`pretrain run` with bad input: one line on stderr, exit 2, before the engine starts; no input touched, no folder
left.

Every input is built here in ``tmp_path`` (tiny images with numpy + PIL, shards with `pretrain.shards.build_shards`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrain.cli import main

SMALL = ["lr_patch=8", "dn_patch=16", "batch_size=2", "num_workers=0", "steps=2", "ckpt_every=2",
         'arch={"window_size": [4, 8], "head_depth": 1}', "tasks=sr_x2"]


def _images(folder: Path, n: int, side: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(side)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _shards(base: Path, side: int, n_images: int = 6) -> tuple[str, list[str]]:
    """(brace spec, shard paths) of ``n_images / 2`` shards of ``side`` px images."""
    from pretrain.shards import build_shards

    summary = build_shards(_images(base / "img", n_images, side), str(base / "shards" / "train-%06d.tar"),
                           maxcount=2, workers=1, progress=False)
    return summary.urls, list(summary.shards)


def _digest(paths: list[Path | str]) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[str, list[str]]:
    return _shards(tmp_path_factory.mktemp("good"), side=40)


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(["run", "--recipe", "smoke", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def test_brace_range_wider_than_the_shards_names_the_missing_ones(good, tmp_path, capsys):
    folder = Path(good[1][0]).parent
    before = _digest(good[1])
    code, err = _run(capsys, "--data", str(folder / "train-{000000..000009}.tar"), "--out", str(tmp_path / "run"),
                     *SMALL)
    assert code == 2, err
    assert "7 of 10 shards do not exist" in err and "train-000003.tar" in err and "and 4 more" in err
    assert "brace range" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists() and _digest(good[1]) == before


@pytest.mark.parametrize("spec, words", [
    ("nope-*.tar", "matches no file"),
    ("empty_dir", "holds no .tar files"),
])
def test_pattern_or_folder_with_no_shard(tmp_path, capsys, spec, words):
    (tmp_path / "empty_dir").mkdir()
    code, err = _run(capsys, "--data", str(tmp_path / spec), "--out", str(tmp_path / "run"), *SMALL)
    assert code == 2 and words in err and spec in err
    assert not (tmp_path / "run").exists()


def test_images_all_smaller_than_the_patch(tmp_path, capsys):
    spec, _ = _shards(tmp_path, side=12)
    code, err = _run(capsys, "--data", spec, "--out", str(tmp_path / "run"), *SMALL)  # sr_x2, lr_patch 8: 16 px
    assert code == 2
    assert "at least 16 px" in err and "largest image is 12x12" in err and "lr_patch" in err
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_or_under_a_file(good, tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    for out in (f, f / "run"):
        code, err = _run(capsys, "--data", good[0], "--out", str(out), *SMALL)
        assert code == 2 and str(f) in err, err
    assert f.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_out_parent(good, tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        code, err = _run(capsys, "--data", good[0], "--out", str(parent / "run"), *SMALL)
    finally:
        parent.chmod(0o755)
    assert code == 2 and "not writable" in err and str(parent) in err


def test_out_holding_the_users_files_is_refused(good, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, err = _run(capsys, "--data", good[0], "--out", str(out), *SMALL)
    assert code == 2 and "thesis.tex" in err and "not a training run" in err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_resume_that_is_not_a_checkpoint(good, tmp_path, capsys):
    fake = tmp_path / "checkpoints" / "step-3"
    fake.mkdir(parents=True)
    for resume, words in ((tmp_path / "nope", "no such folder"), (tmp_path, "not a step-N checkpoint"),
                          (fake, "not a step-N checkpoint")):
        code, err = _run(capsys, "--data", good[0], "--out", str(tmp_path / "run"), "--resume", str(resume), *SMALL)
        assert code == 2 and words in err and str(resume) in err, err
    (fake / "recipe.json").write_text("{}")
    code, err = _run(capsys, "--data", good[0], "--out", str(tmp_path / "run"), "--resume", str(fake), *SMALL)
    assert code == 2 and "COMPLETE" in err
    assert not (tmp_path / "run").exists()


def test_unknown_recipe_lists_the_valid_ones(good, capsys):
    assert main(["run", "--recipe", "smok", "--data", good[0]]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'smok'" in err and "smoke" in err and "edt_b" in err


@pytest.mark.parametrize("override, words", [
    ("steps=-1", "steps=-1 must be at least 1"),
    ("steps=abc", "steps='abc'"),
    ("lr=nan", "lr=nan must be a finite number"),
    ("lr=inf", "lr=inf must be a finite number"),
    ("stepz=10", "unknown recipe key 'stepz'"),
])
def test_bad_overrides(good, tmp_path, capsys, override, words):
    code, err = _run(capsys, "--data", good[0], "--out", str(tmp_path / "run"), *SMALL, override)
    assert code == 2 and words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_fewer_shards_than_sub_streams_warns_once_on_rank_0(good, caplog):
    """Three shards for 2 ranks x 2 workers: each sub-stream reads all of them; the warning says how many to build."""
    from pretrain.data import DataStream, expand_urls

    urls = expand_urls(good[0])
    kw = dict(mode="edt", batch_size=1, lr_patch=8, dn_patch=16, seed=0, num_workers=2)
    with caplog.at_level(logging.WARNING, logger="pretrain.data"):
        DataStream(urls, ("sr_x2",), rank=1, world_size=2, **kw)
        assert not caplog.records  # one warning per run: rank 0 gives it
        DataStream(urls, ("sr_x2",), rank=0, world_size=2, **kw)
        DataStream(urls, ("sr_x2",), rank=0, world_size=1, **{**kw, "num_workers": 0})  # 3 shards, 1 stream: fine
    (record,) = caplog.records
    assert "3 shard(s) for 2 rank(s) x 2 data-loader worker(s) = 4 sub-streams" in record.message
    assert "build at least 4 shards" in record.message
    # the warned-about layout still serves data: a rank of a 3-rank run, in-process, reads every shard
    stream = DataStream(urls, ("sr_x2",), rank=2, world_size=3, **{**kw, "num_workers": 0})
    assert next(stream).batches["sr_x2"].gt.shape == (1, 3, 16, 16)


def test_run_that_dies_before_its_first_checkpoint_leaves_no_folder(tmp_path, capsys):
    """Shards whose images are cut after the header pass the check, then fail to decode in the stream: exit 1."""
    import tarfile

    shard = tmp_path / "cut.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(3):
            buf = io.BytesIO()
            noise = np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)  # mostly scan data
            Image.fromarray(noise).save(buf, format="JPEG")
            data = buf.getvalue()[: len(buf.getvalue()) * 6 // 10]
            info = tarfile.TarInfo(f"{i:04d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    before = _digest([shard])
    out = tmp_path / "new" / "run"
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    code, err = _run(capsys, "--data", str(shard), "--out", str(out), *SMALL)
    assert code == 1 and "without one usable sample" in err, err
    assert not (tmp_path / "new").exists(), "a run that never checkpointed left its folder behind"
    assert _digest([shard]) == before


def test_the_program_destroys_its_process_group_before_exit(good, tmp_path):
    """The ``pretrain`` program (`pretrain.cli.entry`) destroys the process group once a run has finished: a gloo
    group left to interpreter exit can abort the process there (SIGABRT after "done", pytorch/pytorch#190489).
    In a subprocess: DeepSpeed keeps the groups of a destroyed one, so this process could not train again."""
    import subprocess
    import sys

    probe = (
        "import sys, torch.distributed as dist\n"
        "from pretrain.cli import entry\n"
        "try:\n    entry()\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, 'group alive' if dist.is_initialized() else 'group destroyed')\n"
    )
    args = ["run", "--recipe", "smoke", "--data", good[0], "--out", str(tmp_path / "run"), *SMALL]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, timeout=600,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exit 0 group destroyed" in done.stdout, done.stdout[-2000:]
    assert (tmp_path / "run" / "summary.json").exists()


def test_a_taken_master_port_is_one_line_or_another_port(good, tmp_path):
    """The rendezvous port is taken (another run holds it): a port the launcher or the user gave is bad input, one
    line and exit 2 with no folder left; a port the program picked itself (no launcher) is a race, and the run
    retries on another one. Both on gloo here; nccl's rendezvous is the same TCP store and goes through the same
    retry (`pretrain.launch._init_retrying`)."""
    import socket
    import subprocess
    import sys

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = str(holder.getsockname()[1])
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    env.pop("RESTORE_CHOSE_MASTER_PORT", None)
    root = Path(__file__).resolve().parents[2]

    def run(out: Path, **extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pretrain", "run", "--recipe", "smoke", "--data", good[0], "--out", str(out),
               *SMALL]
        return subprocess.run(cmd, capture_output=True, text=True, env={**env, **extra}, timeout=600, cwd=root)

    try:
        given = run(tmp_path / "given")
        assert given.returncode == 2, given.stderr[-2000:]
        last = given.stderr.strip().splitlines()[-1]
        assert f"MASTER_PORT={port} is already in use" in last and "--master_port" in last, given.stderr[-2000:]
        assert not (tmp_path / "given").exists()
        picked = run(tmp_path / "picked", RESTORE_CHOSE_MASTER_PORT="1")
        assert picked.returncode == 0, picked.stderr[-2000:]
        assert (tmp_path / "picked" / "summary.json").exists()
    finally:
        holder.close()
