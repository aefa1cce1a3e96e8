"""The streaming multi-task data pipeline: webdataset shards -> RGB patches -> task degradations -> batches.

The stream is a deterministic function of (seed, step, rank) plus a small saved position, so a killed run that
resumes from a checkpoint sees exactly the batches the uninterrupted run would have seen:

- Every rank runs ``max(1, num_workers)`` sub-streams; step ``s`` of a rank is always served by sub-stream
  ``s % num_workers`` (``DataLoader`` hands out worker batches round-robin, and on resume worker ``w`` takes the
  saved position of sub-stream ``(start + w) % num_workers``).
- A sub-stream walks shards in a seeded per-epoch order. Shards are split across all sub-streams of all ranks
  (webdataset's ``split_by_node`` + ``split_by_worker`` idea); with fewer shards than sub-streams the split is by
  record instead. The stream never ends (epochs repeat), so no rank runs out of data before the others: the
  uneven-shard hang of ECOSYSTEM.md section 2 cannot happen, and the loop stops every rank at the same step.
- Each batch carries the sub-stream's position after it (epoch, shard index, record index, skip counts); the
  main process keeps the position of the last *consumed* batch per sub-stream, which is what a checkpoint saves.
- Crops, flips and rotations use a generator seeded from (seed, step, rank); the degradations (noise, rain, blur
  kernels, the masked task's masks, ``sr_any``'s scales, crops and query points) one per task, seeded from the same
  triple (`StepData.degrade_seed`) and the task (`pretrain.degrade.task_seed`). Those generators let the degradation
  move off the workers, task by task: where it runs
  (the workers or the training device) and how a pending batch is degraded there is `pretrain.degrade`; what a
  step carries is `pretrain.batch`, and image decoding and the crop draws are `pretrain.decode`.

Bad data never stops the run: an unreadable or truncated shard, a garbage member, or an image smaller than the
patch is skipped, counted and (rate-limited) logged. A whole epoch without one usable sample raises, because that
would otherwise spin forever. What can be known before the engine starts is refused then instead (`check_shards`,
exit 2): local shards that do not exist (a brace range wider than what was built), patterns that match nothing,
and local data without one image as large as the patch. Fewer shards than sub-streams is allowed but costly (each
sub-stream reads every shard), so `DataStream` warns on rank 0 with the number of shards needed.
"""

from __future__ import annotations

import glob
import logging
import os
import random
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pretrain.batch import Batch, StepData
from pretrain.decode import PendingCrop, apply_flips, _decode_crop, draw_flips, _image_size
from pretrain.degrade import (DECODE_ON, DEGRADE_ON, SR_ANY_QUERIES, degrade_batch, degrade_on_device,  # noqa: F401
                              degrade_pending, exact_kernels, worker_degrade, worker_roles)
from tasks.registry import MASK_PATCH, MASK_RATIO, Task, get_task, masked_task

__all__ = ["Batch", "StepData", "ShardStream", "DataStream", "expand_urls", "check_shards", "hr_patch", "task_plan",
           "stream_tasks", "masked_l1", "degrade_batch", "degrade_pending", "exact_kernels", "worker_roles",
           "PendingCrop", "DECODE_ON", "degrade_on_device", "step_generator", "DEGRADE_ON", "SKIP_KINDS",
           "SR_ANY_QUERIES"]

log = logging.getLogger("pretrain.data")
SKIP_KINDS = ("small", "corrupt", "bad_shard")


def masked_l1(out: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The L1 loss of a batch, over the pixels ``mask`` (B, 1, H, W) marks with 1; over all of them for None.

    A masked task must fill in what its input hides; the visible pixels can be copied through and would teach
    nothing, so they are left out, as in RAM's ``MaskL1Loss`` (Qin et al., ECCV 2024): the absolute error summed
    over the hidden pixels and channels, divided by their count, on the same scale as a plain L1 mean.
    """
    if mask is None:
        return F.l1_loss(out, gt)
    if mask.shape != (out.shape[0], 1, *out.shape[-2:]) or out.shape != gt.shape:
        raise ValueError(f"masked_l1 needs out and gt of one shape (B, C, H, W) and a mask (B, 1, H, W), got "
                         f"{tuple(out.shape)}, {tuple(gt.shape)} and {tuple(mask.shape)}")
    mask = mask.to(out.dtype)
    hidden = (mask.sum() * out.shape[1]).clamp_min(1)  # an all-visible batch (never drawn) scores 0, not NaN
    return ((out - gt).abs() * mask).sum() / hidden


def expand_urls(data: str | list[str]) -> list[str]:
    """Shard URLs from a spec: entries separated by ``::`` (webdataset's convention; ``pipe:`` commands hold
    spaces) or a list, each a brace pattern, a glob, a folder or a URL.

    ``pipe:``, ``http(s)://``, ``hf://`` and other URLs pass through to webdataset's ``gopen`` unchanged.
    """
    import braceexpand

    from tasks.errors import InputError

    entries = [e.strip() for e in data.split("::") if e.strip()] if isinstance(data, str) else list(data)
    urls: list[str] = []
    for entry in entries:
        for url in braceexpand.braceexpand(entry):
            if "://" in url or url.startswith("pipe:"):
                urls.append(url)
            elif os.path.isdir(url):
                found = sorted(glob.glob(os.path.join(url, "*.tar")))
                if not found:  # a typo'd folder would otherwise vanish from the run without a word
                    raise InputError(f"shard folder {url} holds no .tar files; build them with `pretrain shards`")
                urls.extend(found)
            elif any(c in url for c in "*?["):
                found = sorted(glob.glob(url))
                if not found:
                    raise InputError(f"shard pattern {url!r} matches no file; check the path, or build the shards "
                                     "with `pretrain shards`")
                urls.extend(found)
            else:
                urls.append(url)
    if not urls:
        raise InputError(f"no shards in data={data!r}; pass shard paths or URLs, e.g. out/train-{{000000..000099}}.tar")
    return urls


def _is_remote(url: str) -> bool:
    return "://" in url or url.startswith("pipe:")


def check_shards(urls: list[str], min_side: int) -> None:
    """Refuse, before the engine starts, shards that cannot feed a run (an `InputError`, exit 2).

    Every local shard must exist (a brace range wider than what was built is the usual slip). The local shards are
    then read until one image of at least ``min_side`` px on its shorter side (the largest patch) is found, which
    is the first record in practice; only data with no usable image at all is read through, and is refused with
    the largest size it has. Remote URLs are left to the stream, which skips and counts what it cannot use.
    """
    from tasks.errors import InputError

    local = [u for u in urls if not _is_remote(u)]
    missing = [u for u in local if not os.path.isfile(u)]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise InputError(f"{len(missing)} of {len(urls)} shards do not exist: {shown}; narrow the brace range to "
                         "the shards that were built (`ls` the folder), or build them with `pretrain shards`")
    if not local or len(local) < len(urls):
        return
    largest, readable = (0, 0), 0
    for url in local:
        for sample in _local_samples(url):
            try:
                h, w = _image_size(sample)
            except Exception:  # noqa: BLE001 - a bad member: the stream skips it too
                continue
            readable += 1
            if min(h, w) >= min_side:
                return
            largest = max(largest, (h, w), key=min)
    if not readable:
        raise InputError(f"no readable image in the {len(local)} shard(s) ({local[0]}, ...): every member is "
                         "truncated or not an image; rebuild them with `pretrain shards`")
    raise InputError(f"no image in the {len(local)} shard(s) is at least {min_side} px on its shorter side (the "
                     f"largest patch; the largest image is {largest[1]}x{largest[0]}): lower lr_patch/dn_patch, "
                     "or build the shards from larger images")


def _local_samples(url: str) -> Iterator[dict[str, Any]]:
    """Samples of a local tar through webdataset's own grouping; a broken tar just ends early."""
    import webdataset as wds

    yield from wds.tariterators.tarfile_samples([{"url": url}], handler=lambda exn: True)


def task_plan(tasks: tuple[str, ...], mode: str, seed: int, step: int) -> list[str]:
    """The tasks of ``step``: all of them (EDT mode) or one drawn from (seed, step), equal on every rank (IPT)."""
    if mode == "edt":
        return list(tasks)
    return [random.Random(f"{seed}:task:{step}").choice(tasks)]


def stream_tasks(names: tuple[str, ...], mask_ratio: float = MASK_RATIO,
                 mask_patch: int = MASK_PATCH) -> dict[str, Task]:
    """The `Task` of each name, the masked task with the run's mask options (the recipe's ``mask_ratio`` and
    ``mask_patch``; the name alone gives RAM's defaults)."""
    return {t: masked_task(mask_ratio, mask_patch) if t == "masked" else get_task(t) for t in names}


def hr_patch(task: str, lr_patch: int, dn_patch: int) -> int:
    """The side of the ground-truth patch a task crops: ``lr_patch * scale`` for SR, ``dn_patch`` otherwise.

    ``sr_any``'s registered scale is 4, the top of its training range: its crop holds the largest HR patch
    (``lr_patch * 4``) that `degrade_batch` cuts its scaled patches from.
    """
    scale = get_task(task).scale
    return lr_patch * scale if scale > 1 else dn_patch


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 4099 + rank + 1


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The CPU generator of a step's crops, flips and rotations (both streams)."""
    return torch.Generator().manual_seed(_step_seed(seed, step, rank))


def degrade_seed(seed: int, step: int, rank: int) -> int:
    """The seed of a step's degradation generator (`degrade_pending`): another stream than `step_generator`'s."""
    return (_step_seed(seed, step, rank) * 2_654_435_761 + 97) % 2**63


class _Reader:
    """Raw records of one sub-stream from a saved position; counts and logs what it skips."""

    def __init__(self, urls: list[str], stream_id: int, n_streams: int, seed: int, position: dict | None):
        self.urls, self.stream_id, self.n_streams, self.seed = urls, stream_id, n_streams, seed
        pos = dict(position or {})
        self.epoch, self.index, self.record = pos.get("epoch", 0), pos.get("index", 0), pos.get("record", 0)
        self.skips = {k: int(pos.get("skips", {}).get(k, 0)) for k in SKIP_KINDS}
        self.used_in_epoch = 0
        self._warned = 0

    def position(self) -> dict[str, Any]:
        shards, _ = self._shards(self.epoch)
        shard = shards[self.index] if self.index < len(shards) else None
        return {"epoch": self.epoch, "index": self.index, "record": self.record, "shard": shard,
                "skips": dict(self.skips)}

    def skip(self, kind: str, what: str) -> None:
        self.skips[kind] += 1
        if self._warned < 20 or self.skips[kind] in (100, 1000, 10_000, 100_000):  # rate-limited: bad data can be common
            self._warned += 1
            log.warning("skipped (%s, %d so far on stream %d): %s", kind, self.skips[kind], self.stream_id, what)

    def _shards(self, epoch: int) -> tuple[list[str], bool]:
        order = list(self.urls)
        random.Random(f"{self.seed}:shards:{epoch}").shuffle(order)
        if len(order) >= self.n_streams:
            return order[self.stream_id :: self.n_streams], False
        return order, True  # too few shards: every sub-stream reads all, keeping every n-th record

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        while True:
            shards, by_record = self._shards(self.epoch)
            if self.index >= len(shards):
                if self.used_in_epoch == 0:
                    raise RuntimeError(
                        f"sub-stream {self.stream_id} read a whole epoch of {len(shards)} shards without one usable "
                        f"sample (skips: {self.skips}); check the shard URLs and that images are larger than the patch"
                    )
                self.epoch, self.index, self.record, self.used_in_epoch = self.epoch + 1, 0, 0, 0
                continue
            url = shards[self.index]
            failed: list[Exception] = []

            def handler(exn: Exception) -> bool:
                failed.append(exn)
                return True  # keep going: the shard ends here, the run goes on

            n = 0
            for sample in wds.tariterators.tarfile_samples([{"url": url}], handler=handler):
                n += 1
                if n <= self.record or (by_record and (n - 1) % self.n_streams != self.stream_id):
                    if n > self.record:
                        self.record = n
                    continue
                self.record = n
                yield sample
            if failed:
                self.skip("bad_shard", f"{url}: {failed[0]}")
            self.index, self.record = self.index + 1, 0


class ShardStream(IterableDataset):
    """Infinite stream of `StepData` for one rank, from ``start_step`` on.

    Args:
        urls: shard URLs (see `expand_urls`).
        tasks: task names; each task's degradation comes from ``tasks.get_task(name).degrade``.
        mode: ``"edt"`` (every step has all tasks) or ``"ipt"`` (one task per step).
        batch_size: images per task per step.
        lr_patch: input patch side for SR tasks (HR patch = ``lr_patch * scale``).
        dn_patch: patch side of scale-1 tasks.
        seed, rank, world_size: the stream is a function of these and the step.
        num_workers: sub-streams per rank (must equal the DataLoader's ``num_workers``, 0 counts as 1).
        start_step: first step this stream serves.
        positions: saved positions per sub-stream (from `DataStream.state_dict`), or None to start fresh.
        mask_ratio, mask_patch: the masked task's mask (`tasks.degradations.random_mask`).
        degrade: degrade in the stream (the workers); False leaves it pending for the trainer (`degrade_pending`),
            a tuple of task names degrades those here and leaves the rest (`worker_roles`).
        decode: decode every image in the stream; False leaves RGB JPEGs to the trainer's device (``decode_on=device``;
            needs ``degrade=False``).
    """

    def __init__(
        self, urls: list[str], tasks: tuple[str, ...], *, mode: str = "edt", batch_size: int = 4, lr_patch: int = 48,
        dn_patch: int = 192, seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
        start_step: int = 0, positions: dict[int, dict] | None = None, mask_ratio: float = MASK_RATIO,
        mask_patch: int = MASK_PATCH, degrade: bool | tuple[str, ...] = True, decode: bool = True,
    ):
        if not decode and degrade:
            raise ValueError("decoding on the device needs the degradation there too: pass degrade=False")
        if isinstance(urls, str):  # list("a.tar") would be five shards named by letter
            raise TypeError("ShardStream takes a list of shard URLs; expand a spec with `expand_urls` first")
        self.urls, self.tasks, self.mode = list(urls), tuple(tasks), mode
        self.task_objs = stream_tasks(self.tasks, mask_ratio, mask_patch)
        self.batch_size, self.lr_patch, self.dn_patch = batch_size, lr_patch, dn_patch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.n_sub = max(1, num_workers)
        self.start_step = start_step
        self.positions = {int(k): v for k, v in (positions or {}).items()}
        self.degrade, self.decode = degrade, decode

    def hr_patch(self, task: str) -> int:
        return hr_patch(task, self.lr_patch, self.dn_patch)

    def __iter__(self) -> Iterator[StepData]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        sub = (self.start_step + worker) % self.n_sub
        reader = _Reader(self.urls, self.rank * self.n_sub + sub, self.world_size * self.n_sub, self.seed,
                         self.positions.get(sub))
        records = iter(reader)
        step = self.start_step + worker
        while True:
            g = step_generator(self.seed, step, self.rank)
            batches, keys = {}, []
            for task in task_plan(self.tasks, self.mode, self.seed, step):
                size = self.hr_patch(task)
                patches = []
                while len(patches) < self.batch_size:
                    sample = next(records)
                    try:
                        crop, (h, w) = _decode_crop(sample, size, g, defer=not self.decode)
                    except Exception as err:  # any decoder error means a bad record, never a dead run
                        reader.skip("corrupt", f"{sample.get('__url__')}:{sample.get('__key__')}: {err}")
                        continue
                    if crop is None:
                        reader.skip("small", f"{sample.get('__key__')} is {w}x{h} < {size}")
                        continue
                    reader.used_in_epoch += 1
                    keys.append(f"{sample.get('__url__')}:{sample.get('__key__')}")
                    flips = draw_flips(g)
                    if isinstance(crop, PendingCrop):
                        crop.flips = flips
                        patches.append(crop)
                    else:
                        patches.append(apply_flips(crop, flips))
                if self.decode:
                    batches[task] = Batch(lq=None, gt=torch.stack(patches).float().div_(255.0), task=task)  # (B,3,S,S)
                else:
                    batches[task] = Batch(lq=None, gt=None, task=task, crops=patches)
            data = StepData(step=step, batches=batches, stream=sub, position=reader.position(), keys=keys,
                            degrade_seed=degrade_seed(self.seed, step, self.rank))
            yield worker_degrade(data, self.task_objs, self.lr_patch, self.degrade)
            step += self.n_sub


class DataStream:
    """The iterator the training loop consumes: a `DataLoader` over a `ShardStream`, with resumable state.

    ``state_dict()`` holds the next step and the position of each sub-stream after its last consumed batch;
    pass it back as ``state`` to continue exactly there (same world size and ``num_workers``). ``degrade=False``:
    the workers only decode, crop and augment, and the trainer degrades on its device (`degrade_pending`); task
    names: the workers degrade those tasks, the trainer the others.
    """

    def __init__(
        self, urls: list[str], tasks: tuple[str, ...], *, mode: str, batch_size: int, lr_patch: int,
        dn_patch: int, seed: int, rank: int, world_size: int, num_workers: int, state: dict | None = None,
        mask_ratio: float = MASK_RATIO, mask_patch: int = MASK_PATCH, degrade: bool | tuple[str, ...] = True,
        decode: bool = True,
    ):
        state = state or {}
        n_streams = world_size * max(1, num_workers)
        if rank == 0 and len(urls) < n_streams:
            log.warning(
                "%d shard(s) for %d rank(s) x %d data-loader worker(s) = %d sub-streams: every sub-stream reads "
                "every shard and keeps 1 record in %d, so the data is read %dx over; build at least %d shards "
                "(`pretrain shards --maxcount` smaller) for each sub-stream to read its own",
                len(urls), world_size, max(1, num_workers), n_streams, n_streams, n_streams, n_streams,
            )
        if state and (state.get("world_size") != world_size or state.get("num_workers") != num_workers):
            log.warning(
                "data stream state is for world_size=%s num_workers=%s, this run has %s and %s: the data order "
                "restarts from the saved step without the saved shard positions",
                state.get("world_size"), state.get("num_workers"), world_size, num_workers,
            )
            state = {"step": state.get("step", 0)}
        self.step = int(state.get("step", 0))
        self.positions: dict[int, dict] = {int(k): v for k, v in state.get("positions", {}).items()}
        self.world_size, self.num_workers = world_size, num_workers
        self.dataset = ShardStream(
            urls, tasks, mode=mode, batch_size=batch_size, lr_patch=lr_patch, dn_patch=dn_patch, seed=seed,
            rank=rank, world_size=world_size, num_workers=num_workers, start_step=self.step,
            positions=self.positions, mask_ratio=mask_ratio, mask_patch=mask_patch, degrade=degrade, decode=decode,
        )
        self.loader = DataLoader(
            self.dataset, batch_size=None, num_workers=num_workers, persistent_workers=False,
            prefetch_factor=2 if num_workers else None,
            pin_memory=torch.cuda.is_available(),  # StepData.pin_memory: overlapped non_blocking copies to the GPU
        )
        self._it: Iterator[StepData] | None = None

    def __iter__(self) -> "DataStream":
        return self

    def __next__(self) -> StepData:
        if self._it is None:
            self._it = iter(self.loader)
        data = next(self._it)
        if data.step != self.step:  # would mean the round-robin assumption broke: fail loudly, not silently
            raise RuntimeError(f"data stream served step {data.step} where step {self.step} was expected")
        self.positions[data.stream] = data.position
        self.step += 1
        return data

    def skips(self) -> dict[str, int]:
        """Records skipped so far on this rank, by kind (``small``, ``corrupt``, ``bad_shard``)."""
        total = dict.fromkeys(SKIP_KINDS, 0)
        for pos in self.positions.values():
            for k, v in pos.get("skips", {}).items():
                total[k] += v
        return total

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "world_size": self.world_size, "num_workers": self.num_workers,
                "positions": {str(k): v for k, v in self.positions.items()}}
