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
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from pretrain.recipes import Recipe

from tasks.errors import at_least

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pretrain", description="Multi-task restoration pretraining with DeepSpeed.")
    # the deepspeed launcher puts --local_rank=N right after the script, before the sub-command
    p.add_argument("--local_rank", "--local-rank", dest="launcher_local_rank", type=int, default=None,
                   help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("shards", help="image folder / ImageNet train tree -> webdataset tar shards",
                       description="Rerun the same command to resume; a rerun with another source or options is "
                       "refused (naming what changed) unless --force. Exit 1 when unreadable images were skipped.")
    s.add_argument("src", help="image folder or ImageNet-style class tree")
    s.add_argument("out_pattern", help="shard path pattern with one integer field, e.g. shards/train-%%06d.tar")
    s.add_argument("--maxcount", type=at_least(1), default=5000, help="most samples per shard (default 5000)")
    s.add_argument("--maxsize", type=at_least(1, float), default=1e9, help="most bytes per shard (default 1e9)")
    s.add_argument("--workers", type=at_least(1), default=None, help="parallel writers (default: all cores)")
    s.add_argument("--seed", type=int, default=0, help="shuffle seed (keep it for a resumable rerun)")
    s.add_argument("--min-size", type=at_least(0), default=0,
                   help="leave out images whose shorter side is below this (listed, but not an error)")
    s.add_argument("--force", action="store_true",
                   help="rebuild from scratch when the source or options changed since the first run, removing "
                   "the old shards of this pattern")
    s.add_argument("--allow-skips", action="store_true",
                   help="exit 0 even if unreadable images were skipped (they are still listed)")
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
    e.add_argument("--keep-masked", action="store_true",
                   help="keep the self-supervised masked task's head and tail (dropped by default)")

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
            from pretrain.shards import PARALLELISM_NOTE, build_shards

            summary = build_shards(
                args.src, args.out_pattern, maxcount=args.maxcount, maxsize=args.maxsize, workers=args.workers,
                seed=args.seed, min_size=args.min_size, progress=not args.no_progress, force=args.force,
            )
            bad, small = len(summary.unreadable), len(summary.skipped) - len(summary.unreadable)
            if summary.removed_stale:
                print(f"--force: removed {len(summary.removed_stale)} shards of the previous plan")
            print(f"{summary.samples} samples in {len(summary.shards)} shards ({summary.written_shards} written, "
                  f"{summary.reused_shards} reused; {summary.bytes / 1e6:.1f} MB), {bad} skipped as unreadable, "
                  f"{small} below --min-size, {summary.seconds:.1f}s")
            for item in summary.skipped[:50]:
                print(f"  skipped {item['path']}: {item['reason']}")
            if len(summary.skipped) > 50:
                print(f"  ... {len(summary.skipped) - 50} more in {summary.summary_file}")
            print(f"shards: {summary.urls}")
            print(f"note: {PARALLELISM_NOTE.format(n=len(summary.shards))}")
            if bad and not args.allow_skips:
                print(f"pretrain shards: {bad} unreadable image{'s' if bad > 1 else ''} skipped (listed above); the "
                      "shards are complete without them; exit 1 (--allow-skips accepts them)", file=sys.stderr)
                return 1
        elif args.command == "run":
            recipe = get_recipe(args.recipe, args.overrides)
            run_dir = _check_run(args, recipe)  # every input is checked here, before DeepSpeed is imported
            from pretrain.checkpoint import run_dir_guard
            from pretrain.launch import setup_single_rank_env
            from pretrain.train import run_pretraining

            local_rank = args.local_rank if args.local_rank is not None else args.launcher_local_rank
            setup_single_rank_env(local_rank)
            with run_dir_guard(run_dir, rank=int(os.environ.get("RANK", "0"))):
                result = run_pretraining(recipe, run_dir=run_dir, data=args.data, resume=args.resume)
            skipped = ", ".join(f"{k} {v}" for k, v in result.skips.items())
            if os.environ.get("RANK", "0") == "0":
                    print(f"done: step {result.step}, loss {result.losses.get('loss', float('nan')):.4f}, skipped: {skipped}")
        elif args.command == "export":
            from pretrain.export import export_checkpoint

            out = export_checkpoint(args.run_dir, args.out_dir, step=args.step, ema=args.ema,
                                    keep_masked=args.keep_masked)
            print(f"exported to {out}")
        elif args.command == "recipes":
            if args.name:
                print(json.dumps(get_recipe(args.name, args.overrides).to_dict(), indent=1))
            else:
                print("\n".join(list_recipes()))
    except (ValueError, FileNotFoundError) as err:
        print(f"pretrain {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)  # one line
        return 2
    return 0


def _check_run(args: argparse.Namespace, recipe: Recipe) -> Path:
    """The run folder, after refusing (exit 2) what would fail later: the folder, --resume, the shards."""
    from pretrain.checkpoint import check_resume_dir, check_run_dir
    from pretrain.data import check_shards, expand_urls, hr_patch

    run_dir = check_run_dir(args.out or f"runs/{recipe.name}", resume=args.resume, recipe_name=recipe.name)
    if args.resume not in (None, "auto"):
        check_resume_dir(args.resume)
    data = args.data or recipe.data
    if not data:
        raise ValueError("no training data: pass --data 'shards/train-{000000..000099}.tar' or set data=...")
    check_shards(expand_urls(data), max(hr_patch(t, recipe.lr_patch, recipe.dn_patch) for t in recipe.tasks))
    return run_dir


def entry() -> None:
    """The ``pretrain`` program (console script, ``python -m pretrain.cli`` under a launcher, ``python -m
    pretrain``): `main` through `pretrain.launch.exit_program`."""
    from pretrain.launch import exit_program

    exit_program(main)


if __name__ == "__main__":
    entry()
