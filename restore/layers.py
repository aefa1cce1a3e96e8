"""Small helpers shared by the body families and the model: padding to a size multiple, cropping back.

Reference: the test-time padding of the official EDT (`fenglinglwb/EDT`, `test_sample.py`) and SwinIR
(`main_test_swinir.py`) repositories, which pad by mirroring the image; we pad only when a size is not already a
multiple (SwinIR PR #139 discusses the always-pad variant).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

__all__ = ["pad_amount", "reflect_pad", "pad_to_multiple", "crop_to"]


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
