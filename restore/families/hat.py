"""HAT-style body: residual hybrid attention groups (window attention + channel attention, overlapping cross-attention).

Paper: Chen et al., "Activating More Pixels in Image Super-Resolution Transformer", CVPR 2023 (HAT).
Reference code: `XPixelGroup/HAT` (`hat/archs/hat_arch.py`), also carried by spandrel (`spandrel/architectures/HAT`).
Argument and module names follow the official code; `restore.convert` maps official checkpoints onto ours.

Structure (per residual hybrid attention group, RHAG):
    HAB x depth:  x + WindowAttention(LN(x)) + conv_scale * CAB(LN(x));  x + MLP(LN(x))
    OCAB:         queries from ws x ws windows attend to keys/values from overlapping (ws + ws*overlap)² windows
    conv3x3 and a residual around the group.
Window helpers, the window attention and the SR tails are shared with SwinIR (`restore.families.swinir`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn

from restore.families.base import arch_error, check_number
from restore.families.swinir import (SwinIRArch, SwinIRBody, SwinIRFamily, WindowAttention, biased_attention,
                                    to_conv_layout)
from restore.families.windows import ShiftMaskCache, relative_position_index, window_partition, window_reverse
from restore.layers import init_transformer_weights
from restore.registry import register_family, register_variant

__all__ = ["HATArch", "CAB", "HAB", "OCAB", "RHAG", "HATBody", "HATFamily"]

@dataclass(frozen=True)
class HATArch(SwinIRArch):
    """Architecture arguments of the HAT family: SwinIR's (`HAT.__init__` shares them and their defaults) plus
    the hybrid-attention ones. Published configurations are the variants below.

    HAT's only upsampler is 'pixelshuffle' (scale-1 tasks, not in the official code, get SwinIR's image-residual
    tail), and its residual connection is '1conv' or 'identity'.
    """

    family: ClassVar[str] = "hat"
    upsamplers: ClassVar[tuple[str, ...]] = ("pixelshuffle",)
    resi_connections: ClassVar[tuple[str, ...]] = ("1conv", "identity")

    compress_ratio: float = 3
    squeeze_factor: float = 30
    conv_scale: float = 0.01
    overlap_ratio: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        f, dim = self.family, self.embed_dim
        for key in ("compress_ratio", "squeeze_factor"):  # CAB's channels are embed_dim // ratio
            ratio = check_number(f, key, getattr(self, key), 0.0)
            if dim // ratio < 1:
                raise arch_error(f, key, ratio, f"a number <= embed_dim={dim} (CAB has embed_dim // {key} channels)")
        check_number(f, "conv_scale", self.conv_scale, -math.inf)
        check_number(f, "overlap_ratio", self.overlap_ratio, 0.0, low_inclusive=True)


class CAB(nn.Module):
    """Channel attention block: conv C -> C/compress, GELU, conv back, then RCAN channel attention (squeeze)."""

    def __init__(self, dim: int, compress_ratio: float, squeeze_factor: float) -> None:
        super().__init__()
        mid, squeezed = int(dim // compress_ratio), int(dim // squeeze_factor)
        self.conv1 = nn.Conv2d(dim, mid, 3, 1, 1)
        self.conv2 = nn.Conv2d(mid, dim, 3, 1, 1)
        self.ca_reduce = nn.Conv2d(dim, squeezed, 1)
        self.ca_expand = nn.Conv2d(squeezed, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        y = self.conv2(F.gelu(self.conv1(x)))
        w = torch.sigmoid(self.ca_expand(F.relu(self.ca_reduce(y.mean((2, 3), keepdim=True)))))  # (B, C, 1, 1)
        return y * w


class HAB(nn.Module):
    """Hybrid attention block: (shifted) window attention in parallel with a scaled CAB, then an MLP."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, a: HATArch,
                 drop_path: float) -> None:
        super().__init__()
        self.window_size, self.shift_size, self.conv_scale = window_size, shift_size, a.conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, a.qkv_bias, a.qk_scale, a.attn_drop_rate,
                                    a.drop_rate)
        self.conv_block = CAB(dim, a.compress_ratio, a.squeeze_factor)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * a.mlp_ratio), act_layer=nn.GELU, drop=a.drop_rate)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        _, h, w, _ = x.shape
        ws, s = self.window_size, self.shift_size
        y = self.norm1(x)
        conv = self.conv_block(to_conv_layout(y)).permute(0, 2, 3, 1)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, ws), shift_mask if s else None), ws, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + self.drop_path(y) + conv * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OCAB(nn.Module):
    """Overlapping cross-attention block: ws² queries per window attend to a centred, larger key/value window."""

    def __init__(self, dim: int, num_heads: int, window_size: int, a: HATArch) -> None:
        super().__init__()
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.overlap_win_size = int(window_size * a.overlap_ratio) + window_size
        self.scale = a.qk_scale or (dim // num_heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=a.qkv_bias)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + self.overlap_win_size - 1) ** 2, num_heads)
        )
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size, self.overlap_win_size), persistent=False
        )
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * a.mlp_ratio), act_layer=nn.GELU)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = x.shape
        ws, ow, nh = self.window_size, self.overlap_win_size, self.num_heads
        d = c // nh
        qkv = self.qkv(self.norm1(x))  # (B, H, W, 3C)
        q = window_partition(qkv[..., :c], ws)  # (B, nW, ws², C)
        nw = q.shape[1]
        q = q.view(b, nw, ws * ws, nh, d).transpose(2, 3)  # (B, nW, nH, ws², d)
        # Key/value windows: zero-padded sliding windows of size ow at stride ws (the reference uses nn.Unfold on
        # the same zero padding); strided views, then one copy into (2, B, nW, nH, ow², d).
        pad = (ow - ws) // 2
        kv = F.pad(qkv[..., c:], (0, 0, pad, pad, pad, pad))  # (B, H+2p, W+2p, 2C)
        kv = kv.unfold(1, ow, ws).unfold(2, ow, ws)  # (B, nh, nw, 2C, ow, ow)
        kv = kv.reshape(b, nw, 2, nh, d, ow * ow).permute(2, 0, 1, 3, 5, 4)  # (2, B, nW, nH, ow², d)
        n = ws * ws
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, ow * ow, -1)
        out = biased_attention(q, kv[0], kv[1], bias.permute(2, 0, 1), None, self.scale)  # (B, nW, nH, ws², d)
        out = window_reverse(out.transpose(2, 3).reshape(b, nw, n, c), ws, h, w)
        x = self.proj(out) + x
        return x + self.mlp(self.norm2(x))


class RHAG(nn.Module):
    """Residual hybrid attention group: HABs (alternately shifted), one OCAB, a conv, and a residual."""

    def __init__(self, dim: int, depth: int, num_heads: int, a: HATArch, drop_path: list[float]) -> None:
        super().__init__()
        ws = a.window_size
        self.blocks = nn.ModuleList(
            HAB(dim, num_heads, ws, 0 if i % 2 == 0 else ws // 2, a, drop_path[i]) for i in range(depth)
        )
        self.overlap_attn = OCAB(dim, num_heads, ws, a)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if a.resi_connection == "1conv" else nn.Identity()

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        y = x
        for blk in self.blocks:
            y = blk(y, shift_mask)
        y = self.overlap_attn(y)
        return x + self.conv(to_conv_layout(y)).permute(0, 2, 3, 1)  # x first: the sum stays (B, H, W, C)


class HATBody(nn.Module):
    """Shared HAT body: patch norm -> RHAGs -> LayerNorm -> conv_after_body, plus the long feature skip."""

    def __init__(self, a: HATArch) -> None:
        super().__init__()
        dim, ws = a.embed_dim, a.window_size
        self.patch_norm = nn.LayerNorm(dim) if a.patch_norm else nn.Identity()
        self.pos_drop = nn.Dropout(a.drop_rate)
        dpr = torch.linspace(0, a.drop_path_rate, sum(a.depths), device="cpu").tolist()
        starts = [sum(a.depths[:i]) for i in range(len(a.depths))]
        self.layers = nn.ModuleList(
            RHAG(dim, d, h, a, dpr[s : s + d]) for d, h, s in zip(a.depths, a.num_heads, starts)
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, 1, 1) if a.resi_connection == "1conv" else nn.Identity()
        self.shift_masks = ShiftMaskCache(ws, ws // 2)
        self.apply(init_transformer_weights)

    # the same pass as SwinIR's body (patch norm, groups, norm, conv, long skip); only the groups differ
    forward = SwinIRBody.forward


class HATFamily(SwinIRFamily):
    """Builds HAT heads, body and tails from official HAT keyword arguments: SwinIR's head and tails, HAT's body."""

    name = "hat"
    arch_class = HATArch
    body_class = HATBody


register_family(HATFamily())

_HAT_COMMON = dict(window_size=16, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2.0, upsampler="pixelshuffle")
register_variant("hat", "hat", "HAT (C=180, 6 RHAG x 6), 20.8M at x4", embed_dim=180, depths=(6,) * 6,
                 num_heads=(6,) * 6, compress_ratio=3, squeeze_factor=30, **_HAT_COMMON)
register_variant("hat_s", "hat", "HAT-S (C=144, 6 RHAG x 6, CAB 24/24), 9.6M at x4", embed_dim=144,
                 depths=(6,) * 6, num_heads=(6,) * 6, compress_ratio=24, squeeze_factor=24, **_HAT_COMMON)
register_variant("hat_l", "hat", "HAT-L (C=180, 12 RHAG x 6), 40.8M at x4", embed_dim=180, depths=(6,) * 12,
                 num_heads=(6,) * 12, compress_ratio=3, squeeze_factor=30, **_HAT_COMMON)
