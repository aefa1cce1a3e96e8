"""Shared harness of the benchmark suite (`make bench` -> `tests/benchmarks/run_all.py`).

Conventions, used by every script and stated once in BENCHMARKS.md:

- A *row* compares one measurement of ours with a reference measured **in the same process**, with the two runs
  alternating (ours, reference, ours, reference, ...) after a warm-up of each, and the median of the repeats kept.
  Alternation makes the ratio robust to load from other processes on a shared machine: both sides see the same
  noise. Absolute times are only as good as the machine's load (recorded in the machine column).
- ``ratio`` is always "how many times better ours is": for times ``reference / ours`` (speedup), for memory
  ``reference / ours``, for throughputs ``ours / reference``. **ratio > 1: we are better (faster, smaller); < 1:
  we are worse**, and the row says "slower" in its note.
- Rows without a runnable reference (FLOPs against a published figure, GPU utilisation) keep the same columns; the
  reference is then the published number and the ratio is ``ours / published`` for counts (1.00 = same count).

Each script's ``main(argv)`` prints its rows as a markdown table and, with ``--json PATH``, writes them for
`run_all.py`, which assembles BENCHMARKS.md and benchmarks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the scripts run as files: make the repo and this folder importable
    sys.path.insert(0, str(ROOT))
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

RATIO_CONVENTION = (
    "ratio = how many times better ours is than the reference, from runs alternating in one process (median of "
    "the repeats): reference_time / our_time for times, reference_peak / our_peak for memory, ours / reference "
    "for throughputs. > 1: we are faster (smaller); < 1: we are slower, and the note says so. FLOP rows compare a "
    "count with a published figure (ours / published, 1.00 = equal)."
)


@dataclass
class Row:
    """One line of BENCHMARKS.md."""

    section: str
    what: str
    ours: float
    reference: float | None
    unit: str
    ratio: float | None
    reference_name: str = ""
    note: str = ""
    command: str = ""
    machine: str = ""
    extra: dict = field(default_factory=dict)


def machine(device: str = "cpu") -> str:
    """A short description of where a number was measured: CPU/GPU model, cores, threads, torch, load."""
    if device.startswith("cuda") and torch.cuda.is_available():
        hw = f"{torch.cuda.get_device_name(0)}"
    else:
        model = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        hw = f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{hw}, torch {torch.__version__}{load}"


def command(argv: list[str] | None = None) -> str:
    """The command line that reproduces this script's rows (relative to the repository root)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    args = sys.argv[1:] if argv is None else argv
    args = [a for i, a in enumerate(args) if a != "--json" and (i == 0 or args[i - 1] != "--json")]
    return " ".join([".venv/bin/python", str(script), *map(shlex.quote, args)])


def alternate(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
              budget_s: float | None = None, min_rounds: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, the functions called in turn ``repeats`` times after warm-up.

    ``budget_s`` stops adding rounds once spent (after at least ``min_rounds``), so slow configurations on a
    loaded machine stay within `make bench`'s time.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    for r in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
        if budget_s is not None and time.perf_counter() - start > budget_s and r + 1 >= min_rounds:
            break
    return {k: statistics.median(v) for k, v in times.items()}


def time_ratio_note(ratio: float, target: float | None = None) -> str:
    """'faster'/'slower' wording for a speedup ratio (and whether it meets a target)."""
    word = "faster" if ratio >= 1.0 else "SLOWER"
    note = f"{word} ({ratio:.2f}x)"
    if target is not None:
        note += f"; target >= {target:g}: {'met' if ratio >= target else 'NOT met'}"
    return note


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s" and value < 1.0:
        return f"{value * 1e3:.1f} ms"
    if unit in ("s",):
        return f"{value:.2f} s"
    if unit in ("GMAC", "MB", "images/s", "samples/s/core", "GFLOP/s", "%"):
        return f"{value:.1f} {unit}"
    return f"{value:.3g} {unit}"


def markdown(rows: list[Row], with_section: bool = False) -> str:
    """Rows as a markdown table (what | ours | reference | ratio | note | machine | command)."""
    head = ("| " + ("section | " if with_section else "") + "what | ours | reference | ratio | note | machine | "
            "command |")
    sep = "|" + "---|" * (head.count("|") - 1)
    lines = [head, sep]
    for r in rows:
        ref = fmt(r.reference, r.unit)
        if r.reference_name:
            ref = f"{ref} ({r.reference_name})"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        cells = ([r.section] if with_section else []) + [r.what, fmt(r.ours, r.unit), ref, ratio, r.note,
                                                           r.machine, f"`{r.command}`"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", help="also write the rows to this JSON file (used by run_all.py)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    return p


def setup(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)


def emit(rows: list[Row], args: argparse.Namespace, title: str) -> None:
    """Print the rows, and write them to ``--json`` atomically."""
    print(f"\n## {title}\n\n{markdown(rows)}\n", flush=True)
    if args.json:
        write_rows(rows, args.json)


def write_rows(rows: list[Row], path: str | os.PathLike) -> None:
    """The rows as JSON at ``path``, atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    os.replace(tmp, path)


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark in MB (``ru_maxrss``; kilobytes on Linux)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20
