"""The demo's ``before_after.png``: bicubic, ours and ground truth of the crop where bicubic errs most, zoomed.

It differs from `finetune.picture.comparison_picture` (input nearest-upscaled, centre crop of the first image) in
what it shows: the bicubic baseline as the first panel, a crop chosen over every image of the benchmark, and a
nearest-neighbour zoom for the eye; the pairs come from `tasks.evaluate.benchmark_pairs`, as the scores do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["before_after_picture"]


def _worst_bicubic_crop(benchmark_dir: Path, task, crop: int):
    """``(name, lq, gt, bicubic upscale, top, left, c)``: the ``c``-pixel LR crop (``c`` = ``crop`` or the image side)
    with the largest mean bicubic error over the benchmark, on a 4-LR-pixel grid; it does not look at the model."""
    from tasks.evaluate import benchmark_pairs, bicubic_baseline

    s, bicubic, best = task.scale, bicubic_baseline(task), None
    for name, lq, gt in benchmark_pairs(benchmark_dir, task):
        lq, gt = (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x for x in (lq, gt))
        c = min(crop, *lq.shape[-2:])
        up = bicubic(lq).float() / 255  # (1, 3, H, W)
        err = (up - gt).abs().mean(1, keepdim=True)  # (1, 1, H, W)
        window = F.avg_pool2d(err, c * s, stride=s * 4)  # (1, 1, ., .) mean error of each HR window
        score, idx = window.flatten().max(0)
        if best is None or float(score) > best[0]:
            top, left = divmod(int(idx), window.shape[-1])
            best = (float(score), name, lq, gt, up, top * 4, left * 4, c)
    if best is None:
        raise ValueError(f"no images in {benchmark_dir} for the before/after picture")
    return best[1:]


def _save_panels(panels: dict[str, torch.Tensor], scores: dict[str, float], path: Path, zoom: int) -> None:
    """Side by side, each ``zoom`` x (nearest), captioned with its PSNR, on white; written atomically."""
    from PIL import Image, ImageDraw

    from tasks.io import atomic_path

    side, gap, strip = next(iter(panels.values())).shape[-1] * zoom, 6, 16
    canvas = Image.new("RGB", (len(panels) * side + (len(panels) - 1) * gap, side + strip), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (label, img) in enumerate(panels.items()):
        arr = (img[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        canvas.paste(Image.fromarray(arr).resize((side, side), Image.NEAREST), (i * (side + gap), strip))
        caption = label + (f" {scores[label]:.2f} dB" if label in scores else "")
        draw.text((i * (side + gap) + 2, 2), caption, fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


@torch.no_grad()
def before_after_picture(model, benchmark_dir: Path, path: Path, *, task: str = "sr_x2", crop: int = 40,
                         context: int = 16, zoom: int = 2) -> dict[str, Any]:
    """Save ``[bicubic | ours | ground truth]`` of one crop, each panel zoomed ``zoom`` x (nearest) for the eye.

    The crop (``crop`` LR pixels square) is where bicubic upscaling errs most over the benchmark's images, a choice
    that does not look at the model; the model sees ``context`` extra LR pixels each side, cut away afterwards.
    Returns the image name, the crop box and both crops' PSNR (Y channel, as the benchmark protocol).
    """
    import restore
    from tasks.metrics import psnr
    from tasks.registry import get_task

    t = get_task(task)
    s = t.scale
    name, lq, gt, up, top, left, c = _worst_bicubic_crop(Path(benchmark_dir), t, crop)
    y0, x0 = max(0, top - context), max(0, left - context)
    y1, x1 = min(lq.shape[-2], top + c + context), min(lq.shape[-1], left + c + context)
    out = restore.restore_image(model, lq[:, :, y0:y1, x0:x1], task).float().clamp(0, 1)
    oy, ox = (top - y0) * s, (left - x0) * s
    box = (slice(top * s, (top + c) * s), slice(left * s, (left + c) * s))
    ours = (out[..., oy : oy + c * s, ox : ox + c * s] * 255).round() / 255  # uint8 levels, as scored
    panels = {"bicubic": up[..., box[0], box[1]], "ours (fine-tuned)": ours, "ground truth": gt[..., box[0], box[1]]}
    scores = {k: float(psnr(v, panels["ground truth"], **t.protocol)[0]) for k, v in panels.items()
              if k != "ground truth"}
    _save_panels(panels, scores, Path(path), zoom)
    return {"image": name, "lr_box": [top, left, c, c], "psnr_crop": scores}
