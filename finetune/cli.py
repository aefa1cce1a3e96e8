"""The ``finetune`` command: one run from a pretrained checkpoint to a validated, exported, optionally published model.

    finetune --init org/restore-edt-b --task sr_x4 --train data/DF2K --val Set5 Set14 --recipe edt --out runs/ft
    finetune --init runs/pretrain/checkpoints/step-50000 --task sr_x3 --train data/DIV2K ...   # new head, raw ckpt
    finetune --init none --variant edt_b --task sr_x4 --train data/DF2K --val Set5              # from scratch
    finetune ... --push-to-hub org/name --revision v1.0
    deepspeed --num_gpus 8 --module finetune.cli --init ... (same arguments)
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from tasks.errors import at_least

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finetune", description="Fine-tune a pretrained restoration model on one or more tasks.",
        epilog="Trailing key=value arguments override the recipe (e.g. steps=2000 val_every=500 lr_patch=64).",
    )
    p.add_argument("--init", help="Hub id, exported folder, pretraining run or step-N folder, or 'none'")
    p.add_argument("--task", nargs="+", dest="tasks", help="task(s) to fine-tune, e.g. sr_x4 (kept or added)")
    p.add_argument("--train", nargs="+", help="training data: image folder(s), DIV2K-style HR + LR_bicubic/X<s>, "
                   "rainy/ + norain/, or shards")
    p.add_argument("--val", nargs="*", default=[], help="benchmarks (names or folders); the first one's PSNR "
                   "on the first task picks the best checkpoint")
    p.add_argument("--recipe", default="edt", help="fine-tuning recipe (default edt; see --list-recipes)")
    p.add_argument("--out", default=None, help="run folder (default runs/finetune-<task>)")
    p.add_argument("--variant", default=None, help="architecture for --init none (from scratch)")
    p.add_argument("--init-revision", default=None, help="Hub branch, tag or sha of --init")
    p.add_argument("--init-ema", action="store_true", help="start from a raw checkpoint's EMA weights")
    p.add_argument("--val-limit", type=at_least(1), default=None, metavar="N",
                   help="score only the first N images per benchmark (N >= 1)")
    p.add_argument("--benchmarks-root", default=None, help="folder holding the benchmarks (default: RESTORE_BENCHMARKS "
                   "or ../shared/benchmarks)")
    p.add_argument("--resume", default=None, help="'auto' (latest complete checkpoint in --out) or a step-N folder")
    p.add_argument("--push-to-hub", default=None, metavar="ORG/NAME", help="upload the best export to this Hub repo")
    p.add_argument("--revision", default=None, help="tag the pushed commit with this name (e.g. v1.0)")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--base-model", default=None, help="Hub id of a local --init, for the card's lineage")
    p.add_argument("--name", dest="model_name", default=None, help="model name in the card")
    p.add_argument("--data-name", default=None, help="training data name in the card")
    p.add_argument("--list-recipes", action="store_true", help="list the fine-tuning recipes and exit")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed adds it
    p.add_argument("overrides", nargs="*", help="recipe overrides key=value")
    return p


def _split_overrides(values: list[str] | None) -> tuple[list[str], list[str]]:
    """argparse's nargs='+' swallows trailing key=value overrides; give them back."""
    values = list(values or [])
    keep = [v for v in values if not ("=" in v and not v.startswith("-") and "/" not in v.split("=", 1)[0])]
    return keep, [v for v in values if v not in keep]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit codes 0 done, 1 failed during the work, 2 bad input, 130 interrupted (``tasks.errors``)."""
    from tasks.errors import run_command

    return run_command("finetune", _main, argv)


def _main(argv: list[str]) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = list(args.overrides)
    for name in ("tasks", "train", "val"):
        keep, moved = _split_overrides(getattr(args, name))
        setattr(args, name, keep)
        overrides += moved
    if extra and all("=" in x and not x.startswith("-") for x in extra):
        overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    from finetune.recipes import get_recipe, list_recipes

    if args.list_recipes:
        print("\n".join(list_recipes()))
        return 0
    missing = [flag for flag, v in (("--init", args.init), ("--task", args.tasks), ("--train", args.train)) if not v]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    # bad input raises (tasks.errors.InputError and kin) and `run_command` makes it one line and exit 2
    recipe = get_recipe(args.recipe, overrides)
    from finetune.train import FinetuneConfig, run_finetune
    from pretrain.launch import setup_single_rank_env

    if args.local_rank is not None:
        setup_single_rank_env(args.local_rank)
    cfg = FinetuneConfig(
        init=args.init, tasks=args.tasks, train=args.train, val=args.val, recipe=recipe,
        out=args.out or f"runs/finetune-{'-'.join(args.tasks)}", variant=args.variant,
        init_revision=args.init_revision, init_ema=args.init_ema, val_limit=args.val_limit,
        benchmarks_root=args.benchmarks_root, resume=args.resume, push_to_hub=args.push_to_hub,
        revision=args.revision, private=args.private, base_model=args.base_model, model_name=args.model_name,
        data_name=args.data_name,
    )
    result = run_finetune(cfg)
    if os.environ.get("RANK", "0") == "0":
        if result.skipped:  # training goes on without them, as pretraining does; each is named here
            redrawn = result.skips.get("corrupt", 0)
            print(f"skipped {len(result.skipped)} unreadable file(s)"
                  + (f" ({redrawn} training sample(s) redrawn)" if redrawn else "") + ":")
            for path, why in result.skipped[:50]:
                print(f"  skipped {path}: {why}")
            if len(result.skipped) > 50:
                print(f"  ... {len(result.skipped) - 50} more in {cfg.out}/summary.json")
        if result.best:
            scores = ", ".join(f"{k} {v:.3f}" for k, v in result.best["metrics"].items() if k.endswith("psnr"))
            print(f"best at step {result.best['step']}: {scores} -> {result.best_dir}")
        print(f"last (step {result.step}) -> {result.last_dir}")
        if result.pushed:
            tag = f", tag {args.revision}" if args.revision else ""
            print(f"pushed to {args.push_to_hub} (commit {result.pushed}{tag})")
    return 0


def entry() -> None:
    """The ``finetune`` program (console script, ``python -m finetune[.cli]``): `main` through
    `pretrain.launch.exit_program`."""
    from pretrain.launch import exit_program

    exit_program(main)


if __name__ == "__main__":
    entry()
