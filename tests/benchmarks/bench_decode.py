"""JPEG decode + crop rate per core: PIL (the training stream's decoder before), torchvision.io.decode_jpeg (the
stream's decoder for RGB JPEGs now) and OpenCV.

    .venv/bin/python tests/benchmarks/bench_decode.py [--corpus /work/shared/corpus/imagenet-sample] [--repeats 3]

Issue 17 item 2. Each decoder turns the in-memory bytes of every JPEG of the corpus into (3, H, W) uint8 RGB and takes
a 192x192 crop (the pipeline's largest GT patch, SR x4 at 48x48 LR). The decoders run alternating over the whole
corpus in one process (`common.alternate`, median of the repeats), one thread (per-core rates). Rows: images/s per
core, ratio = ours / PIL (> 1: faster than PIL). Then the pixel check: per decoder, how many images decode to
exactly PIL's pixels, and the largest difference where not. The first row is PIL with only the crop turned into an
array: the stream's path (`pretrain.decode._decode_crop`) for every file but RGB JPEGs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from common import Row, alternate, command, emit, machine, parser, setup  # also puts the repo on sys.path

CROP = 192


def _pil(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:  # the training stream's decode before crop-first (the reference)
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def _pil_crop_first(data: bytes) -> torch.Tensor:
    """PIL's decode + crop as the stream does it for non-JPEG files (`pretrain.decode._decode_crop`): only the crop
    becomes an array."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        rgb = im if im.mode == "RGB" else im.convert("RGB")
        top, left = (rgb.height - CROP) // 2, (rgb.width - CROP) // 2
        return torch.from_numpy(np.array(rgb.crop((left, top, left + CROP, top + CROP)))).permute(2, 0, 1)


def _torchvision(data: bytes) -> np.ndarray:
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB).numpy()


def _opencv(data: bytes) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)


CROP_FIRST = "PIL, crop before the array (the stream's path for files other than RGB JPEGs)"
DECODERS = {"PIL": _pil, "torchvision.io.decode_jpeg": _torchvision, "cv2.imdecode": _opencv}


def _crop(chw: np.ndarray) -> torch.Tensor:
    h, w = chw.shape[1:]
    top, left = (h - CROP) // 2, (w - CROP) // 2  # fixed crop: the same pixels for every decoder
    return torch.from_numpy(np.ascontiguousarray(chw[:, top : top + CROP, left : left + CROP]))


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--corpus", default="/work/shared/corpus/imagenet-sample")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    args.threads = args.threads or 1
    setup(args)
    import cv2
    import PIL

    cv2.setNumThreads(1)
    paths = sorted(q for q in Path(args.corpus).iterdir() if q.suffix.lower() in (".jpg", ".jpeg"))
    blobs = [q.read_bytes() for q in paths]
    blobs = [b for b in blobs if min(_pil(b).shape[1:]) >= CROP]  # the stream skips images smaller than the patch
    fns = {name: (lambda fn=fn: [_crop(fn(b)) for b in blobs]) for name, fn in DECODERS.items()}
    fns[CROP_FIRST] = lambda: [_pil_crop_first(b) for b in blobs]
    t = alternate(fns, repeats=args.repeats)
    rows = []
    same = sum(torch.equal(_pil_crop_first(b), _crop(_pil(b))) for b in blobs)
    rate, ref_rate = len(blobs) / t[CROP_FIRST], len(blobs) / t["PIL"]
    rows.append(Row("data pipeline (CPU, 1 thread)", f"JPEG decode + {CROP}x{CROP} crop, {CROP_FIRST}", rate, ref_rate,
                    "images/s", rate / ref_rate, reference_name="PIL, whole image to an array, then the crop",
                    note=f"crops equal on {same}/{len(blobs)} images", machine=machine()))
    reference = [_pil(b) for b in blobs]
    for name, fn in DECODERS.items():
        rate, ref_rate = len(blobs) / t[name], len(blobs) / t["PIL"]
        same, worst = 0, 0
        for b, ref in zip(blobs, reference):
            img = fn(b)
            if img.shape == ref.shape and np.array_equal(img, ref):
                same += 1
            elif img.shape == ref.shape:
                worst = max(worst, int(np.abs(img.astype(np.int16) - ref.astype(np.int16)).max()))
            else:
                worst = -1  # a different size: never expected for JPEG
        pixels = f"pixels equal to PIL's on {same}/{len(blobs)} images" + (f", max diff {worst}" if worst else "")
        rows.append(Row("data pipeline (CPU, 1 thread)", f"JPEG decode + {CROP}x{CROP} crop, {name}", rate, ref_rate,
                        "images/s", rate / ref_rate, reference_name=f"PIL {PIL.__version__}",
                        note=f"{pixels}; {len(blobs)} images of {args.corpus}", machine=machine()))
    for r in rows:
        r.command = command(argv)
    emit(rows, args, f"JPEG decode + crop (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
