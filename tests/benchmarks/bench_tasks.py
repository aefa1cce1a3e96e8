"""Speed of tasks/: MATLAB imresize against basicsr's NumPy reference, and degradation throughput.

    make install                             # brings the reference, basicsr-fixed (BasicSR 1.4.2's code), --no-deps
    .venv/bin/python tests/benchmarks/bench_tasks.py [--threads 1] [--repeat 7] [--imresize-only]

Not a test (pytest does not collect tests/benchmarks). imresize rows: per image size, the time of
``basicsr.utils.matlab_functions.imresize`` (NumPy (H, W, C) in, one image; it computes in float32 whatever it is
given) and of ``tasks.imresize`` on the same image in float64 (the exact path: MATLAB's sums) and in float32, the three
calls alternating in one process (`common.alternate`, median of the repeats), with the speed ratio and the largest
difference from the reference; the issue-17 target is >= 5x at DIV2K size on one thread. Then each task's
``degrade`` throughput on batches of 48x48-LR training patches (HR 48*s for SR, 48x48 and 192x192 for the others).
``--threads 1`` (default) gives per-core numbers (the reference runs torch ops, so it obeys the same setting).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from common import Row, alternate, command, machine, markdown, time_ratio_note  # also puts the repo on sys.path

import tasks

IMRESIZE_CASES = [("192x192 training patch, x4 down", 192, 192, 1 / 4), ("510x510, x3 down", 510, 510, 1 / 3),
                  ("2040x1356 (DIV2K), x4 down", 1356, 2040, 1 / 4), ("128x128, x4 up", 128, 128, 4.0)]
IMRESIZE_TARGET = 5.0  # issue 17: >= 5x the reference at DIV2K size, float32 and float64, one thread


def _time(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _basicsr_imresize():
    try:
        import torchvision.transforms.functional as tvf

        # basicsr 1.4.2 imports a torchvision module removed in 0.17; its contents moved to functional
        sys.modules.setdefault("torchvision.transforms.functional_tensor", tvf)
        from basicsr.utils.matlab_functions import imresize as ref
    except ImportError as err:
        print(f"basicsr is not installed ({err}); `make install` puts basicsr-fixed (the reference) in .venv")
        return None
    return ref


def imresize_rows(repeats: int) -> list[Row]:
    """Ours (float64 and float32) against basicsr, alternating in this process, one row per size and dtype."""
    ref = _basicsr_imresize()
    rng = np.random.default_rng(0)
    rows = []
    for label, h, w, s in IMRESIZE_CASES:
        img = rng.random((h, w, 3))  # basicsr takes (H, W, C) NumPy
        x64 = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
        ours = {"float64": x64, "float32": x64.float()}
        fns = {dtype: (lambda x=x: tasks.imresize(x, s)) for dtype, x in ours.items()}
        if ref is not None:
            fns["ref"] = lambda: ref(img, s)
        t = alternate(fns, repeats=repeats)
        target = IMRESIZE_TARGET if w == 2040 else None
        for dtype, x in ours.items():
            what = f"imresize {label}, {dtype}"
            if ref is None:
                rows.append(Row("degradation (CPU)", what, t[dtype], None, "s", None, note="basicsr not installed",
                                machine=machine()))
                continue
            diff = np.abs(ref(img, s) - tasks.imresize(x, s)[0].double().numpy().transpose(1, 2, 0)).max() * 255
            ratio = t["ref"] / t[dtype]
            rows.append(Row("degradation (CPU)", what, t[dtype], t["ref"], "s", ratio,
                            reference_name="basicsr 1.4.2 NumPy",
                            note=f"{time_ratio_note(ratio, target)}; max diff {diff:.1e}/255", machine=machine()))
    return rows


def bench_imresize(repeat: int) -> None:
    rows = imresize_rows(repeat)
    for r in rows:
        r.command = command()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n## imresize (one RGB image, float in [0, 1]; load average {load})\n\n{markdown(rows)}")


def bench_degradations(repeat: int, batch: int) -> None:
    print(f"\n## degrade throughput (batch {batch}, float32, CPU)\n")
    print("| task | HR patch | LR patch | ms / batch | patches / s |")
    print("|---|---|---|---|---|")
    rows = [(f"sr_x{s}", 48 * s) for s in (2, 3, 4)]
    rows += [(name, size) for name in ("denoise_g25", "derain_light", "derain_heavy", "derain") for size in (48, 192)]
    rows += [("realsr_x2", 96), ("realsr_x4", 192), ("bsrgan_x4", 192)]  # the blind pipelines, image by image
    for name, size in rows:
        task = tasks.get_task(name)
        hr = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        t = _time(lambda: task.degrade(hr, g), repeat)
        lr = size // task.scale
        print(f"| {name} | {size}x{size} | {lr}x{lr} | {t * 1e3:.1f} | {batch / t:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description="tasks/ speed benchmark")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: per-core numbers)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--imresize-only", action="store_true", help="skip the degradation throughput table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), numpy {np.__version__}")
    bench_imresize(args.repeat)
    if not args.imresize_only:
        bench_degradations(args.repeat, args.batch)


if __name__ == "__main__":
    main()
