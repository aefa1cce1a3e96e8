"""Fine-tuning data streams: HR images degraded on the fly by the task, or paired LQ/GT files cropped in register.

What each task trains on is found and checked by `finetune.pairs.scan_training_data` (image folders, DIV2K-style
HR/LR_bicubic folders, rainy/norain pairs); `build_stream` streams those (`PairStream`) or webdataset shards
(``.tar`` paths, brace patterns, URLs; several ``--train`` specs are joined with ``::``, as pretraining's
``--data``) through `pretrain.data.DataStream`, unchanged, after `pretrain.data.check_shards`. The scan's names
are re-exported here.

A file that passes the scan but fails to decode in training (a JPEG truncated after its header) is skipped: the
sample is replaced by the next image of the same permutation, a choice that depends only on the files, so a resumed
run draws the same batches; `PairStream.skips` counts it and the first failure of each file is logged by name.

The stream is a function of (seed, step, rank), like `pretrain.data.ShardStream`: sample ``k`` of a task is image
``perm_epoch[k % N]`` of a per-epoch seeded permutation, and crops, flips and degradation noise come from a generator
seeded with (seed, step, rank). Its state is therefore just the next step, and a resumed run sees exactly the
batches of an uninterrupted one. It yields `pretrain.data.StepData`, what `pretrain.loop.train_loop` consumes.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from finetune.pairs import (DataError, Pair, TrainingData, is_shard_spec, probe_image, scan_training_data,
                            unreadable_reason)
from pretrain.batch import Batch, StepData
from pretrain.data import SKIP_KINDS, degrade_seed, hr_patch, step_generator, stream_tasks, task_plan
from pretrain.decode import apply_flips, draw_flips
from pretrain.degrade import worker_degrade
from tasks.registry import MASK_PATCH, MASK_RATIO, Task

__all__ = ["Pair", "DataError", "TrainingData", "scan_training_data", "PairStream", "is_shard_spec", "shard_data",
           "build_stream", "probe_image"]

log = logging.getLogger("finetune.data")


class _ImageCache:
    """Decoded images, least recently used out first, within a byte budget (per data-loader worker)."""

    def __init__(self, budget_bytes: int):
        self.budget, self.used = budget_bytes, 0
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, path: str) -> np.ndarray:
        if path in self.items:
            self.items.move_to_end(path)
            return self.items[path]
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8; grayscale and palette files become RGB
        self.items[path] = arr
        self.used += arr.nbytes
        while self.used > self.budget and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.used -= old.nbytes
        return arr


def _augment(patches: list[torch.Tensor], g: torch.Generator) -> list[torch.Tensor]:
    """The same random flips and 90-degree rotation for every patch of one sample (keeps LQ and GT in register)."""
    flips = draw_flips(g)
    return [apply_flips(p, flips) for p in patches]


def _to_chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


class _StepDataset(Dataset):
    """Map-style: item ``i`` is the `StepData` of micro-step ``i`` on this rank (a pure function of seed and i)."""

    def __init__(self, pairs: dict[str, list[Pair]], *, batch_size: int, lr_patch: int, dn_patch: int, seed: int,
                 rank: int, world_size: int, cache_mb: int, mode: str = "edt",
                 degrade: bool | tuple[str, ...] = True, mask_ratio: float = MASK_RATIO, mask_patch: int = MASK_PATCH):
        self.pairs, self.mode, self.degrade = pairs, mode, degrade
        self.task_objs = stream_tasks(tuple(pairs), mask_ratio, mask_patch)
        self.batch_size, self.lr_patch, self.dn_patch = batch_size, lr_patch, dn_patch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.cache = _ImageCache(cache_mb * 2**20)
        self.bad: dict[str, str] = {}  # files that failed to decode in this process: path -> why
        self._perms: dict[str, tuple[int, torch.Tensor]] = {}

    def _index(self, task: str, k: int) -> int:
        n = len(self.pairs[task])
        epoch = k // n
        if self._perms.get(task, (None,))[0] != epoch:  # one epoch per task at a time is all a step needs
            g = torch.Generator().manual_seed(_stable_seed(self.seed, task, epoch))
            self._perms[task] = (epoch, torch.randperm(n, generator=g))
        return int(self._perms[task][1][k % n])

    def _load(self, path: str) -> np.ndarray | None:
        if path not in self.bad:
            try:
                return self.cache.get(path)
            except Exception as err:  # noqa: BLE001 - any decoder error is a bad file, never a dead run
                self.bad[path] = unreadable_reason(path, err)
        return None

    def _draw(self, task: str, k: int, skipped: list[tuple[str, str]]) -> tuple[Pair, np.ndarray, np.ndarray | None]:
        """Sample ``k``'s pair, decoded; a pair that fails is recorded in ``skipped`` and the next one is drawn.

        The replacement depends only on which files decode, the same in every process and every resumed run.
        """
        pairs = self.pairs[task]
        first = self._index(task, k)
        for j in range(len(pairs)):
            pair = pairs[(first + j) % len(pairs)]
            gt = self._load(pair.gt)
            lq = self._load(pair.lq) if (gt is not None and pair.lq is not None) else None
            if gt is not None and (pair.lq is None or lq is not None):
                return pair, gt, lq
            path = pair.gt if gt is None else pair.lq
            skipped.append((path, self.bad[path]))
        raise RuntimeError(f"none of the {len(pairs)} training images of {task} decodes (e.g. {skipped[0][0]}: "
                           f"{skipped[0][1]}); check the files")

    def _sample(self, task: Task, gt: np.ndarray, lq: np.ndarray | None,
                g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        if lq is None:
            size = hr_patch(task.name, self.lr_patch, self.dn_patch)
            h, w = gt.shape[:2]
            top = int(torch.randint(0, h - size + 1, (1,), generator=g))
            left = int(torch.randint(0, w - size + 1, (1,), generator=g))
            (patch,) = _augment([_to_chw(gt[top : top + size, left : left + size])], g)
            return patch, None
        s = task.scale
        p = self.lr_patch if s > 1 else self.dn_patch
        h, w = lq.shape[:2]
        p = min(p, h, w)  # _drop_small guarantees the GT; LQ = GT // s, so this only bites rounding edge cases
        top = int(torch.randint(0, h - p + 1, (1,), generator=g))
        left = int(torch.randint(0, w - p + 1, (1,), generator=g))
        lq_patch = _to_chw(lq[top : top + p, left : left + p])
        gt_patch = _to_chw(gt[top * s : (top + p) * s, left * s : (left + p) * s])  # the same region, in register
        gt_patch, lq_patch = _augment([gt_patch, lq_patch], g)
        return gt_patch, lq_patch

    def __getitem__(self, step: int) -> StepData:
        g = step_generator(self.seed, step, self.rank)
        batches, keys, skipped = {}, [], []
        for task in task_plan(tuple(self.pairs), self.mode, self.seed, step):
            t = self.task_objs[task]
            gts, lqs = [], []
            for i in range(self.batch_size):
                k = (step * self.world_size + self.rank) * self.batch_size + i
                pair, gt_img, lq_img = self._draw(task, k, skipped)
                gt, lq = self._sample(t, gt_img, lq_img, g)
                gts.append(gt)
                lqs.append(lq)
                keys.append(f"{task}:{Path(pair.gt).name}")
            gt = torch.stack(gts).float().div_(255.0)  # (B, 3, P*s, P*s)
            # on-the-fly LQ is degraded by `degrade_pending`: below (workers) or by the trainer on its device
            lq = None if lqs[0] is None else torch.stack(lqs).float().div_(255.0)
            batches[task] = Batch(lq=lq, gt=gt, task=task)
        # the files skipped for this step travel with it: workers are separate processes, the count is the stream's
        pending = any(b.lq is None for b in batches.values())
        data = StepData(step=step, batches=batches, keys=keys, position={"skipped": skipped},
                        degrade_seed=degrade_seed(self.seed, step, self.rank) if pending else None)
        return worker_degrade(data, self.task_objs, self.lr_patch, self.degrade)

    def __len__(self) -> int:  # the sampler is infinite; DataLoader never asks, but Dataset wants a length
        return 2**62


def _stable_seed(seed: int, task: str, epoch: int) -> int:
    """A seed from (seed, task, epoch) that is the same in every process (``hash`` of a str is not)."""
    import zlib

    return (seed * 1_000_003 + epoch) * 65_537 + zlib.crc32(task.encode())


class PairStream:
    """The iterator `pretrain.loop.train_loop` consumes: `StepData` for micro-steps ``start, start + 1, ...``.

    Args:
        pairs: training images per task (`TrainingData.pairs`).
        mode: ``"edt"`` (every micro-step has all tasks) or ``"ipt"`` (one task per micro-step), as
            `pretrain.data.task_plan` draws them for pretraining.
        batch_size: images per task per micro-step.
        lr_patch, dn_patch: LQ patch side for SR tasks / patch side for scale-1 tasks.
        seed, rank, world_size: the stream is a function of these and the step.
        num_workers: data-loader processes (0: in the main process).
        state: `state_dict` of an earlier stream, to continue where it stopped.
        cache_mb: decoded-image cache per process.
        degrade: degrade on-the-fly pairs in the workers; False leaves it to the trainer (`degrade_pending`), task
            names split them (`pretrain.degrade.worker_roles`).
        mask_ratio, mask_patch: the masked task's mask, as in pretraining.
    """

    def __init__(self, pairs: dict[str, list[Pair]], *, batch_size: int, lr_patch: int, dn_patch: int, seed: int,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, state: dict | None = None,
                 cache_mb: int = 1024, mode: str = "edt", degrade: bool | tuple[str, ...] = True,
                 mask_ratio: float = MASK_RATIO, mask_patch: int = MASK_PATCH):
        state = state or {}
        self.step = int(state.get("step", 0))
        self.corrupt = int(state.get("skips", {}).get("corrupt", 0))  # samples skipped so far, resumed runs included
        self.bad_files: dict[str, str] = dict(state.get("bad_files", {}))  # path -> why, each logged once
        self.dataset = _StepDataset(pairs, batch_size=batch_size, lr_patch=lr_patch, dn_patch=dn_patch, seed=seed,
                                    rank=rank, world_size=world_size, cache_mb=max(64, cache_mb // max(1, num_workers)),
                                    mode=mode, degrade=degrade, mask_ratio=mask_ratio, mask_patch=mask_patch)
        self.loader = DataLoader(
            self.dataset, batch_size=None, sampler=itertools.count(self.step), num_workers=num_workers,
            persistent_workers=False, prefetch_factor=2 if num_workers else None,
            pin_memory=torch.cuda.is_available(),  # StepData.pin_memory: overlapped non_blocking copies to the GPU
        )
        self._it: Iterator[StepData] | None = None

    def __iter__(self) -> "PairStream":
        return self

    def __next__(self) -> StepData:
        if self._it is None:
            self._it = iter(self.loader)
        data = next(self._it)
        if data.step != self.step:  # the loader serves in order; anything else is a bug worth stopping for
            raise RuntimeError(f"data stream served step {data.step} where step {self.step} was expected")
        for path, why in data.position.get("skipped", []):
            self.corrupt += 1
            if path not in self.bad_files:
                self.bad_files[path] = why
                log.warning("skipped %s in training (%d sample(s) skipped so far): %s", path, self.corrupt, why)
        self.step += 1
        return data

    def skips(self) -> dict[str, int]:
        """Samples skipped so far, by kind, in `pretrain.data`'s shape (here only ``corrupt``: decode failures)."""
        return {**dict.fromkeys(SKIP_KINDS, 0), "corrupt": self.corrupt}

    def state_dict(self) -> dict[str, Any]:
        if not self.corrupt:
            return {"step": self.step}
        return {"step": self.step, "skips": self.skips(), "bad_files": dict(self.bad_files)}


def shard_data(specs: list[str]) -> str:
    """``--train a.tar b.tar`` as one `pretrain.data.expand_urls` spec: joined by ``::`` (a space is part of a URL)."""
    return "::".join(specs)


def build_stream(specs: list[str], task_names: list[str], *, batch_size: int, lr_patch: int, dn_patch: int,
                 seed: int, rank: int, world_size: int, num_workers: int, state: dict | None = None,
                 data: TrainingData | None = None, mode: str = "edt", degrade: bool | tuple[str, ...] = True,
                 decode: bool = True, mask_ratio: float = MASK_RATIO, mask_patch: int = MASK_PATCH):
    """The training stream for ``specs``: `PairStream` over folders, or `pretrain.data.DataStream` over shards."""
    shard_specs = [s for s in specs if is_shard_spec(s)]
    if shard_specs:
        if len(shard_specs) != len(specs):
            raise DataError(f"--train mixes shards {shard_specs} with folders; use one kind per run")
        from pretrain.data import DataStream, expand_urls

        return DataStream(
            expand_urls(shard_data(specs)), tuple(task_names), mode=mode, batch_size=batch_size, lr_patch=lr_patch,
            dn_patch=dn_patch, seed=seed, rank=rank, world_size=world_size, num_workers=num_workers, state=state,
            degrade=degrade, decode=decode, mask_ratio=mask_ratio, mask_patch=mask_patch,
        )
    # image folders are decoded by the workers (and cached) whatever ``decode``: only shards decode on the device
    data = data or scan_training_data(specs, task_names, lr_patch=lr_patch, dn_patch=dn_patch)
    return PairStream(data.pairs, batch_size=batch_size, lr_patch=lr_patch, dn_patch=dn_patch, seed=seed, rank=rank,
                      world_size=world_size, num_workers=num_workers, state=state,
                      cache_mb=int(os.environ.get("FINETUNE_CACHE_MB", "1024")), mode=mode, degrade=degrade,
                      mask_ratio=mask_ratio, mask_patch=mask_patch)
