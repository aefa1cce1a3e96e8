"""Shared fixtures: a tiny ImageNet-style tree (with the edge cases) and one set of shards for the whole session."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from tests.pretrain.helpers import make_tree


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("imagenet") / "train"
    kinds = make_tree(root)
    return root, kinds


@pytest.fixture(scope="session")
def shard_set(image_tree, tmp_path_factory):
    """(brace URL of 6 good shards, the `ShardSummary`), built once per session."""
    from pretrain.shards import build_shards

    out = tmp_path_factory.mktemp("shards")
    summary = build_shards(image_tree[0], str(out / "train-%04d.tar"), maxcount=5, workers=2, progress=False)
    return summary.urls, summary


@pytest.fixture(scope="session")
def bad_shards(tmp_path_factory) -> list[str]:
    """A truncated tar and a tar with a garbage image member."""

    d = tmp_path_factory.mktemp("bad")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 120, 30)).save(good, format="JPEG")
    members = [("a.jpg", good.getvalue()), ("a.cls", b"0"), ("b.jpg", os.urandom(3000)), ("b.cls", b"1")]
    garbage = d / "garbage.tar"
    with tarfile.open(garbage, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w") as tar:
        for name, data in members[:2] * 1 + [("c.jpg", good.getvalue() * 3), ("c.cls", b"2")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    truncated = d / "truncated.tar"
    truncated.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2 + 100])
    return [str(truncated), str(garbage)]
