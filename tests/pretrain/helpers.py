"""Helpers for the pretrain tests: tiny image trees from the shared corpus, the tiny-run overrides, the environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.shared import CORPUS

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

# Small patches so the whole suite stays fast on 2 cores; window (4, 8) with one head block makes 8 px LR patches
# and 16 px denoise/derain patches pad-free, and gives all tasks the same 8 px body features.
TINY_OVERRIDES = [
    'arch={"window_size": [4, 8], "head_depth": 1}', "lr_patch=8", "dn_patch=16", "batch_size=2",
    "num_workers=0", "warmup_steps=0", "lr=2e-3", "schedule=cosine", "min_lr=2e-4",
]


def _corpus_images(n: int):
    from PIL import Image

    files = sorted(CORPUS.glob("*.JPEG"))[:n]
    if len(files) < n:
        pytest.skip(f"the shared corpus {CORPUS} is missing (needs {n} JPEGs)")
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((72, 72))  # small images: decoding stays cheap, still above the largest test patch (32)
            yield f.stem, im


def make_tree(root: Path, n: int = 24, edge_cases: bool = True) -> dict[str, str]:
    """Class folders with ``n`` small JPEGs; with edge cases, returns {relative path: what it is}."""
    from PIL import Image

    kinds = {}
    for i, (stem, im) in enumerate(_corpus_images(n)):
        cls = f"n{i % 3:08d}"
        (root / cls).mkdir(parents=True, exist_ok=True)
        im.save(root / cls / f"{stem}.JPEG", quality=90)
        kinds[f"{cls}/{stem}.JPEG"] = "rgb"
    if edge_cases:
        base = next(_corpus_images(1))[1]
        base.convert("L").save(root / "n00000000" / "gray.JPEG")
        kinds["n00000000/gray.JPEG"] = "gray"
        base.convert("CMYK").save(root / "n00000001" / "cmyk.JPEG")
        kinds["n00000001/cmyk.JPEG"] = "cmyk"
        base.save(root / "n00000002" / "png_named.JPEG", format="PNG")
        kinds["n00000002/png_named.JPEG"] = "png"
        Image.new("RGB", (6, 5), (200, 10, 10)).save(root / "n00000000" / "tiny.JPEG")
        kinds["n00000000/tiny.JPEG"] = "tiny"
        (root / "n00000001" / "corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 4)
        kinds["n00000001/corrupt.JPEG"] = "corrupt"
    return kinds



def pretrain_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    env.pop("LOCAL_RANK", None)
    return env


def paired_folder(root: Path, n: int, side: int, scale: int) -> None:
    """A DIV2K-style folder: ``n`` random ``side`` px PNGs in ``HR/`` and their ``LR_bicubic/X<scale>`` pairs
    (every ``scale``-th pixel: registration is all the streams need)."""
    import torch
    from PIL import Image

    hr, lr = root / "HR", root / "LR_bicubic" / f"X{scale}"
    hr.mkdir(parents=True)
    lr.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        arr = (torch.rand(side, side, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(hr / f"{i}.png")
        Image.fromarray(arr[::scale, ::scale]).save(lr / f"{i}x{scale}.png")
