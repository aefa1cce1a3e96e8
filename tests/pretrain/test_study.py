"""The pretraining study (`tests/benchmarks/bench_pretraining_study.py`) end to end at its ``--toy`` budget: every
arm pretrains, exports, fine-tunes and is scored on a held-out benchmark, and the table, JSON and plot hold them all.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.shared import CORPUS, need

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pretraining_study.py"


def _load_study():
    spec = importlib.util.spec_from_file_location("bench_pretraining_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_toy_study_writes_a_table_and_plot_with_every_arm(tmp_path):
    need(CORPUS)
    study_mod = _load_study()
    threads = torch.get_num_threads()
    try:
        study = study_mod.main(["--toy", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    arms = list(study_mod.ARMS)
    assert len(arms) == 6

    saved = json.loads((tmp_path / "study.json").read_text())
    assert list(saved["arms"]) == arms
    for arm, res in saved["arms"].items():
        assert (res["pretrain_tasks"] == []) == (arm == "scratch")
        for cell in saved["cells"]:
            runs = res["cells"][cell["name"]]["runs"]
            assert runs and all(math.isfinite(r["psnr"]) and r["psnr"] > 10 for r in runs)
            assert runs[0]["curve"][0][0] == 0  # the curve starts at the init's own score
    # the arms start from different weights: their step-0 scores are not all one number
    first = {round(res["cells"][c["name"]]["runs"][0]["curve"][0][1], 4)
             for res in saved["arms"].values() for c in saved["cells"]}
    assert len(first) > 1

    table = (tmp_path / "study.md").read_text().splitlines()
    rows = [line for line in table[2:] if line.startswith("| ")]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == arms
    assert all("±" in r for r in rows)

    with Image.open(tmp_path / "study.png") as im:
        assert im.format == "PNG" and im.width > 200
    assert study_mod.plot(saved, tmp_path / "again.png") == arms
    assert study["arms"].keys() == saved["arms"].keys()
