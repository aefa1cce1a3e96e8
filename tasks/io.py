"""Image I/O: files to tensors and back, keeping what evaluation needs (grayscale stays 1 channel, 16-bit stays 16-bit).

Images are (C, H, W) tensors: float in [0, 1] for models, or the file's own integer values (``uint8``; 16-bit files
as ``int32``) for MATLAB-exact arithmetic. Writes are atomic (temporary file in the same folder + ``os.replace``), so an
interrupted run never leaves a truncated image behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS", "list_images", "read_image", "read_image_raw", "save_image", "to_uint8", "atomic_path",
    "publish_mode",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_image_raw(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Read an image with its stored values: ((C, H, W) integer tensor, max value 255 or 65535).

    Grayscale files give C = 1, colour files C = 3; alpha is dropped, palette images are expanded to RGB.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.int32)[None]  # (1, H, W), 16-bit grayscale
            return torch.from_numpy(arr.copy()), 65535
        if im.mode not in ("L", "RGB"):
            im = im.convert("L" if im.mode in ("LA", "1") else "RGB")
        arr = np.array(im, dtype=np.uint8)  # a writable copy
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)
    return torch.from_numpy(np.ascontiguousarray(arr)), 255


def read_image(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Read an image as a (C, H, W) float tensor in [0, 1] (C = 1 for grayscale, 3 for colour).

    Pass ``dtype=torch.uint8`` to get the stored 8-bit values instead (an error for 16-bit files).
    """
    raw, peak = read_image_raw(path)
    if dtype == torch.uint8:
        if peak != 255:
            raise ValueError(f"{str(path)!r} is a 16-bit image; read it as float (dtype=torch.float32) instead")
        return raw.to(torch.uint8)
    if not dtype.is_floating_point:
        raise ValueError(f"read_image returns float or uint8 tensors, got dtype={dtype}")
    return raw.to(torch.float64).div_(peak).to(dtype)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] -> uint8 the field's way: clamp, ``round(x * 255)`` (uint8 input is returned as is)."""
    if x.dtype == torch.uint8:
        return x
    return (x.detach().to(torch.float64).clamp(0, 1) * 255).round().to(torch.uint8)


def save_image(x: torch.Tensor, path: str | os.PathLike, bits: int = 8) -> Path:
    """Save a (C, H, W) or (1, C, H, W) image (float in [0, 1], or uint8) atomically; C = 1 or 3.

    Args:
        x: the image; float values are clamped to [0, 1] and rounded.
        path: destination; the format follows the suffix (PNG recommended: lossless).
        bits: 8, or 16 for a 16-bit grayscale PNG.
    """
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"save_image saves one image; got a batch of {x.shape[0]}: save them one by one")
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects (C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")
    path = Path(path)
    if bits == 16:
        if x.shape[0] != 1:
            raise ValueError("16-bit output is supported for grayscale images only (PIL cannot write 16-bit RGB)")
        arr = (x.detach().to(torch.float64).clamp(0, 1) * 65535).round().to(torch.int32)[0].cpu().numpy()
        im = Image.fromarray(arr.astype(np.uint16))
    elif bits == 8:
        arr = to_uint8(x).cpu().numpy()
        im = Image.fromarray(arr[0]) if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0))
    else:
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    with atomic_path(path) as tmp:
        im.save(tmp, format=Image.registered_extensions().get(path.suffix.lower()))
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike) -> None:
    """Give a finished file the permissions of a normally created one (temporary-file writers make it 0600)."""
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` only if the block succeeds.

    A crash or an exception therefore never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
