"""The results picture: input (nearest-neighbour upscaled), output and ground truth of one crop, side by side.

The crop comes from the first image of a validation benchmark, read by ``tasks.evaluate``'s own reader
(`tasks.evaluate.benchmark_pairs`: ``HR/`` + ``LR_bicubic/X<s>/`` when stored, otherwise MATLAB bicubic of the HR
image; the protocol's seed-0 noise; ``rainy/`` + ``norain/`` for deraining), so a person sees what the numbers in
the card mean.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from tasks.evaluate import benchmark_pairs
from tasks.io import save_image
from tasks.metrics import psnr
from tasks.registry import get_task

__all__ = ["first_pair", "comparison_picture"]


def first_pair(benchmark: str, task: str, root: str | None = None) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(name, lq (3, h, w), gt (3, H, W)) of the first image of ``benchmark`` for ``task``: the pair
    ``tasks.evaluate`` scores first (`tasks.evaluate.benchmark_pairs`), grayscale replicated to RGB; floats in
    [0, 1], except the denoising input, unclipped as evaluation gives it."""
    name, lq, gt = next(benchmark_pairs(benchmark, task, root=root, limit=1))
    return name, _rgb(lq[0]), _rgb(gt[0])


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _label_strip(labels: list[str], width: int, gap: int, height: int = 14) -> torch.Tensor:
    """(3, height, total width) white strip with one caption per panel, drawn with PIL's built-in font."""
    import numpy as np
    from PIL import Image, ImageDraw

    total = len(labels) * width + (len(labels) - 1) * gap
    im = Image.new("RGB", (total, height), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for i, text in enumerate(labels):
        draw.text((i * (width + gap) + 2, 1), text, fill=(0, 0, 0))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255


@torch.no_grad()
def comparison_picture(model, task: str, benchmark: str, path: str | Path, *, root: str | None = None,
                       crop: int = 64, context: int = 16) -> Path:
    """Save ``[input | output | ground truth]`` of a ``crop``-pixel (LQ side) centre crop of the first image.

    The model sees the crop plus ``context`` pixels on each side (cut away afterwards), so the panel has no border
    effects and a large validation image costs no more than a small one. The crop's PSNR is in the caption.
    """
    import restore

    t = get_task(task)
    s = t.scale
    _name, lq, gt = first_pair(benchmark, task, root)
    h, w = lq.shape[-2:]
    c = min(crop, h, w)
    top, left = (h - c) // 2, (w - c) // 2
    y0, x0 = max(0, top - context), max(0, left - context)
    y1, x1 = min(h, top + c + context), min(w, left + c + context)
    out = restore.restore_image(model, lq[None, :, y0:y1, x0:x1], task)[0].float().clamp(0, 1)
    oy, ox = (top - y0) * s, (left - x0) * s
    out_crop = out[:, oy : oy + c * s, ox : ox + c * s]
    gt_crop = gt[:, top * s : (top + c) * s, left * s : (left + c) * s]
    lq_up = F.interpolate(lq[None, :, top : top + c, left : left + c], scale_factor=s, mode="nearest")[0]
    score = float(psnr(out_crop[None], gt_crop[None], **t.protocol)[0]) if c * s > 2 * t.crop_border else float("nan")
    panel = c * s
    gap = 4
    white = torch.ones(3, panel, gap)
    row = torch.cat([lq_up, white, out_crop, white, gt_crop], dim=2)
    labels = [f"input{f' (nearest x{s})' if s > 1 else ''}", f"output {score:.2f} dB", "ground truth"]
    picture = torch.cat([_label_strip(labels, panel, gap), row], dim=1)
    return save_image(picture, Path(path))
