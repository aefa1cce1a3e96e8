"""EDT body: window locality, shifted-window masks and their cache, official-layout state-dict names, residuals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import restore
from restore.families.edt import CrossedWindowAttention, EDTArch, shifted_window_mask


def test_attention_stays_inside_windows():
    torch.manual_seed(0)
    attn = CrossedWindowAttention(8, (6, 24), num_heads=2)
    qkv = torch.randn(3, 1, 12, 48, 8)
    base = attn(qkv, None)
    qkv2 = qkv.clone()
    qkv2[:, 0, 1, 2] += 5.0  # a token in the top-left 6x24 window
    diff = (attn(qkv2, None) - base).abs().sum(-1)[0]  # (12, 48)
    assert diff[:6, :24].sum() > 0
    assert diff[6:].sum() == 0 and diff[:, 24:].sum() == 0


def test_shift_mask_blocks_wrapped_regions():
    m = shifted_window_mask(24, 48, (6, 24), (3, 12))
    assert m.shape == (4 * 2, 144, 144)
    assert set(m.unique().tolist()) <= {0.0, -100.0}
    assert (m[0] == 0).all()  # an interior window holds one region
    assert (m[-1] == -100).any()  # the bottom-right window mixes wrapped regions
    assert torch.equal(m, m.transpose(1, 2))


def test_masks_cached_per_size():
    body = restore.create_model("edt_tiny", tasks=["sr_x2"]).body
    a = body.masks(24, 48, torch.device("cpu"), torch.float32)
    assert body.masks(24, 48, torch.device("cpu"), torch.float32) is a
    assert body.masks(48, 48, torch.device("cpu"), torch.float32) is not a


def test_state_dict_names_follow_documented_layout():
    keys = set(restore.create_model("edt_tiny", tasks=["sr_x4", "denoise_g25"]).state_dict())
    for k in ["heads.sr_x4.blocks.0.weight", "heads.sr_x4.blocks.1.conv_1.weight", "heads.denoise_g25.blocks.2.conv_down.weight",
              "body.norm_in.weight", "body.groups.1.blocks.1.attns.1.lepe.weight", "body.groups.0.blocks.0.qkv.weight",
              "body.groups.0.blocks.0.mlp.dwconv.weight", "body.conv_after_body.weight", "tails.sr_x4.blocks.2.2.weight",
              "tails.denoise_g25.blocks.0.up.weight", "tails.denoise_g25.blocks.2.weight"]:
        assert k in keys, k
    assert not any("mask" in k or "mean" in k for k in keys)  # derived data stays out of checkpoints


def test_denoise_head_runs_body_at_quarter_resolution(tiny_model):
    shapes = []
    tiny_model.body.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape[-2:])))
    with torch.no_grad():
        tiny_model(torch.rand(1, 3, 96, 192), "denoise_g25")
        tiny_model(torch.rand(1, 3, 24, 48), "sr_x2")
    assert shapes == [(24, 48), (24, 48)]


def test_global_residuals(tiny_model):
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        tiny_model.tails["sr_x2"].blocks[-1].weight.zero_()
        tiny_model.tails["sr_x2"].blocks[-1].bias.zero_()
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(tiny_model(x, "sr_x2"), up)
        tiny_model.tails["denoise_g25"].blocks[-1].weight.zero_()
        tiny_model.tails["denoise_g25"].blocks[-1].bias.zero_()
        torch.testing.assert_close(tiny_model(torch.rand(1, 3, 96, 96) * 0 + x.mean(), "denoise_g25"),
                                   torch.full((1, 3, 96, 96), float(x.mean())))


def test_arch_validation():
    with pytest.raises(ValueError, match="unknown EDT arch"):
        EDTArch.from_dict({"embed_dims": 60})
    with pytest.raises(ValueError, match="divisible"):
        EDTArch.from_dict({"embed_dim": 30, "num_heads": [4], "depths": [2]})
    assert EDTArch.from_dict({"depths": [2, 2], "num_heads": 2}).num_heads == (2, 2)
