"""SwinIR-style body: residual Swin transformer blocks (RSTB) with window self-attention.

Paper: Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCVW 2021.
Reference code: `JingyunLiang/SwinIR` (`models/network_swinir.py`), also carried by spandrel
(`spandrel/architectures/SwinIR`). Module and argument names follow the official code so that official checkpoints
map onto ours with a short rename table (`restore.convert`).

Differences from the reference that do not change the numbers:
- activations stay channels-last (B, H, W, C) inside the body instead of token sequences (B, H*W, C);
- attention (`biased_attention`) is an explicit matmul-softmax-matmul with in-place bias and mask adds on CPU,
  and `restore.layers.window_sdpa` (4-D, head dim padded to a multiple of 8, so that a fused kernel takes it) on
  CUDA (`restore.layers.fused_attention` forces either path anywhere). On CPU, SDPA with a float mask runs its
  generic "math" path (plus a masked-row check, `_safe_softmax`), measured ~1.3x slower forward and backward than
  the explicit path for Swin's small windows (`tests/benchmarks/bench_inference.py`);
- the relative position index is a non-persistent buffer computed once per window size, and the shift mask is
  cached per input size instead of being rebuilt (or stored in the checkpoint) for one training resolution.

The window helpers, `WindowAttention` and `SwinBlock` here are reused by the HAT family (`restore.families.hat`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn

from tasks.registry import get_task
from restore.families.base import arch_error, arch_from_dict, check_int, check_ints, check_number
from restore.families.windows import (ShiftMaskCache, relative_position_index, shift_window_mask, window_partition,
                                     window_reverse)
from restore.layers import PixelShuffleUpsample, init_transformer_weights, use_fused_attention, window_sdpa
from restore.registry import register_family, register_variant

__all__ = [
    "DIV2K_MEAN",
    "SwinIRArch",
    "window_partition",
    "window_reverse",
    "relative_position_index",
    "shift_window_mask",
    "biased_attention",
    "to_conv_layout",
    "ShiftMaskCache",
    "WindowAttention",
    "SwinBlock",
    "PixelShuffleUpsample",
    "SwinIRFamily",
]

# RGB mean of DIV2K, subtracted by the SwinIR, HAT and IPT reference code (`rgb_mean` in each repository).
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)

# Official keys accepted for compatibility but without effect here (our bodies take any input size, RGB only).
_IGNORED = frozenset({"img_size", "patch_size", "upscale", "use_checkpoint", "norm_layer"})
# Official keys accepted only at the one value implemented here.
_UNSUPPORTED = {"ape": False, "start_unshuffle": 1, "in_chans": 3}


@dataclass(frozen=True)
class SwinIRArch:
    """Architecture arguments of the SwinIR family: the official ``SwinIR.__init__`` keywords and defaults.

    The classical SR configuration of the paper is the variant ``swinir_m``. ``num_heads`` may be one int for
    every group; ``depths``/``num_heads`` come back from JSON as lists and are kept as tuples. ``upsampler`` ``""``
    is the official setting of scale-1 (denoising) models, whose tail has no upsampler.
    """

    family: ClassVar[str] = "swinir"
    upsamplers: ClassVar[tuple[str, ...]] = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")
    resi_connections: ClassVar[tuple[str, ...]] = ("1conv", "3conv")

    embed_dim: int = 96
    depths: tuple[int, ...] = (6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    patch_norm: bool = True
    img_range: float = 1.0
    upsampler: str = "pixelshuffle"
    resi_connection: str = "1conv"
    num_feat: int = 64

    def __post_init__(self) -> None:
        # every value is checked before a module is built, so `window_size: 0` or heads that do not divide
        # embed_dim fail naming the key instead of deep inside a layer
        f = self.family
        depths = check_ints(f, "depths", self.depths)
        heads = self.num_heads
        heads = (check_int(f, "num_heads", heads),) * len(depths) if isinstance(heads, int) else (
            check_ints(f, "num_heads", heads, length=len(depths)))
        object.__setattr__(self, "depths", depths)
        object.__setattr__(self, "num_heads", heads)
        dim = check_int(f, "embed_dim", self.embed_dim)
        if any(dim % h for h in heads):
            raise arch_error(f, "num_heads", list(heads), f"head counts that divide embed_dim={dim}")
        check_int(f, "window_size", self.window_size)
        check_int(f, "num_feat", self.num_feat)
        for key in ("mlp_ratio", "img_range"):
            check_number(f, key, getattr(self, key), 0.0)
        for key in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            check_number(f, key, getattr(self, key), 0.0, 1.0, low_inclusive=True)
        if self.qk_scale is not None:
            check_number(f, "qk_scale", self.qk_scale, 0.0)
        for key in ("qkv_bias", "patch_norm"):
            if not isinstance(getattr(self, key), bool):
                raise arch_error(f, key, getattr(self, key), "true or false")
        for key, choices in (("upsampler", self.upsamplers), ("resi_connection", self.resi_connections)):
            if getattr(self, key) not in choices:
                raise arch_error(f, key, getattr(self, key), "one of " + ", ".join(map(repr, choices)))
        if self.resi_connection == "3conv" and dim < 4:
            raise arch_error(f, "embed_dim", dim, "an integer >= 4 with resi_connection='3conv' (its bottleneck "
                             "has embed_dim // 4 channels)")

    @classmethod
    def from_dict(cls, arch: dict[str, Any]) -> "SwinIRArch":
        """From a ``config.json`` arch (official keys such as ``img_size`` accepted and ignored)."""
        return arch_from_dict(cls, cls.family, arch, _IGNORED, _UNSUPPORTED)


# ----------------------------------------------------------------------------------------------------- modules


def to_conv_layout(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) channels-last activations -> (B, C, H, W) for a convolution.

    On CUDA the permuted view is kept (channels-last strides suit cuDNN's tensor-core convolutions). On CPU it is
    copied to plain NCHW: oneDNN's 3x3 convolutions ran ~1.6x slower forward + backward on channels-last strides
    than on NCHW (64->256 channels at 128x128, one thread), far more than the copy costs; it made HAT's training
    step slower than the official code's (`tests/benchmarks/bench_training.py`), which makes the same copy
    (``PatchUnEmbed``'s ``.contiguous()``).
    """
    x = x.permute(0, 3, 1, 2)
    return x if x.is_cuda else x.contiguous()


def biased_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    shift_mask: torch.Tensor | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(scale * q k^T + bias [+ shift_mask]) v over windows.

    q: (B, nW, nH, Nq, d); k, v: (B, nW, nH, Nk, d); bias: (nH, Nq, Nk); shift_mask: (nW, Nq, Nk) or None.
    Returns (B, nW, nH, Nq, d).

    On CUDA this is one `window_sdpa` call (the memory-efficient kernel takes a float mask and returns the bias
    gradient; 5-D inputs or a head dim of 30 would send it to the math kernel). On CPU SDPA falls back to its
    generic math path for a float mask, plus a scan for
    fully masked rows; the explicit form below is faster there, and it adds the bias and the mask in place into the
    logits (no (nW, nH, N, N) temporary), in the reference's order (scale q, q k^T, + bias, + mask); at inference
    the softmax also overwrites the logits.
    """
    if use_fused_attention(q):
        mask = bias if shift_mask is None else bias + shift_mask.unsqueeze(1)  # (nH | nW, nH, Nq, Nk)
        return window_sdpa(q, k, v, mask, scale, dropout_p)
    attn = (q * scale) @ k.transpose(-2, -1)  # (B, nW, nH, Nq, Nk); matmul's backward does not need its output
    attn.add_(bias)
    if shift_mask is not None:
        attn.add_(shift_mask.unsqueeze(1))
    if torch.is_grad_enabled() and attn.requires_grad:
        attn = attn.softmax(-1)  # softmax's backward needs its output: no in-place here
    else:
        attn = torch.softmax(attn, -1, out=attn)  # inference: reuse the logits' memory
    if dropout_p:
        attn = F.dropout(attn, dropout_p)
    return attn @ v


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias (Swin / SwinIR)."""

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # derived from the window size only: not saved (official SwinIR checkpoints carry it; the converter drops it)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """(nH, N, N) bias added to the attention logits."""
        n = self.window_size**2
        return self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, nW, N, C) windows; shift_mask: (nW, N, N) or None. Returns (B, nW, N, C)."""
        b, nw, n, c = x.shape
        qkv = self.qkv(x).view(b, nw, n, 3, self.num_heads, c // self.num_heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # (B, nW, nH, N, d)
        out = biased_attention(q, k, v, self.position_bias(), shift_mask, self.scale,
                               self.attn_drop if self.training else 0.0)
        out = out.transpose(2, 3).reshape(b, nw, n, c)
        return self.proj_drop(self.proj(out))


class SwinBlock(nn.Module):
    """Swin transformer layer: (shifted) window attention and an MLP, each pre-norm with a residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H, W, C); ``shift_mask`` is used only by shifted blocks."""
        _, h, w, _ = x.shape
        ws, s = self.window_size, self.shift_size
        y = self.norm1(x)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, ws), shift_mask if s else None), ws, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def residual_conv(dim: int, kind: str) -> nn.Module:
    """The conv closing each residual group: one 3x3 conv ('1conv') or SwinIR's bottleneck of three ('3conv').

    ``kind`` was checked by `SwinIRArch`.
    """
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    return nn.Sequential(
        nn.Conv2d(dim, dim // 4, 3, 1, 1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(dim // 4, dim // 4, 1, 1, 0),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(dim // 4, dim, 3, 1, 1),
    )


class RSTB(nn.Module):
    """Residual Swin transformer block: ``depth`` Swin layers (alternately shifted), a conv, and a residual."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, drop_path: list[float],
                 resi_connection: str, **block_kw: Any) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, drop_path=drop_path[i],
                      **block_kw)
            for i in range(depth)
        )
        self.conv = residual_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        y = x
        for blk in self.blocks:
            y = blk(y, shift_mask)
        return x + self.conv(to_conv_layout(y)).permute(0, 2, 3, 1)  # x first: the sum stays (B, H, W, C)


class SwinIRBody(nn.Module):
    """Shared SwinIR body: (patch norm) -> RSTBs -> LayerNorm -> conv_after_body, plus the long feature skip."""

    def __init__(self, a: SwinIRArch) -> None:
        super().__init__()
        dim, ws = a.embed_dim, a.window_size
        self.window_size = ws
        self.patch_norm = nn.LayerNorm(dim) if a.patch_norm else nn.Identity()
        self.pos_drop = nn.Dropout(a.drop_rate)
        dpr = torch.linspace(0, a.drop_path_rate, sum(a.depths), device="cpu").tolist()  # stochastic depth decay
        starts = [sum(a.depths[:i]) for i in range(len(a.depths))]
        self.layers = nn.ModuleList(
            RSTB(dim, d, h, ws, dpr[s : s + d], a.resi_connection, mlp_ratio=a.mlp_ratio,
                 qkv_bias=a.qkv_bias, qk_scale=a.qk_scale, drop=a.drop_rate, attn_drop=a.attn_drop_rate)
            for d, h, s in zip(a.depths, a.num_heads, starts)
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = residual_conv(dim, a.resi_connection)
        self.shift_masks = ShiftMaskCache(ws, ws // 2)
        self.apply(init_transformer_weights)

    def forward(self, feat: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """feat: (B, C, H, W) with H, W multiples of the window size -> (B, C, H, W)."""
        _, _, h, w = feat.shape
        mask = self.shift_masks(h, w, feat.device)
        x = self.pos_drop(self.patch_norm(feat.permute(0, 2, 3, 1)))  # (B, H, W, C)
        for layer in self.layers:
            x = layer(x, mask)
        x = to_conv_layout(self.norm(x))
        return self.conv_after_body(x) + feat


class MeanShiftHead(nn.Module):
    """Normalise the image ((x - mean) * img_range) and embed it with one 3x3 conv (SwinIR/HAT `conv_first`)."""

    def __init__(self, dim: int, img_range: float) -> None:
        super().__init__()
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        return self.conv_first((x - self.mean) * self.img_range), ()



class _Denormalise(nn.Module):
    """Base of the tails: maps the normalised output back to [0, 1] (``y / img_range + mean``)."""

    def __init__(self, img_range: float) -> None:
        super().__init__()
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)

    def denormalise(self, y: torch.Tensor) -> torch.Tensor:
        return y / self.img_range + self.mean


class PixelShuffleTail(_Denormalise):
    """Classical SR: conv to ``num_feat`` + LeakyReLU, pixelshuffle upsampler, conv to RGB."""

    def __init__(self, dim: int, num_feat: int, scale: int, img_range: float) -> None:
        super().__init__(img_range)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = PixelShuffleUpsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def forward(self, feat: torch.Tensor, skips: tuple, x: torch.Tensor) -> torch.Tensor:
        return self.denormalise(self.conv_last(self.upsample(self.conv_before_upsample(feat))))


class PixelShuffleDirectTail(_Denormalise):
    """Lightweight SR: one conv to scale²·3 channels and a PixelShuffle (SwinIR `UpsampleOneStep`)."""

    def __init__(self, dim: int, scale: int, img_range: float) -> None:
        super().__init__(img_range)
        self.upsample = nn.Sequential(nn.Conv2d(dim, scale * scale * 3, 3, 1, 1), nn.PixelShuffle(scale))

    def forward(self, feat: torch.Tensor, skips: tuple, x: torch.Tensor) -> torch.Tensor:
        return self.denormalise(self.upsample(feat))


class NearestConvTail(_Denormalise):
    """Real-world SR: nearest-neighbour x2 steps each followed by a conv (SwinIR 'nearest+conv'; x4 and x8)."""

    def __init__(self, dim: int, num_feat: int, scale: int, img_range: float) -> None:
        super().__init__(img_range)
        if scale not in (2, 4, 8):
            raise ValueError(f"nearest+conv upsampling supports scales 2, 4 and 8, got {scale}")
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.conv_up = nn.ModuleList(nn.Conv2d(num_feat, num_feat, 3, 1, 1) for _ in range(int(math.log2(scale))))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def forward(self, feat: torch.Tensor, skips: tuple, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_before_upsample(feat)
        for conv in self.conv_up:
            y = F.leaky_relu(conv(F.interpolate(y, scale_factor=2, mode="nearest")), 0.2)
        return self.denormalise(self.conv_last(F.leaky_relu(self.conv_hr(y), 0.2)))


class ImageResidualTail(_Denormalise):
    """Denoising/deraining: conv to RGB added to the (normalised) input image (SwinIR with ``upscale=1``)."""

    def __init__(self, dim: int, img_range: float) -> None:
        super().__init__(img_range)
        self.conv_last = nn.Conv2d(dim, 3, 3, 1, 1)

    def forward(self, feat: torch.Tensor, skips: tuple, x: torch.Tensor) -> torch.Tensor:
        return self.denormalise((x - self.mean) * self.img_range + self.conv_last(feat))


def build_window_tail(a: SwinIRArch, task: str) -> nn.Module:
    """Tail for ``task`` shared by SwinIR and HAT: the arch's SR upsampler, or the image residual for scale 1."""
    t = get_task(task)
    dim, img_range = a.embed_dim, a.img_range
    if t.scale == 1:
        return ImageResidualTail(dim, img_range)
    if a.upsampler == "pixelshuffle":
        return PixelShuffleTail(dim, a.num_feat, t.scale, img_range)
    if a.upsampler == "pixelshuffledirect":
        return PixelShuffleDirectTail(dim, t.scale, img_range)
    if a.upsampler == "nearest+conv":
        return NearestConvTail(dim, a.num_feat, t.scale, img_range)
    raise ValueError(f"{a.family} arch upsampler='' (the official setting of scale-1 models) has no SR tail for "
                     f"task {task!r}; set upsampler to 'pixelshuffle', 'pixelshuffledirect' or 'nearest+conv'")


# ------------------------------------------------------------------------------------------------------ family


class SwinIRFamily:
    """Builds SwinIR heads, body and tails from official SwinIR keyword arguments (HAT reuses all but the body).

    The arch dict of `RestorationModel` (its ``config.json``) is turned into the family's arch dataclass once per
    build call; the modules only ever see the dataclass.
    """

    name = "swinir"
    arch_class: type[SwinIRArch] = SwinIRArch
    body_class: type[nn.Module] = SwinIRBody

    def config(self, arch: dict[str, Any]) -> SwinIRArch:
        """The validated arch dataclass of an arch dict."""
        return self.arch_class.from_dict(arch)

    def build_body(self, arch: dict[str, Any], tasks: list[str]) -> nn.Module:
        return self.body_class(self.config(arch))

    def build_head(self, arch: dict[str, Any], task: str) -> nn.Module:
        a = self.config(arch)
        return MeanShiftHead(a.embed_dim, a.img_range)

    def build_tail(self, arch: dict[str, Any], task: str) -> nn.Module:
        return build_window_tail(self.config(arch), task)

    def pad_multiple(self, arch: dict[str, Any], task: str) -> int:
        return self.config(arch).window_size

    def fixed_input_size(self, arch: dict[str, Any]) -> int | None:
        return None


register_family(SwinIRFamily())

register_variant("swinir", "swinir", "SwinIR with the official constructor defaults; for converters", **{})
register_variant(
    "swinir_s", "swinir", "lightweight SwinIR (C=60, 4 RSTB x 6, pixelshuffledirect), ~0.9M at x2",
    embed_dim=60, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6), window_size=8, mlp_ratio=2.0,
    upsampler="pixelshuffledirect",
)
register_variant(
    "swinir_m", "swinir", "classical SwinIR-M (C=180, 6 RSTB x 6, pixelshuffle), 11.9M at x4",
    embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=8, mlp_ratio=2.0, upsampler="pixelshuffle",
)
register_variant(
    "swinir_l", "swinir", "real-world SwinIR-L (C=240, 9 RSTB x 6, 8 heads, 3conv, nearest+conv), ~28M at x4",
    embed_dim=240, depths=(6,) * 9, num_heads=(8,) * 9, window_size=8, mlp_ratio=2.0, upsampler="nearest+conv",
    resi_connection="3conv",
)
