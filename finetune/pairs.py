"""Finding fine-tuning data: which images each task trains on, every pair checked before training.

Sources (``--train``, one or more, concatenated per task):

- a folder of images (searched recursively; an ImageNet-style tree works): each task degrades random HR crops on
  the fly with ``tasks.get_task(name).degrade``, as in pretraining;
- a DIV2K-style folder: ``*HR/`` plus ``*LR_bicubic/X<s>/<name>x<s>.png`` (DIV2K's ``DIV2K_train_HR`` +
  ``DIV2K_train_LR_bicubic``, Flickr2K's ``Flickr2K_HR`` + ``Flickr2K_LR_bicubic``, or the benchmark layout
  ``HR/`` + ``LR_bicubic/X2/``): an ``sr_x<s>`` task trains on the stored pairs when ``X<s>`` exists, other tasks
  (``sr_any`` too: it draws its own scale per patch) degrade the HR images;
- a ``rainy/`` + ``norain/`` folder (the Rain100H/Rain100L layout): derain tasks train on the pairs;
- webdataset shards (``.tar`` paths, brace patterns, URLs: `is_shard_spec`) are not scanned here: they stream
  through `pretrain.data.DataStream` (`finetune.data.build_stream`).

Pairs are checked before training: every GT needs its LQ partner (and the reverse) and the sizes must agree
(``LQ = GT // scale``, DIV2K's convention); every problem is reported at once, by file name. Images smaller than
the patch are left out with a warning.

Bad files follow pretraining's policy (`pretrain.data`): skipped and counted, never a dead run. The scan opens
every header and lets PIL verify the file (cheap: no pixels decoded); each unreadable file is named with its
reason and left out (`TrainingData.skipped`), and only a task left with no usable image is an error. What passes
the scan but fails to decode in training is the stream's to skip (`finetune.data`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.data import hr_patch
from restore.model import ARBITRARY_SCALE_TASK
from tasks.errors import InputError
from tasks.io import IMAGE_EXTENSIONS, list_images
from tasks.registry import Task, TaskKind, get_task

__all__ = ["Pair", "DataError", "TrainingData", "scan_training_data", "is_shard_spec", "probe_image",
           "unreadable_reason"]

log = logging.getLogger("finetune.pairs")
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


def unreadable_reason(path: str | os.PathLike, err: BaseException) -> str:
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
                self.bad[key] = unreadable_reason(path, err)
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
        pairs[name] = _drop_small(pairs[name], task, hr_patch(task.name, lr_patch, dn_patch), probe)
        if not pairs[name]:
            raise DataError(f"no training image for {name} is at least {hr_patch(task.name, lr_patch, dn_patch)} px on "
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
