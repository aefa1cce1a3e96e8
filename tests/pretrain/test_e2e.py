"""End-to-end pretraining on CPU: real DeepSpeed launchers, real webdataset shards, the tiny EDT variant.

One 2-rank ZeRO-2 reference run (deepspeed launcher) is shared by the training, export, bad-shard and resume tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.pretrain.helpers import PYTHON, REPO, TINY_OVERRIDES, pretrain_env
from tests.shared import HAVE_BENCHMARKS

pytestmark = pytest.mark.slow
BIN = Path(PYTHON).parent
STEPS = ["steps=12", "ckpt_every=4", "log_every=1", "keep_last=3"]


def _free_port() -> str:
    from pretrain.launch import free_port

    return str(free_port())


def deepspeed_cmd(data: str, out: Path, *extra: str) -> list[str]:
    return [
        str(BIN / "deepspeed"), "--num_accelerators", "2", "--master_port", _free_port(),
        "--module", "pretrain.cli", "run", "--recipe", "smoke", "--data", data, "--out", str(out),
        *TINY_OVERRIDES, *STEPS, *extra,
    ]


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=pretrain_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def export(*args: str) -> None:
    """`pretrain export` through its CLI entry, in this process (saves a Python start-up per call)."""
    from pretrain.cli import main

    assert main(["export", *args]) == 0


def train_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "train" and "loss" in r]


def fp32_weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(run_dir / "checkpoints"), tag=f"step-{step}")


@pytest.fixture(scope="module")
def data_spec(shard_set, bad_shards) -> str:
    return "::".join([shard_set[0], *bad_shards])


@pytest.fixture(scope="module")
def reference_run(data_spec, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    run(deepspeed_cmd(data_spec, out))
    return out


def test_two_rank_zero2_trains_and_reports_skips(reference_run):
    records = train_records(reference_run)
    assert [r["step"] for r in records] == list(range(1, 13))
    # per task, not the total: at batch 2 deraining's loss swings 5x between steps (each image draws light or
    # heavy rain), enough to hide in the total what the other tasks learn in 12 steps
    tasks = sorted(k for k in records[0] if k.startswith("loss:"))
    first = {t: sum(r[t] for r in records[:3]) / 3 for t in tasks}
    last = {t: sum(r[t] for r in records[-3:]) / 3 for t in tasks}
    fell = [t for t in tasks if last[t] < 0.8 * first[t]]
    assert len(fell) >= len(tasks) - 1, f"losses did not fall: {first} -> {last}"
    summary = json.loads((reference_run / "summary.json").read_text())
    # the truncated shard and the garbage member were met, counted, and the run still finished
    assert summary["step"] == 12
    assert summary["skips"]["bad_shard"] >= 1 and summary["skips"]["corrupt"] >= 1 and summary["skips"]["small"] >= 1
    # both ranks read different shards: their saved stream positions point into different files
    ckpt = reference_run / "checkpoints" / "step-12"
    pos = [json.loads((ckpt / f"rank-{r}.json").read_text())["data"]["positions"]["0"] for r in (0, 1)]
    assert pos[0]["shard"] != pos[1]["shard"]
    assert {p.name for p in (reference_run / "checkpoints").glob("step-*")} == {"step-4", "step-8", "step-12"}


def test_export_loads_with_from_pretrained(reference_run, tmp_path):
    from restore.model import RestorationModel

    export(str(reference_run), str(tmp_path / "hub"), "--ema")
    model = RestorationModel.from_pretrained(str(tmp_path / "hub"))
    assert model.tasks == ["sr_x2", "sr_x4", "denoise_g25", "derain"]
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "--recipe smoke" in card and "12 of 12 steps" in card and "EMA" in card
    y = model(torch.rand(1, 3, 8, 8), task="sr_x4")
    assert y.shape == (1, 3, 32, 32)
    # --step picks an older checkpoint; its weights differ from the final ones
    export(str(reference_run), str(tmp_path / "hub4"), "--step", "4")
    old = RestorationModel.from_pretrained(str(tmp_path / "hub4"))
    final = fp32_weights(reference_run, 12)
    key = next(k for k in final if k.startswith("model.body"))
    assert not torch.equal(old.state_dict()[key[len("model."):]], final[key])


def test_kill_and_resume_matches_uninterrupted_run(reference_run, data_spec, tmp_path):
    out = tmp_path / "run"
    cmd = deepspeed_cmd(data_spec, out)
    proc = subprocess.Popen(cmd, cwd=REPO, env=pretrain_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    marker = out / "checkpoints" / "step-4" / "COMPLETE"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-training
    proc.wait()
    assert marker.exists(), "the run never reached its first checkpoint"
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"

    resumed = run(deepspeed_cmd(data_spec, out, "--resume", "auto"))
    assert "resumed_from=" in resumed.stdout and "step-" in resumed.stdout
    a, b = fp32_weights(reference_run, 12), fp32_weights(out, 12)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).detach().abs().max()) for k in a)
    assert worst <= 1e-6, f"resumed weights differ from the uninterrupted run by {worst}"
    from safetensors.torch import load_file

    ema_a = load_file(str(reference_run / "checkpoints" / "step-12" / "ema.safetensors"))
    ema_b = load_file(str(out / "checkpoints" / "step-12" / "ema.safetensors"))
    assert max(float((ema_a[k] - ema_b[k]).abs().max()) for k in ema_a) <= 1e-6
    print(f"kill-and-resume: max |w_resumed - w_uninterrupted| = {worst:.3g}")


def test_zero3_torchrun_bf16_export_has_full_tensors(shard_set, tmp_path):
    from restore.model import RestorationModel

    out = tmp_path / "z3"
    run([
        str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", _free_port(), "-m", "pretrain.cli", "run",
        "--recipe", "smoke", "--data", shard_set[0], "--out", str(out), *TINY_OVERRIDES,
        "steps=2", "ckpt_every=2", "zero_stage=3", "ema=0", "precision=bf16", "activation_checkpointing=true",
    ])
    export(str(out), str(tmp_path / "hub"))
    model = RestorationModel.from_pretrained(str(tmp_path / "hub"))
    fresh = RestorationModel("edt_tiny", tasks=list(model.tasks), arch=model.arch)
    for k, v in model.state_dict().items():
        assert v.shape == fresh.state_dict()[k].shape and v.numel() > 0, k
    assert any(float(v.abs().sum()) > 0 for k, v in model.state_dict().items() if "body" in k)
    start = next(r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["event"] == "start")
    assert start["params"] == sum(p.numel() for p in fresh.parameters())  # not the ranks' empty placeholders


def test_plain_single_process_ipt_mode(shard_set, tmp_path):
    out = tmp_path / "ipt"
    proc = run([
        PYTHON, "-m", "pretrain.cli", "run", "--recipe", "smoke", "--data", shard_set[0], "--out", str(out),
        *TINY_OVERRIDES, "steps=3", "ckpt_every=3", "log_every=1", "mode=ipt", "contrastive_weight=0.1",
        "zero_stage=0", "task_weights=1,1,0.5,0.5", "val_every=3", "val=sr_x2:Set5", "val_images=1",
    ])
    records = train_records(out)
    assert len(records) == 3 and all("loss:contrastive" in r for r in records)
    # one task per step: exactly one per-task L1 entry in each line
    assert all(sum(k.startswith("loss:") and k != "loss:contrastive" for k in r) == 1 for r in records)
    export(str(out), str(tmp_path / "hub"))
    assert (tmp_path / "hub" / "model.safetensors").exists()
    assert "done: step 3" in proc.stdout
    # validation PSNR on the first Set5 image was logged (where the shared benchmarks are present)
    if not HAVE_BENCHMARKS:
        return
    val = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "val:sr_x2/Set5/psnr" in r]
    assert len(val) == 1 and 5 < val[0]["val:sr_x2/Set5/psnr"] < 60
