"""What ``restore run`` will do, worked out before the model loads (`restore.cli`): the input files found under
the given files and folders (sorted, folder symlinks followed once, the output folder inside an input left out), each
one's output path, and the refusals of a plan that would overwrite an input, send two inputs to one output name,
replace existing outputs without ``--overwrite``, or write into a folder that cannot take a file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

__all__ = ["IMAGE_SUFFIXES", "Plan", "collect", "check_plan", "check_output_folder", "show", "listing", "SHOWN"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".gif",
                  ".apng", ".avif", ".jp2", ".j2k")  # AVIF and JPEG 2000: Pillow's wheels decode them (libavif, OpenJPEG)
# formats written as they came (lossless); lossy or exotic inputs are written as PNG so nothing is lost twice
_KEEP_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
SHOWN = 5  # how many names a refusal lists before "and N more"


def show(path: Path | str) -> str:
    """A path as printable text: names that are not valid UTF-8 would make print() itself fail."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def listing(items: Sequence[str]) -> str:
    more = f", and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


@dataclass
class Plan:
    """What `restore run` will do, worked out before the model loads."""

    jobs: list[tuple[Path, Path]] = field(default_factory=list)  # (input file, output file)
    skipped: list[str] = field(default_factory=list)  # "input: reason", found before the work
    ignored: Counter = field(default_factory=Counter)  # files in folders without an image suffix, by suffix
    notes: list[str] = field(default_factory=list)


def _walk(root: Path, exclude: Path | None, plan: Plan) -> Iterator[Path]:
    """Files under ``root``, sorted, following folder symlinks once each (a link loop is searched once, not forever)."""
    seen: set[tuple[int, int]] = set()

    def unlistable(err: OSError) -> None:
        plan.skipped.append(f"{show(err.filename)}: cannot list this folder ({err.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=True):
        here = Path(dirpath)
        st = here.stat()
        if (st.st_dev, st.st_ino) in seen:
            plan.notes.append(f"{show(here)} is a link to a folder already searched; not searched again")
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        if exclude is not None:
            kept = [d for d in dirnames if (here / d).resolve() != exclude]
            if len(kept) != len(dirnames):
                plan.notes.append(f"not searching the output folder {show(exclude)} inside the input {show(root)}")
            dirnames[:] = kept
        dirnames.sort()
        for name in sorted(filenames):
            yield here / name


def _check_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (broken or looping link, FIFO, device), or None."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "a broken symbolic link" if path.is_symlink() else "no such file"
    except OSError as err:
        return f"cannot be opened ({err.strerror})"  # e.g. a symlink loop: "Too many levels of symbolic links"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, socket or device; reading it could block forever)"
    return None


def collect(inputs: Sequence[Path], out_dir: Path) -> Plan:
    """Find the input files and their output paths (relative folders kept); missing inputs are an `InputError`."""
    from tasks.errors import InputError

    missing = [show(p) for p in inputs if not p.exists() and not p.is_symlink()]
    if missing:
        raise InputError(f"input(s) not found: {listing(missing)}; check the paths")
    plan = Plan()
    out_res = out_dir.resolve()
    for inp in inputs:
        if inp.is_dir():
            inp_res = inp.resolve()
            exclude = out_res if out_res != inp_res and inp_res in out_res.parents else None
            pairs = [(f, f.relative_to(inp)) for f in _walk(inp, exclude, plan)]
        else:
            pairs = [(inp, Path(inp.name))]
        for f, rel in pairs:
            if inp.is_dir() and f.suffix.lower() not in IMAGE_SUFFIXES:
                plan.ignored[f.suffix.lower() or "(no suffix)"] += 1
                continue
            problem = _check_file(f)
            if problem:
                plan.skipped.append(f"{show(f)}: {problem}")
            else:
                plan.jobs.append((f, _output_path(out_dir, rel)))
    return plan


def _output_path(out_dir: Path, rel: Path) -> Path:
    suffix = rel.suffix.lower() if rel.suffix.lower() in _KEEP_SUFFIXES else ".png"
    return out_dir / rel.with_name(rel.stem + suffix) if rel.suffix else out_dir / rel.with_name(rel.name + suffix)


def _name_problem(target: Path) -> str | None:
    """Why ``target`` cannot be created on this system (a name or path over the limits), or None."""
    anchor = target.parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    try:
        name_max, path_max = os.pathconf(anchor, "PC_NAME_MAX"), os.pathconf(anchor, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    if len(os.fsencode(target.name)) > name_max:
        return f"the output name {show(target.name)} is over {name_max} bytes; rename the input"
    if len(os.fsencode(str(target.absolute()))) >= path_max:
        return f"the output path is over {path_max} bytes; use a shorter -o"
    return None


def check_plan(plan: Plan, overwrite: bool) -> None:
    """Refuse, before any work, a run that would overwrite an input, write two inputs to one output, or replace
    existing files without ``--overwrite``. Outputs whose names cannot exist are moved to the skipped list."""
    from tasks.errors import InputError

    inputs: dict[Path, Path] = {}
    inodes: dict[tuple[int, int], Path] = {}
    for src, _ in plan.jobs:
        inputs[src.resolve()] = src
        st = src.stat()
        inodes[(st.st_dev, st.st_ino)] = src
    by_target: dict[Path, tuple[Path, list[Path]]] = {}
    jobs, hits, existing = [], [], []
    for src, target in plan.jobs:
        problem = _name_problem(target)
        if problem:
            plan.skipped.append(f"{show(src)}: {problem}")
            continue
        try:
            resolved = target.resolve()  # through symlinks, so a link to an input counts as that input
        except (OSError, RuntimeError):  # a symlink loop on the way
            plan.skipped.append(f"{show(src)}: the output path {show(target)} runs into a symbolic-link loop")
            continue
        jobs.append((src, target))
        by_target.setdefault(resolved, (target, []))[1].append(src)
        hit = inputs.get(resolved)
        if hit is None and target.exists():
            st = target.stat()
            hit = inodes.get((st.st_dev, st.st_ino))  # a hard link to an input
        if hit is not None:
            hits.append(f"{show(src)} -> {show(target)}" + ("" if hit == src else f" (= input {show(hit)})"))
        elif target.exists() or target.is_symlink():
            existing.append(show(target))
    if hits:
        raise InputError(f"-o would overwrite {len(hits)} input file(s): {listing(hits)}; choose an output folder "
                         f"outside the inputs (input files are never overwritten, even with --overwrite)")
    # one file named twice (`x.png x.png`, or a folder and a link into it) is restored once, not a collision
    same = {t: srcs for t, srcs in by_target.values() if len(srcs) > 1 and len({s.resolve() for s in srcs}) == 1}
    jobs = [(src, t) for src, t in jobs if t not in same or src is same[t][0]]
    clashes = [f"{' and '.join(show(s) for s in srcs)} -> {show(t)}" for t, srcs in by_target.values()
               if len(srcs) > 1 and t not in same]
    if clashes:
        raise InputError(f"{len(clashes)} output name collision(s): {listing(clashes)}; rename the inputs or "
                         f"restore them into different -o folders")
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output(s) already exist: {listing(existing)}; pass --overwrite "
                              f"to replace them, or choose another -o")
    plan.jobs = jobs


def check_output_folder(out: Path) -> None:
    """Create ``out`` and prove a file can be written there, before the model loads (not after an hour of work)."""
    from tasks.errors import InputError

    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"-o {show(out)} is an existing file, not a folder; give a folder (created if "
                                 f"missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".restore-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except PermissionError as err:
        raise PermissionError(f"-o {show(out)}: cannot write there ({err.strerror}); choose a folder you can "
                              f"write to, or fix its permissions") from None
    except OSError as err:
        raise InputError(f"-o {show(out)}: cannot write there ({err.strerror}); choose another folder") from None
