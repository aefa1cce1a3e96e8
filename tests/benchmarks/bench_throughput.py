"""Cores per GPU: what one GPU consumes in pretraining against what one CPU core of the data pipeline produces.

    DS_ACCELERATOR=cpu .venv/bin/python tests/benchmarks/bench_throughput.py [--mfu 0.35] [--peak-tflops 989]

The GPU side is a model, not a measurement (this machine has no GPU): training FLOPs per sample = 3 x the forward
FLOPs (forward + backward, the usual 1:2 split), counted exactly with `bench_flops.count_macs` at each recipe's
patch sizes (EDT-B: LR 48 for every SR task, all tasks in one step; HAT: LR 64, x4); samples/s per GPU = MFU x bf16
peak / FLOPs per sample (H100 SXM dense bf16 989 TFLOP/s; the MFU is an assumption, 0.35 by default, and a
measured one from `tests/benchmarks/gpu.sh` can be passed in). The CPU side is measured here, one thread: the shard
stream of `bench_pretrain.py` per task set, with the degradation in the worker (``degrade_on=workers``, CPU runs)
and with the batch left pending (``degrade_on=device``, the default on CUDA for these tasks: the worker decodes,
crops and flips only; the degradation's GPU time is inside the training step, a small share of it: `gpu.sh`
measures it), and with the JPEGs decoded on the device too (``decode_on=device``: the worker reads the shard and
the headers and draws the crops; nvjpeg's GPU time is not in this model, `gpu.sh` measures it). Cores per GPU = GPU
samples/s / CPU samples/s/core; the issue's target is at most 4 with on-device degradation.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402

from common import Row, command, emit, machine, parser, setup  # noqa: E402

# (recipe, variant, the tasks of one step, LR patch side of SR tasks, patch side of scale-1 tasks)
RECIPES = (("edt_b", "edt_b", ("sr_x2", "sr_x3", "sr_x4"), 48, 192), ("hat", "hat", ("sr_x4",), 64, 64))
# the CPU task sets timed (one task set per pipeline kind); a recipe is paced by the slowest of its tasks
PIPELINES = {"sr": ("sr_x2", "sr_x3", "sr_x4"), "denoise": ("denoise_g25",), "derain": ("derain",)}


def train_gflop_per_sample(variant: str, tasks: tuple[str, ...], lr_patch: int, dn_patch: int) -> float:
    """3 x forward GFLOP of one sample of each task (EDT mode: a step carries every task), averaged per sample."""
    from bench_flops import count_macs
    from tasks.registry import get_task

    per_task = []
    for t in tasks:
        side = lr_patch if get_task(t).scale > 1 else dn_patch
        per_task.append(3 * 2 * count_macs(variant, size=side, task=t))  # MAC -> FLOP, x3 for training
    return sum(per_task) / len(per_task)


def cpu_rates(images: int, samples: int) -> dict[str, tuple[float, float]]:
    """{pipeline: (samples/s/core of a ``degrade_on=device`` worker (decode + crop), of a ``degrade_on=workers``
    one, of a ``decode_on=device`` one (shard reading and crop draws))} on the shared ImageNet sample."""
    import bench_pretrain

    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        urls = bench_pretrain.build(Path(d), images)
        for name, task_names in PIPELINES.items():
            r = bench_pretrain.stream_rates(urls, task_names, ("device", "workers", "decode"), samples)
            out[name] = (r["device"], r["workers"], r["decode"])
    return out


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--mfu", type=float, default=0.35, help="assumed model-FLOP utilisation of one GPU (0-1)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100 SXM: 989)")
    p.add_argument("--images", type=int, default=120, help="corpus images sharded for the CPU measurement")
    # 288, not 96: 96 samples were two SR steps per timing round, and the cores per GPU moved between 3.5 and 4.5
    # from one make bench to the next on a shared 2-core VM
    p.add_argument("--samples", type=int, default=288, help="samples timed per pipeline setting")
    args = p.parse_args(argv)
    setup(args)
    rates = cpu_rates(args.images, args.samples)
    load = os.getloadavg()[0]
    rows = []
    for recipe, variant, tasks, lr_patch, dn_patch in RECIPES:
        gflop = train_gflop_per_sample(variant, tasks, lr_patch, dn_patch)
        gpu = args.mfu * args.peak_tflops * 1e3 / gflop  # samples/s one GPU consumes
        kinds = sorted({"sr" if t.startswith("sr_") else t.split("_")[0] for t in tasks})
        plain = min(rates[k][0] for k in kinds)  # the slowest pipeline of the recipe's tasks paces its steps
        degraded = min(rates[k][1] for k in kinds)
        reading = min(rates[k][2] for k in kinds)
        note = (f"{gflop:.0f} GFLOP/sample training, MFU {args.mfu:g} of {args.peak_tflops:g} TFLOP/s -> "
                f"{gpu:.0f} samples/s/GPU; CPU {degraded:.0f} (degrading) / {plain:.0f} (decode+crop) / "
                f"{reading:.0f} (read only) samples/s/core; load {load:.1f}")
        for where, rate in (("degradation in the CPU workers", degraded), ("degradation on the GPU", plain),
                            ("JPEG decoding and degradation on the GPU (decode_on=device)", reading)):
            cores = gpu / rate
            verdict = "target met" if cores <= 4 else "target NOT met"
            rows.append(Row("cores per GPU (model)", f"{recipe} ({variant}, {','.join(tasks)}): {where}", cores, 4.0,
                            "cores/GPU", 4.0 / cores, reference_name="target 4 cores/GPU", note=f"{verdict}; {note}",
                            command=command(), machine=machine()))
    for name, (plain, degraded, _reading) in rates.items():
        rows.append(Row("cores per GPU (model)", f"CPU pipeline {name}: with degradation vs decode+crop", degraded,
                        plain, "samples/s/core", degraded / plain, reference_name="decode+crop only",
                        note=f"one thread, load {load:.1f}", command=command(), machine=machine()))
    emit(rows, args, "Cores per GPU: modelled GPU consumption against measured CPU pipeline rates")


if __name__ == "__main__":
    main()
