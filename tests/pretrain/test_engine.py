"""Engine pieces that need no process group: activation checkpointing, EMA, SupCon, checkpoint bookkeeping."""

from __future__ import annotations

import copy

import pytest
import torch

from pretrain.checkpoint import COMPLETE, latest_checkpoint, list_checkpoints, remove_incomplete
from pretrain.engine import EMA, MultiTask, enable_activation_checkpointing, supcon_loss, unwrap_state_dict

ARCH = {"window_size": [4, 8], "head_depth": 1}


@pytest.fixture(scope="module")
def model():
    from restore.model import RestorationModel

    torch.manual_seed(0)
    return RestorationModel("edt_tiny", tasks=["sr_x2", "denoise_g25"], arch=ARCH)


def test_activation_checkpointing_keeps_names_and_gradients(model):
    plain, ckpt = copy.deepcopy(model), copy.deepcopy(model)
    assert enable_activation_checkpointing(ckpt) > 0
    assert list(dict(plain.named_parameters())) == list(dict(ckpt.named_parameters()))
    x = {"sr_x2": torch.rand(2, 3, 8, 8), "denoise_g25": torch.rand(2, 3, 16, 16)}
    grads = []
    for m in (plain, ckpt):
        m.zero_grad()
        out = MultiTask(m)(x)
        sum(v.square().mean() for v in out.values()).backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])


def test_multitask_wrapper_routes_tasks(model):
    x = torch.rand(1, 3, 8, 8)
    wrapped = MultiTask(model)
    assert torch.equal(wrapped({"sr_x2": x})["sr_x2"], model(x, task="sr_x2"))
    assert set(unwrap_state_dict(wrapped.state_dict())) == set(model.state_dict())


def test_ema_update():
    m = torch.nn.Linear(2, 2)
    ema = EMA(m, decay=0.9)
    before = ema.shadow["weight"].clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    assert torch.allclose(ema.shadow["weight"], 0.9 * before + 0.1 * m.weight)


def test_supcon_prefers_clustered_features():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    mixed = torch.tensor([[1.0, 0], [0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    assert supcon_loss(clustered, labels) < supcon_loss(mixed, labels)
    assert float(supcon_loss(torch.rand(3, 4), torch.tensor([0, 1, 2]))) == 0.0  # no positives, no signal


def test_incomplete_checkpoints_are_never_used(tmp_path):
    for step, complete in ((4, True), (8, True), (12, False)):
        d = tmp_path / f"step-{step}"
        d.mkdir()
        if complete:
            (d / COMPLETE).write_text(f"{step}\n")
    (tmp_path / "zero_to_fp32.py").write_text("")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 8]
    assert latest_checkpoint(tmp_path)[0] == 8
    assert [p.name for p in remove_incomplete(tmp_path)] == ["step-12"]
    assert not (tmp_path / "step-12").exists() and latest_checkpoint(tmp_path / "none") is None
