"""The GAN stage survives SIGKILL: a `gan_smoke` fine-tune killed after its first checkpoint and resumed with
``--resume auto`` ends with the same generator, EMA and discriminator weights as an uninterrupted run.

Real processes (``python -m finetune.cli``), a real kill of the whole process group mid-training, real DeepSpeed
engines for both networks; the weights are compared from the checkpoints' safetensors files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.finetune.helpers import CORPUS, need
from tests.pretrain.helpers import REPO, pretrain_env

pytestmark = pytest.mark.slow
STEPS = ["steps=8", "ckpt_every=4", "keep_last=2", "log_every=1", "num_workers=0", "val_every=0", "batch_size=2", "lr_patch=16"]


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("gan-train")
    for f in sorted(need(CORPUS).glob("*.JPEG"))[:4]:
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((128, 128))
            im.save(folder / f"{f.stem}.png")
    return folder


def _cmd(train: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "finetune.cli", "--init", "none", "--variant", "edt_tiny", "--task", "realsr_x4",
            "--train", str(train), "--recipe", "gan_smoke", "--out", str(out), *extra, *STEPS]


def _weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    step = out / "checkpoints" / "step-8"
    return {name: load_file(str(step / name)) for name in
            ("model.safetensors", "ema.safetensors", "discriminator.safetensors")}


def test_gan_stage_kill_and_resume_matches_uninterrupted_run(train_dir, tmp_path):
    env = pretrain_env()
    ref = tmp_path / "ref"
    done = subprocess.run(_cmd(train_dir, ref), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(train_dir, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    marker = out / "checkpoints" / "step-4" / "COMPLETE"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run never reached its first checkpoint"
    assert not (out / "checkpoints" / "step-8").exists(), "the run finished before it could be killed"
    assert (out / "checkpoints" / "step-4" / "discriminator.safetensors").is_file()

    resumed = subprocess.run(_cmd(train_dir, out, "--resume", "auto"), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    a, b = _weights(ref), _weights(out)
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        worst = max(float((a[name][k].float() - b[name][k].float()).abs().max()) for k in a[name])
        assert worst == 0.0, f"{name}: the resumed run differs from the uninterrupted one by {worst}"
    trained = load_file(str(ref / "checkpoints" / "step-4" / "discriminator.safetensors"))
    assert any(not torch.equal(trained[k], a["discriminator.safetensors"][k]) for k in trained)  # D did train
