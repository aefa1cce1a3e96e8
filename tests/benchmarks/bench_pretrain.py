"""Pretraining throughput: the data pipeline (samples/s per core, with degradation) and the smoke recipe's training.

    DS_ACCELERATOR=cpu .venv/bin/python tests/benchmarks/bench_pretrain.py [--images N] [--steps N] [--handover]

1. Shards are built from the shared ImageNet sample (real JPEG sizes). One core (``torch.set_num_threads(1)``,
   ``num_workers=0``) then runs the stream with the EDT-B recipe's patches (LR 48 for SR, 192 for denoise/derain):
   the reference is decode + crop + flips only (identity degradation), then the real degradations in the worker
   (``degrade_on=workers``), then the worker of ``degrade_on=device`` (decode + crop + flips, the batch left
   pending), then the worker of ``decode_on=device`` (shard reading, JPEG headers and the crop draws only) and,
   apart, the device's side (`pretrain.degrade.degrade_pending` on this CPU; on a GPU in `gpu.sh`).
   Ratios are against the reference in the same process.
2. The smoke recipe trains in this process as one DeepSpeed rank (ZeRO-2, fp32) on the same shards; the reference is
   a plain PyTorch AdamW loop on one pre-made batch (no data loading, no DeepSpeed).
3. ``--handover`` (alone): what the training process receives from one DataLoader worker under ``decode_on=device``,
   the JPEGs as bytes (the stream) against one tensor each (the reference, the previous way), and the worker's
   stream in this process (`handover_rates`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

os.environ.setdefault("DS_ACCELERATOR", "cpu")
import logging  # noqa: E402

import torch  # noqa: E402

logging.getLogger("pretrain.data").setLevel(logging.ERROR)  # small-image skips are expected at 192 px patches

CORPUS = Path(os.environ.get("RESTORE_SHARED", "/work/shared")) / "corpus" / "imagenet-sample"


def build(tmp: Path, n: int) -> list[str]:
    from pretrain.shards import build_shards

    src = tmp / "src" / "n00000000"
    src.mkdir(parents=True)
    for f in sorted(CORPUS.glob("*.JPEG"))[:n]:
        (src / f.name).symlink_to(f)
    t = time.perf_counter()
    s = build_shards(tmp / "src", str(tmp / "shards" / "train-%04d.tar"), maxcount=64, workers=1, progress=False)
    dt = time.perf_counter() - t
    print(f"shards: {s.samples} images, {s.bytes / 1e6:.1f} MB in {len(s.shards)} shards: "
          f"{s.samples / dt:.0f} images/s on 1 process (verify + copy)")
    return s.shards


WHERE = ("none", "workers", "device", "decode")


def _stream(urls: list[str], tasks: tuple[str, ...], where: str):
    """One worker's batch iterator with the degradation ``where`` (see `stream_rates`), warmed up."""
    from pretrain.data import ShardStream

    ds = ShardStream(urls, tasks, mode="edt", batch_size=4, lr_patch=48, dn_patch=192, seed=0,
                     degrade=where in ("workers", "none"), decode=where != "decode")
    if where == "none":
        for t in ds.task_objs:  # reference: the same pipeline with the degradation replaced by identity
            object.__setattr__(ds.task_objs[t], "degrade", lambda hr, generator=None: hr)
    it = iter(ds)
    next(it)  # warm-up: imports, first shard open
    return it


def stream_rates(urls: list[str], tasks: tuple[str, ...], wheres: tuple[str, ...], samples: int,
                 rounds: int = 6) -> dict[str, float]:
    """{where: samples/s} of one worker's stream (this process, one core) for each degradation placement ``where``:
    ``"workers"`` (degraded in the stream: ``degrade_on=workers``), ``"device"`` (left pending for the trainer's
    device: ``degrade_on=device``, so the worker decodes, crops and augments only), ``"decode"``
    (``decode_on=device``: the worker reads the shard, the headers and draws the crops; the device decodes and
    degrades) or ``"none"`` (the reference: the worker-side stream with each degradation replaced by identity).

    The settings are timed in turn, ``samples / rounds`` samples each per round, and each reports its median round:
    on a shared machine the load drifts over seconds, and timing one setting after another put that drift into the
    ratios (SR "faster" than its own reference in one run, derain 0.57-0.79 across four)."""
    its = {w: _stream(urls, tasks, w) for w in wheres}
    per_round = max(4, samples // rounds)
    rates: dict[str, list[float]] = {w: [] for w in wheres}
    for _ in range(rounds):
        for w, it in its.items():
            t, n = time.perf_counter(), 0
            while n < per_round:
                n += next(it).images
            rates[w].append(n / (time.perf_counter() - t))
    return {w: statistics.median(r) for w, r in rates.items()}


def handover_rates(urls: list[str], tasks: tuple[str, ...], samples: int, rounds: int = 6) -> dict[str, float]:
    """{way: samples/s} the training process receives from one DataLoader worker under ``decode_on=device``, where
    the worker's own work is light and handing the batch over can dominate: ``"bytes"`` (the stream's way: each
    JPEG as bytes, pickled through the worker's pipe), ``"tensors"`` (the reference: each JPEG as a uint8 tensor,
    as before, which costs a shared-memory segment and a file descriptor per file) and ``"in_process"`` (the
    worker's stream iterated here, no handover). Timed in alternating rounds, medians (see `stream_rates`), each
    round after the batches its loader queued meanwhile."""
    from torch.utils.data import DataLoader, IterableDataset

    from pretrain.data import PendingCrop, ShardStream

    def stream() -> ShardStream:
        return ShardStream(urls, tasks, mode="edt", batch_size=16, lr_patch=48, dn_patch=192, seed=0,
                           degrade=False, decode=False)

    class AsTensors(IterableDataset):
        def __iter__(self):
            for data in stream():
                for b in data.batches.values():
                    for c in b.crops:
                        if isinstance(c, PendingCrop):
                            c.data = torch.frombuffer(bytearray(c.data), dtype=torch.uint8)
                yield data

    def loader(ds) -> Iterator:
        it = iter(DataLoader(ds, batch_size=None, num_workers=1, prefetch_factor=2, persistent_workers=True))
        next(it)
        return it

    its = {"in_process": iter(stream()), "bytes": loader(stream()), "tensors": loader(AsTensors())}
    next(its["in_process"])
    rates: dict[str, list[float]] = {w: [] for w in its}
    for _ in range(rounds):
        for w, it in its.items():
            # untimed: what a loader's worker queued while the others were timed (prefetch_factor 2, and the one in
            # flight), so the round times the steady handover alone
            for _ in range(3):
                next(it)
            t, n = time.perf_counter(), 0
            while n < max(16, samples // rounds):
                n += next(it).images
            rates[w].append(n / (time.perf_counter() - t))
    return {w: statistics.median(r) for w, r in rates.items()}


def device_degrade_rate(urls: list[str], tasks: tuple[str, ...], samples: int, device: str = "cpu") -> float:
    """Samples/s of the trainer's side of ``degrade_on=device``: `degrade_rate` of pre-read pending batches."""
    from pretrain.data import ShardStream

    ds = ShardStream(urls, tasks, mode="edt", batch_size=4, lr_patch=48, dn_patch=192, seed=0, degrade=False)
    it = iter(ds)
    pending = [next(it) for _ in range(max(2, samples // (4 * len(tasks))))]
    return degrade_rate(pending, ds.task_objs, 48, torch.device(device))


def degrade_rate(pending: list, tasks: dict, lr_patch: int, device: torch.device) -> float:
    """Samples/s of `pretrain.degrade.degrade_pending` (decoding included for ``decode_on=device`` batches) over
    ``pending`` on ``device``, synchronised on CUDA; the worker's decode and crop excluded."""
    from pretrain.data import degrade_pending

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    degrade_pending(pending[0], tasks, lr_patch, device)  # warm-up: kernels, imresize weight tables
    sync()
    t, n = time.perf_counter(), 0
    for data in pending:
        n += degrade_pending(data, tasks, lr_patch, device).images
    sync()
    return n / (time.perf_counter() - t)


def train_rates(urls: list[str], steps: int) -> tuple[float, float]:
    from pretrain.data import DataStream
    from pretrain.engine import Trainer
    from pretrain.launch import init_distributed, setup_single_rank_env
    from pretrain.recipes import get_recipe
    from restore.model import RestorationModel

    recipe = get_recipe("smoke", ["num_workers=0", "ema=0"])
    torch.manual_seed(0)
    model = RestorationModel(recipe.variant, tasks=list(recipe.tasks), arch=recipe.arch_dict())
    stream = DataStream(urls, recipe.tasks, mode="edt", batch_size=recipe.batch_size, lr_patch=recipe.lr_patch,
                        dn_patch=recipe.dn_patch, seed=0, rank=0, world_size=1, num_workers=0)
    batch = next(stream)
    ref = RestorationModel(recipe.variant, tasks=list(recipe.tasks), arch=recipe.arch_dict())
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-3)

    def plain_step():
        out = ref.forward_multi({t: b.lq for t, b in batch.batches.items()})
        loss = sum((out[t] - b.gt).abs().mean() for t, b in batch.batches.items())
        opt.zero_grad()
        loss.backward()
        opt.step()

    plain_step()
    t = time.perf_counter()
    for _ in range(steps):
        plain_step()
    plain = steps * batch.images / (time.perf_counter() - t)

    setup_single_rank_env()
    init_distributed()
    trainer = Trainer(model, recipe, micro_batch=batch.images, world_size=1)
    trainer.step([next(stream)])
    t = time.perf_counter()
    images = sum(trainer.step([next(stream)]).images for _ in range(steps))
    engine = images / (time.perf_counter() - t)
    return plain, engine


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=120, help="corpus images to shard")
    p.add_argument("--samples", type=int, default=192, help="samples timed per pipeline setting")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--handover", action="store_true",
                   help="only the decode_on=device handover from a DataLoader worker (`handover_rates`)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores visible, 1 thread used; machine load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as d:
        urls = build(Path(d), args.images)
        if args.handover:
            r = handover_rates(urls, ("sr_x2", "sr_x3", "sr_x4"), args.samples * 30)
            print("\n| decode_on=device, sr_x2,sr_x3,sr_x4 (LR 48), batches of 48 crops | samples/s received | ratio "
                  "|\n|---|---|---|")
            print(f"| JPEGs as one tensor each (ref) | {r['tensors']:.0f} | 1.00 |")
            print(f"| JPEGs as bytes (the stream) | {r['bytes']:.0f} | {r['bytes'] / r['tensors']:.2f} |")
            print(f"| the worker's stream in this process (no handover) | {r['in_process']:.0f} | "
                  f"{r['in_process'] / r['tensors']:.2f} |")
            return
        rows = []
        for name, tasks in (("sr_x2,sr_x3,sr_x4 (LR 48)", ("sr_x2", "sr_x3", "sr_x4")),
                            ("denoise_g25 (192)", ("denoise_g25",)),
                            ("derain (192)", ("derain",))):
            r = stream_rates(urls, tasks, WHERE, args.samples)
            rows.append((name, *(r[w] for w in WHERE), device_degrade_rate(urls, tasks, args.samples)))
        print("\n| tasks | decode+crop samples/s/core (ref) | degradation in the workers | ratio | degradation on "
              "the device: the workers' rate | ratio | decoding on the device too: the workers' rate | ratio | the "
              "device's degradation rate (this CPU) |\n|---|---|---|---|---|---|---|---|---|")
        for name, ref, deg, dev, dec, on_dev in rows:
            print(f"| {name} | {ref:.1f} | {deg:.1f} | {deg / ref:.2f} | {dev:.1f} | {dev / ref:.2f} | {dec:.1f} | "
                  f"{dec / ref:.2f} | {on_dev:.1f} |")
        plain, engine = train_rates(urls, args.steps)
        print("\n| smoke recipe training (1 rank, 1 thread) | images/s | ratio |\n|---|---|---|")
        print(f"| plain PyTorch AdamW, one pre-made batch (ref) | {plain:.1f} | 1.00 |")
        print(f"| DeepSpeed ZeRO-2 engine + streaming data | {engine:.1f} | {engine / plain:.2f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
