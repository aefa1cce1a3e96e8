"""`pretrain shards` under bad input: changed plans, interrupted runs, colliding names, a second writer, bad patterns.

Every build is read back with the real webdataset reader and compared, sample by sample, with the source bytes:
"no image lost or duplicated" is checked, not assumed.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import signal
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from pretrain.cli import main
from pretrain.shards import build_shards, sample_keys
from tasks.errors import InputError

# names whose sanitised stems collide (dup.jpg/dup.png, x.y.png/x_y.png), next to ordinary ones
COLLIDING = ("c0/dup.jpg", "c0/dup.png", "c0/x.y.png", "c0/x_y.png", "c1/a.b.c.JPEG", "c1/a_b.c.jpeg")


def _image_bytes(rng: np.random.Generator, fmt: str, side: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side + 3, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _add_images(root: Path, names: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for rel in names:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        fmt = "PNG" if rel.endswith(".png") else "JPEG"
        (root / rel).write_bytes(_image_bytes(rng, fmt))


def _source(root: Path, n: int = 24) -> Path:
    """``n`` ordinary images in two classes plus the colliding names: 30 images."""
    _add_images(root, [f"c{i % 2}/img{i:03d}.{'png' if i % 3 else 'jpg'}" for i in range(n)] + list(COLLIDING), 0)
    return root


def _expected(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_back(urls: str) -> dict[str, bytes]:
    """{original relative path: stored image bytes} over all shards, via webdataset; fails on any duplicate."""
    out: dict[str, bytes] = {}
    keys: set[str] = set()
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        assert sample["__key__"] not in keys, f"duplicate key {sample['__key__']}"
        keys.add(sample["__key__"])
        meta = json.loads(sample["json"])
        image = sample.get("jpg", sample.get("png"))
        assert meta["path"] not in out, f"{meta['path']} stored twice"
        assert int(sample["cls"]) == meta["cls"] == int(meta["path"][1])  # class folder cN -> class N
        out[meta["path"]] = image
    return out


def _assert_exact(summary, src: Path, out: Path) -> None:
    """The shards hold every source image once with its original bytes, and no shard of another plan remains."""
    assert _read_back(summary.urls) == _expected(src)
    on_disk = sorted(str(p) for p in out.glob("train-*.tar"))
    assert on_disk == sorted(summary.shards)
    assert not list(out.glob("*.tmp-*"))


def _build(src: Path, out: Path, **kw):
    kw.setdefault("maxcount", 4)
    return build_shards(src, str(out / "train-%04d.tar"), workers=2, progress=False, **kw)


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("train-*.tar")}


def test_rerun_after_each_plan_change_is_exact_or_refused(tmp_path):
    src, out = _source(tmp_path / "src"), tmp_path / "out"
    first = _build(src, out)
    _assert_exact(first, src, out)
    assert len(first.shards) == 8 and first.written_shards == 8

    # an interrupted run: the last shard missing, one truncated, a dead writer's temp file
    Path(first.shards[-1]).unlink()
    with open(first.shards[2], "r+b") as fh:
        fh.truncate(1000)
    Path(first.shards[5] + ".tmp-99999").write_bytes(b"half a tar")
    again = _build(src, out)
    assert (again.reused_shards, again.written_shards) == (6, 2)
    _assert_exact(again, src, out)

    # every kind of plan change is refused before anything is touched, naming what changed
    before = _snapshot(out)
    for kw, said in [
        ({"maxcount": 3}, "--maxcount was 4, now 3"),
        ({"maxsize": 5000}, "--maxsize was 1000000000, now 5000"),
        ({"seed": 1}, "--seed was 0, now 1"),
        ({"min_size": 8}, "--min-size was 0, now 8"),
    ]:
        with pytest.raises(InputError, match=said) as err:
            _build(src, out, **kw)
        assert "--force" in str(err.value)
    _add_images(src, ["c0/new1.png", "c1/new2.jpg", "c1/new3.png"], 1)
    with pytest.raises(InputError, match="3 images added to SRC since the first run"):
        _build(src, out)
    (src / "c0" / "img000.jpg").unlink()
    _add_images(src, ["c1/img001.png"], 2)  # same name, new bytes
    with pytest.raises(InputError, match=r"1 image removed from SRC.*1 image changed"):
        _build(src, out)
    assert _snapshot(out) == before

    # --force rebuilds from scratch for the new source and options: fewer shards, the stale ones removed
    forced = _build(src, out, maxcount=10, force=True)
    assert len(forced.shards) == 4 and len(forced.removed_stale) == 8
    _assert_exact(forced, src, out)
    assert _build(src, out, maxcount=10).reused_shards == 4  # and it is the plan from now on


def _run_cli(argv: list[str]) -> None:  # the body of a separate process: exit with the command's code
    os._exit(main(argv))


def _start_and_stop(argv: list[str], out: Path, sig: int) -> bool:
    """Run the command in a child, send ``sig`` once 2 shards are journalled; False if it finished first."""
    proc = multiprocessing.get_context("fork").Process(target=_run_cli, args=(argv,))
    proc.start()
    journal = out / ".train-shards-journal.jsonl"
    deadline = time.time() + 30
    while not (journal.exists() and journal.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, sig)
    proc.join(20)
    if (out / "train-summary.json").exists():
        return False
    assert proc.exitcode == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    return True


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_mid_build_then_rerun_is_exact(tmp_path, sig):
    src = _source(tmp_path / "src", n=34)  # 40 images, one per shard
    for attempt in range(3):  # a loaded machine may let the whole build finish before the signal lands
        out = tmp_path / f"out{attempt}"
        argv = ["shards", str(src), str(out / "train-%04d.tar"), "--maxcount", "1", "--workers", "2",
                "--no-progress"]
        if _start_and_stop(argv, out, sig):
            break
    else:
        pytest.fail("the build finished before the signal three times")
    # the killed run's workers die with it, and its lock dies with it: the rerun starts at once
    again = build_shards(src, str(out / "train-%04d.tar"), maxcount=1, workers=2, progress=False)
    assert 2 <= again.reused_shards < 40 and again.reused_shards + again.written_shards == 40
    _assert_exact(again, src, out)


def test_colliding_names_are_separate_samples_with_their_paths(tmp_path):
    src = tmp_path / "src"
    _add_images(src, list(COLLIDING), 0)
    summary = build_shards(src, str(tmp_path / "out" / "train-%04d.tar"), workers=1, progress=False)
    assert summary.samples == len(COLLIDING)
    assert _read_back(summary.urls) == _expected(src)
    keys = sample_keys(list(COLLIDING))
    assert len(set(keys.values())) == len(COLLIDING)
    assert keys == sample_keys(list(reversed(COLLIDING)))  # a key depends on the paths, not their order
    assert sample_keys(["c0/a.png", "c0/b.png"]) == {"c0/a.png": "c0__a", "c0/b.png": "c0__b"}  # no hash needed


def _hold_lock(lock: str, ready, tmp_file: str) -> None:
    from pretrain.shards import _writer_lock

    with _writer_lock(lock):
        Path(tmp_file).write_bytes(b"a shard being written")
        ready.set()
        time.sleep(60)


def test_second_writer_is_refused_and_a_dead_ones_lock_is_free(tmp_path, capsys):
    src, out = _source(tmp_path / "src", n=4), tmp_path / "out"
    out.mkdir()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    tmp_file = out / "train-0000.tar.tmp-424242"
    holder = ctx.Process(target=_hold_lock, args=(str(out / ".train-shards.lock"), ready, str(tmp_file)))
    holder.start()
    assert ready.wait(20)
    argv = [str(src), str(out / "train-%04d.tar"), "--no-progress", "--workers", "1"]
    assert main(["shards", *argv]) == 2
    err = capsys.readouterr().err
    assert f"PID {holder.pid}" in err and ".train-shards.lock" in err
    assert tmp_file.exists(), "the refused run deleted the running writer's temp file"
    os.kill(holder.pid, signal.SIGKILL)  # a dead holder: the kernel released its flock
    holder.join(10)
    assert main(["shards", *argv]) == 0
    assert not tmp_file.exists()  # now nobody writes it: cleaned up


@pytest.mark.parametrize("pattern, said", [
    ("train-%04d-%04d.tar", "2 '%' fields"),
    ("train.tar", "no integer field"),
    ("train-%s.tar", "no integer field"),
    ("train-{0000..0003}-%04d.tar", "brace"),
    ("part%d/train-%04d.tar", "'%' in its folder"),
])
def test_bad_patterns_are_refused_before_work(tmp_path, capsys, pattern, said):
    src = _source(tmp_path / "src", n=2)
    out = tmp_path / "out"
    assert main(["shards", str(src), str(out / pattern), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert said in err and pattern in err and "e.g. shards/train-%06d.tar" in err
    assert not out.exists()


def _main_as_nobody(argv: list[str], result) -> None:  # a forked child: root writes anywhere, "nobody" does not
    import contextlib

    os.setgid(65534)
    os.setuid(65534)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    result.put((code, err.getvalue()))


def test_unwritable_outputs_are_refused_before_work(tmp_path, capsys):
    src = _source(tmp_path / "src", n=2)
    (tmp_path / "file").write_text("not a folder")
    for pattern in ("file/train-%04d.tar", "file/sub/train-%04d.tar"):
        assert main(["shards", str(src), str(tmp_path / pattern), "--no-progress"]) == 2
        assert "is a file" in capsys.readouterr().err
    # a read-only folder; as root, the command runs as "nobody" in a child (chmod does not stop root)
    shared = Path(tempfile.mkdtemp(prefix="shards-ro-"))
    try:
        shared.chmod(0o755)
        (shared / "ro").mkdir(mode=0o555)
        (shared / "ro").chmod(0o555)
        argv = ["shards", str(src), str(shared / "ro" / "sub" / "train-%04d.tar"), "--no-progress"]
        if os.geteuid() == 0:
            ctx = multiprocessing.get_context("fork")
            result = ctx.Queue()
            child = ctx.Process(target=_main_as_nobody, args=(argv, result))
            child.start()
            code, err = result.get(timeout=30)
            child.join(10)
        else:
            code, err = main(argv), capsys.readouterr().err
        assert code == 2 and "not writable" in err and "fix its permissions" in err
        assert not (shared / "ro" / "sub").exists()
    finally:
        (shared / "ro").chmod(0o755)
        shutil.rmtree(shared)


@pytest.mark.parametrize("option", [["--maxcount", "0"], ["--maxcount", "-1"], ["--maxsize", "0"],
                                    ["--workers", "0"], ["--min-size", "-1"]])
def test_bad_numbers_are_refused_by_argparse(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        main(["shards", str(tmp_path), str(tmp_path / "t-%d.tar"), *option])
    assert exit_.value.code == 2 and option[0] in capsys.readouterr().err


def test_empty_all_bad_and_partly_bad_sources(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert main(["shards", str(empty), str(tmp_path / "o1" / "t-%d.tar"), "--no-progress"]) == 2
    assert "no image files" in (err := capsys.readouterr().err) and str(empty) in err

    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"b{i}.jpg").write_bytes(b"\xff\xd8 not really a JPEG" * 10)
    assert main(["shards", str(bad), str(tmp_path / "o2" / "t-%d.tar"), "--no-progress"]) == 2
    assert "none of the 3 images" in (err := capsys.readouterr().err) and str(bad) in err
    assert not list((tmp_path / "o2").glob("t-*.tar"))  # no empty shards left to starve a training run
    assert len(json.loads((tmp_path / "o2" / "t-summary.json").read_text())["skipped"]) == 3

    mixed = _source(tmp_path / "mixed", n=4)
    (mixed / "c0" / "broken.png").write_bytes(b"\x89PNG garbage")
    argv = ["shards", str(mixed), str(tmp_path / "o3" / "t-%d.tar"), "--no-progress"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "skipped c0/broken.png: not a readable image" in captured.out
    assert "1 unreadable image skipped" in captured.err
    assert "10 samples in 1 shards" in captured.out and "feed at most 1 ranks x workers" in captured.out
    assert main([*argv, "--allow-skips"]) == 0  # a rerun reuses the shard and still names the skip
    assert "skipped c0/broken.png" in capsys.readouterr().out
    # --min-size leaves images out on request: listed, but not an error
    assert main(["shards", str(mixed), str(tmp_path / "o4" / "t-%d.tar"), "--no-progress", "--min-size", "100",
                 "--allow-skips"]) == 2  # every image is below 100 px: nothing usable
    (mixed / "c0" / "broken.png").unlink()
    Image.fromarray(np.zeros((120, 130, 3), np.uint8)).save(mixed / "c1" / "big.png")
    assert main(["shards", str(mixed), str(tmp_path / "o5" / "t-%d.tar"), "--no-progress", "--min-size", "100"]) == 0
    assert "0 skipped as unreadable, 10 below --min-size" in capsys.readouterr().out


def test_older_shards_without_a_plan_are_not_trusted(tmp_path):
    src, out = _source(tmp_path / "src", n=4), tmp_path / "out"
    out.mkdir()
    with tarfile.open(out / "train-0000.tar", "w"):  # e.g. made by an older pretrain shards
        pass
    with pytest.raises(InputError, match="no plan file"):
        _build(src, out)
    _assert_exact(_build(src, out, force=True), src, out)
    (out / "train-plan.json").write_text("{ edited by hand")
    with pytest.raises(InputError, match="plan file .* is unreadable"):
        _build(src, out)
    _assert_exact(_build(src, out, force=True), src, out)
    assert _build(src, out).reused_shards == 3  # the forced run wrote a good plan
