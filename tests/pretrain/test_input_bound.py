"""The loop tells a run whose input pipeline starves the step: the share of each logged interval it waited for its
batches (``data_wait``), and one ``input_bound`` event with what to change.

The engine is the real one-process gloo DeepSpeed engine on the tiny EDT (the fixtures of `test_gpu_paths`).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import torch

from tests.pretrain.test_gpu_paths import Synthetic, fp32_trainer, gloo  # noqa: F401 - fixtures

SIZES = {"sr_x2": 8, "denoise_g25": 16}


class Slow(Synthetic):
    """`Synthetic` whose every batch takes ``delay`` seconds, like data-loader workers that cannot keep up."""

    def __init__(self, sizes, delay):
        super().__init__(sizes)
        self.delay = delay

    def __next__(self):
        time.sleep(self.delay)
        return super().__next__()


def _run(trainer, stream, run_dir, steps=4):
    from pretrain.loop import train_loop

    recipe = trainer.recipe
    trainer.recipe = replace(recipe, steps=steps, log_every=1, ckpt_every=100)
    try:
        train_loop(trainer, stream, run_dir=run_dir, rank=0, world_size=1, logger=None)
    finally:
        trainer.recipe = recipe
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_a_starved_step_is_named_once_with_what_to_change(fp32_trainer, tmp_path, capsys):
    records = _run(fp32_trainer, Slow(SIZES, delay=0.3), tmp_path)
    waits = [r["data_wait"] for r in records if r["event"] == "train"]
    assert len(waits) == 4 and all(0.5 < w <= 1.0 for w in waits), waits  # 0.3 s of sleep per step of a few ms
    events = [r for r in records if r["event"] == "input_bound"]
    assert len(events) == 1, events  # once, though every interval waited
    assert events[0]["step"] == 2  # the first interval (worker start-up) is not judged
    assert events[0]["data_wait"].endswith("%")
    assert "num_workers" in events[0]["hint"] and "degrade_on" not in events[0]["hint"]  # a CPU run: no GPU
    out = capsys.readouterr().out
    assert "[pretrain] input_bound: step=2" in out and " | data " in out


def test_a_fed_step_reports_a_small_wait_and_no_event(fp32_trainer, tmp_path):
    records = _run(fp32_trainer, Synthetic(SIZES), tmp_path)
    waits = [r["data_wait"] for r in records if r["event"] == "train"]
    assert len(waits) == 4 and all(0 <= w < 0.25 for w in waits), waits
    assert not [r for r in records if r["event"] == "input_bound"]


def test_the_hint_names_the_spare_cores_and_on_a_gpu_the_device_placements(monkeypatch):
    from pretrain.loop import input_hint
    from pretrain.recipes import smoke

    gpu = torch.device("cuda", 0)
    on_workers = replace(smoke(), num_workers=3, degrade_on="workers", decode_on="workers")
    hint = input_hint(on_workers, gpu, cores=96, local_ranks=8)
    assert hint.startswith("raise num_workers (now 3; 96 cores for 8 rank(s) here: up to 11 each)"), hint
    assert "degrade_on=device" in hint and "decode_on=device" in hint
    moved = replace(smoke(), num_workers=11, degrade_on="device", decode_on="device")
    assert input_hint(moved, gpu, cores=96, local_ranks=8).startswith("num_workers=11 already uses the 96 cores")
    assert "raise num_workers" not in input_hint(on_workers, torch.device("cpu"), cores=4, local_ranks=1)
    monkeypatch.setenv("LOCAL_SIZE", "8")  # deepspeed's launcher
    assert "for 8 rank(s)" in input_hint(on_workers, gpu, cores=96)
    # auto on CUDA keeps the blind pipelines in the workers: moving them is still a way out
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    blind = replace(smoke(), num_workers=11, tasks=("sr_x2", "realsr_x4"), degrade_on="auto", decode_on="device")
    assert "degrade_on=device" not in input_hint(blind, gpu, cores=96, local_ranks=8)
    assert "degrade_on=device" in input_hint(replace(blind, decode_on="workers"), gpu, cores=96, local_ranks=8)
    assert "degrade_on=device" not in input_hint(replace(blind, tasks=("sr_x2",), decode_on="workers"), gpu,
                                                 cores=96, local_ranks=8)
