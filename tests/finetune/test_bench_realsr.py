"""tests/benchmarks/bench_realsr.py at a toy budget (2 steps per arm, one image scored): every piece runs and lands
where the benchmark's table and the README picture say it does."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.finetune.helpers import BENCHMARKS, CORPUS, need

SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "benchmarks" / "bench_realsr.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_realsr", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_toy_budget_runs_every_arm_scores_both_benchmarks_and_draws_the_picture(tmp_path):
    need(CORPUS), need(BENCHMARKS / "Set14")
    bench = _script()
    picture = tmp_path / "before_after.png"
    table = bench.main(["--steps", "2", "--gan-steps", "2", "--init", "none", "--limit", "1",
                        "--picture", str(picture), "--keep", str(tmp_path / "runs")])

    gan = "realsr_x4 + gan_smoke (RANDOM VGG)"
    assert list(table) == ["bicubic", "realsr_x4", "sr_x4 (bicubic-only)", gan]
    for name, row in table.items():
        for bench_name in ("realsr", "clean"):
            cells = row[bench_name]
            assert 10 < float(cells["psnr"]) < 50 and 0 < float(cells["ssim"]) <= 1, (name, cells)
            assert cells["lpips"] == bench.NO_LPIPS or 0 <= float(cells["lpips"]) <= 1
        # a degraded input is harder than a clean one for every restorer
        assert float(row["realsr"]["psnr"]) < float(row["clean"]["psnr"]), name
    assert table[gan]["steps"] == "2+2 GAN"

    runs = tmp_path / "runs"
    stored = json.loads((runs / "lr" / "Set14-realsr_x4" / "degradation.json").read_text())
    assert (stored["task"], stored["seed"]) == ("realsr_x4", 0)
    assert len(list((runs / "lr" / "Set14-realsr_x4" / "LR_realsr" / "X4").glob("*x4.png"))) == 14
    for arm, task in (("realsr_x4", "realsr_x4"), ("sr_x4", "sr_x4"), ("gan", "realsr_x4")):
        config = json.loads((runs / arm / "last" / "config.json").read_text())
        assert config["tasks"] == [task] and config["variant"] == "edt_tiny", arm

    # two photo rows of [input, bicubic, realsr model, sr_x4 model], panels 4x the JPEG input, a 3-line caption
    with Image.open(runs / "picture" / "n01558993_robin_q30.jpg") as im:
        assert im.format == "JPEG" and im.size == (bench.INPUT, bench.INPUT)
    side = 4 * bench.INPUT
    with Image.open(picture) as im:
        assert im.format == "PNG" and im.size == (4 * side + 3 * 4, 14 + 2 * side + 4 + 4 + 3 * 12)
