"""Shared test setup: keep the Hub client away from the user's cache and the network, small fixtures.

``huggingface_hub`` reads its environment at import, so it is set here, before any test module imports it.
Tests that need another endpoint (the fake Hub) or offline mode run the client in a subprocess.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="restore-tests-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `from tests.fakehub import FakeHub`


@pytest.fixture
def fake_hub():
    """A running `tests.fakehub.FakeHub`; its ``url`` goes into HF_ENDPOINT of a subprocess."""
    from tests.fakehub import FakeHub

    hub = FakeHub().start()
    yield hub
    hub.stop()


@pytest.fixture
def hub_env(fake_hub, tmp_path):
    """Environment for a subprocess that talks to ``fake_hub`` with its own empty cache."""
    env = dict(os.environ)
    env.update(HF_ENDPOINT=fake_hub.url, HF_TOKEN="hf_fake", HF_HUB_CACHE=str(tmp_path / "hf-cache"),
               HF_HUB_OFFLINE="0", PYTHONPATH=str(ROOT))
    return env


@pytest.fixture
def tiny_model():
    """A freshly initialised `edt_tiny` for sr_x2 and denoise_g25, in eval mode, fixed seed."""
    import torch

    import restore

    torch.manual_seed(0)
    return restore.create_model("edt_tiny", tasks=["sr_x2", "denoise_g25"]).eval()
