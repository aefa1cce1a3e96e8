"""Where the tests find the shared, read-only data (never copied into the repository).

The shared folder sits beside the checkout (``../shared``, as on the project's machines and in CI) unless
``RESTORE_SHARED`` names another; the benchmark root follows `tasks.evaluate.benchmark_root` (``RESTORE_BENCHMARKS``
first), so tests look exactly where the library looks. A test needing data that is absent (a user's clone) skips
and says how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.evaluate import ENV_VAR, benchmark_root

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RESTORE_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus" / "imagenet-sample"


def _benchmarks() -> Path:
    try:
        return benchmark_root()
    except FileNotFoundError:
        return SHARED / "benchmarks"


BENCHMARKS = _benchmarks()
HAVE_BENCHMARKS = (BENCHMARKS / "Set5").is_dir()
needs_benchmarks = pytest.mark.skipif(
    not HAVE_BENCHMARKS, reason=f"benchmarks not found at {BENCHMARKS}: set {ENV_VAR} (or RESTORE_SHARED)"
)


def need(path: Path) -> Path:
    """``path``, or skip the test when the shared data is not on this machine."""
    if not path.exists():
        pytest.skip(f"shared data {path} is missing: set RESTORE_SHARED to the folder holding corpus/ and benchmarks/")
    return path
