"""MATLAB-exact bicubic ``imresize`` in torch, batched, on any device.

Reference: MATLAB Image Processing Toolbox ``imresize(A, scale, 'bicubic')`` (Keys cubic kernel with a = -0.5,
antialiasing when shrinking, symmetric boundary padding, one dimension at a time, rows first for equal scales).
The official super-resolution LR files (EDSR benchmark, ``LR_bicubic/X{2,3,4}``) were made with it, so matching it
to the last bit is what makes LR inputs and bicubic baselines comparable with published tables.

How MATLAB computes it (and so do we):
- per output index ``i`` (1-based) the input coordinate is ``u = i / scale + 0.5 * (1 - 1 / scale)``;
- the kernel is ``cubic(x)`` for upscaling and ``scale * cubic(scale * x)`` (width ``4 / scale``) for downscaling;
- ``ceil(width) + 2`` taps starting at ``floor(u - width / 2)``, weights normalised to sum 1, out-of-range taps
  mirrored (``[1..n, n..1]``), all-zero tap columns dropped;
- for ``uint8`` input each 1-D pass is rounded (half away from zero) and saturated to uint8 before the next one.

The weights are computed in float64 NumPy exactly as MATLAB does and cached per (length, scale). A float64 (and so a
uint8) pass sums like MATLAB: ``acc = acc + w_k * x[idx_k]``, multiply then add, in tap order. On CPU that sum is
scipy's sparse x dense product (``csr_matvecs``: the same operations in compiled code, one call per pass for the
whole batch; 5-8x faster than the torch loop at DIV2K size), trusted only after a probe shows it does not fuse the
multiply-add; elsewhere (GPU, no scipy) it is a torch loop over the taps (integer shrink factors read strided views
of a mirror-padded line instead of gathering). Float32 passes use the sparse product on CPU too, except along short
last-dimension lines, and one matmul with the dense weight matrix on GPU. This reproduces the official Set5/Set14 LR
files bit for bit, and the sparse product equals the torch loop bit for bit (tests/tasks/test_imresize.py).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

__all__ = ["imresize", "output_size"]


def _cubic(x: np.ndarray) -> np.ndarray:
    """The Keys cubic kernel with a = -0.5, written as MATLAB's ``cubic`` so float64 results agree bit for bit."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * (
        (1 < absx) & (absx <= 2)
    )


@lru_cache(maxsize=256)
def _contributions_full(in_len: int, out_len: int, scale: float, antialias: bool):
    """MATLAB's ``contributions``: (out_len, P) float64 weights, 0-based mirrored indices and the indices before
    mirroring (for the strided fast path)."""
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)[:, None]  # (out, 1), 1-based like MATLAB
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left + np.arange(taps, dtype=np.float64)[None, :]  # (out, P), 1-based
    dist = u - indices
    weights = scale * _cubic(scale * dist) if shrink else _cubic(dist)
    weights = weights / np.sum(weights, axis=1, keepdims=True)
    raw = indices.astype(np.int64) - 1
    # symmetric padding: index sequence 1..n, n..1 repeated
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    mirrored = aux[np.mod(raw, aux.size)]
    keep = np.any(weights != 0, axis=0)
    return (np.ascontiguousarray(weights[:, keep]), np.ascontiguousarray(mirrored[:, keep]),
            np.ascontiguousarray(raw[:, keep]))


def _contributions(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """(out_len, P) float64 weights and 0-based input indices, exactly as MATLAB's ``contributions``."""
    weights, mirrored, _ = _contributions_full(in_len, out_len, scale, antialias)
    return weights, mirrored


def output_size(in_size: Sequence[int], scale: float | Sequence[float]) -> tuple[int, int]:
    """MATLAB's output size ``ceil(scale * size)``, robust to float error (255 * (1/3) is 85, not 86)."""
    scales = _pair(scale)
    out = []
    for n, s in zip(in_size, scales):
        v = n * s
        out.append(int(round(v)) if abs(v - round(v)) < 1e-9 else int(math.ceil(v)))
    return out[0], out[1]


def _pair(scale: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(scale, (int, float)):
        return float(scale), float(scale)
    sh, sw = scale
    return float(sh), float(sw)


@lru_cache(maxsize=256)
def _dense_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """The same weights as an (out_len, in_len) matrix (mirrored taps that hit one pixel twice are summed)."""
    weights, indices = _contributions(in_len, out_len, scale, antialias)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), weights.shape[1])
    np.add.at(mat, (rows, indices.ravel()), weights.ravel())
    return mat


@lru_cache(maxsize=1)
def _scipy_csr_matrix():
    """scipy's CSR matrix class if its sparse x dense product sums as the tap loop does, else None.

    ``csr @ dense`` (scipy's ``csr_matvecs``) computes ``y[i] = 0 + w_0 * x_0 + w_1 * x_1 + ...`` over the stored
    entries in order, multiply then add, which is the tap loop's (and MATLAB's) arithmetic, in compiled code. A build
    that fuses the multiply-add (FMA) would change the last bit, and so rounding ties of the uint8 path: the probe
    below differs there (fused: -2**-54, separate: fl(a * b) == 1 exactly, so 0), and then the tap loop runs.
    """
    try:
        import scipy.sparse
    except ImportError:  # scipy comes with scikit-image; without it the torch tap loop runs
        return None
    a = 1 + 2.0**-27
    probe = scipy.sparse.csr_matrix((np.array([1.0, a]), np.array([0, 1]), np.array([0, 2])), shape=(1, 2))
    x = np.empty((2, 37))  # 37 vectors: the vectorised body and the scalar tail of the product
    x[0], x[1] = -1.0, 1 - 2.0**-27
    return scipy.sparse.csr_matrix if np.all(probe @ x == 0) else None


@lru_cache(maxsize=64)  # a batched matrix holds B*C copies of the weights: bound the memory
def _csr(in_len: int, out_len: int, scale: float, antialias: bool, dtype: np.dtype, planes: int = 1):
    """MATLAB's weights as a CSR matrix, one row per output, entries in tap order and mirrored taps that hit one
    pixel twice kept apart (scipy leaves duplicates as given). ``planes`` > 1: the block-diagonal matrix that
    resizes ``planes`` stacked lines of ``in_len`` at once, so a (B, C, H, W) batch is one product."""
    weights, indices = _contributions(in_len, out_len, scale, antialias)
    taps = weights.shape[1]
    indices = indices[None] + in_len * np.arange(planes).reshape(-1, 1, 1)  # (planes, out, P)
    data = np.broadcast_to(weights.astype(dtype), indices.shape).ravel()
    indptr = np.arange(0, planes * out_len * taps + 1, taps)
    shape = (planes * out_len, planes * in_len)
    return _scipy_csr_matrix()((data, indices.ravel(), indptr), shape=shape)


# Elements per block in the sparse pass along the last dimension, which transposes each block of lines (the product
# runs along the first axis): a block, its transpose and its product stay in cache, and short lines still give the
# product long vectors.
_CSR_BLOCK = 1 << 16


def _resize_dim_sparse(x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """The tap loop's sums (bit for bit) as a sparse x dense product, on CPU (float32/float64)."""
    xn = x.detach().contiguous().numpy()
    b, c, h, w = xn.shape
    if dim == 2:  # the batch's planes stacked, (B*C*H, W), are the (in, vectors) matrix of the block-diagonal product
        mat = _csr(h, out_len, scale, antialias, xn.dtype, b * c)
        return torch.from_numpy(mat @ xn.reshape(b * c * h, w)).view(b, c, out_len, w)
    mat = _csr(w, out_len, scale, antialias, xn.dtype)
    lines = xn.reshape(b * c * h, w)
    out = np.empty((b * c * h, out_len), dtype=xn.dtype)
    step = max(32, _CSR_BLOCK // max(w, out_len))
    for r in range(0, len(lines), step):
        out[r : r + step] = (mat @ np.ascontiguousarray(lines[r : r + step].T)).T
    return torch.from_numpy(out).view(b, c, h, out_len)


# On CPU every pass runs as the sparse product where scipy sums like the tap loop, except float32 passes along the
# last dimension over lines up to this long: there the dense matmul below (BLAS) is as fast and needs no transposes.
_DENSE_LAST_DIM_MAX = 256
# Without scipy (or on GPU, or with autograd), float32 passes over lines up to this long use one matmul with the dense
# weight matrix (5-8x faster than the tap loop on 192-pixel training patches); longer lines, and all float64/uint8
# work, use the torch tap loop, whose cost does not grow with the input length and whose sums are MATLAB's.
_MATMUL_MAX_LEN = 1024
_TAP_CHUNK = 128  # columns per block in the tap loop


# Weight tables at most this large are kept on their device once made (a GPU: a blocking copy of a NumPy table
# there waits for everything queued on the stream, the previous training step too, and training patches reuse a
# few tables); larger ones, of whole images, are copied per call
_DEVICE_TABLE_MAX = 1 << 16


def _table(kind: str, in_len: int, out_len: int, scale: float, antialias: bool, device: torch.device,
           dtype: torch.dtype | None = None) -> torch.Tensor:
    """MATLAB's ``"dense"`` (out, in) matrix, tap ``"weights"`` or tap ``"index"`` (out, P) as a tensor on
    ``device``."""
    args = (kind, in_len, out_len, scale, antialias, device, dtype)
    small = kind != "dense" or in_len * out_len <= _DEVICE_TABLE_MAX
    return _device_table(*args) if device.type != "cpu" and small else _make_table(*args)


def _make_table(kind: str, in_len: int, out_len: int, scale: float, antialias: bool, device: torch.device,
                dtype: torch.dtype | None) -> torch.Tensor:
    if kind == "dense":
        table = _dense_matrix(in_len, out_len, scale, antialias)
    else:
        weights, index = _contributions(in_len, out_len, scale, antialias)
        table = weights if kind == "weights" else index
    return torch.from_numpy(table).to(device=device, dtype=dtype)


_device_table = lru_cache(maxsize=512)(_make_table)  # read-only tensors: no caller writes into them


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """Resize ``x`` (B, C, H, W) along ``dim`` (2 or 3) with MATLAB's weights."""
    sparse_pays = x.dtype == torch.float64 or dim == 2 or x.shape[dim] > _DENSE_LAST_DIM_MAX
    if x.device.type == "cpu" and not x.requires_grad and sparse_pays and _scipy_csr_matrix() is not None:
        return _resize_dim_sparse(x, dim, out_len, scale, antialias)
    return _resize_dim_torch(x, dim, out_len, scale, antialias)


def _resize_dim_torch(x: torch.Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """``_resize_dim`` in torch ops, on any device: one dense matmul for float32 (differentiable), else the tap
    loop."""
    in_len = x.shape[dim]
    if x.dtype != torch.float64 and (in_len <= _MATMUL_MAX_LEN or x.device.type != "cpu"):
        mat = _table("dense", in_len, out_len, scale, antialias, x.device, x.dtype)
        return torch.matmul(mat, x) if dim == 2 else torch.matmul(x, mat.T)  # (out, in) @ (.., in, W)
    if dim == 3:  # gather whole rows instead of scattered columns: about 2x faster on CPU
        rows = _resize_dim_torch(x.transpose(2, 3).contiguous(), 2, out_len, scale, antialias)
        return rows.transpose(2, 3).contiguous()
    if x.shape[3] > _TAP_CHUNK:
        # the tap loop streams one (out, W) buffer per tap through memory; column blocks keep them in cache
        # (DIV2K-size x4: 1.6x faster), with the same per-pixel arithmetic
        parts = [_resize_dim_torch(c.contiguous(), 2, out_len, scale, antialias) for c in x.split(_TAP_CHUNK, dim=3)]
        return torch.cat(parts, dim=3)
    weights = _table("weights", in_len, out_len, scale, antialias, x.device, x.dtype)  # (out, P)
    plan = _strided_plan(in_len, out_len, scale, antialias)
    if plan is not None:
        # integer shrink factors: tap k of output i reads padded input start_k + step * i, a strided view (no gather)
        pad_index, lo, starts, step = plan
        xp = _pad_symmetric(x, pad_index, lo)
        stop = step * (out_len - 1) + 1
        taps = [xp[:, :, s0 : s0 + stop : step] for s0 in starts]
    else:
        index = _table("index", in_len, out_len, scale, antialias, x.device)  # (out, P)
        taps = [x.index_select(2, index[:, k]) for k in range(weights.shape[1])]
    # multiply then add, in tap order, without fused multiply-add: MATLAB's sums. Two reused buffers: fresh large
    # temporaries per tap cost as much as the arithmetic.
    acc = torch.mul(taps[0], weights[:, 0].reshape(-1, 1))  # (B, C, out, W)
    buf = torch.empty_like(acc)
    for k in range(1, len(taps)):
        torch.mul(taps[k], weights[:, k].reshape(-1, 1), out=buf)
        acc.add_(buf)
    return acc


def _pad_symmetric(x: torch.Tensor, pad_index: np.ndarray, lo: int) -> torch.Tensor:
    """x (B, C, L, W) padded along dim 2 by MATLAB's mirror rule; ``pad_index`` is each padded row's source row."""
    n = x.shape[2]
    hi = len(pad_index) - n - lo
    mirror = np.concatenate([np.arange(lo - 1, -1, -1), np.arange(n), np.arange(n - 1, n - 1 - hi, -1)])
    if lo <= n and hi <= n and np.array_equal(mirror, pad_index):  # one reflection each side: flipped slices
        parts = [x[:, :, :lo].flip(2), x, x[:, :, n - hi :].flip(2)]
        return torch.cat([t for t in parts if t.shape[2]], dim=2)
    return x.index_select(2, torch.from_numpy(pad_index).to(x.device))  # pads longer than the line


@lru_cache(maxsize=256)
def _strided_plan(in_len: int, out_len: int, scale: float, antialias: bool):
    """For a pass whose taps advance by a constant integer step (integer shrink factors): the mirrored index of a
    padded input line, each tap's start in it, and the step; None otherwise."""
    if out_len < 2:
        return None
    _, idx_np, raw = _contributions_full(in_len, out_len, scale, antialias)  # raw: (out, P) before mirroring
    steps = np.diff(raw, axis=0)
    step = int(steps[0, 0])
    if step < 1 or not np.all(steps == step):
        return None
    lo = int(max(0, -raw.min()))
    positions = np.arange(-lo, max(in_len, int(raw.max()) + 1))
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    pad_index = aux[np.mod(positions, 2 * in_len)]
    if not np.array_equal(pad_index[raw + lo], idx_np):  # the plan must read exactly MATLAB's pixels
        return None
    return pad_index, lo, tuple(int(v) for v in raw[0] + lo), step


def _round_uint8(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's double -> uint8 conversion: round half away from zero, saturate to [0, 255] (values stay float)."""
    return torch.floor(x.clamp(0, 255) + 0.5)


def imresize(
    x: torch.Tensor,
    scale: float | Sequence[float] | None = None,
    *,
    size: Sequence[int] | None = None,
    antialias: bool = True,
    quantize: bool = False,
) -> torch.Tensor:
    """Resize like MATLAB ``imresize(x, scale, 'bicubic')``.

    Args:
        x: image(s) (B, C, H, W), (C, H, W) or (H, W). ``uint8`` input behaves as MATLAB's uint8 path (computed in
            float64, rounded to uint8 after each pass, uint8 out: bit-exact). Float input is computed in its own
            dtype (float16/bfloat16 in float32) on the values given, e.g. [0, 1], and is not clamped.
        scale: output size over input size, e.g. ``1/4`` to shrink by 4 or ``2`` to enlarge; a float or (sh, sw).
        size: output (H, W) instead of ``scale`` (MATLAB's ``[rows cols]`` form).
        antialias: widen the kernel when shrinking (MATLAB's default ``'Antialiasing', true``).
        quantize: for float input in [0, 1]: emulate MATLAB's uint8 path (round to 1/255 levels, clamp to [0, 1]
            after each pass). With float64 input on the uint8 grid this equals the uint8 path exactly.

    Returns:
        The resized image(s), same number of dimensions and dtype as ``x``; size ``ceil(scale * size)``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"imresize expects a torch.Tensor, got {type(x).__name__}; use torch.from_numpy(...) first")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"imresize expects (H, W), (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    if (scale is None) == (size is None):
        raise ValueError("imresize needs exactly one of scale (e.g. 1/4) or size=(H, W)")
    in_h, in_w = x.shape[-2:]
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        sh, sw = out_h / in_h, out_w / in_w
    else:
        sh, sw = _pair(scale)
        if sh <= 0 or sw <= 0:
            raise ValueError(f"imresize scale must be positive, got {scale}")
        out_h, out_w = output_size((in_h, in_w), (sh, sw))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"imresize output would be empty: {in_h}x{in_w} at scale {scale}")

    orig_ndim, orig_dtype = x.ndim, x.dtype
    while x.ndim < 4:
        x = x.unsqueeze(0)
    is_uint8 = orig_dtype == torch.uint8
    if is_uint8:
        work, levels = x.to(torch.float64), True
    elif orig_dtype.is_floating_point:
        work = x if orig_dtype in (torch.float32, torch.float64) else x.to(torch.float32)
        levels = quantize
        if levels:
            work = _round_uint8(work * 255)
    else:
        raise TypeError(f"imresize supports uint8 or floating point tensors, got {orig_dtype}")

    # MATLAB resizes the dimension with the smaller scale first; rows first on ties (stable sort).
    order = [(2, out_h, sh), (3, out_w, sw)]
    if sw < sh:
        order.reverse()
    for dim, n, s in order:
        if n == work.shape[dim] and s == 1:
            continue
        work = _resize_dim(work, dim, n, s, antialias)
        if levels:
            work = _round_uint8(work)

    if is_uint8:
        out = work.to(torch.uint8)
    elif levels:
        out = (work / 255).to(orig_dtype)
    else:
        out = work.to(orig_dtype)
    while out.ndim > orig_ndim:
        out = out.squeeze(0)
    return out
