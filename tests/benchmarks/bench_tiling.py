"""Peak memory and time of `restore.restore_image` with tiling, against untiled inference, on large images.

    .venv/bin/python tests/benchmarks/bench_tiling.py [--tile 256] [--overlap 32] [--untiled-4k]

Cases: a 1024x1024 input at x4 and a 3840x2160 (4K UHD) input at x2, each restored whole and in tiles. Every
measurement runs in its own subprocess, which reports its resident-set high-water mark (``ru_maxrss``) just before
and just after the ``restore_image`` call: the difference is the call's peak memory, with no Python-level tracing
(tracemalloc would miss the allocations of ATen). Input: a float32 tensor in [0, 1]; the output buffer
(scale^2 x input) is part of every run, tiled or not, so the row also gives the *working memory* beyond the input
and output buffers (peak - input - output; it includes the clamped copy of the output that `restore_image`
returns): tiled, it must stay about the same from 1 Mpx to 8 Mpx (bounded by the tile); untiled it grows with the
image.

Model: a small SwinIR (C=16, one RSTB of 2 blocks, window 8, pixelshuffledirect), ``restore.create_model("swinir",
...)``, chosen so that a 4K image restores in seconds on a 2-core CPU; the memory argument holds for any window
body (activations scale with the tile's pixels).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common import Row, command, emit, machine, parser, setup

ARCH = dict(embed_dim=16, depths=(2,), num_heads=(2,), window_size=8, mlp_ratio=2.0,
            upsampler="pixelshuffledirect")
CASES = [("1024x1024 x4", 1024, 1024, 4), ("3840x2160 x2", 2160, 3840, 2)]


def child(spec: dict) -> dict:
    """Run one restore_image call in this (fresh) process; return time and peak memory in MB."""
    import torch

    from common import peak_rss_mb
    from restore import create_model, restore_image

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    task = f"sr_x{spec['scale']}"
    model = create_model("swinir", tasks=[task], **ARCH).eval()
    x = torch.rand(1, 3, spec["h"], spec["w"], generator=torch.Generator().manual_seed(0))
    restore_image(model, x[..., :64, :64], task, tile=spec["tile"], overlap=spec["overlap"])  # warm-up, small
    try:  # the RSS now, not the high-water mark so far (the warm-up or imports may have peaked higher)
        import psutil

        base = psutil.Process().memory_info().rss / 2**20
    except ImportError:
        base = peak_rss_mb()
    t = time.perf_counter()
    y = restore_image(model, x, task, tile=spec["tile"], overlap=spec["overlap"])
    dt = time.perf_counter() - t
    peak = peak_rss_mb()
    return {"time": dt, "peak_mb": peak - base, "base_mb": base, "out_mb": y.numel() * 4 / 2**20,
            "in_mb": x.numel() * 4 / 2**20}


def measure(h: int, w: int, scale: int, tile: int | None, overlap: int, threads: int | None) -> dict:
    spec = {"h": h, "w": w, "scale": scale, "tile": tile, "overlap": overlap, "threads": threads}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         cwd=Path(__file__).parent, check=False)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["killed"])[-1][:200], "rc": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--untiled-4k", action="store_true", help="also run the 4K image untiled (~12 GB, minutes)")
    p.add_argument("--child", help=argparse_hidden())
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    setup(args)
    rows = []
    for label, h, w, s in CASES:
        tiled = measure(h, w, s, args.tile, args.overlap, args.threads)
        skip = not args.untiled_4k and h * w > 4e6
        whole = {"error": "not run by default (--untiled-4k: ~12 GB)"} if skip else measure(h, w, s, None, args.overlap, args.threads)
        print(f"{label}: tiled {tiled}; untiled {whole}", flush=True)
        if "error" in tiled:
            rows.append(Row("tiling", f"{label} tiled: FAILED", float("nan"), None, "MB", None, note=tiled["error"],
                            command=command(), machine=machine()))
            continue
        work = tiled["peak_mb"] - tiled["in_mb"] - tiled["out_mb"]
        ok = "error" not in whole
        what = f"restore_image {label}, tile {args.tile} overlap {args.overlap}"
        rows.append(Row(
            "tiling (CPU)", f"{what}: peak memory", tiled["peak_mb"], whole["peak_mb"] if ok else None, "MB",
            whole["peak_mb"] / tiled["peak_mb"] if ok else None, reference_name="untiled" if ok else "",
            note=(f"beyond the input and output buffers ({tiled['in_mb']:.0f} + {tiled['out_mb']:.0f} MB): "
                  f"{work:.0f} MB tiled" + (f", {whole['peak_mb'] - whole['in_mb'] - whole['out_mb']:.0f} MB untiled" if ok
                     else f"; untiled: {whole['error']}")),
            command=command(), machine=machine()))
        rows.append(Row(
            "tiling (CPU)", f"{what}: time", tiled["time"], whole["time"] if ok else None, "s",
            whole["time"] / tiled["time"] if ok else None, reference_name="untiled" if ok else "",
            note=("tiles recompute the overlap, yet stay in cache: " + ("faster" if whole["time"] > tiled["time"]
                                                                     else "slower")) if ok else "", command=command(), machine=machine()))
    emit(rows, args, "Tiled inference: peak memory and time (one subprocess per measurement)")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
