"""Shared fixtures for tests/tasks: the benchmark root (skip with a reason when it is absent) and one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.evaluate import ENV_VAR, benchmark_root


@pytest.fixture(scope="session")
def bench_root() -> Path:
    """The benchmark datasets folder, or a skip naming how to provide it."""
    try:
        return benchmark_root()
    except FileNotFoundError as err:
        pytest.skip(f"benchmarks not available ({err}); set {ENV_VAR} to the folder with Set5, Set14, BSD100")


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests work on small images, where intra-op threads cost more than they give (10-60x on a busy 2-core
    machine); restore the setting afterwards so other packages' tests are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
