"""Fine-tuning data: HR images degraded on the fly by the task, or paired LQ/GT files cropped in register.

Sources (``--train``, one or more, concatenated per task):

- a folder of images (searched recursively; an ImageNet-style tree works): each task degrades random HR crops on
  the fly with ``tasks.get_task(name).degrade``, as in pretraining;
- a DIV2K-style folder: ``*HR/`` plus ``*LR_bicubic/X<s>/<name>x<s>.png`` (DIV2K's ``DIV2K_train_HR`` +
  ``DIV2K_train_LR_bicubic``, Flickr2K's ``Flickr2K_HR`` + ``Flickr2K_LR_bicubic``, or the benchmark layout
  ``HR/`` + ``LR_bicubic/X2/``): an ``sr_x<s>`` task trains on the stored pairs when ``X<s>`` exists, other tasks
  (``sr_any`` too: it draws its own scale per patch) degrade the HR images;
- a ``rainy/`` + ``norain/`` folder (the Rain100H/Rain100L layout): derain tasks train on the pairs;
- webdataset shards (``.tar`` paths, brace patterns, URLs; several ``--train`` specs are joined with ``::``, as
  pretraining's ``--data``): `pretrain.data.DataStream`, unchanged, after `pretrain.data.check_shards`.

Pairs are checked before training: every GT needs its LQ partner (and the reverse) and the sizes must agree
(``LQ = GT // scale``, DIV2K's convention); every problem is reported at once, by file name. Images smaller than
the patch are left out with a warning.

Bad files follow pretraining's policy (`pretrain.data`): skipped and counted, never a dead run. The scan opens
every header and lets PIL verify the file (cheap: no pixels decoded); each unreadable file is named with its
reason and left out (`TrainingData.skipped`), and only a task left with no usable image is an error. A file that
passes the scan but fails to decode in training (a JPEG truncated after its header) is skipped there: the sample is
replaced by the next image of the same permutation, a choice that depends only on the files, so a resumed run
draws the same batches; `PairStream.skips` counts it and the first failure of each file is logged by name.

The stream is a function of (seed, step, rank), like `pretrain.data.ShardStream`: sample ``k`` of a task is image
``perm_epoch[k % N]`` of a per-epoch seeded permutation, and crops, flips and degradation noise come from a generator
seeded with (seed, step, rank). Its state is therefore just the next step, and a resumed run sees exactly the
batches of an uninterrupted one. It yields `pretrain.data.StepData`, what `pretrain.loop.train_loop` consumes.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pretrain.batch import Batch, StepData
from pretrain.data import SKIP_KINDS, degrade_seed, hr_patch, step_generator, stream_tasks, task_plan
from pretrain.decode import apply_flips, draw_flips
from pretrain.degrade import degrade_pending
from restore.model import ARBITRARY_SCALE_TASK
from tasks.errors import InputError
from tasks.io import IMAGE_EXTENSIONS, list_images
from tasks.registry import MASK_PATCH, MASK_RATIO, Task, TaskKind, get_task

__all__ = ["Pair", "DataError", "TrainingData", "scan_training_data", "PairStream", "is_shard_spec", "shard_data",
           "build_stream", "probe_image"]

log = logging.getLogger("finetune.data")
_MAX_LISTED = 20  # problems named in one error message


class DataError(InputError):
    """The training data cannot be used as given (missing folder, unpaired or mis-sized files)."""


@dataclass(frozen=True)
class Pair:
    """One training image: ``gt`` and its stored low-quality partner ``lq`` (None: degrade ``gt`` on the fly)."""

    gt: str
    lq: str | None = None


@dataclass
class TrainingData:
    """Training images per task, plus a one-line description per source for the model card."""

    pairs: dict[str, list[Pair]]
    descriptions: list[str]
    names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) the scan left out

    def describe(self) -> str:
        return "; ".join(self.descriptions)


def is_shard_spec(spec: str) -> bool:
    """True for webdataset shard specs: ``.tar`` files, brace patterns, URLs, or a folder holding only tars."""
    if "://" in spec or spec.startswith("pipe:") or "{" in spec or spec.endswith(".tar"):
        return True
    p = Path(spec)
    if p.is_dir():
        entries = [e for e in p.iterdir() if not e.name.startswith(".")]
        return bool(entries) and all(e.suffix == ".tar" for e in entries)
    return False


def probe_image(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file that PIL can open and verify; raises (any exception) if it cannot.

    Reads the header and the file's structure (PNG chunk checksums, ...), not the pixels: what a scan of thousands
    of files can afford. A JPEG cut after its header passes; training skips it when it fails to decode.
    """
    from PIL import Image

    with Image.open(path) as im:
        size = im.height, im.width
        im.verify()
    return size


def _why(path: str | os.PathLike, err: BaseException) -> str:
    """A short reason a file is unusable (the file is named beside it, so PIL's own copy of the path is cut)."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "empty file (0 bytes)"
    text = " ".join(str(err).replace(repr(str(path)), "").replace(str(path), "").split()).rstrip(" :")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class _Probe:
    """`probe_image` once per file during a scan; unreadable files collect in ``bad`` (path -> why)."""

    def __init__(self) -> None:
        self.sizes: dict[str, tuple[int, int]] = {}
        self.bad: dict[str, str] = {}

    def __call__(self, path: str | os.PathLike) -> tuple[int, int] | None:
        key = str(path)
        if key not in self.sizes and key not in self.bad:
            try:
                self.sizes[key] = probe_image(path)
            except Exception as err:  # noqa: BLE001 - whatever PIL raises, the file cannot be trained on
                self.bad[key] = _why(path, err)
        return self.sizes.get(key)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _hr_folders(root: Path) -> list[tuple[Path, Path | None]]:
    """DIV2K-style (HR folder, LR_bicubic folder or None) pairs in or at ``root``."""
    found = []
    if root.name.endswith("HR"):
        candidates = [root]
    else:
        candidates = sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith("HR"))
    for hr in candidates:
        prefix = hr.name[: -len("HR")]
        lr = hr.parent / f"{prefix}LR_bicubic"
        found.append((hr, lr if lr.is_dir() else None))
    return found


def _lr_stem(stem: str, scale: int) -> str:
    """The HR stem an LR file belongs to: ``0001x2`` -> ``0001`` (DIV2K and the benchmarks name them so)."""
    return re.sub(f"x{scale}$", "", stem)


def _sr_pairs(hr_dir: Path, lr_dir: Path, scale: int, problems: list[str], probe: _Probe) -> list[Pair]:
    hr_files = list_images(hr_dir)
    lr_by_stem: dict[str, Path] = {}
    for p in list_images(lr_dir):
        lr_by_stem.setdefault(_lr_stem(p.stem, scale), p)
    base = hr_dir.parent
    pairs = []
    for hr in hr_files:
        lr = lr_by_stem.pop(hr.stem, None)
        if lr is None:
            problems.append(
                f"{_rel(hr, base)} has no LR partner in {_rel(lr_dir, base)} (expected {hr.stem}x{scale}.png)"
            )
            continue
        hr_size, lr_size = probe(hr), probe(lr)
        if hr_size is None or lr_size is None:  # named in the scan's list of skipped files
            continue
        (h, w), (lh, lw) = hr_size, lr_size
        if (lh, lw) != (h // scale, w // scale):
            problems.append(
                f"{_rel(lr, base)} is {lw}x{lh} but its HR {hr.name} is {w}x{h}: at x{scale} the LR must be "
                f"{w // scale}x{h // scale}"
            )
            continue
        pairs.append(Pair(gt=str(hr), lq=str(lr)))
    for stem, lr in sorted(lr_by_stem.items()):
        problems.append(f"{_rel(lr, base)} has no HR partner in {_rel(hr_dir, base)} (expected {stem}.png)")
    return pairs


def _rain_pairs(root: Path, problems: list[str], probe: _Probe) -> list[Pair]:
    rainy = {p.name: p for p in list_images(root / "rainy")}
    pairs = []
    for clean in list_images(root / "norain"):
        lq = rainy.pop(clean.name, None)
        if lq is None:
            problems.append(f"norain/{clean.name} has no partner rainy/{clean.name}")
            continue
        clean_size, lq_size = probe(clean), probe(lq)
        if clean_size is None or lq_size is None:  # named in the scan's list of skipped files
            continue
        if lq_size != clean_size:
            (h, w), (lh, lw) = clean_size, lq_size
            problems.append(f"rainy/{lq.name} is {lw}x{lh} but norain/{clean.name} is {w}x{h}: they must match")
            continue
        pairs.append(Pair(gt=str(clean), lq=str(lq)))
    for name in sorted(rainy):
        problems.append(f"rainy/{name} has no partner norain/{name}")
    return pairs


def _all_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _patch_gt(task: Task, lr_patch: int, dn_patch: int) -> int:
    return hr_patch(task.name, lr_patch, dn_patch)


def _stored_scale(task: Task) -> bool:
    """Whether ``task`` can train on stored ``LR_bicubic/X<s>`` pairs: fixed-scale SR, not ``sr_any``, whose scale
    is drawn per patch (its registered x4 is only the fallback)."""
    return task.kind is TaskKind.SR and task.name != ARBITRARY_SCALE_TASK


def scan_training_data(specs: list[str], task_names: list[str], *, lr_patch: int, dn_patch: int) -> TrainingData:
    """Find the training images of each task in the folders ``specs``; check every pair before training.

    Unreadable files (empty, truncated, not an image) are left out and listed in ``skipped`` with the reason.

    Raises:
        DataError: a folder is missing or empty, files do not pair (all problems listed by file name), or a task
            is left without one usable image.
    """
    task_objs = {t: get_task(t) for t in task_names}
    pairs: dict[str, list[Pair]] = {t: [] for t in task_names}
    problems: list[str] = []
    probe = _Probe()
    descriptions, names = [], []
    for spec in specs:
        root = Path(spec).expanduser()
        if not root.is_dir():
            raise DataError(f"training data folder {spec!r} does not exist; pass an image folder, a DIV2K-style "
                            "folder (HR/ + LR_bicubic/X<s>/), a rainy/ + norain/ folder, or shard paths (.tar)")
        names.append(root.name)
        rain = (root / "rainy").is_dir() and (root / "norain").is_dir()
        hr_folders = [] if rain else _hr_folders(root)
        if rain:
            hr_images = list_images(root / "norain")
        elif hr_folders:
            hr_images = [p for hr, _ in hr_folders for p in list_images(hr)]
        else:
            hr_images = _all_images(root)
        if not hr_images:
            raise DataError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
        used = []
        for name, task in task_objs.items():
            if rain and task.kind is TaskKind.DERAIN:
                found = _rain_pairs(root, problems, probe)
                used.append(f"{len(found)} rainy/norain pairs ({name})")
            elif _stored_scale(task) and any(lr is not None and (lr / f"X{task.scale}").is_dir() for _, lr in hr_folders):
                found = []
                for hr, lr in hr_folders:
                    if lr is not None and (lr / f"X{task.scale}").is_dir():
                        found += _sr_pairs(hr, lr / f"X{task.scale}", task.scale, problems, probe)
                    else:
                        found += [Pair(gt=str(p)) for p in list_images(hr) if probe(p)]
                used.append(f"{len(found)} HR/LR_bicubic X{task.scale} pairs ({name})")
            else:
                found = [Pair(gt=str(p)) for p in hr_images if probe(p)]
                used.append(f"{len(found)} images degraded on the fly ({name})")
            pairs[name] += found
        descriptions.append(f"{root.name}: " + ", ".join(used))
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise DataError(
            f"{len(problems)} training file(s) do not pair up; fix or remove them before training:\n  {listed}{more}"
        )
    skipped = sorted(probe.bad.items())
    for path, why in skipped[:_MAX_LISTED]:
        log.warning("skipped %s: %s", path, why)
    if len(skipped) > _MAX_LISTED:
        log.warning("... and %d more unreadable file(s) skipped", len(skipped) - _MAX_LISTED)
    for name, task in task_objs.items():
        if not pairs[name]:
            listed = "; ".join(f"{Path(p).name}: {why}" for p, why in skipped[:3])
            raise DataError(f"no readable training image for {name} in {', '.join(specs)} ({len(skipped)} "
                            f"unreadable: {listed}{' ...' if len(skipped) > 3 else ''}); replace or remove them")
        pairs[name] = _drop_small(pairs[name], task, _patch_gt(task, lr_patch, dn_patch), probe)
        if not pairs[name]:
            raise DataError(f"no training image for {name} is at least {_patch_gt(task, lr_patch, dn_patch)} px on "
                            "its shorter side; use larger images or a smaller lr_patch/dn_patch")
    return TrainingData(pairs, descriptions, names, skipped)


def _drop_small(pairs: list[Pair], task: Task, size: int, probe: _Probe) -> list[Pair]:
    kept, small = [], []
    for pair in pairs:
        (small if min(probe(pair.gt)) < size else kept).append(pair)
    if small:
        log.warning("%s: %d image(s) smaller than the %d px patch are left out, e.g. %s", task.name, len(small), size,
                    ", ".join(Path(p.gt).name for p in small[:5]))
    return kept


# --------------------------------------------------------------------------------------------- sampling


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
                 rank: int, world_size: int, cache_mb: int, mode: str = "edt", degrade: bool = True,
                 mask_ratio: float = MASK_RATIO, mask_patch: int = MASK_PATCH):
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
                self.bad[path] = _why(path, err)
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
            size = _patch_gt(task, self.lr_patch, self.dn_patch)
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
        return degrade_pending(data, self.task_objs, self.lr_patch, "cpu") if self.degrade else data

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
        degrade: degrade on-the-fly pairs in the workers; False leaves it to the trainer (`degrade_pending`).
        mask_ratio, mask_patch: the masked task's mask, as in pretraining.
    """

    def __init__(self, pairs: dict[str, list[Pair]], *, batch_size: int, lr_patch: int, dn_patch: int, seed: int,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, state: dict | None = None,
                 cache_mb: int = 1024, mode: str = "edt", degrade: bool = True, mask_ratio: float = MASK_RATIO,
                 mask_patch: int = MASK_PATCH):
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
                 data: TrainingData | None = None, mode: str = "edt", degrade: bool = True, decode: bool = True,
                 mask_ratio: float = MASK_RATIO, mask_patch: int = MASK_PATCH):
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
