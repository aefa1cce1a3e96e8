"""What every degradation module shares (`tasks.degradations`, `tasks.rain`, `tasks.blind`): the check of an image
batch and random draws made on the generator's device."""

from __future__ import annotations

from typing import Sequence

import torch


def _check_images(x: torch.Tensor, name: str = "hr") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, C, H, W) in [0, 1], got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch (B, C, H, W), got shape {tuple(x.shape)}; use x[None] for one image")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a float tensor in [0, 1], got {x.dtype}; divide uint8 images by 255")


def _rand(shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor, normal: bool = False):
    """Random numbers drawn on the generator's device (so a seed means the same numbers anywhere), moved to ``like``."""
    device = generator.device if generator is not None else like.device
    fn = torch.randn if normal else torch.rand
    out = fn(tuple(shape), generator=generator, device=device, dtype=torch.float32)
    return out.to(device=like.device, dtype=like.dtype)
