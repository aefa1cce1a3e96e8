"""Decoding a shard sample's image and cutting its training crop: in the data-loader workers, or, for RGB JPEGs
with ``decode_on=device``, on the training device (`PendingCrop`, `decode_crops`).

RGB JPEGs (nearly all of ImageNet) go through torchvision's libjpeg-turbo: 1.35x PIL's rate with the same pixels
(all 316 images of the shared sample: `tests/benchmarks/bench_decode.py`). Every other file (grayscale, CMYK, PNG,
...) goes through PIL, converted to RGB, where only the crop becomes an array. The crop's position and flips come
from the step's crop generator in the same order wherever the pixels are decoded, so the workers and the device
cut the same patches.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tasks.io import cmyk_to_rgb, open_image, quiet_codecs

__all__ = ["PendingCrop", "decode_crops", "draw_flips", "apply_flips"]

log = logging.getLogger("pretrain.data")  # the stream's logger: its skips and these warnings read together
_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")


@dataclass
class PendingCrop:
    """An RGB JPEG's bytes and the crop and flips the worker drew for it (``decode_on=device``): `degrade_pending`
    decodes it on the training device (nvjpeg on CUDA) and cuts it."""

    data: bytes  # the file's bytes: a DataLoader worker pickles bytes through its pipe, where a tensor each would
    # cost a shared-memory segment and a file descriptor (192 JPEG crops: 76 instead of 140 ms per batch)
    top: int
    left: int
    size: int
    flips: tuple[int, int, int]  # (horizontal, vertical, transpose), as drawn by `draw_flips`
    key: str


def _image_bytes(sample: dict[str, Any]) -> bytes:
    key = next((k for k in _IMAGE_KEYS if k in sample), None)
    if key is None:
        raise ValueError(f"no image member (has {sorted(k for k in sample if not k.startswith('__'))})")
    return sample[key]


def _image_size(sample: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of a sample's image from its header (no pixels decoded)."""
    from PIL import Image

    with Image.open(io.BytesIO(_image_bytes(sample))) as im:
        return im.height, im.width


def _decode(sample: dict[str, Any]) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the whole first image member (grayscale, CMYK and palette images converted)."""
    return _decode_crop(sample, 0, None)[0].permute(1, 2, 0).numpy()


def _jpeg_rgb(data: bytes | list[bytes], device: torch.device | str = "cpu") -> torch.Tensor | list[torch.Tensor]:
    """(3, H, W) uint8 RGB of a JPEG's bytes, or a list of them for a list, decoded by torchvision on ``device``
    (libjpeg-turbo on the CPU, nvjpeg on CUDA).

    On CUDA the caller's stream is drained first: torchvision allocates nvjpeg's outputs on that stream, and the
    decode (nvjpeg's hardware engine in particular) can write them before kernels still queued there have finished
    reading the recycled memory, corrupting tensors of the training step (pytorch/vision PR #9606, torchcodec
    PR #1634, which adds the same wait)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    # a uint8 tensor over a copy of each file: the decoders want a writable buffer, and bytes are not
    data = [_byte_tensor(d) for d in data] if isinstance(data, list) else _byte_tensor(data)
    if torch.device(device).type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    with quiet_codecs():
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def _byte_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _crop_position(hw: tuple[int, int], size: int, g: torch.Generator) -> tuple[int, int]:
    top = int(torch.randint(0, hw[0] - size + 1, (1,), generator=g))
    left = int(torch.randint(0, hw[1] - size + 1, (1,), generator=g))
    return top, left


def _decode_crop(sample: dict[str, Any], size: int, g: torch.Generator | None,
                 defer: bool = False) -> tuple[torch.Tensor | PendingCrop | None, tuple]:
    """A random ``size`` x ``size`` crop of the first image member as (3, size, size) uint8 RGB (the whole image for
    ``g`` None), and the image's (height, width); (None, (h, w)) for an image smaller than ``size``.

    The size comes from the header, so a small image is skipped undecoded. The crop position is drawn from ``g``
    after the pixels decoded, so a corrupt file raises before any draw. ``defer``: an RGB JPEG is not decoded here;
    a `PendingCrop` (flips still to set) carries its bytes and the drawn position to the training device.
    """
    data = _image_bytes(sample)
    with open_image(io.BytesIO(data)) as im:
        hw = (im.height, im.width)
        if min(hw) < size:
            return None, hw
        jpeg = im.format == "JPEG" and im.mode == "RGB"
        defer = defer and jpeg and g is not None
        if jpeg and not defer:
            chw = _jpeg_rgb(data)
            if tuple(chw.shape[1:]) != hw:  # never seen; refuse rather than crop the wrong frame
                raise ValueError(f"decoded {tuple(chw.shape[1:])} from a header of {hw}")
        elif not jpeg:
            im.load()  # a truncated or corrupt file raises here, before any draw
            if im.mode == "CMYK":  # through its ICC profile, where it has one (`tasks.io.cmyk_to_rgb`)
                rgb = cmyk_to_rgb(im, im.info.get("icc_profile"))[0]
            else:
                rgb = im if im.mode == "RGB" else im.convert("RGB")
        if g is None:
            return (chw if jpeg else torch.from_numpy(np.array(rgb)).permute(2, 0, 1)), hw
        top, left = _crop_position(hw, size, g)
        if defer:
            return PendingCrop(bytes(data), top, left, size, (0, 0, 0), str(sample.get("__key__"))), hw
        if jpeg:
            return chw[:, top : top + size, left : left + size].contiguous(), hw
        return torch.from_numpy(np.array(rgb.crop((left, top, left + size, top + size)))).permute(2, 0, 1), hw


def draw_flips(g: torch.Generator) -> tuple[int, int, int]:
    """Random (horizontal flip, vertical flip, 90-degree rotation) of one crop."""
    hflip, vflip, rot = (int(v) for v in torch.randint(0, 2, (3,), generator=g))
    return hflip, vflip, rot


def apply_flips(patch: torch.Tensor, flips: tuple[int, int, int]) -> torch.Tensor:
    """The flips and rotation of `draw_flips` applied to a (3, S, S) crop."""
    hflip, vflip, rot = flips
    if hflip:
        patch = patch.flip(-1)
    if vflip:
        patch = patch.flip(-2)
    if rot:
        patch = patch.transpose(-1, -2)
    return patch


_CPU_DECODED: set[str] = set()  # files nvjpeg refused and libjpeg decoded, each named once per process


def _decode_alone(crop: PendingCrop, device: torch.device) -> torch.Tensor | None:
    """One JPEG on ``device``; on CUDA, libjpeg-turbo's decode moved there if nvjpeg refuses it; None if neither
    decodes it."""
    try:
        return _jpeg_rgb(crop.data, device)
    except RuntimeError as err:
        why = err
    if device.type != "cpu":
        try:
            img = _jpeg_rgb(crop.data, "cpu").to(device)
        except RuntimeError:
            pass
        else:
            if crop.key not in _CPU_DECODED:
                _CPU_DECODED.add(crop.key)
                log.warning("decoded %s on the CPU: nvjpeg refused it (%s)", crop.key, why)
            return img
    log.warning("skipped %s on the device (%s): the batch repeats a neighbouring image", crop.key, why)
    return None


def decode_crops(crops: list, device: torch.device) -> torch.Tensor:
    """(B, 3, S, S) float in [0, 1] on ``device`` from a batch's `Batch.crops`: the JPEGs decoded there in one
    batched call (`torchvision.io.decode_jpeg`, nvjpeg on CUDA), cut and flipped as the worker drew.

    A file nvjpeg refuses is decoded by libjpeg-turbo on the CPU instead (a warning names it, once). A file whose
    header read but whose data does not decode at all is replaced by the batch's previous good image (its next for
    the first), with a warning naming it: the batch keeps its size and the run goes on; deterministic, as it
    depends only on the data.
    """
    jpegs = [c for c in crops if isinstance(c, PendingCrop)]
    try:
        decoded = _jpeg_rgb([c.data for c in jpegs], device) if jpegs else []
    except RuntimeError:  # one bad file fails the batched call: decode one by one to find it
        if torch.device(device).type == "cuda":
            # the failed call may have queued work on nvjpeg's own stream, writing into outputs it has already freed
            # to this stream's pool: let it finish before the retries allocate
            torch.cuda.synchronize(device)
        decoded = [_decode_alone(c, torch.device(device)) for c in jpegs]
    images, patches = iter(decoded), []
    for c in crops:
        if not isinstance(c, PendingCrop):
            patches.append(c.to(device))
            continue
        img = next(images)
        if img is not None and (img.shape[1] < c.top + c.size or img.shape[2] < c.left + c.size):
            log.warning("skipped %s on the device: it decoded to %s, smaller than its header", c.key, tuple(img.shape))
            img = None
        patches.append(None if img is None else apply_flips(img[:, c.top : c.top + c.size,
                                                                  c.left : c.left + c.size], c.flips))
    good = [i for i, p in enumerate(patches) if p is not None]
    if not good:
        raise RuntimeError(f"no image of a batch of {len(crops)} decoded on {device}: check the shards")
    patches = [p if p is not None else patches[max((j for j in good if j < i), default=good[0])]
               for i, p in enumerate(patches)]
    return torch.stack(patches).float().div_(255.0)
