"""The streaming pipeline: shapes per task, rank splitting, exact resume, bad data skipped and counted."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data import DataStream, expand_urls, task_plan
from pretrain.decode import _decode, _decode_crop

TASKS = ("sr_x2", "sr_x4", "denoise_g25", "derain")


def stream(urls, **kw) -> DataStream:
    args = dict(mode="edt", batch_size=2, lr_patch=8, dn_patch=16, seed=3, rank=0, world_size=1, num_workers=0)
    args.update(kw)
    return DataStream(expand_urls(urls), kw.pop("tasks", TASKS), **{k: v for k, v in args.items() if k != "tasks"})


def test_edt_batches_have_every_task_with_its_patch(shard_set):
    data = next(stream(shard_set[0]))
    assert list(data.batches) == list(TASKS) and data.step == 0 and len(data.keys) == 8
    b = data.batches
    assert b["sr_x2"].gt.shape == (2, 3, 16, 16) and b["sr_x2"].lq.shape == (2, 3, 8, 8)
    assert b["sr_x4"].gt.shape == (2, 3, 32, 32) and b["sr_x4"].lq.shape == (2, 3, 8, 8)
    assert b["denoise_g25"].lq.shape == b["denoise_g25"].gt.shape == (2, 3, 16, 16)
    assert not torch.equal(b["denoise_g25"].lq, b["denoise_g25"].gt)
    assert 0 <= float(b["sr_x4"].gt.min()) and float(b["sr_x4"].gt.max()) <= 1


def test_ipt_mode_one_task_per_step_same_on_every_rank(shard_set):
    plans = [task_plan(TASKS, "ipt", 0, s) for s in range(40)]
    assert all(len(p) == 1 for p in plans) and len({p[0] for p in plans}) == 4
    a = stream(shard_set[0], mode="ipt", rank=0, world_size=2)
    b = stream(shard_set[0], mode="ipt", rank=1, world_size=2)
    for da, db in itertools.islice(zip(a, b), 4):
        assert list(da.batches) == list(db.batches) and len(da.batches) == 1


def test_ranks_read_different_data(shard_set):
    # within one epoch (each rank reads 3 of the 6 shards) the ranks' samples are disjoint; later epochs re-deal
    seen = []
    for rank in (0, 1):
        s = stream(shard_set[0], rank=rank, world_size=2)
        seen.append({k for d in itertools.islice(s, 1) for k in d.keys})
    assert not seen[0] & seen[1]
    # fewer shards than sub-streams: the split goes by record, still disjoint
    one = shard_set[1].shards[:1]
    keys = [{k for d in itertools.islice(stream(one, rank=r, world_size=2, batch_size=1, tasks=("sr_x2",)), 2)
             for k in d.keys} for r in (0, 1)]
    assert keys[0] and keys[1] and not keys[0] & keys[1]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_state_gives_the_same_batches(shard_set, workers):
    full = stream(shard_set[0], num_workers=workers)
    first = [next(full) for _ in range(3)]
    state = full.state_dict()
    rest = [next(full) for _ in range(4)]
    resumed = stream(shard_set[0], num_workers=workers, state=state)
    again = [next(resumed) for _ in range(4)]
    assert [d.step for d in again] == [3, 4, 5, 6]
    for x, y in zip(rest, again):
        assert x.keys == y.keys
        for t in TASKS:
            assert torch.equal(x.batches[t].lq, y.batches[t].lq) and torch.equal(x.batches[t].gt, y.batches[t].gt)
    assert first[0].keys != rest[0].keys


def test_bad_shards_and_small_images_are_skipped_and_counted(shard_set, bad_shards, tmp_path, caplog):
    urls = bad_shards + [str(tmp_path / "missing.tar"), shard_set[1].shards[0]]
    s = stream(urls, batch_size=1, tasks=("sr_x4",), lr_patch=16)  # HR 64: the 6x5 image and thin ones are small
    got = [next(s) for _ in range(12)]
    assert all(d.batches["sr_x4"].gt.shape == (1, 3, 64, 64) for d in got)
    skips = s.skips()
    assert skips["bad_shard"] >= 2 and skips["corrupt"] >= 1 and skips["small"] >= 1, skips
    assert "skipped (bad_shard" in caplog.text


def test_only_bad_data_raises_instead_of_spinning(bad_shards, tmp_path):
    s = stream([str(tmp_path / "missing.tar")], tasks=("sr_x2",))
    with pytest.raises(RuntimeError, match="without one usable sample"):
        next(s)


def test_decode_converts_every_mode_to_rgb():
    for mode in ("L", "CMYK", "P", "RGBA"):
        buf = io.BytesIO()
        im = Image.new("RGB", (9, 7), (250, 20, 30)).convert(mode)
        im.save(buf, format="JPEG" if mode in ("L", "CMYK") else "PNG")
        arr = _decode({"jpg": buf.getvalue()})
        assert arr.shape == (7, 9, 3) and arr.dtype.name == "uint8"
    with pytest.raises(ValueError, match="no image member"):
        _decode({"txt": b"x", "__key__": "k"})


def test_decode_converts_cmyk_through_its_profile_like_restore(tmp_path):
    """A CMYK training photo with a profile is decoded to the colours `load_image` (and a viewer) shows."""
    from tasks.io import load_image
    from tests.icc import cmyk_profile

    path = tmp_path / "print.jpg"
    inks = cmyk_profile(lambda c, m, y, k: (0, 0, 0) if k else (50, 60 * c, 40 * c))  # cyan prints red
    Image.new("CMYK", (9, 7), (255, 0, 0, 0)).save(path, icc_profile=inks)
    arr = _decode({"jpg": path.read_bytes()})
    assert np.array_equal(arr, np.asarray(load_image(path).image)) and arr[0, 0, 0] > 200 and arr[0, 0, 1] < 80


def test_decode_crop_equals_a_crop_of_the_whole_image():
    """The stream decodes RGB JPEGs with torchvision and crops before any full-image array: the same pixels and the
    same generator draws as PIL's whole image cropped afterwards; small images are skipped from their header."""
    from tests.shared import CORPUS

    files = sorted(CORPUS.glob("*.JPEG"))[:6]
    if not files:
        pytest.skip(f"the shared corpus {CORPUS} is missing")
    blobs = [f.read_bytes() for f in files]
    for mode in ("L", "CMYK"):  # the PIL path
        buf = io.BytesIO()
        Image.open(io.BytesIO(blobs[0])).convert(mode).save(buf, format="JPEG")
        blobs.append(buf.getvalue())
    for data in blobs:
        with Image.open(io.BytesIO(data)) as im:
            whole = np.asarray(im.convert("RGB"))
        g, ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        crop, hw = _decode_crop({"jpg": data}, 48, g)
        top = int(torch.randint(0, hw[0] - 48 + 1, (1,), generator=ref))
        left = int(torch.randint(0, hw[1] - 48 + 1, (1,), generator=ref))
        assert hw == whole.shape[:2]
        assert torch.equal(crop, torch.from_numpy(whole[top : top + 48, left : left + 48].copy()).permute(2, 0, 1))
        assert torch.equal(g.get_state(), ref.get_state())  # no other draw
        assert np.array_equal(_decode({"jpg": data}), whole)
    truncated = {"jpg": blobs[0][: len(blobs[0]) // 2]}
    with pytest.raises(Exception, match="truncated"):
        _decode_crop(truncated, 48, torch.Generator())
    assert _decode_crop(truncated, 10_000, torch.Generator())[0] is None  # too small: never decoded


def test_expand_urls_and_pipe(shard_set, tmp_path):
    folder = shard_set[1].shards[0].rsplit("/", 1)[0]
    assert expand_urls(folder) == sorted(shard_set[1].shards)
    assert expand_urls(shard_set[0]) == shard_set[1].shards
    assert expand_urls("pipe:cat a.tar :: https://h/x-{0..1}.tar::hf://datasets/o/r/a.tar") == [
        "pipe:cat a.tar", "https://h/x-0.tar", "https://h/x-1.tar", "hf://datasets/o/r/a.tar"]
    piped = stream([f"pipe:cat {shard_set[1].shards[0]}"], batch_size=1, tasks=("sr_x2",))
    assert next(piped).keys[0].startswith("pipe:cat")
    with pytest.raises(ValueError, match="no shards"):
        expand_urls("")
