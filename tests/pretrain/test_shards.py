"""`pretrain shards`: original bytes in, edge cases through, bad files reported, resumable and atomic."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrain.shards import build_shards, sample_key, shard_urls


def _members(shards: list[str]) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for path in shards:
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                assert ext not in samples.setdefault(key, {}), f"duplicate {m.name}"
                samples[key][ext] = tar.extractfile(m).read()
    return samples


def test_edge_cases_stored_and_bad_ones_reported(image_tree, shard_set):
    root, kinds = image_tree
    _urls, summary = shard_set
    samples = _members(summary.shards)
    good = [rel for rel, kind in kinds.items() if kind != "corrupt"]
    assert summary.samples == len(good) == len(samples)
    for rel in good:  # original bytes, key and class kept
        s = samples[sample_key(rel)]
        ext = "png" if kinds[rel] == "png" else "jpg"
        assert s[ext] == (root / rel).read_bytes()
        assert int(s["cls"]) == summary.classes.index(rel.split("/")[0])
    # grayscale and CMYK JPEGs stay as they are (the pipeline converts to RGB), the PNG keeps its real format
    mode = {kinds[rel]: Image.open(io.BytesIO(samples[sample_key(rel)].get("jpg") or samples[sample_key(rel)]["png"])).mode
            for rel in good if kinds[rel] != "rgb"}
    assert mode == {"gray": "L", "cmyk": "CMYK", "png": "RGB", "tiny": "RGB"}
    assert [s["path"] for s in summary.skipped] == ["n00000001/corrupt.JPEG"]
    assert "not a readable image" in summary.skipped[0]["reason"]
    on_disk = json.loads(Path(summary.shards[0]).with_name("train-summary.json").read_text())
    assert on_disk["samples"] == summary.samples and on_disk["skipped"] == summary.skipped


def test_shards_are_bounded_and_shuffled(shard_set):
    _urls, summary = shard_set
    counts = [len(_members([p])) for p in summary.shards]
    assert max(counts) <= 5 and len(summary.shards) == 6
    # classes are mixed inside shards (the list was shuffled before cutting)
    first = {k.split("__")[0] for k in _members(summary.shards[:1])}
    assert len(first) > 1


def test_min_size_and_byte_bound(image_tree, tmp_path):
    root, kinds = image_tree
    s = build_shards(root, str(tmp_path / "s-%03d.tar"), maxsize=20_000, workers=1, min_size=16, progress=False)
    reasons = {x["path"]: x["reason"] for x in s.skipped}
    assert "smaller than --min-size 16" in reasons["n00000000/tiny.JPEG"]
    assert all(os.path.getsize(p) <= 20_000 + 8192 for p in s.shards)  # bound + tar end-of-archive padding
    assert s.samples == len(kinds) - 2


def test_rerun_after_interruption_completes_without_duplicates(image_tree, tmp_path):
    root, _kinds = image_tree
    pattern = str(tmp_path / "train-%04d.tar")
    full = build_shards(root, pattern, maxcount=4, workers=2, progress=False)
    reference = _members(full.shards)
    # an interrupted run: a few shards never renamed into place, one writer's temp file left behind
    for p in full.shards[2:5]:
        os.remove(p)
    Path(full.shards[3] + ".tmp-12345").write_bytes(b"half a tar")
    again = build_shards(root, pattern, maxcount=4, workers=2, progress=False)
    assert again.reused_shards == len(full.shards) - 3
    assert _members(again.shards) == reference
    assert again.samples == full.samples and again.skipped == full.skipped
    assert not list(tmp_path.glob("*.tmp-*"))


def test_flat_folder_and_errors(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(flat / "a.b.png")
    s = build_shards(flat, str(tmp_path / "o" / "x-%02d.tar"), workers=1, progress=False)
    (sample,) = _members(s.shards).values()
    assert sample["cls"] == b"-1" and "png" in sample
    assert sample_key("n01/a.b.JPEG") == "n01__a_b"
    with pytest.raises(ValueError, match="integer field"):
        build_shards(flat, str(tmp_path / "no-pattern.tar"), progress=False)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_shards(tmp_path / "missing", str(tmp_path / "x-%d.tar"), progress=False)
    assert shard_urls("d/train-%06d.tar", 12) == "d/train-{000000..000011}.tar"
