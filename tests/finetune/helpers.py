"""Paths of the shared data the fine-tuning tests read (never copied into the repo)."""

from __future__ import annotations

from tests.shared import BENCHMARKS, CORPUS, SHARED, need  # noqa: F401  (re-exported for the tests)
