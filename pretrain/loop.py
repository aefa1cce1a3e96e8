"""The training loop, readable in one screen (nanoGPT's ``train.py`` shape):
batch -> forward -> loss -> backward -> step -> log -> validate -> checkpoint.

It takes any iterator of `pretrain.data.StepData` with ``state_dict()`` (the pretraining `DataStream`, or a
fine-tuning source) and an optional ``on_validate(step, model) -> {name: value}`` callback, so `finetune` reuses
it unchanged with its own data and validation.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from pretrain.checkpoint import save_checkpoint
from pretrain.batch import StepData
from pretrain.data import SKIP_KINDS
from pretrain.degrade import worker_roles
from pretrain.engine import Trainer
from pretrain.launch import local_ranks as launch_local_ranks
from pretrain.telemetry import RunLogger

__all__ = ["LoopResult", "train_loop"]

# ``on_validate(step, model) -> metrics``; one with a true ``scores_ema`` attribute reads ``trainer.ema.shadow``,
# which the loop then gathers on every rank first (a sharded EMA: `pretrain.ema.EMA`)
Validate = Callable[[int, nn.Module], dict[str, float]]

# A logged interval in which the slowest rank spent this share of its time waiting for its next batches names the
# input pipeline as the bottleneck (an ``input_bound`` event, once per run). The first interval is left out: it
# holds the workers' start and the first shards' opening.
INPUT_BOUND_SHARE = 0.25


@dataclass
class LoopResult:
    """What the loop did: last step, last logged losses, skipped records (all ranks), validation history."""

    step: int
    losses: dict[str, float] = field(default_factory=dict)
    skips: dict[str, int] = field(default_factory=dict)
    validation: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _gathered(values: dict[str, Any], device: torch.device,
              op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> tuple[list[str], torch.Tensor]:
    """The values (floats, ints or 0-d tensors on ``device``) reduced over all ranks (summed, or by ``op``), as one
    float64 tensor on ``device``: nccl reduces CUDA tensors only, and one stacked tensor is one collective and one
    host sync."""
    keys = sorted(values)
    t = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=device) for k in keys])
    if dist.is_initialized():
        dist.all_reduce(t, op=op)
    return keys, t


def _all_reduce_mean(values: dict[str, Any], world_size: int, device: torch.device) -> dict[str, float]:
    if not values:
        return {}
    keys, t = _gathered(values, device)
    return {k: v / world_size for k, v in zip(keys, t.tolist())}


def _all_reduce_sum(values: dict[str, int], world_size: int, device: torch.device) -> dict[str, int]:
    if not values:
        return {}
    keys, t = _gathered(values, device)
    return {k: int(v) for k, v in zip(keys, t.tolist())}


def _all_reduce_max(value: float, device: torch.device) -> float:
    return float(_gathered({"value": value}, device, dist.ReduceOp.MAX)[1][0])


class DataWait:
    """Seconds the device sat idle while the loop waited for batches (``with wait: next(stream)``), summed until
    `take`.

    On the CPU that is the host's wait. On CUDA the host returns from a step while its kernels still run, so its
    wait may overlap them: an event recorded before the wait is reached when the stream's queued work is done (or at
    once), one after it when the batches arrived (or the work is done), and the time between the two is what the
    GPU spent with nothing to do. `take` reads them after the interval's all-reduce has synchronised the stream.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self._events: list[tuple[Any, Any]] = []
        self._seconds = 0.0

    def __enter__(self) -> "DataWait":
        if self.cuda:
            self._events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self._events[-1][0].record(torch.cuda.current_stream(self.device))
        else:
            self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self._events[-1][1].record(torch.cuda.current_stream(self.device))
        else:
            self._seconds += time.perf_counter() - self._t

    def take(self) -> float:
        """The idle seconds since the last `take`."""
        if self.cuda and self._events:
            self._events[-1][1].synchronize()
            self._seconds = sum(start.elapsed_time(end) for start, end in self._events) / 1e3
        seconds, self._seconds, self._events = self._seconds, 0.0, []
        return seconds


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on (a container's or a job's share)
    except AttributeError:  # no affinity on macOS
        return os.cpu_count() or 1


def input_hint(recipe: Any, device: torch.device, cores: int | None = None, local_ranks: int | None = None) -> str:
    """What moves work off a starved input pipeline, for the recipe's settings on ``device`` and the ``cores``
    (default: this process's) shared by ``local_ranks`` training processes (default: from the launcher)."""
    cores, local_ranks = cores or _usable_cores(), local_ranks or launch_local_ranks()
    spare = cores // local_ranks - 1  # each rank's training process keeps one core
    hints = []
    if recipe.num_workers < spare:
        hints.append(f"raise num_workers (now {recipe.num_workers}; {cores} cores for {local_ranks} rank(s) here: "
                     f"up to {spare} each)")
    if device.type == "cuda":
        if worker_roles(recipe.degrade_on, recipe.decode_on, recipe.tasks)["degrade"]:
            hints.append("degrade on the GPU (degrade_on=device)")
        if recipe.decode_on == "workers":
            hints.append("decode the shards' JPEGs there too (decode_on=device)")
    if not hints:
        return (f"num_workers={recipe.num_workers} already uses the {cores} cores of {local_ranks} rank(s) here: "
                "the data needs more cores per GPU, or lighter degradations")
    return ", or ".join(hints)


def _skips(stream: Any) -> dict[str, int]:
    return stream.skips() if hasattr(stream, "skips") else dict.fromkeys(SKIP_KINDS, 0)


def train_loop(
    trainer: Trainer,
    stream: Iterator[StepData],
    *,
    run_dir: str | Path,
    rank: int,
    world_size: int,
    start_step: int = 0,
    recipe_dict: dict[str, Any] | None = None,
    on_validate: Validate | None = None,
    logger: RunLogger | None = None,
    stop_after: int | None = None,
    validate_first: bool = False,
) -> LoopResult:
    """Train from ``start_step`` to ``trainer.recipe.steps`` optimizer steps.

    Args:
        trainer: the engine (`pretrain.engine.Trainer`).
        stream: `StepData` iterator with ``state_dict()`` (saved into checkpoints) and optionally ``skips()``.
        run_dir: checkpoints go to ``run_dir/checkpoints/step-N``.
        rank, world_size: this process's place.
        start_step: the step a resumed run continues from.
        recipe_dict: the resolved recipe written into each checkpoint.
        on_validate: called every ``val_every`` steps with the model in eval mode; on rank 0 only, except under
            ZeRO-3 where all ranks call it (the parameters are gathered collectively).
        logger: a `RunLogger` (one is made if None).
        stop_after: leave after this many steps of this call (tests); the schedule still follows ``recipe.steps``.
        validate_first: on a fresh run (``start_step`` 0), validate once before the first step: the starting
            point's own scores (fine-tuning's step 0).
    """
    r = trainer.recipe
    ckpt_root = Path(run_dir) / "checkpoints"
    own_logger = logger is None
    logger = logger or RunLogger(run_dir, rank=rank, total_steps=r.steps, start_step=start_step)
    result = LoopResult(step=start_step)
    t_start = time.time()
    t_window, images_window, sums, count = time.perf_counter(), 0, {}, 0
    idle = DataWait(trainer.device)
    first_window, warned = True, False
    end = r.steps if stop_after is None else min(r.steps, start_step + stop_after)
    if on_validate is not None and validate_first and start_step == 0:
        _validate_and_log(trainer, on_validate, 0, rank, logger, result)
    for step in range(start_step + 1, end + 1):
        with idle:  # the device waits for the data pipeline
            micro_batches = [next(stream) for _ in range(r.grad_accum)]
        out = trainer.step(micro_batches)
        images_window += out.images
        count += 1
        for k, v in {"loss": out.loss, **{f"loss:{t}": v for t, v in out.task_losses.items()}}.items():
            sums[k] = sums.get(k, 0.0) + v
        result.step = step

        if step % r.log_every == 0 or step == end:
            losses = _all_reduce_mean({k: v / count for k, v in sums.items()}, world_size, trainer.device)
            elapsed = max(1e-9, time.perf_counter() - t_window)
            wait = _all_reduce_max(idle.take() / elapsed, trainer.device)  # the slowest rank paces every step
            logger.log(step, {**losses, "lr": trainer.lr()}, images_per_s=images_window * world_size / elapsed,
                       data_wait=wait)
            if wait >= INPUT_BOUND_SHARE and not first_window and not warned:
                logger.event("input_bound", step=step, data_wait=f"{wait:.0%}", hint=input_hint(r, trainer.device))
                warned = True
            result.losses = losses
            t_window, images_window, sums, count = time.perf_counter(), 0, {}, 0
            first_window = False

        if on_validate is not None and r.val_every and (step % r.val_every == 0 or step == end):
            _validate_and_log(trainer, on_validate, step, rank, logger, result)

        if step % r.ckpt_every == 0 or step == end:
            info = {"seconds_this_run": round(time.time() - t_start, 1), "world_size": world_size}
            path = save_checkpoint(
                trainer, ckpt_root, step, rank=rank, data_state=stream.state_dict(),
                recipe=recipe_dict or r.to_dict(), info=info, keep_last=r.keep_last,
            )
            result.checkpoints.append(str(path))
            logger.event("checkpoint", step=step, path=str(path))

    result.skips = _all_reduce_sum(_skips(stream), world_size, trainer.device)
    result.seconds = round(time.time() - t_start, 2)
    if any(result.skips.values()):
        logger.event("skips", **result.skips)
    if own_logger:
        logger.close()
    return result


def _validate_and_log(trainer: Trainer, on_validate: Validate, step: int, rank: int, logger: RunLogger,
                      result: LoopResult) -> None:
    metrics = _validate(trainer, on_validate, step, rank)
    if rank == 0:
        logger.log(step, {f"val:{k}": v for k, v in metrics.items()})
        result.validation.append({"step": step, **metrics})


def _validate(trainer: Trainer, on_validate: Validate, step: int, rank: int) -> dict[str, float]:
    model = trainer.module
    metrics: dict[str, float] = {}
    was_training = model.training
    model.eval()
    # benchmark images come in many sizes: cuDNN autotuning (on for the fixed training shapes) would tune each one,
    # slowly, and might pick other algorithms in another run, so that a validation score would not repeat
    autotune, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
    if trainer.ema is not None and getattr(on_validate, "scores_ema", False):
        trainer.ema.gather()  # collective where it is sharded; only for a validator that scores the EMA
    try:
        with torch.no_grad():
            if trainer.recipe.zero_stage == 3:
                import deepspeed

                with deepspeed.zero.GatheredParameters(list(model.parameters())):
                    metrics = on_validate(step, model)
            elif rank == 0:
                metrics = on_validate(step, model)
    finally:
        torch.backends.cudnn.benchmark = autotune
    model.train(was_training)
    if dist.is_initialized():
        dist.barrier()
    return metrics
