"""The ``pretrain`` command: ``shards``, ``run``, ``export`` and ``recipes``.

    pretrain shards /data/imagenet/train 'shards/train-%06d.tar'
    pretrain run --recipe smoke --data 'shards/train-{000000..000003}.tar' --out runs/smoke steps=100
    deepspeed --num_gpus 8 --module pretrain.cli run --recipe edt_b --data ... --out runs/edt_b --resume auto
    pretrain export runs/smoke out/smoke [--step N] [--ema]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pretrain", description="Multi-task restoration pretraining with DeepSpeed.")
    # the deepspeed launcher puts --local_rank=N right after the script, before the sub-command
    p.add_argument("--local_rank", "--local-rank", dest="launcher_local_rank", type=int, default=None,
                   help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("shards", help="image folder / ImageNet train tree -> webdataset tar shards")
    s.add_argument("src", help="image folder or ImageNet-style class tree")
    s.add_argument("out_pattern", help="shard path pattern with one integer field, e.g. shards/train-%%06d.tar")
    s.add_argument("--maxcount", type=int, default=5000, help="most samples per shard (default 5000)")
    s.add_argument("--maxsize", type=float, default=1e9, help="most bytes per shard (default 1e9)")
    s.add_argument("--workers", type=int, default=None, help="parallel writers (default: all cores)")
    s.add_argument("--seed", type=int, default=0, help="shuffle seed (keep it for a resumable rerun)")
    s.add_argument("--min-size", type=int, default=0, help="skip images whose shorter side is below this")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    r = sub.add_parser("run", help="train a recipe (plain, or under deepspeed/torchrun)")
    r.add_argument("--recipe", required=True, help="recipe name (see `pretrain recipes`)")
    r.add_argument("--data", default=None, help="shard URLs: paths, brace patterns, folders, pipe:, https://, hf://; several joined by ::")
    r.add_argument("--out", default=None, help="run folder (default runs/<recipe>)")
    r.add_argument("--resume", default=None, help="'auto' (latest complete checkpoint in --out) or a step-N folder")
    r.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed adds it
    r.add_argument("overrides", nargs="*", help="recipe overrides key=value, e.g. steps=1000 zero_stage=3")

    e = sub.add_parser("export", help="checkpoint (any ZeRO stage) -> restore hub folder")
    e.add_argument("run_dir")
    e.add_argument("out_dir")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest complete one)")
    e.add_argument("--ema", action="store_true", help="export the EMA weights")

    lr = sub.add_parser("recipes", help="list recipes, or print one resolved with overrides")
    lr.add_argument("name", nargs="?")
    lr.add_argument("overrides", nargs="*")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit codes 0 done, 1 failed during the work, 2 bad input, 130 interrupted (``tasks.errors``)."""
    from tasks.errors import run_command

    return run_command("pretrain", _main, argv)


def _main(argv: list[str]) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may come after options (`--data X steps=10`); anything else unknown is an error
    if extra and args.command in ("run", "recipes") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from pretrain.recipes import get_recipe, list_recipes

    try:
        if args.command == "shards":
            from pretrain.shards import build_shards

            summary = build_shards(
                args.src, args.out_pattern, maxcount=args.maxcount, maxsize=args.maxsize, workers=args.workers,
                seed=args.seed, min_size=args.min_size, progress=not args.no_progress,
            )
            print(f"{summary.samples} samples in {len(summary.shards)} shards ({summary.bytes / 1e6:.1f} MB, "
                  f"{summary.reused_shards} already done), {len(summary.skipped)} skipped, {summary.seconds:.1f}s")
            for item in summary.skipped[:50]:
                print(f"  skipped {item['path']}: {item['reason']}")
            if len(summary.skipped) > 50:
                print(f"  ... {len(summary.skipped) - 50} more in the summary JSON")
            print(f"shards: {summary.urls}")
        elif args.command == "run":
            from pretrain.launch import setup_single_rank_env
            from pretrain.train import run_pretraining

            local_rank = args.local_rank if args.local_rank is not None else args.launcher_local_rank
            setup_single_rank_env(local_rank)
            recipe = get_recipe(args.recipe, args.overrides)
            result = run_pretraining(recipe, run_dir=args.out or f"runs/{recipe.name}", data=args.data,
                                     resume=args.resume)
            skipped = ", ".join(f"{k} {v}" for k, v in result.skips.items())
            if os.environ.get("RANK", "0") == "0":
                    print(f"done: step {result.step}, loss {result.losses.get('loss', float('nan')):.4f}, skipped: {skipped}")
        elif args.command == "export":
            from pretrain.export import export_checkpoint

            out = export_checkpoint(args.run_dir, args.out_dir, step=args.step, ema=args.ema)
            print(f"exported to {out}")
        elif args.command == "recipes":
            if args.name:
                print(json.dumps(get_recipe(args.name, args.overrides).to_dict(), indent=1))
            else:
                print("\n".join(list_recipes()))
    except (ValueError, FileNotFoundError) as err:
        print(f"pretrain {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
