"""``sr_any`` in training: the streams' batches (LR patch, query points, their HR values), one real engine step in
EDT and IPT mode, and a ``finetune --task sr_any`` run whose export answers ``model(x, task="sr_any", scale=2.5)``.

The engine is a real one-process gloo DeepSpeed engine on the tiny EDT (the fixtures of `test_gpu_paths`).
"""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.data import SR_ANY_QUERIES, ShardStream, expand_urls, task_plan
from tests.pretrain.test_gpu_paths import gloo, make_trainer, tiny_recipe  # noqa: F401 - fixture
from tests.shared import CORPUS, need

TASKS = ("sr_x2", "sr_any")
LR = 8  # the tiny runs' lr_patch: 8 px LR patches, 32 px HR crops, 64 queries


def _stream(shard_set, mode="edt", seed=0, start_step=0, tasks=TASKS):
    return ShardStream(expand_urls(shard_set[0]), tasks, mode=mode, batch_size=2, lr_patch=LR, dn_patch=16, seed=seed,
                       start_step=start_step)


def _check_sr_any_batch(b, batch: int, lr: int) -> None:
    q = min(SR_ANY_QUERIES, lr * lr)
    assert b.lq.shape == (batch, 3, lr, lr) and b.gt.shape == (batch, q, 3)
    assert b.coord.shape == b.cell.shape == (batch, q, 2) and b.mask is None
    assert b.coord.abs().max() < 1 and 0 <= float(b.gt.min()) and float(b.gt.max()) <= 1
    # one cell per patch, 2 / hr_size, with hr_size = round(lr * s) for a scale s in [1, 4]
    sizes = 2 / b.cell[:, :, 0]
    assert torch.allclose(b.cell, b.cell[:, :1].expand_as(b.cell))
    assert torch.allclose(sizes, sizes.round(), atol=1e-4) and lr <= sizes.min() and sizes.max() <= 4 * lr
    for i in range(batch):  # the queries are pixel centres of that HR crop, none twice
        n = int(sizes[i, 0].round())
        idx = ((b.coord[i] + 1) * n / 2 - 0.5).round()
        assert torch.allclose((2 * idx + 1) / n - 1, b.coord[i], atol=1e-5)
        assert len({(int(r), int(c)) for r, c in idx}) == q


def test_shard_stream_sr_any_batch_shapes_and_determinism(shard_set):
    first = [next(iter(_stream(shard_set))) for _ in range(2)]
    for data in first:
        _check_sr_any_batch(data.batches["sr_any"], 2, LR)
        assert data.batches["sr_any"].coord is not None and data.batches["sr_x2"].coord is None
    a, b = (d.batches["sr_any"] for d in first)
    for name in ("lq", "gt", "coord", "cell"):  # a function of (seed, step, rank)
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    other = next(iter(_stream(shard_set, seed=1))).batches["sr_any"]
    assert not torch.equal(other.coord, a.coord)
    # the fixed-scale task before it in the step is the batch a stream without sr_any serves
    alone = next(iter(_stream(shard_set, tasks=("sr_x2",)))).batches["sr_x2"]
    assert torch.equal(alone.lq, first[0].batches["sr_x2"].lq) and torch.equal(alone.gt, first[0].batches["sr_x2"].gt)


def test_finetune_streams_degrade_sr_any_on_the_fly(tmp_path):
    from finetune.data import PairStream, scan_training_data
    from tests.pretrain.helpers import paired_folder

    paired_folder(tmp_path, 2, 48, 4)
    data = scan_training_data([str(tmp_path)], ["sr_x4", "sr_any"], lr_patch=LR, dn_patch=16)
    assert all(p.lq is not None for p in data.pairs["sr_x4"])
    assert all(p.lq is None for p in data.pairs["sr_any"])  # its x4 fallback is no reason to train on stored X4
    kw = dict(batch_size=2, lr_patch=LR, dn_patch=16, seed=0)
    one, again = (next(PairStream(data.pairs, **kw)).batches["sr_any"] for _ in range(2))
    _check_sr_any_batch(one, 2, LR)
    assert torch.equal(one.coord, again.coord) and torch.equal(one.gt, again.gt)


@pytest.fixture(scope="module")
def sr_any_trainer(gloo):  # noqa: F811 - the imported fixture
    return make_trainer(tiny_recipe(tasks=TASKS, ema=0.0))


def _tails(trainer) -> dict[str, dict[str, torch.Tensor]]:
    return {t: {k: v.detach().clone() for k, v in trainer.module.tails[t].state_dict().items()} for t in TASKS}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("mode", ["edt", "ipt"])
def test_one_engine_step_trains_sr_any(sr_any_trainer, shard_set, mode):
    trainer = sr_any_trainer
    # IPT mode: the first step whose drawn task is sr_any (the single-task path, query_points)
    start = 0 if mode == "edt" else next(s for s in range(100) if task_plan(TASKS, "ipt", 0, s) == ["sr_any"])
    data = next(iter(_stream(shard_set, mode=mode, start_step=start)))
    assert sorted(data.batches) == (sorted(TASKS) if mode == "edt" else ["sr_any"])
    before = _tails(trainer)
    result = trainer.step([data])
    after = _tails(trainer)
    losses = {t: float(v) for t, v in result.task_losses.items()}
    assert set(losses) == set(data.batches) and all(math.isfinite(v) and v > 0 for v in losses.values()), losses
    assert math.isfinite(float(result.loss))
    for task in data.batches:
        assert _changed(before[task], after[task]), f"the {task} tail did not train in {mode} mode"


def test_card_lists_the_scored_scales():
    from finetune.export import _scales_text, eval_results, metric_key, sr_any_scales

    metrics = {metric_key("sr_any", "Set5"): 30.0, metric_key("sr_any", "Set5", scale=8): 24.0,
               metric_key("sr_any", "Set5", scale=2.5): 33.0}
    assert sr_any_scales(metrics) == {2.5: "sr_any x2.5", 4.0: "sr_any", 8.0: "sr_any x8"}
    text = _scales_text(metrics, ["sr_any"], ["Set5", "Set14"])
    rows = [line for line in text.splitlines() if line.startswith("| x")]
    assert rows == ["| x2.5 | 33.00 | n/a |", "| x4 | 30.00 | n/a |", "| x8 * | 24.00 | n/a |"]
    assert _scales_text({metric_key("sr_x2", "Set5"): 30.0}, ["sr_x2"], ["Set5"]) is None
    names = [r.task_name for r in eval_results(metrics, ["sr_any"], ["Set5"]) if r.metric_type == "psnr"]
    assert names == [f"Arbitrary-scale super-resolution x{s}" for s in ("2.5", "4", "8")]


def test_finetune_sr_any_smoke_exports_an_any_scale_model(gloo, tmp_path):  # noqa: F811 - the imported fixture
    from PIL import Image

    from finetune.cli import main
    from restore.model import RestorationModel

    folder, val = tmp_path / "train", tmp_path / "val"
    folder.mkdir()
    val.mkdir()
    for i, f in enumerate(sorted(need(CORPUS).glob("*.JPEG"))[:4]):
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((96, 96))
            im.save(folder / f"{f.stem}.png") if i else im.crop((0, 0, 48, 40)).save(val / "one.png")
    out = tmp_path / "ft"
    # the smoke recipe's network with a small implicit tail: validation decodes every output pixel
    arch = 'arch={"window_size": [4, 8], "head_depth": 1, "implicit_hidden": [32, 32], "implicit_dim": 32}'
    assert main(["--init", "none", "--task", "sr_any", "--train", str(folder), "--val", str(val), "--recipe", "smoke",
                 "--out", str(out), arch, "steps=2", "log_every=1", "ckpt_every=2", "val_every=2",
                 "batch_size=2"]) == 0
    model = RestorationModel.from_pretrained(str(out / "last")).eval()
    assert model.tasks == ["sr_any"] and model.arch["implicit_tail"] == "lte"
    with torch.no_grad():
        y = model(torch.rand(1, 3, 13, 10), task="sr_any", scale=2.5)
    assert y.shape == (1, 3, 33, 25) and torch.isfinite(y).all()
    card = (out / "last" / "README.md").read_text()
    assert "--task sr_any --scale 3" in card
    assert "## Scales" in card and "| x4 |" in card and "Arbitrary-scale super-resolution x4" in card
