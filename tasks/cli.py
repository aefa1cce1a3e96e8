"""``restore eval``: score a model (or the bicubic baseline) on benchmarks; print a Markdown table, write JSON.

    restore eval --model ID_OR_DIR --task sr_x4 --benchmark Set5 Set14 B100 -o results.json
    restore eval --bicubic --task sr_x2 sr_x3 sr_x4 --benchmark Set5 Set14 B100
"""

from __future__ import annotations

import argparse
import json
import sys

from tasks.io import atomic_path
from tasks.evaluate import ENV_VAR, EvalResult, bicubic_baseline, evaluate
from tasks.registry import get_task

__all__ = ["eval_main", "build_parser", "markdown_table"]


def build_parser() -> argparse.ArgumentParser:
    """The ``restore eval`` argument parser."""
    p = argparse.ArgumentParser(
        prog="restore eval",
        description="Evaluate a restoration model on benchmarks with the field's protocol (PSNR/SSIM).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="Hub id or local folder of a saved RestorationModel")
    src.add_argument(
        "--bicubic", action="store_true",
        help="score the no-model baseline: MATLAB bicubic upscaling for SR, the degraded input for other tasks",
    )
    p.add_argument("--task", nargs="+", required=True, help="task name(s), e.g. sr_x4 denoise_g25 derain")
    p.add_argument("--benchmark", nargs="+", required=True, help="dataset names (e.g. Set5 Set14 B100) or folders")
    p.add_argument("--root", help=f"benchmark root (default: ${ENV_VAR}, then ../shared/benchmarks)")
    p.add_argument("--tile", type=int, default=None, help="tile size for inference (default: whole image)")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (default: 32)")
    p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble (flips and rotations)")
    p.add_argument("--device", default=None, help="torch device for the model, e.g. cuda or cpu")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images of each benchmark")
    p.add_argument("--round-y", action="store_true", help="round Y to uint8 before scoring (MATLAB style)")
    p.add_argument("--revision", default=None, help="Hub revision of --model")
    p.add_argument(
        "--threads", type=int, default=None,
        help="torch CPU threads (default: torch's choice; 1 is often fastest on a busy machine)",
    )
    p.add_argument("-o", "--output", help="write all results (with per-image scores) to this JSON file")
    return p


def markdown_table(results: list[EvalResult]) -> str:
    """Benchmarks as rows, tasks as columns, cells ``PSNR / SSIM``."""
    tasks_ = list(dict.fromkeys(r.task for r in results))
    benches = list(dict.fromkeys(r.benchmark for r in results))
    cell = {(r.benchmark, r.task): f"{r.psnr:.2f} / {r.ssim:.4f}" for r in results}
    lines = ["| benchmark | " + " | ".join(tasks_) + " |", "|---|" + "---|" * len(tasks_)]
    for b in benches:
        lines.append(f"| {b} | " + " | ".join(cell.get((b, t), "-") for t in tasks_) + " |")
    return "\n".join(lines)


def _write_json(path: str, payload: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))


def eval_main(argv: list[str] | None = None) -> int:
    """Entry point of ``restore eval``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    try:
        task_objs = [get_task(t) for t in args.task]
        model = None
        if args.model:
            import restore  # late: the baseline needs no model library

            model = restore.RestorationModel.from_pretrained(args.model, revision=args.revision)
            model.eval()
            missing = [t.name for t in task_objs if t.name not in list(model.tasks)]
            if missing:
                raise ValueError(f"the model serves {list(model.tasks)}; it has no head for {missing}")
        results = []
        for bench in args.benchmark:
            for task in task_objs:
                restorer = model if model is not None else bicubic_baseline(task)
                results.append(
                    evaluate(
                        restorer, bench, task, root=args.root, tile=args.tile, overlap=args.overlap,
                        ensemble=args.ensemble, device=args.device, limit=args.limit, round_y=args.round_y,
                    )
                )
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"restore eval: error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(results))
    if args.output:
        _write_json(args.output, {"model": args.model or "bicubic", "results": [r.to_dict() for r in results]})
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(eval_main())
