"""Helpers of the equality tests against the official architectures (spandrel's copies of HAT, SwinIR, IPT)."""

from __future__ import annotations

import torch

from restore.model import RestorationModel


def perturbed(ref: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (init leaves biases/LayerNorms at 0/1, which would hide mapping errors); frozen
    constants (IPT's MeanShift convs) stay as they are."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    return ref.eval()


def max_diff(ref: torch.nn.Module, model: RestorationModel, task: str, h: int, w: int) -> float:
    """Max abs difference of the official model and ours on the same random (2, 3, h, w) batch."""
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
    with torch.no_grad():
        a, b = ref(x), model(x, task)
    assert a.shape == b.shape
    return (a - b).abs().max().item()
