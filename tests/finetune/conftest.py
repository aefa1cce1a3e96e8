"""Shared fixtures for the fine-tuning tests: one freshly pretrained `smoke` run (tiny EDT) and its export.

The pretraining run uses `pretrain`'s own code (shards, engine, loop, export) on a few shared-corpus images, so
fine-tuning is tested on exactly what a user gets from ``pretrain run --recipe smoke`` + ``pretrain export``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.finetune.helpers import CORPUS, need

# pretrain's smoke recipe at test size: 8 px LR patches, 16 px derain patches, the smoke architecture
PRETRAIN_OVERRIDES = ["tasks=sr_x2,sr_x4,derain", "lr_patch=8", "dn_patch=16", "batch_size=2", "num_workers=0",
                      "steps=16", "ckpt_every=16", "log_every=8", "warmup_steps=0", "ema=0"]


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread: the CI box has 2 cores shared by several jobs, and oversubscription is 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    """``{"run": run dir, "step": step-N dir, "export": exported folder}`` of a 16-step smoke pretraining."""
    from PIL import Image

    from pretrain.export import export_checkpoint
    from pretrain.recipes import get_recipe
    from pretrain.shards import build_shards
    from pretrain.train import run_pretraining

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    base = tmp_path_factory.mktemp("pretrained")
    images = base / "images"
    images.mkdir()
    for f in sorted(need(CORPUS).glob("*.JPEG"))[:12]:
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((64, 64))
            im.save(images / f"{f.stem}.png")
    shards = build_shards(images, str(base / "shards" / "train-%04d.tar"), maxcount=6, workers=1, progress=False)
    recipe = get_recipe("smoke", PRETRAIN_OVERRIDES)
    run = base / "run"
    run_pretraining(recipe, run_dir=run, data=shards.urls)
    export = export_checkpoint(run, base / "export")
    return {"run": run, "step": run / "checkpoints" / "step-16", "export": export}
