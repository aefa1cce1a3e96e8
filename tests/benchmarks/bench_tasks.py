"""Speed of tasks/: MATLAB imresize against basicsr's NumPy reference, and degradation throughput.

    .venv/bin/pip install basicsr==1.4.2     # reference only (pulls opencv-python, lmdb, tb-nightly)
    .venv/bin/python tests/benchmarks/bench_tasks.py [--threads 1] [--repeat 5]

Not a test (pytest does not collect tests/benchmarks). Prints, per image size, the time of
``basicsr.utils.matlab_functions.imresize`` (float, one image) and of ``tasks.imresize`` on the same image (float64:
the exact path; float32: the training path) with the speed ratio, plus the largest difference; then each task's
``degrade`` throughput on batches of 48x48-LR training patches (HR 48*s for SR, 48x48 and 192x192 for the others).
``--threads 1`` (default) gives per-core numbers.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

import tasks


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
        print(f"basicsr is not installed ({err}); pip install basicsr==1.4.2 for the reference timings")
        return None
    return ref


def bench_imresize(repeat: int) -> None:
    ref = _basicsr_imresize()
    rng = np.random.default_rng(0)
    cases = [("training patch 192x192, x4 down", 192, 192, 1 / 4), ("510x510, x3 down", 510, 510, 1 / 3),
             ("2040x1356 (DIV2K), x4 down", 1356, 2040, 1 / 4), ("128x128, x4 up", 128, 128, 4.0)]
    print("\n## imresize (one RGB image, float in [0, 1])\n")
    print("| case | basicsr (ms) | ours float64 (ms) | ratio | ours float32 (ms) | ratio | max diff (x255) |")
    print("|---|---|---|---|---|---|---|")
    for label, h, w, s in cases:
        img = rng.random((h, w, 3))  # basicsr takes (H, W, C) NumPy
        x64 = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
        x32 = x64.float()
        t64 = _time(lambda: tasks.imresize(x64, s), repeat)
        t32 = _time(lambda: tasks.imresize(x32, s), repeat)
        if ref is not None:
            tref = _time(lambda: ref(img, s), repeat)
            diff = np.abs(ref(img, s) - tasks.imresize(x64, s)[0].numpy().transpose(1, 2, 0)).max() * 255
            print(f"| {label} | {tref * 1e3:.1f} | {t64 * 1e3:.1f} | {tref / t64:.1f}x | {t32 * 1e3:.1f} | "
                  f"{tref / t32:.1f}x | {diff:.1e} |")
        else:
            print(f"| {label} | - | {t64 * 1e3:.1f} | - | {t32 * 1e3:.1f} | - | - |")


def bench_degradations(repeat: int, batch: int) -> None:
    print(f"\n## degrade throughput (batch {batch}, float32, CPU)\n")
    print("| task | HR patch | LR patch | ms / batch | patches / s |")
    print("|---|---|---|---|---|")
    rows = [(f"sr_x{s}", 48 * s) for s in (2, 3, 4)]
    rows += [(name, size) for name in ("denoise_g25", "derain_light", "derain_heavy", "derain") for size in (48, 192)]
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
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), numpy {np.__version__}")
    bench_imresize(args.repeat)
    bench_degradations(args.repeat, args.batch)


if __name__ == "__main__":
    main()
