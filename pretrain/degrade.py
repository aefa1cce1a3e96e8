"""Degrading a step's batches, in the data-loader workers or on the training device, with the same function.

Where the degradation runs (the recipe's ``degrade_on``, `worker_roles`): in the data-loader workers (on CPU: the
default without a GPU), or on the training device inside the step (the default with CUDA, except the blind
pipelines, which work image by image through the host and stay in the workers: `host_bound`). Then the workers only
decode, crop and augment; their batches come with ``lq=None`` and the trainer calls `degrade_pending` on the device,
batched per task, each task with a generator on that device seeded from ``StepData.degrade_seed`` and its name
(`task_seed`). Both places run the same function, so on a CPU device the batches are bit-identical however the
tasks are split; a CUDA generator (Philox) draws other numbers than a CPU one (MT19937) from the same seed, so on a
GPU the degradations are a different draw of the same distributions, still a function of (seed, step, rank): exact
resume holds either way. A blind pipeline's JPEG round trip stays on the CPU (libjpeg) inside it. With
``decode_on=device`` the workers do not decode RGB JPEGs either: they parse the header, draw the crop and flips, and
pass the bytes on (`PendingCrop`); `degrade_pending` decodes the batch on the device in one call (nvjpeg on CUDA)
before degrading it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import zlib
from typing import Any, Collection, Iterator, Sequence

import torch

from pretrain.batch import Batch, StepData
from pretrain.decode import decode_crops
from restore.model import ARBITRARY_SCALE_TASK
from tasks.registry import Task, get_task

__all__ = ["DEGRADE_ON", "DECODE_ON", "SR_ANY_QUERIES", "degrade_batch", "degrade_pending", "exact_kernels",
           "degrade_on_device", "worker_roles", "worker_degrade", "host_bound", "task_seed"]

# HR pixels an sr_any patch is scored on: LIIF/LTE's sample_q (48 ** 2 for their 48 px LR patch); a smaller LR patch
# scores lr_patch ** 2, the pixel count of its smallest HR crop (scale 1)
SR_ANY_QUERIES = 2304
# where the degradations run (the recipe's degrade_on; `worker_roles`)
DEGRADE_ON = ("auto", "workers", "device")
# where RGB JPEGs are decoded (the recipe's decode_on): the data-loader workers, or the training device (nvjpeg)
DECODE_ON = ("workers", "device")


def degrade_batch(task: Task, gt: torch.Tensor, lr_patch: int, generator: torch.Generator) -> Batch:
    """The `Batch` of ``task`` from augmented ground-truth crops ``gt`` (B, 3, S, S): the task's degradation (and
    the masked task's mask), or for ``sr_any`` LIIF's sampling (`tasks.degradations.sr_any_batch`): a scale in
    [1, 4] per patch, an LR patch of ``lr_patch`` px and ``min(SR_ANY_QUERIES, lr_patch ** 2)`` scored HR pixels."""
    if task.name != ARBITRARY_SCALE_TASK:
        lq, mask = task.degrade_with_mask(gt, generator=generator)
        return Batch(lq=lq, gt=gt, task=task.name, mask=mask)
    from tasks.degradations import sr_any_batch

    b = sr_any_batch(gt, generator, lq_size=lr_patch, num_queries=min(SR_ANY_QUERIES, lr_patch * lr_patch))
    return Batch(lq=b.lq, gt=b.gt, task=task.name, coord=b.coord, cell=b.cell)


def task_seed(seed: int, task: str) -> int:
    """The seed of one task's degradation generator in a step (``seed``: `StepData.degrade_seed`): each task draws
    from its own stream, so where a task is degraded (workers or device) moves no other task's numbers."""
    return (seed * 1_000_003 + zlib.crc32(task.encode())) % 2**63


def degrade_pending(data: StepData, tasks: dict[str, Task], lr_patch: int, device: torch.device | str,
                    only: Collection[str] | None = None) -> StepData:
    """``data`` with its pending batches (``lq`` None) degraded on ``device`` by `degrade_batch`, each task from its
    own generator on ``device`` seeded with `task_seed` (``data.degrade_seed``, task); ``data`` itself when
    nothing is pending. ``only``: degrade the batches of these tasks alone, and leave the rest pending.

    The workers call it on the CPU (``degrade_on=workers``, or the host-bound tasks under ``auto``: `worker_roles`)
    and the trainer on its device inside the step for the rest: one function, so the two places give bit-identical
    batches on a CPU device, however the tasks are split between them.
    """
    if data.degrade_seed is None:
        return data
    device = torch.device(device)
    batches, pending = {}, False
    with exact_kernels():
        for name, b in data.batches.items():
            if b.lq is None and (only is None or name in only):
                # non_blocking: a no-op for pageable memory, an overlapped copy for pinned batches
                # (StepData.pin_memory)
                gt = decode_crops(b.crops, device) if b.gt is None else b.gt.to(device, non_blocking=True)
                g = torch.Generator(device=device).manual_seed(task_seed(data.degrade_seed, name))
                b = degrade_batch(tasks[name], gt, lr_patch, g)
            pending |= b.lq is None
            batches[name] = b
    return dataclasses.replace(data, batches=batches, degrade_seed=data.degrade_seed if pending else None)


def worker_degrade(data: StepData, tasks: dict[str, Task], lr_patch: int,
                   degrade: bool | Collection[str]) -> StepData:
    """The data-loader workers' share of ``data``'s degradation (a stream's ``degrade``, from `worker_roles`): every
    pending batch (True), none (False), or those of the tasks named; the trainer degrades the rest."""
    if not degrade:
        return data
    return degrade_pending(data, tasks, lr_patch, "cpu", only=None if degrade is True else frozenset(degrade))


@contextlib.contextmanager
def exact_kernels() -> Iterator[None]:
    """Kernels as a degradation needs them, whatever the trainer chose for its model: no autocast (a bf16 matmul
    would move ``imresize`` by whole uint8 levels), full-fp32 matmuls and convolutions (TF32's 10-bit mantissa, or
    oneDNN's bf16, moves a blur or an ``imresize`` by a fraction of a level, and the LR would no longer round like
    the official files), and no cuDNN autotuning (``cudnn.benchmark`` may pick another convolution algorithm, with
    other rounding, after a resume) or nondeterministic cuDNN algorithms. Everything comes back on the way out.

    The precision and cuDNN settings are process-wide: call it from the thread that trains (as `degrade_pending`
    runs, in the step), not beside it from a prefetch thread.
    """
    # torch's fp32_precision knobs, each put back exactly ("none" means "inherit the global setting"), and only
    # those: the legacy allow_tf32 flags, and `cudnn.flags()`, which reads them, refuse to mix with the new API and
    # raised for a trainer that had set `cudnn.conv.fp32_precision` (on the CPU too)
    cudnn = torch.backends.cudnn
    knobs = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv, cudnn,
             cudnn.conv, cudnn.rnn)
    saved, tuning = [k.fp32_precision for k in knobs], (cudnn.benchmark, cudnn.deterministic)
    try:
        for k in knobs:
            k.fp32_precision = "ieee"
        cudnn.benchmark, cudnn.deterministic = False, True
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            yield
    finally:
        cudnn.benchmark, cudnn.deterministic = tuning
        for k, value in zip(knobs, saved):
            k.fp32_precision = value


def degrade_on_device(setting: str) -> bool:
    """Whether the recipe's ``degrade_on`` puts the degradations on the training device (else: in the workers); for
    ``auto`` on CUDA, all but the blind pipelines' (`worker_roles`, `host_bound`).

    ``auto`` is the device where CUDA trains (a GPU degrades a batch in well under a millisecond, where a CPU core
    needs several per sample: `tests/benchmarks/bench_pretrain.py`), the workers on a CPU-only run, where the
    device would be the main process's CPU and the workers run beside it.
    """
    if setting not in DEGRADE_ON:
        raise ValueError(f"degrade_on={setting!r}: use one of {', '.join(DEGRADE_ON)}")
    if setting == "auto":
        return torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") == "cuda"
    return setting == "device"


def host_bound(task: str) -> bool:
    """Whether a task's degradation works image by image through the host: the blind pipelines (per-image parameter
    draws read back from the device, a libjpeg round trip, each a stall of the training step on a GPU)."""
    return get_task(task).pipeline is not None


def worker_roles(degrade_on: str, decode_on: str = "workers", tasks: Sequence[str] = ()) -> dict[str, Any]:
    """The streams' ``degrade`` and ``decode`` arguments for a recipe's ``degrade_on``, ``decode_on`` and
    ``tasks``: what the data-loader workers do. ``degrade``: True (every task), False (none: the trainer degrades)
    or the tasks the workers degrade. Under ``auto`` on CUDA the `host_bound` (blind) tasks stay in the workers,
    where they run beside the step instead of stalling it; decoding on the device takes every degradation there."""
    decode = decode_on == "workers"
    if not decode:
        return {"degrade": False, "decode": False}
    if not degrade_on_device(degrade_on):
        return {"degrade": True, "decode": True}
    here = tuple(t for t in tasks if host_bound(t)) if degrade_on == "auto" else ()
    return {"degrade": here or False, "decode": True}
