"""A fixed real-world-style benchmark: a test set degraded once by a blind pipeline, stored as LR files.

    python -m tasks.blind_benchmark Set14 Set5 --task realsr_x4 --seed 0 -o benchmarks-realsr
    restore eval --model ID --task realsr_x4 --benchmark benchmarks-realsr/Set14-realsr_x4 --metric lpips

The blind pipelines (`tasks.blind`) draw JPEG qualities, kernels and noise at random, and a real JPEG encoder sits
in them, so the same seed can still give different bytes on another machine or library version. Storing the LR
images makes every later run score the same inputs. Each image gets its own generator, seeded from ``seed`` and its
file name (`tasks.evaluate.blind_lr`): adding an image to the set does not change the others, and ``seed=0`` gives
what `tasks.evaluate` makes on the fly for a benchmark without stored files.

Layout of ``OUT/<Name>-<task>/``, which `tasks.evaluate.benchmark_pairs` reads like ``LR_bicubic``: ``HR/`` (the
source files, copied byte for byte), ``LR_realsr/X<s>/<name>x<s>.png`` (``LR_bsrgan`` for ``bsrgan_x4``) and
``degradation.json`` (task, seed, source). Nothing is written next to the source benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from tasks.errors import InputError
from tasks.evaluate import _load, _resolve_benchmark, blind_lr, stored_lr_folder
from tasks.io import atomic_path, list_images, save_image
from tasks.registry import get_task

__all__ = ["make_blind_benchmark", "main"]


def make_blind_benchmark(
    benchmark: str | os.PathLike, out: str | os.PathLike, task: str = "realsr_x4", *, seed: int = 0,
    root: str | os.PathLike | None = None,
) -> Path:
    """Degrade every HR image of ``benchmark`` with ``task``'s blind pipeline and store the pairs under ``out``.

    Args:
        benchmark: a dataset name under the benchmark root or a folder (as in `tasks.evaluate`).
        out: the folder that receives ``<Name>-<task>/``; it must not be inside the source benchmark.
        task: a blind SR task (``realsr_x2``, ``realsr_x4``, ``bsrgan_x4``).
        seed: the base seed; the same seed gives byte-identical files on the same software.
        root: the benchmark root (see `tasks.evaluate.benchmark_root`).

    Returns:
        The written benchmark folder, usable as ``benchmark=`` of `tasks.evaluate`.
    """
    t = get_task(task)
    if t.pipeline is None:
        raise InputError(f"{task} is not a blind task; use one of realsr_x2, realsr_x4, bsrgan_x4")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**30:
        raise InputError(f"seed must be an integer in [0, 2**30), got {seed!r}")
    name, source = _resolve_benchmark(benchmark, root)
    dest = Path(out).expanduser().resolve() / f"{name}-{t.name}"
    if dest.is_relative_to(source.resolve()):
        raise InputError(f"-o {out} is inside the source benchmark {source}; write the new benchmark elsewhere")
    hr_dir = source / "HR" if (source / "HR").is_dir() else source
    files = list_images(hr_dir)
    if not files:
        raise InputError(f"no images in {hr_dir}")
    lr_dir = dest / stored_lr_folder(t)
    for p in files:
        lq = blind_lr(_load(p), t, p.stem, seed)
        save_image(lq, lr_dir / f"{p.stem}x{t.scale}.png")
        (dest / "HR").mkdir(parents=True, exist_ok=True)
        with atomic_path(dest / "HR" / p.name) as tmp:
            shutil.copyfile(p, tmp)
    record = {"source": name, "task": t.name, "seed": seed, "images": len(files),
              "per_image_seed": "crc32('<seed>:<file stem>')"}
    with atomic_path(dest / "degradation.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return dest


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m tasks.blind_benchmark`` argument parser."""
    p = argparse.ArgumentParser(prog="python -m tasks.blind_benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("benchmark", nargs="+", help="dataset names under the benchmark root (e.g. Set14) or folders")
    p.add_argument("--task", default="realsr_x4", help="blind task: realsr_x2, realsr_x4 (default) or bsrgan_x4")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0, what evaluate uses unstored)")
    p.add_argument("--root", help="benchmark root (default: $RESTORE_BENCHMARKS, then ../shared/benchmarks)")
    p.add_argument("-o", "--output", required=True, help="folder to write <Name>-<task>/ into")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m tasks.blind_benchmark``: one stored benchmark per dataset named."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        for bench in args.benchmark:
            print(make_blind_benchmark(bench, args.output, args.task, seed=args.seed, root=args.root))
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(f"{p.prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
