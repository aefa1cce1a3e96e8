"""The CUDA window-attention path (`restore.layers.window_sdpa`), run on CPU with `fused_attention(True)`.

On CUDA the SwinIR/HAT/EDT attention folds windows into 4-D, broadcasts the bias/mask over the batch and pads the
head dim to a multiple of 8, because CUDA's fused SDPA kernels take nothing else (anything else silently runs the
math kernel). These tests run that same tensor code on CPU: it must equal the explicit path (outputs and all
gradients, fp32), and the SDPA call must be one a fused kernel accepts (the CPU flash kernel, restricted to with
``sdpa_kernel``, has the same 4-D rule).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from restore.layers import fused_attention, window_sdpa
from restore.model import RestorationModel

# head dims 6 (not a multiple of 8: the padding is exercised), two blocks per group (shifted windows: masks)
FAMILIES = {
    "swinir": ("swinir", dict(embed_dim=12, depths=[2], num_heads=[2], window_size=4), 12),
    "hat": ("hat", dict(embed_dim=12, depths=[2], num_heads=[2], window_size=4, squeeze_factor=6), 12),
    "edt": ("edt_tiny", dict(window_size=[4, 8], head_depth=1), 16),
}


def _model(name: str) -> tuple[RestorationModel, torch.Tensor]:
    variant, arch, size = FAMILIES[name]
    torch.manual_seed(0)
    model = RestorationModel(variant, tasks=["sr_x2"], arch=arch)
    with torch.no_grad():  # non-zero position-bias tables: their gradients are compared too
        for n, p in model.named_parameters():
            if "relative_position_bias_table" in n:
                p.normal_(0, 0.5)
    # eval: no DropPath draws (HAT's default rate is 0.1), so both paths see the same network; gradients still flow
    return model.eval(), torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def _out_and_grads(model: RestorationModel, x: torch.Tensor, fused: bool):
    model.zero_grad()
    with fused_attention(fused):
        y = model(x, "sr_x2")
        (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_cuda_attention_path_equals_explicit_path(name: str) -> None:
    model, x = _model(name)
    y_ref, g_ref = _out_and_grads(model, x, fused=False)
    y, g = _out_and_grads(model, x, fused=True)
    assert torch.allclose(y, y_ref, atol=1e-5, rtol=0), (y - y_ref).abs().max()
    assert g.keys() == g_ref.keys()
    assert any("relative_position_bias_table" in k for k in g) or name == "edt"
    for k in g:
        assert torch.allclose(g[k], g_ref[k], atol=1e-5, rtol=1e-5), (k, (g[k] - g_ref[k]).abs().max())


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_cuda_attention_path_calls_sdpa_as_fused_kernels_need(name: str, monkeypatch) -> None:
    model, x = _model(name)
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        calls.append((q.shape, k.shape, None if attn_mask is None else attn_mask.shape, kwargs.get("scale")))
        return real(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad(), fused_attention(True):
        model(x, "sr_x2")
    assert calls, "the CUDA path did not call SDPA"
    for q_shape, k_shape, mask_shape, scale in calls:
        assert len(q_shape) == 4 and len(k_shape) == 4, q_shape  # fused kernels: 4-D only
        assert q_shape[-1] % 8 == 0, q_shape  # head dim 6 padded to 8
        assert scale == pytest.approx(6**-0.5)  # the true head dim's scale, not the padded one's
        if mask_shape is not None:
            assert mask_shape[0] == 1, mask_shape  # broadcast over the batch, never copied per image
    assert any(m is not None for *_s, m, _sc in calls)  # shifted blocks sent their masks


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_cuda_attention_path_is_taken_by_a_fused_kernel(name: str) -> None:
    # the CPU flash kernel rejects what CUDA's fused kernels reject (5-D inputs): restricted to it, the call
    # fails with "No available kernel" on a layout the fused kernels cannot take
    model, x = _model(name)
    with torch.no_grad(), fused_attention(True), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        y = model(x, "sr_x2")
    with torch.no_grad(), fused_attention(False):
        assert torch.allclose(y, model(x, "sr_x2"), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mask_shape", [None, (3, 2, 5, 7), (1, 2, 5, 7), (2, 5, 7), (3, 1, 5, 7)])
def test_window_sdpa_matches_the_formula(mask_shape) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 2, 5, 6, generator=g)  # (B, nW, nH, Nq, d)
    k, v = torch.randn(2, 2, 3, 2, 7, 6, generator=g).unbind(0)
    mask = None if mask_shape is None else torch.randn(*mask_shape, generator=g)
    logits = 0.3 * q @ k.transpose(-2, -1)
    if mask is not None:
        logits = logits + mask
    expected = logits.softmax(-1) @ v
    assert torch.allclose(window_sdpa(q, k, v, mask, 0.3), expected, atol=1e-6)
    assert torch.allclose(window_sdpa(q, k, v, mask, 0.3, head_multiple=0), expected, atol=1e-6)


@pytest.mark.parametrize("mask_shape", [None, (3, 2, 5, 7), (1, 2, 5, 7), (3, 1, 5, 7)])
def test_window_sdpa_splits_what_cuda_cannot_launch(mask_shape, monkeypatch) -> None:
    """Windows folded into SDPA's heads or batch exceed CUDA's 65535-block grid rows on large untiled images; above
    `SDPA_MAX_HEADS` heads or `SDPA_MAX_BATCH` images the call is split, each part with its slice of the mask.
    Checked with small limits: every layout (heads = windows x heads, heads = windows, batch = windows x images)
    gives the unsplit result, and each call stays under both."""
    import restore.layers as layers

    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 2, 5, 6, generator=g)
    k, v = torch.randn(2, 2, 3, 2, 7, 6, generator=g).unbind(0)
    mask = None if mask_shape is None else torch.randn(*mask_shape, generator=g)
    whole = window_sdpa(q, k, v, mask, 0.3)
    shapes, sdpa = [], torch.nn.functional.scaled_dot_product_attention

    def recording(query, *args, **kw):
        shapes.append(query.shape[:2])
        return sdpa(query, *args, **kw)

    monkeypatch.setattr(layers, "SDPA_MAX_HEADS", 2)
    monkeypatch.setattr(layers, "SDPA_MAX_BATCH", 3)
    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", recording)
    assert torch.allclose(window_sdpa(q, k, v, mask, 0.3), whole, atol=1e-6)
    assert max(b for b, _ in shapes) <= 3 and max(h for _, h in shapes) <= 2 and len(shapes) > 1


def test_compiled_masks_are_built_in_the_graph_so_one_graph_serves_every_size():
    """Under ``torch.compile(dynamic=True)`` the shift masks (SwinIR/HAT's cache, EDT's pair) are built with tensor ops
    from the symbolic size, the same numbers as the cached ones: a cache keyed by the Python size fixed it as a
    constant, so `restore_image(..., compile=True)` compiled the model again for each image size (three sizes, three
    graphs of edt_tiny) and ran eagerly, silently, after dynamo's limit of 8."""
    from torch._dynamo.utils import counters

    from restore.families.windows import ShiftMaskCache, shift_window_mask
    from restore.model import RestorationModel

    cache = ShiftMaskCache(4, 2)
    body = RestorationModel("edt_tiny", tasks=["sr_x2"]).body
    short, long = body.window_size

    def masks(x):
        return (cache(x.shape[-2], x.shape[-1], x.device), *body.masks(x.shape[-2], x.shape[-1], x.device, x.dtype))

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(masks, dynamic=True, backend="eager")
    graphs = []
    for h, w in ((24, 24), (24, 48), (48, 72), (72, 96), (96, 48), (120, 144)):  # multiples of its windows (6, 24)
        swin, horizontal, vertical = compiled(torch.empty(1, h, w))
        assert torch.equal(swin, shift_window_mask(h, w, 4, 2))
        assert torch.equal(horizontal, shift_window_mask(h, w, (short, long), (short // 2, long // 2)))
        assert torch.equal(vertical, shift_window_mask(h, w, (long, short), (long // 2, short // 2)))
        graphs.append(counters["stats"]["unique_graphs"])
    # the first sizes specialise (a square one shares its symbol between H and W); after them, no size compiles
    assert graphs[-1] == graphs[2] <= 3, graphs
