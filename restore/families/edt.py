"""EDT: the Efficient Desnoising/SR Transformer body with its per-task heads and tails.

Paper: Li et al., "On Efficient Transformer-Based Image Pre-training for Low-Level Vision" (EDT), IJCAI 2023.
Reference code: ``fenglinglwb/EDT``, ``utils/modules/edt.py`` (read for this port; the structure and numerics
follow it, the code is ours).

Structure, for one task (see `restore.families.base`):

* head: conv3x3 (3 -> nf), ``head_depth`` ``ResBlockDown`` (nf -> 2nf -> 4nf), conv3x3 (-> embed_dim). SR heads keep
  the resolution; denoise/derain heads halve it in every block (4x4 stride-2 conv), so the body runs at 1/4
  resolution. The pre-downsampling features are the tail's skips.
* body: LayerNorm, residual groups of blocks with *shifted crossed local attention* (half the channels attend in
  horizontal 6x24 windows, the other half in vertical 24x6 windows; odd blocks shift by half a window), LePE
  positions (a depthwise 3x3 conv on V inside each window), an MLP with a 5x5 depthwise conv; LayerNorm, conv3x3
  and a long residual.
* SR tail: ``ResBlockSkip`` x head_depth (conv + concat of head skip), a pixel-shuffle upsampler, conv to RGB, plus
  the bilinearly upsampled input as a global residual. Denoise/derain tail: ``UpResBlock`` x head_depth
  (2x2 transposed conv + concat skip), conv to RGB, plus the input image.

Inputs are mean-shifted by the DIV2K RGB mean and scaled by ``img_range``, as in the official ``Network``.

State-dict correspondence with an official EDT checkpoint (``Network.state_dict()``), one to one:

=============================================  ==============================================================
ours                                           official
=============================================  ==============================================================
``heads.sr_x{s}.blocks.{j}.*``                 ``head_sr_x{s}.{j}.*``
``heads.denoise_g{n}.blocks.{j}.*``            ``head_dn_g{n}.{j}.*``
``heads.derain*.blocks.{j}.*``                 ``head_dr_{level}.{j}.*``
``tails.<task>.blocks.{j}.*``                  ``tail_<official task>.{j}.*`` (same sub-keys, e.g. ``2.0.weight``
                                               for the first upsampler conv of an SR tail)
``body.norm_in.*``                             ``body.patch_embed.norm.*``
``body.groups.{i}.blocks.{k}.<rest>``          ``body.layers.{i}.residual_group.blocks.{k}.<rest>``
``body.norm.*``, ``body.conv_after_body.*``    same names
=============================================  ==============================================================

Inside a block, ``<rest>`` is identical: ``norm1``, ``qkv``, ``attns.0.lepe`` (horizontal windows),
``attns.1.lepe`` (vertical), ``proj``, ``norm2``, ``mlp.fc1``, ``mlp.dwconv``, ``mlp.fc2``. Official checkpoints
also hold the shifted blocks' ``attn_mask_h``/``attn_mask_v`` buffers for their training size; those are derived
data (we compute masks per input size) and are dropped on conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from restore.families.base import arch_error, check_int, check_ints, check_number
from restore.families.windows import shift_window_mask, traced_shift_window_mask
from restore.layers import PixelShuffleUpsample, init_transformer_weights, use_fused_attention, window_sdpa
from restore.registry import register_family, register_variant
from tasks.registry import TaskKind, get_task

__all__ = ["EDTArch", "EDTBody", "EDTFamily", "CrossedWindowAttention", "EDTBlock"]

_DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


# --------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class EDTArch:
    """Architecture arguments of the EDT family (the ``arch`` of a `RestorationModel`).

    Attributes mirror the official config: ``num_feat`` = MODEL.NUM_FEAT, ``embed_dim`` = MODEL.EMBED_DIM,
    ``depths``/``num_heads`` = MODEL.DEPTHS/NUM_HEADS (one entry per residual group; ``num_heads`` heads in *each*
    half of the crossed attention), ``window_size`` = (short, long) side of the horizontal window,
    ``head_depth`` = MODEL.DEPTH (number of ResBlockDown in a head, hence the 2**head_depth downsampling of
    denoise/derain heads), ``upsampler`` = "pixelshuffle" or "pixelshuffledirect" (EDT-T).
    """

    num_feat: int = 32
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: tuple[int, int] = (6, 24)
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    head_depth: int = 2
    upsampler: str = "pixelshuffle"
    img_range: float = 1.0
    rgb_mean: tuple[float, float, float] = _DIV2K_RGB_MEAN
    in_chans: int = 3
    drop_path_rate: float = 0.1

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists; normalise so equality and hashing work. Every value is checked
        # here, before a module is built (a config.json with window_size [0, 0] must not load and fail later).
        depths = check_ints("edt", "depths", self.depths)
        heads = self.num_heads
        heads = (check_int("edt", "num_heads", heads),) * len(depths) if isinstance(heads, int) else (
            check_ints("edt", "num_heads", heads))
        object.__setattr__(self, "depths", depths)
        object.__setattr__(self, "num_heads", heads)
        object.__setattr__(self, "window_size", check_ints("edt", "window_size", self.window_size, length=2))
        if not isinstance(self.rgb_mean, (list, tuple)) or len(self.rgb_mean) != 3:
            raise arch_error("edt", "rgb_mean", self.rgb_mean, "3 numbers in [0, 1] (the RGB mean)")
        object.__setattr__(self, "rgb_mean", tuple(check_number("edt", "rgb_mean", m, 0.0, 1.0, True, True)
                                                   for m in self.rgb_mean))
        for key in ("num_feat", "embed_dim", "in_chans"):
            check_int("edt", key, getattr(self, key))
        check_int("edt", "head_depth", self.head_depth, minimum=0)
        check_number("edt", "mlp_ratio", self.mlp_ratio, 0.0)
        check_number("edt", "img_range", self.img_range, 0.0)
        check_number("edt", "drop_path_rate", self.drop_path_rate, 0.0, 1.0, low_inclusive=True)
        if not isinstance(self.qkv_bias, bool):
            raise arch_error("edt", "qkv_bias", self.qkv_bias, "true or false")
        if len(heads) != len(depths):
            raise ValueError(f"num_heads {heads} must have one entry per residual group (depths {depths})")
        if self.embed_dim % 2 or any((self.embed_dim // 2) % h for h in heads):
            raise arch_error("edt", "num_heads", list(heads), f"an even embed_dim (got {self.embed_dim}) with "
                             "embed_dim/2 divisible by every head count (each attention half has embed_dim/2 channels)")
        if len(self.window_size) != 2:
            raise ValueError(f"window_size must be (short, long), got {self.window_size}")
        if self.upsampler not in ("pixelshuffle", "pixelshuffledirect"):
            raise ValueError(f"upsampler must be 'pixelshuffle' or 'pixelshuffledirect', got {self.upsampler!r}")

    @classmethod
    def from_dict(cls, arch: dict[str, Any]) -> "EDTArch":
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(arch) - valid)
        if unknown:
            raise ValueError(f"unknown EDT arch argument(s) {unknown}; valid: {', '.join(sorted(valid))}")
        return cls(**arch)


# --------------------------------------------------------------------------------------- conv blocks


class ResBlockDown(nn.Module):
    """Two 3x3 convs with LeakyReLU and a 1x1 shortcut; optionally a 4x4 stride-2 downsampling conv after it."""

    def __init__(self, in_chl: int, out_chl: int, down: bool = False) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(in_chl, in_chl, 3, 1, 1)
        self.conv_2 = nn.Conv2d(in_chl, out_chl, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_chl, out_chl, 1, 1, 0)
        self.act = nn.LeakyReLU(0.2)
        self.conv_down = nn.Conv2d(out_chl, out_chl, 4, 2, 1, bias=False) if down else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(out, skip)``: ``skip`` is the full-resolution output, ``out`` its downsampled version (or
        the same tensor when the block does not downsample)."""
        y = self.act(self.conv_2(self.act(self.conv_1(x)))) + self.shortcut(x)
        return (self.conv_down(y) if self.conv_down is not None else y), y


class ResBlockUp(nn.Module):
    """Two 3x3 convs (in -> out -> out) with LeakyReLU and a 1x1 shortcut."""

    def __init__(self, in_chl: int, out_chl: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(in_chl, out_chl, 3, 1, 1)
        self.conv_2 = nn.Conv2d(out_chl, out_chl, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_chl, out_chl, 1, 1, 0)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_2(self.act(self.conv_1(x)))) + self.shortcut(x)


class ResBlockSkip(nn.Module):
    """SR tail block: conv3x3, concat the head skip, `ResBlockUp` (no resolution change)."""

    def __init__(self, in_chl: int, out_chl: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chl, out_chl, 3, 1, 1)
        self.block = ResBlockUp(out_chl * 2, out_chl)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.conv(x), skip], dim=1))


class UpResBlock(nn.Module):
    """Denoise/derain tail block: 2x2 stride-2 transposed conv, concat the head skip, `ResBlockUp`."""

    def __init__(self, in_chl: int, out_chl: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_chl, out_chl, kernel_size=2, stride=2)
        self.block = ResBlockUp(out_chl * 2, out_chl)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))



# ------------------------------------------------------------------------------------ transformer body


class EDTMlp(nn.Module):
    """fc1 -> GELU -> 5x5 depthwise conv -> GELU -> fc2, on channels-last tokens (B, H, W, C).

    timm's ``Mlp`` has no spatial conv between its linears, so this one is written out (EDT's ``Mlp``).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 5, 1, 2, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))  # (B, H, W, hidden)
        x = self.act(self.dwconv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        return self.fc2(x)


class CrossedWindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping ``window`` (h, w) windows, with LePE.

    Operates on one half of the channels; the q/k/v projection lives in the enclosing `EDTBlock`. LePE
    (locally-enhanced positional encoding, from CSWin) adds a depthwise 3x3 conv of V, computed inside each
    window, to the attention output.
    """

    def __init__(self, dim: int, window: tuple[int, int], num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.window = window
        self.num_heads = num_heads
        self.lepe = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, qkv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Args: qkv (3, B, H, W, C) with H, W multiples of the window; mask (nW, N, N) additive or None.

        Returns (B, H, W, C).
        """
        _, b, h, w, c = qkv.shape
        wh, ww = self.window
        n, nh = wh * ww, self.num_heads
        # window partition, windows ordered row-major over the (H/wh, W/ww) grid like the official code
        t = qkv.reshape(3, b, h // wh, wh, w // ww, ww, c).permute(0, 1, 2, 4, 3, 5, 6).reshape(3, -1, n, c)
        q, k, v = t.unbind(0)  # (B*nW, N, C)
        lepe = self.lepe(v.transpose(1, 2).reshape(-1, c, wh, ww)).flatten(2).transpose(1, 2)  # (B*nW, N, C)
        hd = c // nh
        # (B, nW, nh, N, hd): windows are ordered batch-major
        q, k, v = (z.reshape(b, -1, n, nh, hd).transpose(2, 3) for z in (q, k, v))
        # the mask (nW, N, N) is shared by the heads and broadcast over the batch (no per-image copy); on CUDA the
        # head dim (15 in EDT-B) is padded to 16 so that a fused kernel takes it, on CPU the unpadded 4-D call
        # already meets the CPU kernel
        out = window_sdpa(q, k, v, None if mask is None else mask.unsqueeze(1), hd**-0.5,
                          head_multiple=8 if use_fused_attention(q) else 0)  # (B, nW, nh, N, hd)
        out = out.transpose(2, 3).reshape(-1, n, c) + lepe
        # window reverse
        return out.reshape(b, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def shifted_window_mask(height: int, width: int, window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """Additive attention mask (nW, N, N) for cyclically shifted (rows, cols) windows: 0 within a region, -100
    across (as the official Swin/EDT code, so converted checkpoints give the same numbers); Swin's mask
    (`restore.families.windows.shift_window_mask`) at a rectangular window."""
    return shift_window_mask(height, width, window, shift)


class EDTBlock(nn.Module):
    """One transformer block: crossed (horizontal + vertical) window attention and a conv MLP, pre-norm."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int],
        shifted: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
    ) -> None:
        super().__init__()
        short, long = window_size
        # half 0: horizontal windows (short x long), half 1: vertical windows (long x short)
        self.windows = ((short, long), (long, short))
        self.shifts = ((short // 2, long // 2), (long // 2, short // 2)) if shifted else None
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attns = nn.ModuleList(CrossedWindowAttention(dim // 2, win, num_heads) for win in self.windows)
        self.proj = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = EDTMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """x: (B, H, W, C); masks: the (horizontal, vertical) shifted-window masks, used by shifted blocks."""
        b, h, w, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, h, w, 3, c).permute(3, 0, 1, 2, 4)  # (3, B, H, W, C)
        halves = (qkv[..., : c // 2], qkv[..., c // 2 :])
        outs = []
        for i, (attn, part) in enumerate(zip(self.attns, halves)):
            if self.shifts is None:
                outs.append(attn(part, None))
            else:
                sh, sw = self.shifts[i]
                part = torch.roll(part, shifts=(-sh, -sw), dims=(2, 3))
                y = attn(part, masks[i])
                outs.append(torch.roll(y, shifts=(sh, sw), dims=(1, 2)))
        x = x + self.drop_path(self.proj(torch.cat(outs, dim=-1)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class EDTGroup(nn.Module):
    """A residual group: blocks alternating unshifted/shifted windows, plus a residual (no inner conv)."""

    def __init__(self, blocks: list[EDTBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        y = x
        for blk in self.blocks:
            y = blk(y, masks)
        return y + x


class EDTBody(nn.Module):
    """The shared EDT body: LayerNorm, residual groups, LayerNorm, conv3x3, long residual.

    Works on any feature size that is a multiple of the long window side; the shifted-window masks are built
    once per (H, W, device, dtype) and cached (they are derived data, not part of the state dict).
    """

    def __init__(self, arch: EDTArch) -> None:
        super().__init__()
        dim = arch.embed_dim
        self.window_size = arch.window_size
        self.norm_in = nn.LayerNorm(dim)
        total = sum(arch.depths)
        # stochastic depth rises linearly over all blocks (plain floats: also builds on the meta device)
        rates = [arch.drop_path_rate * k / max(total - 1, 1) for k in range(total)]
        groups, start = [], 0
        for depth, heads in zip(arch.depths, arch.num_heads):
            blocks = [
                EDTBlock(dim, heads, arch.window_size, k % 2 == 1, arch.mlp_ratio, arch.qkv_bias, rates[start + k])
                for k in range(depth)
            ]
            groups.append(EDTGroup(blocks))
            start += depth
        self.groups = nn.ModuleList(groups)
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, 1, 1)
        self._masks: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.apply(init_transformer_weights)

    def masks(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """The (horizontal, vertical) shifted-window masks for a feature map of this size (cached; built in the graph
        while traced, export or ``torch.compile``, where the size is symbolic)."""
        if torch.compiler.is_compiling():
            return self._build_masks(traced_shift_window_mask, height, width, device, dtype)
        key = (height, width, device, dtype)
        if key not in self._masks:
            with torch.inference_mode(False):  # a mask first built for inference also serves training
                self._masks[key] = self._build_masks(shifted_window_mask, height, width, device, dtype)
            if len(self._masks) > 16:  # a long-running server sees many sizes; keep the cache bounded
                self._masks.pop(next(iter(self._masks)))
        return self._masks[key]

    def _build_masks(self, build: Callable[..., torch.Tensor], height: int, width: int, device: torch.device,
                     dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        short, long = self.window_size
        return tuple(build(height, width, win, (win[0] // 2, win[1] // 2)).to(device=device, dtype=dtype)
                     for win in ((short, long), (long, short)))

    def forward(self, feat: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """feat: (B, C, H, W) with H, W multiples of lcm(window); returns (B, C, H, W). ``task`` is unused."""
        b, c, h, w = feat.shape
        masks = self.masks(h, w, feat.device, feat.dtype)
        x = self.norm_in(feat.permute(0, 2, 3, 1))  # (B, H, W, C)
        for group in self.groups:
            x = group(x, masks)
        x = self.norm(x).permute(0, 3, 1, 2)  # (B, C, H, W)
        return self.conv_after_body(x) + feat



# ------------------------------------------------------------------------------------- heads and tails


class _Normalize(nn.Module):
    """Holds the mean shift and value range shared by EDT heads and tails (non-persistent: not in checkpoints)."""

    def __init__(self, arch: EDTArch) -> None:
        super().__init__()
        mean = arch.rgb_mean if arch.in_chans == 3 else (0.0,) * arch.in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.img_range = arch.img_range

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) * self.img_range

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y / self.img_range + self.mean.to(y.dtype)


class EDTHead(_Normalize):
    """conv3x3 -> ResBlockDown x head_depth -> conv3x3 to embed_dim; downsampling (DN/DR) or not (SR)."""

    def __init__(self, arch: EDTArch, down: bool) -> None:
        super().__init__(arch)
        nf = arch.num_feat
        blocks: list[nn.Module] = [nn.Conv2d(arch.in_chans, nf, 3, 1, 1)]
        blocks += [ResBlockDown(nf * 2**i, nf * 2 ** (i + 1), down=down) for i in range(arch.head_depth)]
        blocks.append(nn.Conv2d(nf * 2**arch.head_depth, arch.embed_dim, 3, 1, 1))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        feat = self.blocks[0](self.normalize(x))
        skips = []
        for block in self.blocks[1:-1]:
            feat, skip = block(feat)
            skips.append(skip)
        return self.blocks[-1](feat), tuple(skips)


class EDTSRTail(_Normalize):
    """ResBlockSkip x head_depth -> upsampler -> conv to RGB, plus the bilinearly upsampled input."""

    def __init__(self, arch: EDTArch, scale: int) -> None:
        super().__init__(arch)
        self.scale = scale
        nf, depth = arch.num_feat, arch.head_depth
        blocks: list[nn.Module] = []
        for i in reversed(range(depth)):
            in_chl = arch.embed_dim if i == depth - 1 else nf * 2 ** (i + 2)
            blocks.append(ResBlockSkip(in_chl, nf * 2 ** (i + 1)))
        out_chl = nf * 2
        if arch.upsampler == "pixelshuffle":
            blocks += [PixelShuffleUpsample(scale, out_chl), nn.Conv2d(out_chl, arch.in_chans, 3, 1, 1)]
        else:  # "pixelshuffledirect": one conv straight to scale^2 * 3 channels (lightweight EDT-T)
            direct = nn.Sequential(nn.Conv2d(out_chl, scale**2 * arch.in_chans, 3, 1, 1), nn.PixelShuffle(scale))
            blocks += [direct, nn.Identity()]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, feat: torch.Tensor, skips: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.blocks[:-2]):
            feat = block(feat, skips[-j - 1])
        feat = self.blocks[-1](self.blocks[-2](feat))  # (B, 3, sH, sW)
        lq = self.normalize(x)
        up = F.interpolate(lq, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.denormalize(up + feat)


class EDTRestoreTail(_Normalize):
    """UpResBlock x head_depth -> conv to RGB, plus the input image (denoising and deraining)."""

    def __init__(self, arch: EDTArch) -> None:
        super().__init__(arch)
        nf, depth = arch.num_feat, arch.head_depth
        blocks: list[nn.Module] = []
        for i in reversed(range(depth)):
            in_chl = arch.embed_dim if i == depth - 1 else nf * 2 ** (i + 2)
            blocks.append(UpResBlock(in_chl, nf * 2 ** (i + 1)))
        blocks.append(nn.Conv2d(nf * 2, arch.in_chans, 3, 1, 1))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, feat: torch.Tensor, skips: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.blocks[:-1]):
            feat = block(feat, skips[-j - 1])
        return self.denormalize(self.normalize(x) + self.blocks[-1](feat))


# ----------------------------------------------------------------------------------------- the family


def _task_kind(task: str) -> tuple[TaskKind, int]:
    t = get_task(task)  # restore depends on tasks for what a task name means
    return t.kind, t.scale


class EDTFamily:
    """Builds EDT bodies, heads and tails from an arch dict (see `EDTArch`)."""

    name = "edt"

    def build_body(self, arch: dict[str, Any], tasks: list[str]) -> nn.Module:
        return EDTBody(EDTArch.from_dict(arch))

    def build_head(self, arch: dict[str, Any], task: str) -> nn.Module:
        kind, _ = _task_kind(task)
        return EDTHead(EDTArch.from_dict(arch), down=kind is not TaskKind.SR)

    def build_tail(self, arch: dict[str, Any], task: str) -> nn.Module:
        kind, scale = _task_kind(task)
        a = EDTArch.from_dict(arch)
        return EDTSRTail(a, scale) if kind is TaskKind.SR else EDTRestoreTail(a)

    def pad_multiple(self, arch: dict[str, Any], task: str) -> int:
        a = EDTArch.from_dict(arch)
        win = math.lcm(*a.window_size)  # both window orientations must tile the feature map
        kind, _ = _task_kind(task)
        return win if kind is TaskKind.SR else win * 2**a.head_depth

    def fixed_input_size(self, arch: dict[str, Any]) -> int | None:
        return None


register_family(EDTFamily())

# Named variants (ANCHORS.md §1, official configs/*.py). Parameter counts for one sr_x2 task: see tests.
_EDT_DEFAULTS = {f.name: f.default for f in fields(EDTArch)}
register_variant("edt", "edt", "EDT family with EDT-B defaults; pass official kwargs via arch", **_EDT_DEFAULTS)
register_variant(
    "edt_t", "edt", "EDT-T (0.92M for sr_x2)",
    num_feat=8, embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, upsampler="pixelshuffledirect",
)
register_variant("edt_s", "edt", "EDT-S (4.23M for sr_x2)", num_feat=16, embed_dim=120, depths=(6,) * 5, num_heads=(6,) * 5)
register_variant("edt_b", "edt", "EDT-B (11.48M for sr_x2)", num_feat=32, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6)
register_variant("edt_l", "edt", "EDT-L (39.9M for sr_x2)", num_feat=64, embed_dim=240, depths=(6,) * 12, num_heads=(8,) * 12)
register_variant(
    "edt_tiny", "edt", "tiny EDT for tests and demos (trains in seconds on CPU)",
    num_feat=8, embed_dim=24, depths=(2, 2), num_heads=(2, 2), drop_path_rate=0.0,
)
