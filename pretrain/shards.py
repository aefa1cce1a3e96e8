"""Image folders (ImageNet-style class trees or flat folders) to webdataset tar shards.

Each sample keeps the file's original encoded bytes (no re-encoding, so no quality loss and the smallest shards),
a key unique within the shard set, its class index (``cls``) and its original relative path (``json``).

Design (after webdataset's ``ShardWriter`` and the ImageNet recipe in its docs, ECOSYSTEM.md section 2):
- The file list is shuffled once with a fixed seed, then cut into shards bounded by count and bytes. The plan (the
  source listing with sizes and mtimes, the options, the shard -> sample assignment) is written to
  ``<prefix>plan.json`` before any shard. A rerun compares its own plan with that file: the same plan continues
  (finished shards are reused, missing or incomplete ones rebuilt); a different one is refused with what changed,
  unless ``force`` rebuilds from scratch. Resuming can therefore never mix two plans (lost or duplicated images).
- Each shard is written to ``<name>.tmp-<pid>`` and renamed when complete, then recorded in a journal with its size:
  a shard is reused only if its name, plan and size match the journal, so a truncated or foreign file is rebuilt.
- One writer per pattern: a ``flock`` on ``.<prefix>shards.lock`` (released by the kernel when its holder dies, so
  a killed run never blocks the next one).
- Files are checked (PIL ``verify`` plus a full decode, and size) before they go in; bad ones are skipped with a
  reason. Grayscale and CMYK JPEGs and PNGs named ``.JPEG`` are valid images and are stored as they are: the
  training pipeline decodes them to RGB. The stored extension follows the real format (a PNG named ``.JPEG`` is
  stored as ``png``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import random
import re
import tarfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from tasks.errors import InputError
from tasks.io import atomic_path

__all__ = [
    "ShardSummary", "build_shards", "plan_shards", "find_images", "shard_urls", "sample_key", "sample_keys",
    "check_pattern", "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif", "MPO": "jpg"}
_TAR_OVERHEAD = 3 * 1024  # headers of the 3 members of a sample plus padding, an upper bound
_PLAN_VERSION = 2  # 1: no plan file (keys could collide); bump when the shard contents of a plan change
_FIELD = re.compile(r"%0?\d*d")
_EXAMPLE = "shards/train-%06d.tar"
_NOT_KEY = re.compile(r"[^A-Za-z0-9_-]")  # webdataset cuts a key at its first dot; keep keys to plain characters
# a stream splits by shard across ranks x DataLoader workers (pretrain.data): more of them than shards re-read some
PARALLELISM_NOTE = ("a stream is split by shard across ranks x dataloader workers, so {n} shards feed at most {n} "
                    "ranks x workers without re-reading")


@dataclass
class ShardSummary:
    """What `build_shards` did.

    ``skipped`` lists ``{"path", "reason", "kind"}`` for every file left out; ``kind`` is ``"unreadable"`` (a file
    that is not a usable image) or ``"small"`` (below ``min_size``, left out on request).
    """

    shards: list[str] = field(default_factory=list)
    samples: int = 0
    bytes: int = 0
    classes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    reused_shards: int = 0
    written_shards: int = 0
    removed_stale: list[str] = field(default_factory=list)
    seconds: float = 0.0
    urls: str = ""
    plan: str = ""
    summary_file: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @property
    def unreadable(self) -> list[dict]:
        """The skipped files that are not usable images (``small`` ones were left out on request)."""
        return [s for s in self.skipped if s.get("kind", "unreadable") != "small"]


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
    src: str | os.PathLike, files: list[str], seed: int, maxcount: int, maxsize: int,
    sizes: dict[str, int] | None = None,
) -> list[list[str]]:
    """Cut the seeded shuffle of ``files`` into groups of at most ``maxcount`` files and ``maxsize`` bytes.

    ``sizes`` (relative path -> bytes) saves a ``stat`` per file when the caller already has them.
    """
    order = list(files)
    random.Random(seed).shuffle(order)
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for rel in order:
        n = (sizes[rel] if sizes is not None else os.path.getsize(os.path.join(src, rel))) + _TAR_OVERHEAD
        if current and (len(current) >= maxcount or size + n > maxsize):
            groups.append(current)
            current, size = [], 0
        current.append(rel)
        size += n
    if current:
        groups.append(current)
    return groups


def sample_key(rel: str) -> str:
    """The base webdataset key of a file: its relative path without suffix; dots and odd characters become ``_``.

    Not unique on its own (``a.jpg``/``a.png``, ``x.y.png``/``x_y.png``): `sample_keys` resolves collisions.
    """
    stem = rel.rsplit(".", 1)[0]
    return _NOT_KEY.sub("_", stem.replace("/", "__"))


def sample_keys(files: list[str]) -> dict[str, str]:
    """Unique keys for ``files``: `sample_key`, plus ``-`` and 10 hex digits of the path's SHA-1 where it collides.

    Every file of a colliding group gets the hash, so a key depends only on its path and on which other paths share
    its base key, never on listing order; the original path is also stored in each sample's ``json``.
    """
    base = {rel: sample_key(rel) for rel in files}
    counts = Counter(base.values())
    keys = {
        rel: k if counts[k] == 1 else f"{k}-{hashlib.sha1(rel.encode()).hexdigest()[:10]}" for rel, k in base.items()
    }
    dup = [k for k, n in Counter(keys.values()).items() if n > 1]
    if dup:  # only a file literally named like another's hashed key can get here
        raise InputError(f"sample key {dup[0]!r} is shared by several files under the source; rename one of them")
    return keys


def check_pattern(out_pattern: str) -> None:
    """Refuse an output pattern that is not one printf integer field in the file name, with no other ``%`` or braces.

    Braces would be read as brace expansion in the shard URLs; a second field has no value to fill it.
    """
    name = os.path.basename(out_pattern)
    fields = _FIELD.findall(name)
    fix = f"use one integer field in the file name, e.g. {_EXAMPLE}"
    if "{" in out_pattern or "}" in out_pattern:
        raise InputError(f"OUT_PATTERN {out_pattern!r} contains a brace, which shard URLs read as a range; {fix}")
    if len(fields) != 1 or name.count("%") != 1:
        what = "no integer field" if not fields else f"{name.count('%')} '%' fields"
        raise InputError(f"OUT_PATTERN {out_pattern!r} has {what} in its file name; {fix}")
    if "%" in os.path.dirname(out_pattern):
        raise InputError(f"OUT_PATTERN {out_pattern!r} has a '%' in its folder; {fix}")


def _pattern_regex(out_pattern: str, tmp: bool = False) -> re.Pattern:
    """File names (no folder) that `out_pattern` makes for any index; with ``tmp``, their writers' temp files."""
    before, after = _FIELD.split(os.path.basename(out_pattern))
    return re.compile(re.escape(before) + r"\d+" + re.escape(after) + (r"\.tmp-\d+" if tmp else "") + "$")


def _check_image(data: bytes, min_size: int) -> tuple[str | None, str, str]:
    """(stored extension, "", "") for a good image, (None, reason, kind) otherwise."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, size = im.format, im.size
            im.verify()  # structure check without a full decode
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # verify() misses truncated JPEG scans; a full decode does not
    except Exception as err:  # PIL raises many types for bad files
        detail = str(err).split(" <_io.")[0]  # PIL names the in-memory buffer; the path is reported apart
        return None, f"not a readable image ({type(err).__name__}: {detail})", "unreadable"
    if min(size) < min_size:
        return None, f"smaller than --min-size {min_size} px ({size[0]}x{size[1]})", "small"
    ext = _FORMAT_EXT.get(fmt or "")
    if ext is None:
        return None, f"unsupported image format {fmt}", "unreadable"
    return ext, "", ""


def _write_shard(
    src: str, items: list[tuple[str, str, int]], final: str, min_size: int
) -> tuple[str, int, int, list[dict]]:
    """Write the ``(relative path, key, class)`` items to a temporary name, then rename it.

    Returns (path, samples, bytes, skipped). An exception (Ctrl-C included) removes the temporary file.
    """
    tmp = f"{final}.tmp-{os.getpid()}"
    samples, skipped = 0, []
    try:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for rel, key, cls in items:
                try:
                    with open(os.path.join(src, rel), "rb") as fh:
                        data = fh.read()
                except OSError as err:
                    skipped.append({"path": rel, "reason": f"unreadable ({err.strerror or err})", "kind": "unreadable"})
                    continue
                ext, reason, kind = _check_image(data, min_size)
                if ext is None:
                    skipped.append({"path": rel, "reason": reason, "kind": kind})
                    continue
                meta = json.dumps({"path": rel, "cls": cls}).encode()
                for suffix, payload in ((ext, data), ("cls", str(cls).encode()), ("json", meta)):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size, info.mtime, info.mode = len(payload), 0, 0o444  # fixed: a rebuilt shard is identical
                    tar.addfile(info, io.BytesIO(payload))
                samples += 1
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final, samples, os.path.getsize(final), skipped


def _worker_init(lock_fd: int) -> None:
    """Start a shard writer: drop the inherited lock and die with the parent.

    A forked worker shares the parent's locked file description; closing its copy leaves the parent the only
    holder, so the kernel frees the lock when the parent dies even if a worker lingers. ``PR_SET_PDEATHSIG`` makes
    the workers of a killed run stop instead of writing on unsupervised.
    """
    os.close(lock_fd)
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):  # not Linux: the lock is still released, orphans just finish their shard
        pass


def shard_urls(pattern: str, n: int) -> str:
    """The brace form of ``n`` shards of a printf pattern: ``out/train-{000000..000011}.tar``."""
    m = re.search(r"%0?(\d*)d", pattern)
    width = int(m.group(1) or 0) if m else 0
    if n == 1:
        return pattern % 0
    return pattern[: m.start()] + "{" + f"{0:0{width}d}..{n - 1:0{width}d}" + "}" + pattern[m.end():]


def _check_out_dir(out_dir: str) -> None:
    """Refuse an output folder that is (under) a file or not writable, before any work."""
    probe = Path(os.path.abspath(out_dir))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"the output folder {out_dir!r} of OUT_PATTERN cannot be made: {str(probe)!r} is a file; "
                         f"choose another folder, e.g. {_EXAMPLE}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"the output folder {out_dir!r} is not writable ({str(probe)!r} is read-only); choose a "
                         f"writable folder in OUT_PATTERN or fix its permissions")


def _make_out_dir(out_dir: str) -> None:
    """Create ``out_dir`` and prove it takes a file (``os.access`` says yes to root on a read-only mount's parent)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        with atomic_path(os.path.join(out_dir, ".write-probe")) as tmp:
            tmp.write_bytes(b"")
        os.remove(os.path.join(out_dir, ".write-probe"))
    except OSError as err:
        raise InputError(f"cannot write in the output folder {out_dir!r} ({err.strerror or err}); choose a writable "
                         f"folder in OUT_PATTERN or fix its permissions") from err


@contextlib.contextmanager
def _writer_lock(path: str) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (its PID inside) or refuse at once naming the holder's PID."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise InputError(f"another `pretrain shards` (PID {holder}) is writing these shards (lock {path!r} is "
                             f"held); wait for it to finish or stop it, then rerun") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)  # also releases the lock; the file stays (removing it would race with a waiting writer)


def _listing(src: str, files: list[str]) -> list[list]:
    """``[relative path, bytes, mtime in ns]`` per file: what a rerun compares to know the source is unchanged."""
    out = []
    for rel in files:
        st = os.stat(os.path.join(src, rel))
        out.append([rel, st.st_size, st.st_mtime_ns])
    return out


def _make_plan(
    src: str, out_pattern: str, files: list[str], classes: list[str], options: dict
) -> dict:
    """The whole build as data: listing, keys, options and shard -> files, with a digest of all of it."""
    listing = _listing(src, files)
    sizes = {rel: size for rel, size, _ in listing}
    groups = plan_shards(src, files, options["seed"], options["maxcount"], options["maxsize"], sizes=sizes)
    keys = sample_keys(files)
    index = {rel: i for i, rel in enumerate(files)}
    plan = {
        "version": _PLAN_VERSION,
        "pattern": os.path.basename(out_pattern),
        "options": options,
        "classes": classes,
        "files": [[rel, keys[rel], size, mtime] for rel, size, mtime in listing],
        "shards": [[os.path.basename(out_pattern % i), [index[r] for r in g]]
                   for i, g in enumerate(groups)],
    }
    plan["digest"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()
    plan["src"] = os.path.abspath(src)  # informative: a moved but unchanged source is the same plan
    return plan


def _plan_changes(old: dict, new: dict) -> list[str]:
    """What differs between the first run's plan and this one, in words (empty if they are the same plan)."""
    if old.get("digest") == new["digest"]:
        return []
    changes = []
    if old.get("version") != new["version"]:
        changes.append(f"the plan format was {old.get('version')}, now {new['version']} (another version made them)")
    if old.get("pattern") != new["pattern"]:
        changes.append(f"OUT_PATTERN file name was {old.get('pattern')!r}, now {new['pattern']!r}")
    for name, value in new["options"].items():
        was = old.get("options", {}).get(name)
        if was != value:
            changes.append(f"--{name.replace('_', '-')} was {was}, now {value}")
    before = {f[0]: (f[2], f[3]) for f in old.get("files", [])}
    after = {f[0]: (f[2], f[3]) for f in new["files"]}
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(r for r in set(after) & set(before) if after[r] != before[r])
    for what, paths in (("added to", added), ("removed from", removed), ("changed (size or mtime) in", changed)):
        if paths:
            changes.append(f"{len(paths)} image{'s' if len(paths) > 1 else ''} {what} SRC since the first run "
                           f"(e.g. {paths[0]!r})")
    return changes or ["the shard assignment differs (the first run used another version of pretrain shards)"]


def _stale_files(out_dir: str, patterns: list[str]) -> list[Path]:
    """Shards of these patterns (any index) and their writers' temp files in ``out_dir``."""
    regexes = [_pattern_regex(p, tmp) for p in patterns for tmp in (False, True)]
    if not os.path.isdir(out_dir):
        return []
    return sorted(p for p in Path(out_dir).iterdir() if any(r.match(p.name) for r in regexes))


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
    force: bool = False,
) -> ShardSummary:
    """Write the images under ``src`` into shards named by ``out_pattern`` (e.g. ``out/train-%06d.tar``).

    A rerun with the same source and options continues the first run exactly; a rerun whose plan differs raises
    `InputError` naming what changed, unless ``force``.

    Args:
        src: an image folder or an ImageNet-style class tree.
        out_pattern: printf pattern with one integer field in the file name for the shard index.
        maxcount: most samples per shard.
        maxsize: most bytes per shard (approximate: file sizes plus tar headers).
        workers: processes writing shards in parallel (default: all cores).
        seed: shuffle seed; keep it fixed so a rerun resumes the same plan.
        min_size: images whose shorter side is below this are skipped and reported (``kind`` ``"small"``).
        progress: show a tqdm progress bar over shards.
        force: rebuild from scratch when the plan changed, removing every shard of this pattern (and of the first
            run's pattern) first.

    Returns:
        A `ShardSummary`, also written as JSON next to the shards (``<prefix>summary.json``).

    Raises:
        InputError: a bad pattern or option, an empty source or one without any usable image, an output folder that
            cannot be written, a plan that differs from the first run's, or another writer holding the lock.
    """
    check_pattern(out_pattern)
    for name, value, least in (("maxcount", maxcount, 1), ("maxsize", maxsize, 1), ("min-size", min_size, 0)):
        if value < least:
            raise InputError(f"--{name} {value} must be at least {least}")
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers} must be at least 1 (or left out for all cores)")
    t0 = time.time()
    src = os.fspath(src)
    out_dir = os.path.dirname(out_pattern) or "."
    _check_out_dir(out_dir)
    files, classes = find_images(src)
    if not files:
        raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under the shard source {src!r}; "
                         "pass an image folder or ImageNet train/")
    options = {"maxcount": int(maxcount), "maxsize": int(maxsize), "seed": int(seed), "min_size": int(min_size)}
    plan = _make_plan(src, out_pattern, files, classes, options)
    _make_out_dir(out_dir)
    prefix = os.path.basename(out_pattern).split("%")[0]
    plan_path = os.path.join(out_dir, f"{prefix}plan.json")
    journal_path = os.path.join(out_dir, f".{prefix}shards-journal.jsonl")
    summary_path = os.path.join(out_dir, f"{prefix}summary.json")

    with _writer_lock(os.path.join(out_dir, f".{prefix}shards.lock")) as lock_fd:
        summary = ShardSummary(classes=classes, plan=plan_path, summary_file=summary_path)
        old = _read_plan(plan_path, force)
        patterns = [out_pattern]
        if old and isinstance(old.get("pattern"), str) and old["pattern"] != os.path.basename(out_pattern):
            with contextlib.suppress(InputError):  # the first run's shards, named by its own pattern, go too
                check_pattern(old["pattern"])
                patterns.append(os.path.join(out_dir, old["pattern"]))
        existing = [p for p in _stale_files(out_dir, patterns) if ".tmp-" not in p.name]
        changes = _plan_changes(old, plan) if old is not None else (
            [f"{len(existing)} shards named like {os.path.basename(out_pattern)!r} are there but no plan file "
             f"{plan_path!r} (an older pretrain shards or another tool made them)"] if existing else [])
        if changes and not force:
            raise InputError(f"{out_dir!r} holds shards of another plan: {'; '.join(changes)}; rerun with the first "
                             f"run's options and source, or add --force to rebuild from scratch (removes the "
                             f"{len(existing)} shards named like {os.path.basename(out_pattern)!r})")
        if changes:  # force: nothing of the old plan may survive, shards the new plan also names included
            for p in existing:
                p.unlink()
            summary.removed_stale = [str(p) for p in existing]
            Path(journal_path).unlink(missing_ok=True)
            Path(summary_path).unlink(missing_ok=True)
        if changes or old is None:
            with atomic_path(plan_path) as tmp:  # before any shard, so a killed first run resumes this plan
                tmp.write_text(json.dumps(plan, separators=(",", ":")))
        for stale in _stale_files(out_dir, [out_pattern]):
            if ".tmp-" in stale.name:
                stale.unlink(missing_ok=True)  # a killed writer's leftovers (we hold the lock: nobody writes them)

        journal = _read_journal(journal_path, plan["digest"])
        results: dict[int, tuple[str, int, int, list[dict]]] = {}
        todo = []
        for i, (name, _members) in enumerate(plan["shards"]):
            final = out_pattern % i
            entry = journal.get(name)
            if entry and os.path.exists(final) and os.path.getsize(final) == entry["bytes"]:
                results[i] = (final, entry["samples"], entry["bytes"], entry["skipped"])
                summary.reused_shards += 1
            else:  # missing, truncated, or renamed into place by a run killed before it journalled the shard
                todo.append(i)

        from tqdm import tqdm

        class_index = {c: i for i, c in enumerate(classes)}
        bar = tqdm(total=len(plan["shards"]), initial=len(plan["shards"]) - len(todo), unit="shard",
                   disable=not progress)
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
        pool = ProcessPoolExecutor(n_workers, initializer=_worker_init, initargs=(lock_fd,))
        try:
            with open(journal_path, "a") as jf:
                futures = {}
                for i in todo:
                    items = []
                    for j in plan["shards"][i][1]:
                        rel, key = plan["files"][j][:2]
                        items.append((rel, key, class_index.get(rel.split("/", 1)[0], -1) if "/" in rel else -1))
                    futures[pool.submit(_write_shard, src, items, out_pattern % i, min_size)] = i
                for fut in as_completed(futures):
                    i = futures[fut]
                    results[i] = fut.result()
                    path, n, nbytes, skipped = results[i]
                    jf.write(json.dumps({"shard": os.path.basename(path), "plan": plan["digest"], "samples": n,
                                         "bytes": nbytes, "skipped": skipped}) + "\n")
                    jf.flush()
                    summary.written_shards += 1
                    bar.update(1)
        except BaseException:  # Ctrl-C or a failed shard: do not start the queued shards while shutting down
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        bar.close()

        for i in sorted(results):
            path, n, nbytes, skipped = results[i]
            summary.shards.append(path)
            summary.samples += n
            summary.bytes += nbytes
            summary.skipped.extend(skipped)
        summary.seconds = round(time.time() - t0, 3)
        summary.urls = shard_urls(out_pattern, len(plan["shards"]))
        if summary.samples == 0:
            # empty shards would only starve a training stream; keep the reasons, drop the rest
            for p in _stale_files(out_dir, [out_pattern]):
                p.unlink(missing_ok=True)
            Path(journal_path).unlink(missing_ok=True)
            Path(plan_path).unlink(missing_ok=True)
            summary.shards, summary.urls, summary.bytes = [], "", 0
            _atomic_write(summary_path, summary.to_json())
            first = summary.skipped[0]
            raise InputError(f"none of the {len(files)} images under the shard source {src!r} is usable (e.g. "
                             f"{first['path']!r}: {first['reason']}); every reason is in {summary_path!r}")
        _atomic_write(summary_path, summary.to_json())
    return summary


def _read_plan(path: str, force: bool) -> dict | None:
    """The first run's plan, None if there is none; an unreadable one (edited by hand?) is refused unless ``force``."""
    if not os.path.exists(path):
        return None
    try:
        plan = json.loads(Path(path).read_text())
        if not isinstance(plan, dict):
            raise ValueError("not a JSON object")
        return plan
    except (ValueError, UnicodeDecodeError) as err:
        if force:
            return {}  # differs from any plan: everything of this pattern is rebuilt
        raise InputError(f"the plan file {path!r} of these shards is unreadable ({err}); add --force to rebuild "
                         "them from scratch") from None


def _read_journal(path: str, digest: str) -> dict[str, dict]:
    """The shards recorded as complete for the plan ``digest`` (lines of other plans or cut by a kill are ignored)."""
    entries: dict[str, dict] = {}
    if os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    if entry["plan"] == digest:
                        entries[entry["shard"]] = entry
                except (ValueError, KeyError, TypeError):  # a line cut by a kill
                    continue
    return entries


def _atomic_write(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
