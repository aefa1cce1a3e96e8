"""RestorationModel: shapes for every variant and task, any input size, task management, multi-task pass."""

from __future__ import annotations

import pytest
import torch

import restore
from restore.layers import pad_to_multiple

ALL_TASKS = ["sr_x2", "sr_x3", "sr_x4", "sr_x8", "denoise_g15", "denoise_g50", "derain"]
EDT_VARIANTS = ["edt_tiny", "edt_t", "edt_s", "edt_b", "edt_l"]

# ANCHORS.md §1: single-task sr_x2 parameter counts of the official EDT variants
ANCHOR_PARAMS = {"edt_t": 0.92e6, "edt_s": 4.23e6, "edt_b": 11.48e6, "edt_l": 39.9e6}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_edt_variants_are_listed():
    names = restore.list_variants()
    for v in EDT_VARIANTS + ["edt"]:
        assert v in names


@pytest.mark.parametrize("variant", sorted(ANCHOR_PARAMS))
def test_param_counts_match_anchors(variant):
    model = restore.create_model(variant, tasks=["sr_x2"])
    assert abs(n_params(model) / ANCHOR_PARAMS[variant] - 1) < 0.03, n_params(model)


def test_edt_b_body_size_matches_anchor():
    # ANCHORS: "For EDT-B the body alone is 10.10M"
    model = restore.create_model("edt_b", tasks=["sr_x2"])
    assert abs(n_params(model.body) / 10.10e6 - 1) < 0.01


def test_tiny_variant_is_tiny():
    assert n_params(restore.create_model("edt_tiny", tasks=["sr_x2"])) < 150_000


@pytest.mark.parametrize("variant", EDT_VARIANTS)
def test_output_shapes_every_task(variant):
    # the large variants run on the meta device: shapes propagate through the real modules without compute
    device = "cpu" if variant == "edt_tiny" else "meta"
    with torch.device(device):
        model = restore.create_model(variant, tasks=ALL_TASKS).eval()
        x = torch.rand(1, 3, 13, 19) if device == "cpu" else torch.empty(1, 3, 13, 19)
    with torch.no_grad():
        for task in ALL_TASKS:
            s = model.scale(task)
            y = model(x, task)
            assert y.shape == (1, 3, 13 * s, 19 * s), (task, y.shape)
            if device == "cpu":
                assert torch.isfinite(y).all()


@pytest.mark.parametrize("size", [(37, 53), (24, 48), (5, 7), (1, 30), (97, 96)])
def test_any_input_size(tiny_model, size):
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        assert tiny_model(x, "sr_x2").shape == (2, 3, 2 * size[0], 2 * size[1])
        assert tiny_model(x, "denoise_g25").shape == (2, 3, *size)


def test_padding_only_when_needed():
    x = torch.rand(1, 3, 48, 72)
    assert pad_to_multiple(x, 24) is x
    padded = pad_to_multiple(torch.rand(1, 3, 37, 53), 24)
    assert padded.shape[-2:] == (48, 72)


def test_reflect_padding_mirrors_the_image():
    x = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 1, 3, 5)
    p = pad_to_multiple(x, 8)
    assert p[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]
    tiny = pad_to_multiple(torch.rand(1, 1, 2, 2), 24)  # padding larger than the image: repeated reflection
    assert tiny.shape[-2:] == (24, 24)


def test_unknown_task_lists_the_model_tasks(tiny_model):
    with pytest.raises(ValueError, match="sr_x2, denoise_g25"):
        tiny_model(torch.rand(1, 3, 24, 24), "sr_x4")


def test_unknown_task_name_at_construction():
    with pytest.raises(ValueError, match="valid tasks"):
        restore.create_model("edt_tiny", tasks=["superres"])


def test_unknown_variant_lists_choices():
    with pytest.raises(ValueError, match="edt_b"):
        restore.create_model("edt_xl", tasks=["sr_x2"])


def test_wrong_input_shape(tiny_model):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_model(torch.rand(3, 24, 24), "sr_x2")


def test_keep_tasks_drops_heads_tails_and_keys(tiny_model):
    ref = tiny_model(torch.rand(1, 3, 24, 24), "sr_x2")  # noqa: F841 (exercises both before dropping)
    tiny_model.keep_tasks(["denoise_g25"])
    assert tiny_model.tasks == ["denoise_g25"]
    keys = tiny_model.state_dict().keys()
    assert not any(".sr_x2." in k for k in keys)
    assert any(k.startswith("heads.denoise_g25.") for k in keys)
    with pytest.raises(ValueError, match="denoise_g25"):
        tiny_model(torch.rand(1, 3, 24, 24), "sr_x2")
    with pytest.raises(ValueError):
        tiny_model.keep_tasks(["sr_x4"])


def test_add_task_shares_the_body(tiny_model):
    body_before = {k: v.clone() for k, v in tiny_model.body.state_dict().items()}
    tiny_model.add_task("sr_x4")
    assert tiny_model.tasks == ["sr_x2", "denoise_g25", "sr_x4"]
    assert tiny_model(torch.rand(1, 3, 10, 10), "sr_x4").shape == (1, 3, 40, 40)
    for k, v in tiny_model.body.state_dict().items():
        assert torch.equal(v, body_before[k])
    with pytest.raises(ValueError, match="already"):
        tiny_model.add_task("sr_x4")


def test_forward_multi_one_body_pass_equals_per_task(tiny_model):
    tiny_model.add_task("derain")
    calls = []
    hook = tiny_model.body.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    batches = {"sr_x2": torch.rand(2, 3, 24, 24), "denoise_g25": torch.rand(1, 3, 96, 96), "derain": torch.rand(3, 3, 96, 96)}
    with torch.no_grad():
        multi = tiny_model.forward_multi(batches)
    assert calls == [6]  # all three tasks' features (24x24 each) in one batched body call
    hook.remove()
    with torch.no_grad():
        for task, x in batches.items():
            torch.testing.assert_close(multi[task], tiny_model(x, task), rtol=0, atol=1e-5)


def test_forward_multi_groups_different_feature_sizes(tiny_model):
    calls = []
    tiny_model.body.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    with torch.no_grad():
        out = tiny_model.forward_multi({"sr_x2": torch.rand(1, 3, 24, 24), "denoise_g25": torch.rand(1, 3, 192, 96)})
    assert out["sr_x2"].shape == (1, 3, 48, 48) and out["denoise_g25"].shape == (1, 3, 192, 96)
    assert len(calls) == 2


def test_tiny_model_trains_in_a_few_steps():
    torch.manual_seed(0)
    model = restore.create_model("edt_tiny", tasks=["sr_x2"])
    hr = torch.rand(2, 3, 24, 24)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = (model(lr, "sr_x2") - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in model.parameters())


def test_arch_override_and_config(tiny_model):
    model = restore.create_model("edt_tiny", tasks="sr_x2", embed_dim=16, num_heads=[2, 2])
    assert model.arch["embed_dim"] == 16
    cfg = model.config_dict()
    assert cfg["variant"] == "edt_tiny" and cfg["tasks"] == ["sr_x2"] and cfg["format_version"] == 1
    rebuilt = restore.RestorationModel(**cfg)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
