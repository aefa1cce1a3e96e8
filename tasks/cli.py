"""``restore eval``: score a model (or the bicubic baseline) on benchmarks; print a Markdown table, write JSON.

    restore eval --model ID_OR_DIR --task sr_x4 --benchmark Set5 Set14 B100 -o results.json
    restore eval --bicubic --task sr_x2 sr_x3 sr_x4 --benchmark Set5 Set14 B100
    restore eval --model ID --task sr_any --scale 2 3 4 6 8 12 --benchmark Set5 Set14   # a column per scale
    restore eval --model ID --task realsr_x4 --benchmark Set14-realsr_x4 --metric lpips   # PSNR / SSIM / LPIPS

Everything that can be checked is checked before a model is loaded or an image scored: task names, benchmark
names, ``--device``, ``-o`` (not a folder, writable), the numeric options, ``--scale``, and with ``--metric lpips`` the
LPIPS network (its package and backbone weights, `tasks.perceptual`). A benchmark image that cannot be read
(zero bytes, truncated) or is too small to score is skipped by name: the table is printed for the rest, marked
with the number of images scored, the skipped files are listed with their reason, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from tasks.errors import InputError, at_least, check_device
from tasks.io import atomic_path
from tasks.evaluate import ENV_VAR, EvalResult, _resolve_benchmark, _sr_any_scale, bicubic_baseline, evaluate
from tasks.perceptual import BACKBONES, NETS, LPIPSMetric
from tasks.registry import Task, get_task

__all__ = ["eval_main", "build_parser", "markdown_table"]


def build_parser() -> argparse.ArgumentParser:
    """The ``restore eval`` argument parser."""
    p = argparse.ArgumentParser(
        prog="restore eval",
        description="Evaluate a restoration model on benchmarks with the field's protocol (PSNR/SSIM, and LPIPS).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="Hub id or local folder of a saved RestorationModel")
    src.add_argument(
        "--bicubic", action="store_true",
        help="score the no-model baseline: MATLAB bicubic upscaling for SR, the degraded input for other tasks",
    )
    p.add_argument("--task", nargs="+", required=True, help="task name(s), e.g. sr_x4 denoise_g25 derain")
    p.add_argument("--benchmark", nargs="+", required=True, help="dataset names (e.g. Set5 Set14 B100) or folders")
    p.add_argument("--scale", nargs="+", type=float, default=None,
                   help="--task sr_any: output scales, one column each (e.g. 2 3 4 6 8 12 or 2.5; default 4)")
    p.add_argument("--metric", nargs="+", choices=("psnr", "ssim", "lpips"), default=[],
                   help="lpips adds LPIPS beside PSNR/SSIM, which are always scored (needs restore[metrics])")
    p.add_argument("--lpips-net", choices=NETS, default="alex", help="LPIPS network (default: alex)")
    p.add_argument("--lpips-backbone", choices=BACKBONES, default="imagenet",
                   help="imagenet: torchvision's weights from the torch hub cache (default); random: seed-0 random "
                        "init, for tests only (not a perceptual score)")
    p.add_argument("--root", help=f"benchmark root (default: ${ENV_VAR}, then ../shared/benchmarks)")
    p.add_argument("--tile", type=at_least(1), default=None, help="tile size for inference (default: whole image)")
    p.add_argument("--overlap", type=at_least(0), default=32, help="tile overlap in pixels (default: 32)")
    p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble (flips and rotations)")
    p.add_argument("--device", default=None, help="torch device for the model, e.g. cuda or cpu")
    p.add_argument("--limit", type=at_least(1), default=None,
                   help="score only the first N images of each benchmark")
    p.add_argument("--round-y", action="store_true", help="round Y to uint8 before scoring (MATLAB style)")
    p.add_argument("--revision", default=None, help="Hub revision of --model")
    p.add_argument(
        "--threads", type=at_least(1), default=None,
        help="torch CPU threads (default: torch's choice; 1 is often fastest on a busy machine)",
    )
    p.add_argument("-o", "--output", help="write all results (with per-image scores) to this JSON file")
    return p


def markdown_table(results: list[EvalResult]) -> str:
    """Benchmarks as rows, tasks as columns (one per scale for ``sr_any``), cells ``PSNR / SSIM`` (``/ LPIPS``).

    A cell whose benchmark had skipped images says over how many images it was scored (``(4 of 5 images)``): its
    mean is not comparable with published tables.
    """
    tasks_ = list(dict.fromkeys(r.label for r in results))
    benches = list(dict.fromkeys(r.benchmark for r in results))

    def text(r: EvalResult) -> str:
        partial = f" ({len(r.per_image)} of {len(r.per_image) + len(r.skipped)} images)" if r.skipped else ""
        lpips = f" / {r.lpips:.4f}" if r.lpips is not None else ""
        return f"{r.psnr:.2f} / {r.ssim:.4f}{lpips}{partial}"

    cell = {(r.benchmark, r.label): text(r) for r in results}
    lines = ["| benchmark | " + " | ".join(tasks_) + " |", "|---|" + "---|" * len(tasks_)]
    for b in benches:
        lines.append(f"| {b} | " + " | ".join(cell.get((b, t), "-") for t in tasks_) + " |")
    if any(r.lpips is not None for r in results):
        lines.append("\ncells: PSNR (dB) / SSIM / LPIPS (lower is better)")
    return "\n".join(lines)


def _check_output(path: str) -> None:
    """Refuse an ``-o`` that cannot be written, before any scoring (not after minutes of work)."""
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"-o {path} is a folder; pass a file path such as {out / 'results.json'}")
    for parent in out.parents:  # the first existing ancestor is where atomic_path creates folders and the file
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"-o {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(f"-o {path}: folder {parent} is not writable")
            break
    if out.exists() and not os.access(out, os.W_OK):
        raise PermissionError(f"-o {path} exists and is not writable")


def _write_json(path: str, payload: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))


def _runs(task_objs: list[Task], scales: list[float] | None) -> list[tuple[Task, float | None]]:
    """(task, scale) per table column: ``sr_any`` once per ``--scale`` (checked here, before any work), the other
    tasks once with scale None."""
    if scales and not any(t.name == "sr_any" for t in task_objs):
        raise InputError("--scale is for --task sr_any; the other tasks have a fixed scale: drop --scale")
    for s in scales or ():
        _sr_any_scale(get_task("sr_any"), s)
    return [(t, s) for t in task_objs for s in ((scales or [None]) if t.name == "sr_any" else [None])]


def eval_main(argv: list[str] | None = None, load_model: Callable[..., Any] | None = None) -> int:
    """Entry point of ``restore eval``; returns the exit status.

    ``load_model(name_or_path, revision=, map_location=)`` loads ``--model``: the model library passes its
    ``RestorationModel.from_pretrained`` (``restore.cli``), so this package never imports it.
    """
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        # everything checkable is checked before the model loads and the first image is scored
        task_objs = [get_task(t) for t in args.task]
        runs = _runs(task_objs, args.scale)
        device = check_device(args.device, "--device")
        for bench in args.benchmark:
            _resolve_benchmark(bench, args.root)
        if args.output:
            _check_output(args.output)
        lpips = LPIPSMetric(args.lpips_net, args.lpips_backbone) if "lpips" in args.metric else False
        model = None
        if args.model:
            if load_model is None:
                raise InputError("--model needs the model library: run it as `restore eval --model ...`")
            model = load_model(args.model, revision=args.revision, map_location=device or "cpu")
            model.eval()
            missing = [t.name for t in task_objs if t.name not in list(model.tasks)]
            if missing:
                raise InputError(f"the model serves {list(model.tasks)}; it has no head for {missing}")
        elif args.tile or args.ensemble:
            raise InputError("--tile and --ensemble are inference options of --model; the bicubic baseline takes "
                             "neither")
        inference = {"tile": args.tile, "overlap": args.overlap, "ensemble": args.ensemble} if model is not None else {}
        results = []
        for bench in args.benchmark:
            for task, scale in runs:
                restorer = model if model is not None else bicubic_baseline(task, scale)
                results.append(
                    evaluate(
                        restorer, bench, task, root=args.root, device=device, **inference, limit=args.limit,
                        round_y=args.round_y, skip_unreadable=True, scale=scale, lpips=lpips,
                    )
                )
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, TypeError,
            ImportError) as err:
        print(f"restore eval: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(markdown_table(results))
    if args.output:
        _write_json(args.output, {"model": args.model or "bicubic", "results": [r.to_dict() for r in results]})
        print(f"wrote {args.output}")
    skipped = {(r.benchmark, s["name"]): s["reason"] for r in results for s in r.skipped}  # once per file, not task
    if skipped:
        print(f"restore eval: {len(skipped)} benchmark image(s) skipped (not scored; the marked means are over the "
              "rest):", file=sys.stderr)
        for (bench, name), reason in skipped.items():
            print(f"  {bench}/{name}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(eval_main())
