"""Any kind of image into the model's input and back (`restore.inference.restore_image`): PIL images of any mode,
numpy arrays and tensors (uint8, uint16, float in [0, 1]), file paths (`tasks.io.load_image`); grayscale is
replicated to RGB and averaged back, an alpha channel is set aside (and resized for SR), and the output comes back
in the kind, dtype, layout and device it came in.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Layout", "to_input", "to_output"]


class Layout:
    """How to turn the restored (1, 3, H, W) float tensor back into the caller's kind of image."""

    def __init__(self, kind: str, maxval: float | None, dtype: Any, gray: bool, alpha: torch.Tensor | None,
                 channel_axis_kept: bool, batch: bool, device: Any = None) -> None:
        self.kind, self.maxval, self.dtype, self.gray = kind, maxval, dtype, gray
        self.alpha, self.channel_axis_kept, self.batch, self.device = alpha, channel_axis_kept, batch, device


def _check_float_range(t: torch.Tensor, what: str) -> None:
    """A float image must be in [0, 1]; a small overshoot (another model's output) is tolerated, but a 0-255 or
    0-65535 image would be clamped to white, so it is refused with the fix (NaN is `restore_image`'s check)."""
    if not t.numel():
        return
    lo, hi = float(t.min()), float(t.max())
    if lo < -0.5 or hi > 1.5:
        fix = f"divide by {255 if hi <= 255 else 65535}" if lo >= 0 and hi <= 65535 else "rescale it"
        raise ValueError(f"a float {what} with values in [{lo:g}, {hi:g}]; float images are read as [0, 1]: "
                         f"{fix} first (or pass uint8/uint16)")


def _from_array(arr: np.ndarray) -> tuple[torch.Tensor, Layout]:
    if arr.dtype == np.uint8:
        maxval = 255.0
    elif arr.dtype == np.uint16:
        maxval = 65535.0
    elif arr.dtype in (np.float32, np.float64, np.float16):
        maxval = None
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}; pass uint8, uint16 or float in [0, 1]")
    kept = arr.ndim == 3
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C) with C in 1-4, got {arr.shape}")
    t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None].to(torch.float32)  # (1, C, H, W)
    if maxval is not None:
        t = t / maxval
    else:
        _check_float_range(t, "array")
    return _split_channels(t, Layout("numpy", maxval, arr.dtype, False, None, kept, False))


def _split_channels(t: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, Layout]:
    """(B, C, H, W) with C in 1-4 -> RGB (B, 3, H, W); records gray/alpha in ``layout``."""
    c = t.shape[1]
    if c in (2, 4):
        layout.alpha = t[:, -1:]
        t = t[:, :-1]
    if c in (1, 2):
        layout.gray = True
        t = t.expand(-1, 3, -1, -1)
    return t, layout


def to_input(image: Any) -> tuple[torch.Tensor, Layout]:
    from PIL import Image

    if isinstance(image, (str, Path)):
        from tasks.io import load_image  # EXIF orientation, 16-bit colour, frames and pixel budget checked there

        image = load_image(image).image
    if isinstance(image, Image.Image):
        mode = image.mode
        if mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif mode in ("RGB", "L") and "transparency" in image.info:  # a PNG tRNS colour key: those pixels clear
            image = image.convert("RGBA" if mode == "RGB" else "LA")
        elif mode in ("I", "I;16B", "I;16L", "I;16N"):
            arr = np.asarray(image)
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise ValueError(f"a mode {mode} image with values in [{arr.min()}, {arr.max()}], outside 16 bits; "
                                 f"rescale it to [0, 65535] first")
            image = Image.fromarray(arr.astype(np.uint16))
        elif mode == "1":
            image = image.convert("L")  # a bilevel image is grayscale: restored and returned as one channel
        elif mode == "CMYK":  # through its ICC profile to sRGB, as `load_image` converts CMYK files
            from tasks.io import cmyk_to_rgb

            image, why = cmyk_to_rgb(image, image.info.get("icc_profile"))
            if why:
                from restore.inference import FallbackWarning

                warnings.warn(f"a CMYK image: {why}", FallbackWarning, stacklevel=3)
        elif mode in ("YCbCr", "LAB", "HSV", "PA", "RGBX", "RGBa", "La"):
            image = image.convert("RGBA" if mode in ("PA", "RGBa", "La") else "RGB")
        t, layout = _from_array(np.asarray(image))
        layout.kind = "pil"
        return t, layout
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, torch.Tensor):
        batch = image.ndim == 4
        if image.ndim not in (3, 4) or image.shape[-3] not in (1, 2, 3, 4):
            raise ValueError(f"expected a tensor (C, H, W) or (B, C, H, W) with C in 1-4, got {tuple(image.shape)}")
        t = image if batch else image[None]
        maxval = {torch.uint8: 255.0, torch.uint16: 65535.0}.get(image.dtype)
        if maxval is None and not image.is_floating_point():
            raise ValueError(f"unsupported tensor dtype {image.dtype}; pass float in [0, 1] or uint8")
        t = t.detach().cpu().to(torch.float32)
        if maxval is not None:
            t = t / maxval
        else:
            _check_float_range(t, "tensor")
        return _split_channels(t, Layout("tensor", maxval, image.dtype, False, None, True, batch, image.device))
    raise TypeError(f"restore_image takes a PIL image, a numpy array, a tensor or a path, got {type(image).__name__}")


def to_output(y: torch.Tensor, layout: Layout, scale: int | None) -> Any:
    from PIL import Image

    y = y.clamp(0, 1)
    if layout.gray:
        y = y.mean(dim=1, keepdim=True)
    if layout.alpha is not None:
        alpha = layout.alpha
        if scale is None:  # sr_any: any output size
            alpha = F.interpolate(alpha, size=y.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        elif scale > 1:
            alpha = F.interpolate(alpha, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
        y = torch.cat([y, alpha.to(y.dtype)], dim=1)
    if layout.kind == "tensor":
        if layout.maxval is not None:
            y = (y * layout.maxval).round().to(layout.dtype)
        else:
            y = y.to(layout.dtype)
        y = y.to(layout.device)
        return y if layout.batch else y[0]
    arr = y[0].permute(1, 2, 0).numpy()  # (H, W, C)
    if layout.maxval is not None:
        arr = np.rint(arr * layout.maxval).astype(layout.dtype)
    else:
        arr = arr.astype(layout.dtype)
    if not layout.channel_axis_kept:
        arr = arr[:, :, 0]
    if layout.kind == "pil":
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        return Image.fromarray(arr)
    return arr
