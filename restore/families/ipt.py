"""IPT-style body: a global-attention transformer encoder-decoder over 3x3-unfolded feature patches.

Paper: Chen et al., "Pre-Trained Image Processing Transformer", CVPR 2021 (IPT).
Reference code: `huawei-noah/Pretrained-IPT` (`model/ipt.py`, `model/common.py`), also carried by spandrel
(`spandrel/architectures/IPT`).

- Heads (per task): MeanShift on the 0..``rgb_range`` scale, conv 3->C, two ResBlocks with 5x5 convs.
- Body (shared): the C x 48 x 48 feature map is cut into 3x3 patches (256 tokens of 576 dims), linearly encoded,
  given a learned position embedding, passed through a pre-norm encoder and a DETR-style decoder whose queries carry
  a learned **per-task** embedding, then an MLP head, and folded back; a residual adds the head features.
- Tails (per task): EDSR upsampler (none for scale 1), conv C->3, add the mean back.

The reference selects the task embedding by list position (``set_scale(idx)``); here it lives in a
`nn.ParameterDict` keyed by task name, so `keep_tasks` / `add_task` work like heads and tails. Inputs are fixed at
``patch_size`` x ``patch_size`` (48): `RestorationModel` runs larger images through `restore.tiling.tiled_forward`.
Attention uses `F.scaled_dot_product_attention` in batch-first layout (the reference is sequence-first
`nn.MultiheadAttention`; the projection weights are the same tensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from restore.families.base import arch_error, arch_from_dict, check_int, check_number
from restore.families.swinir import DIV2K_MEAN
from restore.layers import PixelShuffleUpsample
from restore.registry import register_family, register_variant
from tasks.registry import get_task

__all__ = ["IPTArch", "IPTHead", "IPTTail", "IPTBody", "IPTFamily", "IPT_OFFICIAL_TASKS"]

# Official options accepted without effect (our heads and tails are per task, RGB is checked by `_REQUIRED_FLAGS`)
_IGNORED = frozenset({"scale", "num_queries", "conv"})
# Official options accepted only at the published value, the one implemented here.
_REQUIRED_FLAGS = {"mlp": True, "pos_every": False, "no_pos": False, "no_norm": False, "n_colors": 3}

# The pretraining tasks of the official six-head model, in head order (`--scale 2+3+4+1+1+1`).
IPT_OFFICIAL_TASKS = ("sr_x2", "sr_x3", "sr_x4", "denoise_g30", "denoise_g50", "derain")


@dataclass(frozen=True)
class IPTArch:
    """Architecture arguments of the IPT family: the official options (`option.py` / spandrel `IPT.__init__`)
    with their published defaults. ``patch_size`` is the fixed square input of the body, cut into
    ``patch_dim`` x ``patch_dim`` patches.
    """

    patch_size: int = 48
    patch_dim: int = 3
    n_feats: int = 64
    rgb_range: float = 255.0
    num_heads: int = 12
    num_layers: int = 12
    dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        for key in ("patch_size", "patch_dim", "n_feats", "num_heads", "num_layers"):
            check_int("ipt", key, getattr(self, key))
        check_number("ipt", "rgb_range", self.rgb_range, 0.0)
        check_number("ipt", "dropout_rate", self.dropout_rate, 0.0, 1.0, low_inclusive=True)
        if self.token_dim % self.num_heads:
            raise arch_error("ipt", "num_heads", self.num_heads, f"a divisor of n_feats * patch_dim**2 = "
                             f"{self.token_dim}")
        if self.patch_size % self.patch_dim:
            raise arch_error("ipt", "patch_size", self.patch_size, f"a multiple of patch_dim={self.patch_dim}")

    @property
    def token_dim(self) -> int:
        """Width of a transformer token: one flattened patch_dim x patch_dim patch of n_feats channels."""
        return self.n_feats * self.patch_dim**2

    @classmethod
    def from_dict(cls, arch: dict[str, Any]) -> "IPTArch":
        """From a ``config.json`` arch (official options such as ``scale`` accepted and ignored)."""
        return arch_from_dict(cls, "ipt", arch, _IGNORED, _REQUIRED_FLAGS)


class ResBlock(nn.Module):
    """EDSR residual block: conv, ReLU, conv, plus the input."""

    def __init__(self, n_feats: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv2d(n_feats, n_feats, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x))) + x


class IPTHead(nn.Module):
    """Scale to 0..rgb_range, subtract the mean, conv 3->C, two 5x5 ResBlocks. (B,3,48,48) -> (B,C,48,48)."""

    def __init__(self, n_feats: int, rgb_range: float) -> None:
        super().__init__()
        self.rgb_range = rgb_range
        self.register_buffer("mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1) * rgb_range, persistent=False)
        self.conv_first = nn.Conv2d(3, n_feats, 3, padding=1)
        self.blocks = nn.Sequential(ResBlock(n_feats, 5), ResBlock(n_feats, 5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        return self.blocks(self.conv_first(x * self.rgb_range - self.mean)), ()


class IPTTail(nn.Module):
    """EDSR upsampler (none for scale 1), conv C->3, add the mean back, return to [0, 1]."""

    def __init__(self, n_feats: int, scale: int, rgb_range: float) -> None:
        super().__init__()
        self.rgb_range = rgb_range
        self.register_buffer("mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1) * rgb_range, persistent=False)
        self.upsample = PixelShuffleUpsample(scale, n_feats) if scale > 1 else nn.Identity()
        self.conv_last = nn.Conv2d(n_feats, 3, 3, padding=1)

    def forward(self, feat: torch.Tensor, skips: tuple, x: torch.Tensor) -> torch.Tensor:
        return (self.conv_last(self.upsample(feat)) + self.mean) / self.rgb_range


class Attention(nn.Module):
    """Multi-head attention with separate query/key/value inputs and no projection biases (IPT's MHA)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        # one (3D, D) tensor as nn.MultiheadAttention keeps it, so official weights load unchanged
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: (B, L, D) -> (B, L, D)."""
        b, n, d = q.shape
        wq, wk, wv = self.in_proj_weight.chunk(3)
        if q is k:  # self-attention: queries and keys share their input, project both in one matmul
            q, k = F.linear(q, torch.cat([wq, wk])).chunk(2, dim=-1)
        else:
            q, k = F.linear(q, wq), F.linear(k, wk)
        v = F.linear(v, wv)
        heads = lambda t: t.view(b, -1, self.num_heads, d // self.num_heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v),
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention and feed-forward."""

    def __init__(self, dim: int, num_heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, hidden, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.dropout(self.self_attn(y, y, y))
        return x + self.ffn(self.norm2(x))


class DecoderLayer(nn.Module):
    """Pre-norm self-attention and cross-attention to the encoder output, both with the task query embedding."""

    def __init__(self, dim: int, num_heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads, dropout)
        self.multihead_attn = Attention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, hidden, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        qk = y + query
        x = x + self.dropout(self.self_attn(qk, qk, y))
        x = x + self.dropout(self.multihead_attn(self.norm2(x) + query, memory, memory))
        return x + self.ffn(self.norm3(x))


class IPTBody(nn.Module):
    """The shared IPT transformer with one learned query embedding per task (``query_embed[task]``)."""

    task_conditioned = True  # RestorationModel.forward_multi must not mix tasks in one body pass

    def __init__(self, a: IPTArch, tasks: list[str]) -> None:
        super().__init__()
        p = a.patch_dim
        self.patch_dim, self.image_size = p, a.patch_size
        self.seq_len = (a.patch_size // p) ** 2
        dim, hidden, drop = a.token_dim, a.token_dim * 4, a.dropout_rate
        self.dim = dim
        self.linear_encoding = nn.Linear(dim, dim)
        self.pos_embed = nn.Parameter(torch.randn(self.seq_len, dim))  # nn.Embedding's N(0, 1) init
        self.query_embed = nn.ParameterDict({t: self._new_query() for t in tasks})
        self.encoder = nn.ModuleList(EncoderLayer(dim, a.num_heads, hidden, drop) for _ in range(a.num_layers))
        self.decoder = nn.ModuleList(DecoderLayer(dim, a.num_heads, hidden, drop) for _ in range(a.num_layers))
        self.mlp_head = nn.Sequential(nn.Linear(dim, hidden), nn.Dropout(drop), nn.ReLU(), nn.Linear(hidden, dim),
                                      nn.Dropout(drop))
        self.dropout = nn.Dropout(drop)

    def _new_query(self) -> nn.Parameter:
        return nn.Parameter(torch.randn(self.seq_len, self.dim))

    def keep_tasks(self, tasks: list[str]) -> None:
        """Drop the query embeddings of all tasks but ``tasks``."""
        for t in list(self.query_embed):
            if t not in tasks:
                del self.query_embed[t]

    def add_task(self, task: str) -> None:
        """Give ``task`` a fresh query embedding (the reference initialisation, N(0, 1))."""
        if task in self.query_embed:
            raise ValueError(f"task {task!r} already has a query embedding")
        ref = self.pos_embed
        self.query_embed[task] = nn.Parameter(torch.randn(self.seq_len, self.dim, device=ref.device, dtype=ref.dtype))

    def forward(self, feat: torch.Tensor, task: str) -> torch.Tensor:
        """feat: (B, C, 48, 48) -> (B, C, 48, 48)."""
        b, c, h, w = feat.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"IPT body takes {self.image_size}x{self.image_size} features, got {h}x{w}; "
                             "run larger images through restore.tiling.tiled_forward (RestorationModel does)")
        if task not in self.query_embed:
            raise ValueError(f"IPT body has no query embedding for task {task!r}; it has {list(self.query_embed)}")
        p = self.patch_dim
        # 3x3 patches as tokens, channel-major inside a token as F.unfold orders them: (B, L, C*p*p)
        x = feat.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        x = self.dropout(self.linear_encoding(x)) + x
        query = self.query_embed[task]  # (L, D), broadcast over the batch
        x = x + self.pos_embed
        for layer in self.encoder:
            x = layer(x)
        y = x
        for layer in self.decoder:
            y = layer(y, x, query)
        y = self.mlp_head(y) + y
        y = y.view(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
        return y + feat


class IPTFamily:
    """Builds IPT heads, body and tails from official IPT keyword arguments (the arch dict, as `IPTArch`)."""

    name = "ipt"

    def build_body(self, arch: dict[str, Any], tasks: list[str]) -> nn.Module:
        return IPTBody(IPTArch.from_dict(arch), tasks)

    def build_head(self, arch: dict[str, Any], task: str) -> nn.Module:
        a = IPTArch.from_dict(arch)
        return IPTHead(a.n_feats, a.rgb_range)

    def build_tail(self, arch: dict[str, Any], task: str) -> nn.Module:
        a = IPTArch.from_dict(arch)
        return IPTTail(a.n_feats, get_task(task).scale, a.rgb_range)

    def pad_multiple(self, arch: dict[str, Any], task: str) -> int:
        # every body call must see exactly patch_size x patch_size: a short edge tile is padded up to it
        return IPTArch.from_dict(arch).patch_size

    def fixed_input_size(self, arch: dict[str, Any]) -> int | None:
        return IPTArch.from_dict(arch).patch_size


register_family(IPTFamily())
register_variant("ipt", "ipt", "IPT (C=64, 12+12 layers, 12 heads, 48x48 input), ~115.6M for one task")
