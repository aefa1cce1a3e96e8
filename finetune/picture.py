"""Result pictures: panels of one crop side by side, captioned, from the pairs ``tasks.evaluate`` scores.

- `comparison_picture` (each export's ``comparison.png``): input (nearest-neighbour upscaled), output and ground
  truth of a centre crop of the first image of a validation benchmark.
- `before_after_picture` (the demo's ``before_after.png``): bicubic, ours and ground truth of the crop where
  bicubic errs most over the whole benchmark (a choice that does not look at the model), zoomed for the eye.

Pairs come from `tasks.evaluate.benchmark_pairs` (``HR/`` + ``LR_bicubic/X<s>/`` when stored, otherwise MATLAB
bicubic of the HR image; the protocol's seed-0 noise; ``rainy/`` + ``norain/`` for deraining), so a person sees
what the numbers in the card mean. The model sees the crop plus ``context`` LR pixels on each side, cut away
afterwards: the panels have no border effects, and a large image costs no more than a small one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tasks.evaluate import benchmark_pairs
from tasks.metrics import psnr
from tasks.registry import Task, get_task

__all__ = ["first_pair", "comparison_picture", "before_after_picture"]


def first_pair(benchmark: str, task: str, root: str | None = None) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(name, lq (3, h, w), gt (3, H, W)) of the first image of ``benchmark`` for ``task``: the pair
    ``tasks.evaluate`` scores first (`tasks.evaluate.benchmark_pairs`), grayscale replicated to RGB; floats in
    [0, 1], except the denoising input, unclipped as evaluation gives it."""
    name, lq, gt = next(benchmark_pairs(benchmark, task, root=root, limit=1))
    return name, _rgb(lq[0]), _rgb(gt[0])


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _restore_crop(model, lq: torch.Tensor, task: Task, top: int, left: int, c: int, context: int) -> torch.Tensor:
    """The model's output (3, c*s, c*s) for the ``c``-pixel LR crop at (top, left) of ``lq`` (3, h, w), run on the
    crop plus ``context`` pixels each side; clamped to [0, 1] and rounded to uint8 levels, as scored."""
    import restore

    s = task.scale
    h, w = lq.shape[-2:]
    y0, x0 = max(0, top - context), max(0, left - context)
    y1, x1 = min(h, top + c + context), min(w, left + c + context)
    out = restore.restore_image(model, lq[None, :, y0:y1, x0:x1], task.name)[0].float().clamp(0, 1)
    oy, ox = (top - y0) * s, (left - x0) * s
    return (out[:, oy : oy + c * s, ox : ox + c * s] * 255).round() / 255


def _crop_psnr(x: torch.Tensor, gt: torch.Tensor, task: Task) -> float:
    """PSNR of a crop with the task's protocol (NaN when the crop is smaller than the protocol's border)."""
    if min(gt.shape[-2:]) <= 2 * task.crop_border:
        return float("nan")
    return float(psnr(x[None], gt[None], **task.protocol)[0])


def _save_panels(panels: dict[str, torch.Tensor], path: Path, *, zoom: int = 1, gap: int = 4,
                 strip: int = 14) -> Path:
    """The panels (3, H, W) side by side, each ``zoom`` x (nearest), under a white caption strip; atomic PNG."""
    from PIL import Image, ImageDraw

    from tasks.io import atomic_path

    h, w = (n * zoom for n in next(iter(panels.values())).shape[-2:])
    canvas = Image.new("RGB", (len(panels) * w + (len(panels) - 1) * gap, h + strip), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (caption, img) in enumerate(panels.items()):
        arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        canvas.paste(Image.fromarray(arr).resize((w, h), Image.NEAREST), (i * (w + gap), strip))
        draw.text((i * (w + gap) + 2, 1), caption, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


@torch.no_grad()
def comparison_picture(model, task: str, benchmark: str, path: str | Path, *, root: str | None = None,
                       crop: int = 64, context: int = 16) -> Path:
    """Save ``[input | output | ground truth]`` of a ``crop``-pixel (LQ side) centre crop of the first image;
    the output's crop PSNR is in its caption."""
    t = get_task(task)
    s = t.scale
    _name, lq, gt = first_pair(benchmark, task, root)
    h, w = lq.shape[-2:]
    c = min(crop, h, w)
    top, left = (h - c) // 2, (w - c) // 2
    out = _restore_crop(model, lq, t, top, left, c, context)
    gt_crop = gt[:, top * s : (top + c) * s, left * s : (left + c) * s]
    lq_up = F.interpolate(lq[None, :, top : top + c, left : left + c], scale_factor=s, mode="nearest")[0]
    panels = {f"input{f' (nearest x{s})' if s > 1 else ''}": lq_up,
              f"output {_crop_psnr(out, gt_crop, t):.2f} dB": out, "ground truth": gt_crop}
    return _save_panels(panels, Path(path))


def _worst_bicubic_crop(benchmark: str | Path, task: Task, crop: int, root: str | None):
    """``(name, lq, gt, bicubic upscale, top, left, c)`` (images (3, ., .)): the ``c``-pixel LR crop (``c`` =
    ``crop`` or the image side) with the largest mean bicubic error over the benchmark, on a 4-LR-pixel grid."""
    from tasks.evaluate import bicubic_baseline

    s, bicubic, best = task.scale, bicubic_baseline(task), None
    for name, lq, gt in benchmark_pairs(benchmark, task.name, root=root):
        lq, gt = _rgb(lq[0]), _rgb(gt[0])
        c = min(crop, *lq.shape[-2:])
        up = bicubic(lq[None])[0].float() / 255  # (3, H, W)
        err = (up - gt).abs().mean(0, keepdim=True)[None]  # (1, 1, H, W)
        window = F.avg_pool2d(err, c * s, stride=s * 4)  # the mean error of each HR window
        score, idx = window.flatten().max(0)
        if best is None or float(score) > best[0]:
            top, left = divmod(int(idx), window.shape[-1])
            best = (float(score), name, lq, gt, up, top * 4, left * 4, c)
    if best is None:
        raise ValueError(f"no images in {benchmark} for the before/after picture")
    return best[1:]


@torch.no_grad()
def before_after_picture(model, benchmark: str | Path, path: str | Path, *, task: str = "sr_x2", crop: int = 40,
                         context: int = 16, zoom: int = 2, root: str | None = None) -> dict[str, Any]:
    """Save ``[bicubic | ours | ground truth]`` of the crop (``crop`` LR pixels square) where bicubic upscaling errs
    most over the benchmark's images, each panel zoomed ``zoom`` x (nearest) and captioned with its PSNR (the
    benchmark's protocol). Returns the image name, the LR crop box and both crops' PSNR."""
    t = get_task(task)
    s = t.scale
    name, lq, gt, up, top, left, c = _worst_bicubic_crop(benchmark, t, crop, root)
    box = (slice(None), slice(top * s, (top + c) * s), slice(left * s, (left + c) * s))
    crops = {"bicubic": up[box], "ours (fine-tuned)": _restore_crop(model, lq, t, top, left, c, context)}
    scores = {k: _crop_psnr(v, gt[box], t) for k, v in crops.items()}
    panels = {f"{k} {scores[k]:.2f} dB": v for k, v in crops.items()} | {"ground truth": gt[box]}
    _save_panels(panels, Path(path), zoom=zoom, gap=6, strip=16)
    return {"image": name, "lr_box": [top, left, c, c], "psnr_crop": scores}
