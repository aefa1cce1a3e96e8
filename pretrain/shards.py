"""Image folders (ImageNet-style class trees or flat folders) to webdataset tar shards.

Each sample keeps the file's original encoded bytes (no re-encoding, so no quality loss and the smallest shards),
its key (the relative path, sanitised: webdataset keys must not contain dots) and its class index.

Design (after webdataset's ``ShardWriter`` and the ImageNet recipe in its docs, ECOSYSTEM.md section 2):
- The file list is shuffled once with a fixed seed, then cut into shards bounded by count and bytes. The plan is a
  pure function of (file list, sizes, seed, bounds), so a rerun makes the same plan and skips finished shards.
- Each shard is written to ``<name>.tmp-<pid>`` and renamed when complete: a shard under its final name is always
  whole, so an interrupted run never leaves a half-written shard behind that a rerun would trust.
- Files are checked (PIL ``verify`` plus size) before they go in; bad ones are skipped with a reason. Grayscale and
  CMYK JPEGs and PNGs named ``.JPEG`` are valid images and are stored as they are: the training pipeline decodes
  them to RGB. The stored extension follows the real format, so a PNG named ``.JPEG`` is stored as ``png``.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.io import atomic_path

__all__ = ["ShardSummary", "build_shards", "plan_shards", "find_images", "shard_urls", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif", "MPO": "jpg"}
_TAR_OVERHEAD = 3 * 1024  # headers of the 2 members of a sample plus padding, an upper bound


@dataclass
class ShardSummary:
    """What `build_shards` did. ``skipped`` lists ``{"path", "reason"}`` for every file left out."""

    shards: list[str] = field(default_factory=list)
    samples: int = 0
    bytes: int = 0
    classes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    reused_shards: int = 0
    seconds: float = 0.0
    urls: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def find_images(src: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Relative paths of image files under ``src`` (sorted) and the class names (top-level folder names).

    A folder whose images sit in sub-folders is a class tree (ImageNet ``train/``); then each image's class is its
    top-level folder. Images directly under ``src`` get no class (-1).
    """
    root = Path(src)
    if not root.is_dir():
        raise FileNotFoundError(f"shard source {str(src)!r} is not a folder; pass an image folder or ImageNet train/")
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    classes = sorted({f.split("/", 1)[0] for f in files if "/" in f})
    return files, classes


def plan_shards(
    src: str | os.PathLike, files: list[str], seed: int, maxcount: int, maxsize: int
) -> list[list[str]]:
    """Cut the seeded shuffle of ``files`` into groups of at most ``maxcount`` files and ``maxsize`` bytes."""
    order = list(files)
    random.Random(seed).shuffle(order)
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for rel in order:
        n = os.path.getsize(os.path.join(src, rel)) + _TAR_OVERHEAD
        if current and (len(current) >= maxcount or size + n > maxsize):
            groups.append(current)
            current, size = [], 0
        current.append(rel)
        size += n
    if current:
        groups.append(current)
    return groups


def sample_key(rel: str) -> str:
    """The webdataset key of a file: its relative path without suffix; dots and odd characters become ``_``."""
    stem = rel.rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem.replace("/", "__"))


def _check_image(data: bytes, min_size: int) -> tuple[str | None, str]:
    """(stored extension, "") for a good image, (None, reason) otherwise."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, size = im.format, im.size
            im.verify()  # structure check without a full decode
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # verify() misses truncated JPEG scans; a full decode does not
    except Exception as err:  # PIL raises many types for bad files
        detail = str(err).split(" <_io.")[0]  # PIL names the in-memory buffer; the path is reported apart
        return None, f"not a readable image ({type(err).__name__}: {detail})"
    if min(size) < min_size:
        return None, f"smaller than --min-size {min_size} px ({size[0]}x{size[1]})"
    ext = _FORMAT_EXT.get(fmt or "")
    if ext is None:
        return None, f"unsupported image format {fmt}"
    return ext, ""


def _write_shard(
    src: str, rel_files: list[str], class_index: dict[str, int], final: str, min_size: int
) -> tuple[str, int, int, list[dict]]:
    """Write one shard to a temporary name, then rename it. Returns (path, samples, bytes, skipped)."""
    tmp = f"{final}.tmp-{os.getpid()}"
    samples, skipped = 0, []
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in rel_files:
            try:
                with open(os.path.join(src, rel), "rb") as fh:
                    data = fh.read()
            except OSError as err:
                skipped.append({"path": rel, "reason": f"unreadable ({err})"})
                continue
            ext, reason = _check_image(data, min_size)
            if ext is None:
                skipped.append({"path": rel, "reason": reason})
                continue
            key = sample_key(rel)
            cls = class_index.get(rel.split("/", 1)[0], -1) if "/" in rel else -1
            for suffix, payload in ((ext, data), ("cls", str(cls).encode())):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size, info.mtime, info.mode = len(payload), 0, 0o444
                tar.addfile(info, io.BytesIO(payload))
            samples += 1
    os.replace(tmp, final)
    return final, samples, os.path.getsize(final), skipped


def _count_samples(path: str) -> int:
    with tarfile.open(path, "r") as tar:
        return len({m.name.split(".", 1)[0] for m in tar.getmembers() if m.isreg()})


def shard_urls(pattern: str, n: int) -> str:
    """The brace form of ``n`` shards of a printf pattern: ``out/train-{000000..000011}.tar``."""
    m = re.search(r"%0?(\d*)d", pattern)
    width = int(m.group(1) or 0) if m else 0
    if n == 1:
        return pattern % 0
    return pattern[: m.start()] + "{" + f"{0:0{width}d}..{n - 1:0{width}d}" + "}" + pattern[m.end():]


def build_shards(
    src: str | os.PathLike,
    out_pattern: str,
    *,
    maxcount: int = 5000,
    maxsize: float = 1e9,
    workers: int | None = None,
    seed: int = 0,
    min_size: int = 0,
    progress: bool = True,
) -> ShardSummary:
    """Write the images under ``src`` into shards named by ``out_pattern`` (e.g. ``out/train-%06d.tar``).

    Args:
        src: an image folder or an ImageNet-style class tree.
        out_pattern: printf pattern with one integer field for the shard index.
        maxcount: most samples per shard.
        maxsize: most bytes per shard (approximate: file sizes plus tar headers).
        workers: processes writing shards in parallel (default: all cores).
        seed: shuffle seed; keep it fixed so a rerun resumes the same plan.
        min_size: images whose shorter side is below this are skipped and reported.
        progress: show a tqdm progress bar over shards.

    Returns:
        A `ShardSummary`, also written as JSON next to the shards (``<prefix>summary.json``).
    """
    if not re.search(r"%0?\d*d", out_pattern):
        raise ValueError(f"OUT_PATTERN {out_pattern!r} needs one integer field for the shard index, e.g. out/train-%06d.tar")
    t0 = time.time()
    src = os.fspath(src)
    files, classes = find_images(src)
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {src!r}")
    groups = plan_shards(src, files, seed, maxcount, int(maxsize))
    out_dir = os.path.dirname(out_pattern) or "."
    os.makedirs(out_dir, exist_ok=True)
    class_index = {c: i for i, c in enumerate(classes)}
    journal_path = os.path.join(out_dir, ".shards-journal.jsonl")
    journal = _read_journal(journal_path)

    summary = ShardSummary(classes=classes)
    results: dict[int, tuple[str, int, int, list[dict]]] = {}
    todo = []
    for i, group in enumerate(groups):
        final = out_pattern % i
        if os.path.exists(final):  # renamed only when whole, so it is finished
            entry = journal.get(os.path.basename(final))
            skipped = entry["skipped"] if entry else []
            results[i] = (final, _count_samples(final), os.path.getsize(final), skipped)
            summary.reused_shards += 1
        else:
            todo.append(i)
    for stale in Path(out_dir).glob(Path(out_pattern).name.split("%")[0] + "*.tmp-*"):
        stale.unlink(missing_ok=True)  # a killed writer's leftovers

    from tqdm import tqdm

    bar = tqdm(total=len(groups), initial=len(groups) - len(todo), unit="shard", disable=not progress)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    with open(journal_path, "a") as jf, ProcessPoolExecutor(workers) as pool:
        futures = {
            pool.submit(_write_shard, src, groups[i], class_index, out_pattern % i, min_size): i for i in todo
        }
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            path, n, nbytes, skipped = results[i]
            jf.write(json.dumps({"shard": os.path.basename(path), "samples": n, "skipped": skipped}) + "\n")
            jf.flush()
            bar.update(1)
    bar.close()

    for i in sorted(results):
        path, n, nbytes, skipped = results[i]
        summary.shards.append(path)
        summary.samples += n
        summary.bytes += nbytes
        summary.skipped.extend(skipped)
    summary.seconds = round(time.time() - t0, 3)
    summary.urls = shard_urls(out_pattern, len(groups))
    prefix = Path(out_pattern).name.split("%")[0]
    _atomic_write(os.path.join(out_dir, f"{prefix}summary.json"), summary.to_json())
    return summary


def _read_journal(path: str) -> dict[str, dict]:
    entries: dict[str, dict] = {}
    if os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    entries[entry["shard"]] = entry
                except (ValueError, KeyError):  # a line cut by a kill
                    continue
    return entries


def _atomic_write(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
