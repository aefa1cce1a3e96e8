"""Small helpers shared by the body families and the model: padding to a size multiple, cropping back, and the
window attention call that CUDA's fused SDPA kernels accept (`window_sdpa`).

Reference: the test-time padding of the official EDT (`fenglinglwb/EDT`, `test_sample.py`) and SwinIR
(`main_test_swinir.py`) repositories, which pad by mirroring the image; we pad only when a size is not already a
multiple (SwinIR PR #139 discusses the always-pad variant).
"""

from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar
from typing import Iterator

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

__all__ = ["pad_amount", "reflect_pad", "pad_to_multiple", "crop_to", "window_sdpa", "fused_attention",
           "use_fused_attention"]


def pad_amount(size: int, multiple: int) -> int:
    """Pixels to add so that ``size`` becomes a multiple of ``multiple`` (0 when it already is)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    return (-size) % multiple


def reflect_pad(x: torch.Tensor, pad_bottom: int, pad_right: int) -> torch.Tensor:
    """Reflect-pad the bottom and right edges of ``x`` (..., H, W).

    ``F.pad(mode="reflect")`` needs the padding to be smaller than the size; tiny inputs (e.g. 5x5 padded to 24)
    are therefore padded in several reflect steps, each at most ``size - 1``, which mirrors the mirrored image.
    A side of size 1 has nothing to mirror and is replicated instead.
    """
    while pad_bottom > 0 or pad_right > 0:
        h, w = x.shape[-2:]
        step_b = min(pad_bottom, h - 1)
        step_r = min(pad_right, w - 1)
        if (pad_bottom > 0 and step_b == 0) or (pad_right > 0 and step_r == 0):
            # a single row/column: reflection is undefined, replicate what remains
            x = F.pad(x, (0, pad_right, 0, pad_bottom), mode="replicate")
            break
        x = F.pad(x, (0, step_r, 0, step_b), mode="reflect")
        pad_bottom -= step_b
        pad_right -= step_r
    return x


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad ``x`` (B, C, H, W) at the bottom/right so H and W are multiples of ``multiple``.

    Returns ``x`` itself (no copy) when no padding is needed.
    """
    h, w = x.shape[-2:]
    pb, pr = pad_amount(h, multiple), pad_amount(w, multiple)
    if pb == 0 and pr == 0:
        return x
    return reflect_pad(x, pb, pr)


def crop_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop ``x`` (..., H, W) to its top-left ``height`` x ``width`` (a no-op view when sizes match)."""
    if x.shape[-2] == height and x.shape[-1] == width:
        return x
    return x[..., :height, :width]


def init_transformer_weights(m: nn.Module) -> None:
    """The initialisation of the official SwinIR/HAT/EDT bodies (``_init_weights``): truncated-normal (std 0.02)
    linears with zero bias, unit LayerNorms; convolutions keep PyTorch's default. Use with ``module.apply``."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class PixelShuffleUpsample(nn.Sequential):
    """conv to 4C + PixelShuffle(2) per factor 2, or conv to 9C + PixelShuffle(3): the ``Upsample`` of EDSR, SwinIR,
    HAT, IPT and EDT (the same layer order, so the official checkpoints' ``upsample.<i>`` keys fit)."""

    def __init__(self, scale: int, num_feat: int) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"pixelshuffle upsampling supports scales 2^n and 3, got {scale}")
        super().__init__(*layers)


# ------------------------------------------------------------------------------------------ window attention

_FUSED_ATTENTION: ContextVar[bool | None] = ContextVar("restore_fused_attention", default=None)


@contextlib.contextmanager
def fused_attention(enabled: bool = True) -> Iterator[None]:
    """Force the window attention of SwinIR/HAT/EDT onto the CUDA code path (`window_sdpa`, head dim padded) even
    on CPU, or off it with ``enabled=False``; by default the path follows the tensors' device. For tests and
    benchmarks: the CUDA path's layout logic is plain tensor code that runs anywhere."""
    token = _FUSED_ATTENTION.set(enabled)
    try:
        yield
    finally:
        _FUSED_ATTENTION.reset(token)


def use_fused_attention(x: torch.Tensor) -> bool:
    """Whether window attention on ``x`` takes the CUDA (fused-kernel) path: on CUDA, unless `fused_attention`
    says otherwise."""
    forced = _FUSED_ATTENTION.get()
    return x.is_cuda if forced is None else forced


# The most heads, and the largest batch, one SDPA call gets. CUDA grids hold at most 65535 blocks along y and z, and
# the fused kernels put heads and batch there: the memory-efficient kernel one block row per head (grid.y), and
# fails beyond ("invalid configuration argument"; pytorch/pytorch#142228, fix PR #177985 open), which with windows
# folded into the heads is a feature map of about 0.7 MP for SwinIR (window 8, 6 heads), an ordinary untiled
# image; the flash kernel the batch (grid.y) and heads (grid.z; pytorch/pytorch#146704), which with windows folded
# into the batch is EDT's unmasked blocks past about 9.4 MP (144-pixel windows) in bf16.
SDPA_MAX_HEADS = 65535
SDPA_MAX_BATCH = 65535


def window_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    dropout_p: float = 0.0,
    head_multiple: int = 8,
) -> torch.Tensor:
    """softmax(scale * q k^T + mask) v over windows, laid out for the fused SDPA kernels.

    q: (B, nW, nH, Nq, d); k, v: (B, nW, nH, Nk, d); mask: additive, broadcastable to (nW, nH, Nq, Nk) as
    (nW | 1, nH | 1, Nq, Nk) or (nH, Nq, Nk), or None. Returns (B, nW, nH, Nq, d).

    CUDA's fused kernels (memory-efficient, cuDNN) take 4-D inputs only, and a head dim that is a multiple of 8;
    anything else silently runs the "math" kernel, which materialises the attention matrix. So:

    - windows and heads fold into 4-D so that the mask broadcasts over the batch, never copied per image: a mask
      shared by the heads (EDT's shift mask) gives (B*nH, nW, N, d) with mask (1, nW, Nq, Nk); a mask shared by
      the windows (Swin's position bias) gives (B*nW, nH, N, d) with mask (1, nH, Nq, Nk); a mask varying in both
      (bias + shift mask) gives (B, nW*nH, N, d) with mask (1, nW*nH, Nq, Nk);
    - the head dim is zero-padded to ``head_multiple`` (SwinIR/HAT 180/6 = 30, EDT 15): zeros add nothing to
      q k^T and give zero output columns, which are cut off; ``scale`` is passed explicitly because SDPA's
      default would use the padded size (0 = no padding);
    - more than `SDPA_MAX_HEADS` folded heads, or a batch over `SDPA_MAX_BATCH`, run as several calls (same result;
      under ``torch.compile`` each such size compiles its own graph, as the split is a Python loop: only untiled
      images past the CUDA grid limits get there).
    """
    b, nw, nh, nq, d = q.shape
    nk = k.shape[-2]
    if mask is not None and mask.ndim == 3:
        mask = mask.unsqueeze(0)  # (1, nH, Nq, Nk)
    if mask is not None and mask.shape[1] == 1 and nh > 1:
        layout = "heads-in-batch"
    elif mask is None or mask.shape[0] == 1:
        layout = "windows-in-batch"
    else:
        layout = "windows-in-heads"

    def fold(t: torch.Tensor) -> torch.Tensor:
        n = t.shape[-2]
        if layout == "heads-in-batch":
            t = t.transpose(1, 2).reshape(b * nh, nw, n, d)
        elif layout == "windows-in-batch":
            t = t.reshape(b * nw, nh, n, d)
        else:
            t = t.reshape(b, nw * nh, n, d)
        pad = (-d) % head_multiple if head_multiple else 0
        return F.pad(t, (0, pad)) if pad else t

    attn_mask = None
    if mask is not None:
        # contiguous: the position bias is a permuted view (last-dim stride nH); the fused kernels want stride 1
        # there, and the mask is batch-independent, so the copy is small
        mask = mask.to(q.dtype).contiguous()
        if layout == "heads-in-batch":
            attn_mask = mask[:, 0].expand(nw, nq, nk).unsqueeze(0)  # (1, nW, Nq, Nk)
        elif layout == "windows-in-batch":
            attn_mask = mask.expand(1, nh, nq, nk)
        else:
            attn_mask = mask.expand(nw, nh, nq, nk).reshape(1, nw * nh, nq, nk)
    qf, kf, vf = fold(q), fold(k), fold(v)

    def attend(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor, mask_: torch.Tensor | None) -> torch.Tensor:
        return F.scaled_dot_product_attention(q_, k_, v_, attn_mask=mask_, dropout_p=dropout_p, scale=scale)

    # an exported graph runs elsewhere (ONNX Runtime): one call, and no guard on its dynamic batch and size
    if torch.compiler.is_exporting() or (qf.shape[0] <= SDPA_MAX_BATCH and qf.shape[1] <= SDPA_MAX_HEADS):
        out = attend(qf, kf, vf, attn_mask)
    else:  # windows packed into the batch or the heads of a large untiled image: chunks the CUDA kernels launch
        rows = []
        for i in range(0, qf.shape[0], SDPA_MAX_BATCH):
            cols = []
            for j in range(0, qf.shape[1], SDPA_MAX_HEADS):
                part = (slice(i, i + SDPA_MAX_BATCH), slice(j, j + SDPA_MAX_HEADS))
                heads_mask = None if attn_mask is None else attn_mask[:, part[1]]  # its batch dim is 1
                cols.append(attend(qf[part], kf[part], vf[part], heads_mask))
            rows.append(torch.cat(cols, dim=1))
        out = torch.cat(rows, dim=0)
    out = out[..., :d]
    if layout == "heads-in-batch":
        return out.reshape(b, nh, nw, nq, d).transpose(1, 2)
    return out.reshape(b, nw, nh, nq, d)
