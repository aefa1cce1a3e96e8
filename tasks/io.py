"""Image I/O: files to tensors and back, keeping what evaluation needs (grayscale stays 1 channel, 16-bit stays 16-bit).

Images are (C, H, W) tensors: float in [0, 1] for models, or the file's own integer values (``uint8``; 16-bit files
as ``int32``) for MATLAB-exact arithmetic. Writes are atomic (temporary file in the same folder + ``os.replace``), so an
interrupted run never leaves a truncated image behind.

Every read goes through `load_image`, which refuses what would otherwise be silently wrong: several frames (only the
first would be used), more pixels than a budget (decompression bombs), float files outside a known range, NaN. It
applies the EXIF orientation (the pixels are stored sideways in most phone photos) and reads 16-bit colour as 16-bit
(Pillow would give 8 bits); `write_image` writes such arrays back with OpenCV, as Pillow cannot write 16-bit RGB.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from tasks.errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS", "list_images", "read_image", "read_image_raw", "save_image", "to_uint8", "atomic_path",
    "publish_mode", "LoadedImage", "load_image", "write_image", "pixel_budget", "DEFAULT_MAX_PIXELS", "MAX_PIXELS_ENV",
    "cmyk_to_rgb", "open_image",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Pillow's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS): about 0.25 GiB of 24-bit pixels
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
MAX_PIXELS_ENV = "RESTORE_MAX_PIXELS"

# EXIF orientation -> the numpy operation that brings stored pixels (H, W, ...) into display orientation
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def pixel_budget() -> int:
    """The pixel budget of one image: ``$RESTORE_MAX_PIXELS`` if set, else `DEFAULT_MAX_PIXELS` (Pillow's)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{MAX_PIXELS_ENV}={text!r} is not a positive whole number of pixels; unset it or use e.g. "
                         f"{MAX_PIXELS_ENV}=200000000")
    return value


@dataclass(frozen=True)
class LoadedImage:
    """An image file as `restore.restore_image` takes it, and what writing the result back needs.

    Attributes:
        image: a PIL image in display orientation; or a numpy array for what PIL cannot hold: 16-bit colour
            (uint16, (H, W, 3 or 4)), float files (float32 (H, W), scaled to [0, 1]).
        float_peak: for float files, the value that 1.0 stands for (1, 255 or 65535): results are written
            back multiplied by it, in the file's own range.
        icc_profile: the file's colour profile, to be embedded in the output (without it, wide-gamut photos
            change colour).
        note: something the caller should tell the user (a scaling that was applied, a tag that was ignored).
    """

    image: Image.Image | np.ndarray
    float_peak: float | None = None
    icc_profile: bytes | None = None
    note: str | None = None


@contextlib.contextmanager
def quiet_codecs() -> Iterator[None]:
    """Silence torchvision 0.29's deprecation of its image codecs (`torchvision.io.decode_jpeg`, `encode_jpeg`) in
    favour of torchcodec, around our calls: they are still libjpeg-turbo (nvjpeg on CUDA), and the warning would
    repeat for every decoded image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@contextlib.contextmanager
def _pillow_limit() -> Iterator[None]:
    """Switch off Pillow's own decompression-bomb check, which `load_image` makes itself with its budget and a
    message naming the file and the fix (Pillow's fixed limit would refuse what ``--max-pixels`` allows); any
    check Pillow still makes in a decoder raises instead of warning. The limit is a Pillow global, restored on exit."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def open_image(source: str | os.PathLike | io.BytesIO) -> Image.Image:
    """``Image.open``, except that an uncompressed TIFF turned by its orientation tag (5-8: transposed or rotated a
    quarter turn) is decoded by libtiff. Pillow 13's own decoder, which applies the tag on load, scrambles those of
    L, RGBA, CMYK and 16-bit gray (rows read at the turned width; compressed TIFFs, which libtiff decodes, and RGB
    come out right); libtiff is kept to these files, as it names a truncated file less clearly."""
    from PIL import TiffImagePlugin

    im = Image.open(source)
    if im.format != "TIFF" or im.tag_v2.get(0x0112) not in (5, 6, 7, 8) or im.tag_v2.get(259, 1) != 1:
        return im
    im.close()
    if isinstance(source, io.BytesIO):
        source.seek(0)
    before = TiffImagePlugin.READ_LIBTIFF  # a Pillow global, read when the file is opened
    TiffImagePlugin.READ_LIBTIFF = True
    try:
        return Image.open(source)
    finally:
        TiffImagePlugin.READ_LIBTIFF = before


@lru_cache(maxsize=8)  # keyed by the profile's bytes: a CMYK photo collection shares a few profiles
def _cmyk_transform(icc_profile: bytes):
    """littlecms' CMYK -> sRGB transform through ``icc_profile``, at the profile's own rendering intent; without
    littlecms' one-pixel cache, which a transform shared across threads (this cache's) must not have."""
    from PIL import ImageCms

    source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), "CMYK", "RGB",
                                   renderingIntent=ImageCms.getDefaultIntent(source), flags=ImageCms.Flags.NOCACHE)


def cmyk_to_rgb(im: Image.Image, icc_profile: bytes | None) -> tuple[Image.Image, str | None]:
    """A CMYK image as sRGB, and a note when its profile could not be used.

    With an embedded CMYK profile the colours go through it (littlecms, as colour-managed viewers and editors show
    the file): Pillow's profile-less formula (R = 255 - C - K, ...) gives the colours of no real press, and print
    files (a few ImageNet photos among them) carry the profile that says what their inks look like. Without a
    profile, or with one littlecms cannot use (not a CMYK profile, corrupt), that formula.
    """
    if not icc_profile:
        return im.convert("RGB"), None
    from PIL import ImageCms

    try:
        return ImageCms.applyTransform(im, _cmyk_transform(bytes(icc_profile))), None
    except (ImageCms.PyCMSError, OSError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        return im.convert("RGB"), (f"its ICC profile cannot convert CMYK ({reason}): converted to RGB without "
                                   f"colour management")


def _rawmode(im: Image.Image) -> str:
    if not im.tile:
        return ""
    args = im.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _decode_16bit_colour(path: Path, orientation: int | None, gray: bool = False) -> np.ndarray:
    """16-bit RGB(A) PNG/TIFF -> uint16 (H, W, 3 or 4) in display orientation (Pillow would drop to 8 bits);
    16-bit gray+alpha (``gray``, which OpenCV expands to BGRA) -> (H, W, 2)."""
    import cv2  # only needed here and for writing 16-bit colour

    data = path.read_bytes()
    if orientation in _ORIENT and data[:2] in (b"II", b"MM"):
        # OpenCV 5.1 turns a TIFF by its orientation tag even with IMREAD_UNCHANGED (and a PNG not): with the tag
        # set to 1 it decodes the stored pixels, turned below once, as for PNG, whatever OpenCV's version does
        try:
            data = _tiff_with_tags(data, {0x0112: (3, 1, struct.pack("<H" if data[:2] == b"II" else ">H", 1))})
        except OSError:  # not a classic TIFF (a BigTIFF): left as OpenCV turns it
            orientation = None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        raise InputError(f"{path}: a 16-bit colour image that OpenCV cannot decode (truncated or corrupt, or a "
                         f"compression it lacks); re-save it as 16-bit PNG from a complete copy")
    if arr.ndim == 3 and gray and arr.shape[2] == 4:
        arr = arr[..., [0, 3]]
    elif arr.ndim == 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]] if arr.shape[2] in (3, 4) else arr  # OpenCV keeps BGR(A)
    if orientation in _ORIENT:
        arr = _ORIENT[orientation](arr)
    return np.ascontiguousarray(arr)


def _float_image(path: Path, im: Image.Image) -> tuple[np.ndarray, float, str | None]:
    """A float (mode F) image -> (values scaled to [0, 1], peak, note); refused when its range has no meaning."""
    arr = np.asarray(im, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: a float image holding NaN or infinite values; fix or mask them first")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < 0:
        raise InputError(f"{path}: a float image with negative values (range [{lo:g}, {hi:g}]); "
                         f"rescale it to [0, 1] first")
    for peak in (1.0, 255.0, 65535.0):
        if hi <= peak:
            note = None if peak == 1 else (f"{path}: float values in [0, {peak:g}]: read as [0, 1] (divided by "
                                           f"{peak:g}); the output is written back in [0, {peak:g}]")
            return arr / np.float32(peak), peak, note
    raise InputError(f"{path}: a float image with values up to {hi:g} (above 65535, so no known range); "
                     f"rescale it to [0, 1] first")


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> LoadedImage:
    """Read one image file for restoration, or raise `InputError` naming the file and why it cannot be used.

    Args:
        path: the file.
        max_pixels: refuse images with more pixels than this (default: `pixel_budget()`); a small file can
            declare billions of pixels (a decompression bomb).
    """
    path = Path(path)
    budget = max_pixels or pixel_budget()
    note = None
    try:
        with _pillow_limit(), open_image(path) as im:
            w, h = im.size
            if w * h > budget:
                raise InputError(f"{path}: {w}x{h} = {w * h} pixels is over the budget of {budget}; raise it with "
                                 f"--max-pixels or {MAX_PIXELS_ENV} if the file is trusted")
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise InputError(f"{path}: {frames} frames; restore run handles single images; split it first "
                                 f"(one file per frame)")
            # before getexif(), which decodes PNGs and so forgets how their pixels were stored
            deep = im.mode in ("RGB", "RGBA", "LA") and ";16" in _rawmode(im)
            gray = _rawmode(im).startswith("LA")  # Pillow opens 16-bit gray+alpha PNGs as mode RGBA
            icc = im.info.get("icc_profile") or None
            try:
                orientation = im.getexif().get(0x0112)
            except Exception:  # noqa: BLE001 - a broken EXIF block does not make the pixels unusable
                orientation, note = None, f"{path}: unreadable EXIF data; orientation not applied"
            if deep:
                arr = _decode_16bit_colour(path, orientation, gray)
                if gray and path.suffix.lower() != ".png":
                    note = note or (f"{path}: 16-bit gray+alpha is restored as gray and written as 16-bit RGBA "
                                    f"with equal colour channels (no TIFF writer here keeps 16-bit gray+alpha; "
                                    f"PNG does)")
                return LoadedImage(arr, icc_profile=icc, note=note)
            im.load()  # decodes now: a truncated file fails here, not half-way through the work
            if orientation not in (None, 1):
                im = ImageOps.exif_transpose(im)  # also drops the tag, so nothing downstream rotates twice
            else:
                im = im.copy()
            if im.mode == "CMYK":  # to sRGB through its profile; the CMYK profile would mislabel the RGB output
                im, why = cmyk_to_rgb(im, icc)
                icc, note = None, note or (why and f"{path}: {why}")
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(f"{path}: {err}; raise the budget with --max-pixels or {MAX_PIXELS_ENV}") from None
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure means "not a usable image", named with its cause
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"{path}: not a readable image ({reason})") from None
    if im.mode == "F":
        arr, peak, scale_note = _float_image(path, im)
        return LoadedImage(arr, float_peak=peak, icc_profile=icc, note=scale_note or note)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im)
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise InputError(f"{path}: 32-bit integer values in [{lo}, {hi}], outside 16 bits; rescale it first")
        key = im.info.get("transparency")
        if isinstance(key, int):  # a 16-bit gray PNG's tRNS colour key
            return LoadedImage(colour_key_alpha(arr.astype(np.uint16), key), icc_profile=icc, note=note)
        im = Image.fromarray(arr.astype(np.uint16))
    return LoadedImage(im, icc_profile=icc, note=note)


def colour_key_alpha(gray: np.ndarray, key: int) -> np.ndarray:
    """16-bit gray (H, W) with a PNG tRNS colour key (PNG spec 11.3.2.1: pixels equal to it are fully transparent,
    all others opaque) -> gray+alpha (H, W, 2) uint16. Pillow keeps the key of a 16-bit gray PNG only as
    ``info["transparency"]``, and OpenCV ignores it."""
    alpha = np.where(gray == key, 0, 65535).astype(np.uint16)
    return np.stack([gray.astype(np.uint16), alpha], axis=-1)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _read(path: str | os.PathLike) -> tuple[torch.Tensor, float]:
    """(C, H, W) tensor and the value of white: integers with 255 or 65535, or float32 with 1.0 (float files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    image = load_image(path).image
    if isinstance(image, np.ndarray):
        if image.dtype.kind == "f":
            return torch.from_numpy(image.copy())[None], 1.0
        arr = image.astype(np.int32)  # 16-bit colour (H, W, C); alpha dropped like below
        arr = arr[..., :1] if arr.shape[2] == 2 else arr[..., :3]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), 65535
    im = image
    if im.mode == "I;16":
        arr = np.asarray(im, dtype=np.int32)[None]  # (1, H, W), 16-bit grayscale
        return torch.from_numpy(arr.copy()), 65535
    if im.mode not in ("L", "RGB"):
        im = im.convert("L" if im.mode in ("LA", "1", "La") else "RGB")
    arr = np.array(im, dtype=np.uint8)  # a writable copy
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)
    return torch.from_numpy(np.ascontiguousarray(arr)), 255


def read_image_raw(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Read an image with its stored values: ((C, H, W) integer tensor, max value 255 or 65535).

    Grayscale files give C = 1, colour files C = 3; alpha is dropped, palette images are expanded to RGB; the EXIF
    orientation is applied. Float files have no stored integer values: read them with `read_image`.
    """
    raw, peak = _read(path)
    if raw.is_floating_point():
        raise InputError(f"{path}: a float image has no integer values; read it with read_image (float in [0, 1])")
    return raw, int(peak)


def read_image(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Read an image as a (C, H, W) float tensor in [0, 1] (C = 1 for grayscale, 3 for colour).

    Pass ``dtype=torch.uint8`` to get the stored 8-bit values instead (an error for 16-bit and float files).
    """
    raw, peak = _read(path)
    if dtype == torch.uint8:
        if peak != 255:
            kind = "a float" if raw.is_floating_point() else "a 16-bit"
            raise ValueError(f"{str(path)!r} is {kind} image; read it as float (dtype=torch.float32) instead")
        return raw.to(torch.uint8)
    if not dtype.is_floating_point:
        raise ValueError(f"read_image returns float or uint8 tensors, got dtype={dtype}")
    return raw.to(torch.float64).div_(peak).to(dtype)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] -> uint8 the field's way: clamp, ``round(x * 255)`` (uint8 input is returned as is)."""
    if x.dtype == torch.uint8:
        return x
    return (x.detach().to(torch.float64).clamp(0, 1) * 255).round().to(torch.uint8)


def _encode_16bit_colour(arr: np.ndarray, path: Path, icc_profile: bytes | None = None) -> bytes:
    """uint16 (H, W, 3 or 4) RGB(A), or (H, W, 2) gray+alpha (a TIFF as RGBA with equal colour channels) -> PNG
    or TIFF bytes (OpenCV: Pillow cannot write 16-bit colour), with ``icc_profile`` embedded."""
    import cv2

    ext = path.suffix.lower()
    if ext not in (".png", ".tif", ".tiff"):
        raise ValueError(f"{path}: 16-bit colour can be written as .png or .tif, not {ext or 'no suffix'}")
    if ext == ".png" and arr.shape[2] == 2:
        data = _png16_gray_alpha(arr)
    else:
        order = [0, 0, 0, 1] if arr.shape[2] == 2 else [2, 1, 0, 3][: arr.shape[2]]
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr[..., order]))
        if not ok:
            raise OSError(f"{path}: OpenCV could not encode a {arr.shape} {arr.dtype} image as {ext}")
        data = buf.tobytes()
    if ext == ".png":
        return _png_with_icc(data, icc_profile) if icc_profile else data
    order = "<" if data[:2] == b"II" else ">"
    tags = {}
    if arr.shape[2] in (2, 4):  # ExtraSamples 2, unassociated alpha (OpenCV leaves the fourth sample undeclared)
        tags[338] = (3, 1, (2).to_bytes(2, "little" if order == "<" else "big"))
    if icc_profile:  # ICC profile (TIFF/EP; ICC spec annex B), UNDEFINED bytes; OpenCV writes none
        tags[34675] = (7, len(icc_profile), icc_profile)
    return _tiff_with_tags(data, tags) if tags else data


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk (PNG spec 5.3): length, type, data, CRC-32 of type and data."""

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png16_gray_alpha(arr: np.ndarray) -> bytes:
    """uint16 (H, W, 2) gray+alpha -> PNG bytes of colour type 4, bit depth 16 (neither OpenCV nor Pillow writes
    one). Every scanline uses the Sub filter (PNG spec 9.2, type 1: each byte minus the byte one pixel, 4 bytes,
    to its left, modulo 256), which compresses smooth images far better than none."""

    h, w = arr.shape[:2]
    raw = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, w * 4)
    rows = np.empty((h, 1 + w * 4), np.uint8)
    rows[:, 0] = 1
    rows[:, 1:5] = raw[:, :4]
    rows[:, 5:] = raw[:, 4:] - raw[:, :-4]  # uint8 arithmetic wraps: modulo 256
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0))  # colour type 4, no interlace
    return (b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _png_chunk(b"IEND", b""))


def _png_with_icc(data: bytes, icc_profile: bytes) -> bytes:
    """PNG bytes with an iCCP chunk (PNG spec 11.3.3.3: name, NUL, method 0, zlib data) right after IHDR, where
    the spec wants it (before PLTE and IDAT); OpenCV's encoder writes none."""

    chunk = _png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile))
    ihdr_end = 8 + 8 + 13 + 4  # signature, then IHDR: length, type, 13 bytes of data, CRC
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def _tiff_with_tags(data: bytes, tags: dict[int, tuple[int, int, bytes]]) -> bytes:
    """TIFF bytes with ``tags`` ({tag: (TIFF type, count, value bytes in the file's byte order)}) set in the first
    IFD. The values and a copy of the IFD with the tags, in ascending tag order as TIFF 6.0 requires, are appended
    and the header points to the new IFD; nothing before is moved."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or struct.unpack(order + "H", data[2:4])[0] != 42:
        raise OSError("not a classic TIFF header (a BigTIFF?); cannot set its tags")
    ifd = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[ifd : ifd + 2])[0]
    entries = {struct.unpack(order + "H", e[:2])[0]: e
               for e in (data[ifd + 2 + 12 * i : ifd + 14 + 12 * i] for i in range(count))}
    next_ifd = data[ifd + 2 + 12 * count : ifd + 6 + 12 * count]
    out = bytearray(data) + b"\0" * (len(data) % 2)  # TIFF offsets are word aligned
    for tag, (kind, n, value) in tags.items():
        if len(value) <= 4:  # fits the entry itself, left-justified
            field = value.ljust(4, b"\0")
        else:
            field = struct.pack(order + "I", len(out))
            out += value + b"\0" * (len(value) % 2)
        entries[tag] = struct.pack(order + "HHI", tag, kind, n) + field
    out[4:8] = struct.pack(order + "I", len(out))
    out += struct.pack(order + "H", len(entries)) + b"".join(entries[t] for t in sorted(entries)) + next_ifd
    return bytes(out)


def write_image(image: Image.Image | np.ndarray, path: str | os.PathLike, float_peak: float | None = None,
                icc_profile: bytes | None = None) -> Path:
    """Write what `load_image` (or `restore.restore_image` on its result) gives, atomically; format from the suffix.

    Args:
        image: a PIL image, or a numpy array: uint8/uint16 (H, W[, C]) (16-bit colour goes through OpenCV,
            16-bit gray+alpha PNG through our own encoder), or float
            (H, W) in [0, 1], written as a float TIFF multiplied by ``float_peak``.
        path: destination.
        float_peak: see `LoadedImage.float_peak`.
        icc_profile: embedded where the format can hold one (PNG, TIFF, JPEG, WebP).
    """
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16 and image.ndim == 3 and image.shape[2] in (2, 3, 4):
            data = _encode_16bit_colour(image, path, icc_profile)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
            return path
        if image.dtype.kind == "f":
            if image.ndim != 2:
                raise ValueError(f"{path}: float images are written as one channel (H, W), got {image.shape}")
            image = Image.fromarray(image.astype(np.float32) * np.float32(float_peak or 1.0))
        else:
            image = Image.fromarray(image)
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix; use .png, .tif, .bmp, .jpg or .webp")
    params = {"icc_profile": icc_profile} if icc_profile and fmt in ("PNG", "TIFF", "JPEG", "WEBP") else {}
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **params)
    return path


def save_image(x: torch.Tensor, path: str | os.PathLike, bits: int = 8) -> Path:
    """Save a (C, H, W) or (1, C, H, W) image (float in [0, 1], or uint8) atomically; C = 1 or 3.

    Args:
        x: the image; float values are clamped to [0, 1] and rounded.
        path: destination; the format follows the suffix (PNG recommended: lossless).
        bits: 8, or 16 for a 16-bit PNG (or TIFF).
    """
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"save_image saves one image; got a batch of {x.shape[0]}: save them one by one")
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects (C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")
    if bits == 16:
        arr = (x.detach().to(torch.float64).clamp(0, 1) * 65535).round().to(torch.int32).cpu().numpy()
        arr = arr.astype(np.uint16).transpose(1, 2, 0)  # (H, W, C)
        return write_image(arr[..., 0] if arr.shape[2] == 1 else arr, path)
    if bits != 8:
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    arr = to_uint8(x).cpu().numpy()
    return write_image(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0), path)


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
    # the temporary name is cut short: `.NAME.XXXXXXXX.SUFFIX` of a name near the 255-byte limit would not fit
    suffix = path.suffix if len(path.suffix) <= 16 else ""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:40]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
