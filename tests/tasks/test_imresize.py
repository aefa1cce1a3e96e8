"""tasks.imresize: bit-exact MATLAB bicubic (the official LR files), float paths, batching, errors."""

from __future__ import annotations

import importlib
import platform

import numpy as np
import pytest
import torch

from tasks import imresize
from tasks.imresize import _contributions, output_size
from tasks.io import list_images, read_image


def _pairs(root, dataset, scale):
    for path in list_images(root / dataset / "HR"):
        hr = read_image(path, torch.uint8)
        h, w = hr.shape[-2:]
        lr = read_image(root / dataset / "LR_bicubic" / f"X{scale}" / f"{path.stem}x{scale}.png", torch.uint8)
        yield path.stem, hr[:, : h - h % scale, : w - w % scale], lr


@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_reproduces_official_lr_bit_exactly(bench_root, dataset, scale):
    n = 0
    for name, hr, lr in _pairs(bench_root, dataset, scale):
        out = imresize(hr, 1 / scale)
        assert out.dtype == torch.uint8 and out.shape == lr.shape, name
        diff = (out.int() - lr.int()).abs()
        assert int(diff.max()) == 0, f"{dataset}/{name} x{scale}: {int((diff > 0).sum())} pixels differ"
        n += 1
    assert n == {"Set5": 5, "Set14": 14}[dataset]


def _matlab_reference_1d(line: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """Textbook MATLAB imresize along one axis, written with explicit loops (slow, for checking)."""
    n = len(line)
    width = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros(out_len)
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = int(np.floor(u - width / 2))
        taps = int(np.ceil(width)) + 2
        idx = np.arange(left, left + taps)
        x = u - idx
        xs = x * scale if scale < 1 else x
        a = np.abs(xs)
        k = np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1, np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0))
        k = k * scale if scale < 1 else k
        k = k / k.sum()
        mirrored = np.concatenate([np.arange(1, n + 1), np.arange(n, 0, -1)])[(idx - 1) % (2 * n)] - 1
        out[i - 1] = np.dot(k, line[mirrored])
    return out


@pytest.mark.parametrize(
    "in_len,scale", [(12, 0.5), (13, 1 / 3), (9, 2.0), (7, 3.0), (16, 0.25), (5, 0.25), (3, 0.5), (2, 3.0)]
)
def test_weights_match_a_loop_reference(in_len, scale):
    rng = np.random.default_rng(0)
    line = rng.random(in_len)
    out_len = output_size((in_len, in_len), scale)[0]
    ref = _matlab_reference_1d(line, out_len, scale)
    ours = imresize(torch.from_numpy(line).view(1, 1, in_len, 1), (scale, 1.0)).flatten().numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_output_size_is_ceil_and_robust_to_float_error():
    assert output_size((255, 256), 1 / 3) == (85, 86)
    assert output_size((10, 11), 0.5) == (5, 6)
    assert imresize(torch.rand(1, 3, 255, 17), 1 / 3).shape == (1, 3, 85, 6)
    assert imresize(torch.rand(2, 1, 5, 7), 4).shape == (2, 1, 20, 28)
    assert imresize(torch.rand(3, 8, 10), size=(4, 5)).shape == (3, 4, 5)


def test_float_paths_agree_with_the_exact_uint8_path():
    g = torch.Generator().manual_seed(0)
    hr8 = torch.randint(0, 256, (2, 3, 36, 48), generator=g, dtype=torch.uint8)
    exact = imresize(hr8, 1 / 4)  # float64, rounded after each pass
    hr64 = hr8.double() / 255
    emulated = imresize(hr64, 1 / 4, quantize=True)
    assert torch.equal((emulated * 255).round().to(torch.uint8), exact)
    f32 = imresize(hr8.float() / 255, 1 / 4, quantize=True)  # matmul path: ties at .5 may round the other way
    diff = ((f32 * 255).round() - exact.float()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    # unquantised float32 (matmul) and float64 (tap loop) agree to float32 precision
    np.testing.assert_allclose(imresize(hr64.float(), 1 / 3).double(), imresize(hr64, 1 / 3), atol=1e-5)


def test_batched_equals_one_by_one_and_shapes_are_kept():
    x = torch.rand(3, 3, 20, 30, dtype=torch.float64)
    batched = imresize(x, 0.5)
    for i in range(3):
        assert torch.equal(imresize(x[i], 0.5), batched[i])
    assert imresize(x[0, 0], 0.5).shape == (10, 15)


def test_constant_image_stays_constant_up_and_down():
    x = torch.full((1, 1, 17, 23), 0.3, dtype=torch.float64)
    for s in (0.25, 1 / 3, 2.0, 3.0):
        torch.testing.assert_close(imresize(x, s), torch.full_like(imresize(x, s), 0.3))


def test_contributions_drop_zero_columns_and_mirror_indices():
    w, idx = _contributions(8, 4, 0.5, True)
    assert w.shape == idx.shape and np.allclose(w.sum(1), 1)
    assert idx.min() >= 0 and idx.max() <= 7 and np.all(np.any(w != 0, axis=0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    assert torch.equal(imresize(x.cuda(), 1 / 4).cpu(), imresize(x, 1 / 4))
    xf = torch.rand(2, 3, 40, 40)
    torch.testing.assert_close(imresize(xf.cuda(), 1 / 3).cpu(), imresize(xf, 1 / 3), atol=1e-5, rtol=0)


def test_bad_inputs_are_reported():
    with pytest.raises(TypeError, match="torch.Tensor"):
        imresize(np.zeros((4, 4)), 0.5)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        imresize(torch.zeros(1, 1, 1, 4, 4), 0.5)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(torch.zeros(4, 4), 0.5, size=(2, 2))
    with pytest.raises(ValueError, match="positive"):
        imresize(torch.zeros(4, 4), -1)
    with pytest.raises(TypeError, match="uint8 or floating"):
        imresize(torch.zeros(4, 4, dtype=torch.int32), 0.5)


# The CPU fast path (scipy's sparse product) must give the torch tap loop's sums bit for bit, which is what makes the
# official LR files above come out exact; sizes are odd and tiny (pads longer than the line), scales cover
# shrinking, enlarging, non-integer and per-axis factors, and both pass orders.
_SCALES = [0.5, 1 / 3, 0.25, 0.7, 0.3, 2.0, 3.0, 4.0, 1.5, (0.5, 0.25), (1 / 3, 2.0), (0.8, 0.6)]
_SIZES = [(1, 1), (2, 3), (5, 7), (13, 17), (37, 29), (101, 77)]


def _torch_only(monkeypatch):
    import importlib

    module = importlib.import_module("tasks.imresize")  # `tasks.imresize` the attribute is the function
    monkeypatch.setattr(module, "_resize_dim", module._resize_dim_torch)


@pytest.mark.parametrize("scale", _SCALES, ids=str)
def test_sparse_path_equals_the_torch_tap_loop_bit_for_bit(monkeypatch, scale):
    g = torch.Generator().manual_seed(1)
    cases = []
    for h, w in _SIZES:
        if min(output_size((h, w), scale)) < 1:
            continue
        x8 = torch.randint(0, 256, (2, 3, h, w), generator=g, dtype=torch.uint8)
        x64 = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64)
        cases += [(x8, {}), (x8.double() / 255, {"quantize": True}), (x64, {})]
    fast = [imresize(x, scale, **kw) for x, kw in cases]
    with monkeypatch.context() as m:
        _torch_only(m)
        slow = [imresize(x, scale, **kw) for x, kw in cases]
    for (x, kw), a, b in zip(cases, fast, slow):
        diff = (a.double() - b.double()).abs().max()
        assert torch.equal(a, b), f"{tuple(x.shape)} {x.dtype} {kw} x{scale}: max diff {diff}"


def test_float32_sparse_path_agrees_with_the_dense_matmul(monkeypatch):
    # float32 lines longer than _DENSE_LAST_DIM_MAX run sparse on both axes; the torch path uses the dense matmul
    x = torch.rand(2, 3, 45, 301, generator=torch.Generator().manual_seed(2))
    for scale in (1 / 4, 1 / 3, 2.0, (0.5, 0.7)):
        fast = imresize(x, scale)
        with monkeypatch.context() as m:
            _torch_only(m)
            slow = imresize(x, scale)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_fma_probe_tells_fused_from_separate_multiply_add():
    # the probe trusts scipy's product only if -1 + a * b gives 0: true for multiply-round-add, false for a fused
    # multiply-add, which keeps the exact product 1 - 2**-54
    from fractions import Fraction

    a, b = 1 + 2.0**-27, 1 - 2.0**-27
    assert a * b == 1.0  # Python floats: multiply then round
    assert Fraction(a) * Fraction(b) - 1 == Fraction(-1, 2**54)  # what a fused multiply-add would add to -1


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 scipy wheels are built without FMA")
def test_sparse_path_is_taken_on_cpu():
    import importlib

    module = importlib.import_module("tasks.imresize")
    pytest.importorskip("scipy")
    assert module._scipy_csr_matrix() is not None, "scipy's product would not sum like MATLAB: the slow tap loop runs"


def test_inputs_that_require_grad_keep_the_differentiable_matmul():
    # the sparse product leaves torch (no autograd); float32 inputs that require grad keep today's dense matmul
    x = torch.rand(1, 3, 20, 300, requires_grad=True)
    y = imresize(x, 1 / 4)
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    torch.testing.assert_close(y.detach(), imresize(x.detach(), 1 / 4), atol=1e-5, rtol=0)


def test_weight_tables_are_made_on_a_device_once():
    """Off the CPU the small tables (training patches) are made on the device once, not copied per pass: each
    blocking copy to a GPU waits for the whole stream. The meta device stands in for a GPU here (shapes only)."""
    mod = importlib.import_module("tasks.imresize")  # the module (the package exports the function by its name)
    meta = torch.device("meta")
    mod._device_table.cache_clear()
    for _ in range(3):
        out = imresize(torch.empty(2, 3, 192, 192, device=meta), 1 / 4)
        assert out.shape == (2, 3, 48, 48) and out.device == meta
    info = mod._device_table.cache_info()
    assert info.misses == 1 and info.hits == 5, info  # both passes' dense matrix (192 -> 48), made once
    assert mod._table("weights", 192, 48, 0.25, True, meta, torch.float64) is mod._table(
        "weights", 192, 48, 0.25, True, meta, torch.float64)
    big = mod._table("dense", 2040, 510, 0.25, True, meta, torch.float32)  # a whole image's: made per call
    assert big.shape == (510, 2040) and mod._device_table.cache_info().currsize == 2
    cpu = mod._table("weights", 192, 48, 0.25, True, torch.device("cpu"))
    assert cpu.device.type == "cpu" and mod._device_table.cache_info().currsize == 2  # the CPU needs no copy
