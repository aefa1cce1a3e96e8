"""The GPU script's sections (`tests/benchmarks/bench_gpu_sections.py`) run on CPU at tiny sizes: a first GPU run
must not be the first time they run at all. Their numbers are not checked here, only that they are produced."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from tests.pretrain.helpers import REPO
from tests.pretrain.test_gpu_paths import gloo  # noqa: F401 - fixture

sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
import bench_gpu_sections as sections  # noqa: E402

CPU = torch.device("cpu")


def test_engine_row_trains_a_recipe_through_the_platforms_engine(gloo):  # noqa: F811
    row = sections.engine_train_row("smoke", steps=2, peak=100.0, budget_s=5, device=CPU,
                                    overrides=('arch={"window_size": [4, 8], "head_depth": 1}', "lr_patch=8",
                                               "dn_patch=16", "batch_size=2", "precision=bf16"))
    assert row.ours > 0 and "ZeRO-2, bf16" in row.note and "MFU" in row.note


def test_agreement_and_tiled_rows():
    row = sections.agreement_row("edt_tiny", CPU, size=16)
    assert math.isfinite(row.ours) and row.ours > 20
    tiled = sections.tiled_row("edt_tiny", CPU, hw=(40, 56), tile=32)
    assert tiled.ours > 0 and "output 224x160" in tiled.note


def test_pipeline_rows_from_synthetic_jpegs(monkeypatch, tmp_path):
    """Where the shared corpus is absent (the GPU machine), the rows come from synthetic ImageNet-sized JPEGs."""
    monkeypatch.setattr(sections, "CORPUS", tmp_path / "absent")
    rows = sections.pipeline_rows(CPU, images=6, steps=1, batch=2, lr_patch=8, dn_patch=16)
    assert len(rows) == 2 * len(sections.PIPELINE_TASKS) + 3
    assert all(r.ours > 0 and r.reference > 0 for r in rows[:-2]) and "synthetic" in rows[0].note
    assert rows[-3].what.startswith("realsr_x4") and "CPU worker" in rows[-3].reference_name  # the blind pipeline
    assert rows[-2].ours == 0  # on a CPU device the crops are libjpeg's own
    assert rows[-1].ratio == pytest.approx(1.0)  # and the draws the workers'
