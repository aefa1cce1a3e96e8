"""Paths of the shared data the fine-tuning tests read (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("RESTORE_SHARED", "/work/shared"))
CORPUS = SHARED / "corpus" / "imagenet-sample"
BENCHMARKS = SHARED / "benchmarks"


def need(path: Path) -> Path:
    """``path``, or skip the test when the shared data is not on this machine."""
    if not path.exists():
        pytest.skip(f"shared data {path} is missing")
    return path
