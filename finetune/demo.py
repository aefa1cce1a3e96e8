"""``make demo``: the whole platform on a laptop CPU in minutes, on photographs that ship with scikit-image.

    python -m finetune.demo                      # embedded corpus, outputs in demo-out/
    python -m finetune.demo --data DIR --out X   # any image folder instead (e.g. ../shared/corpus/imagenet-sample)
    python -m finetune.demo --quick              # a one-minute pass through every stage (the tests run it)

Stages, each the real command a user would type (printed before it runs, its full log in ``OUT/work/logs``):
  1. stage the corpus: the real photographs in ``skimage/data`` (no download), or ``--data DIR``;
  2. ``pretrain shards``: webdataset shards;
  3. ``deepspeed --module pretrain.cli run --recipe smoke``: multi-task pretraining (SR x2/x4, denoising,
     deraining in one body pass, EDT-style) on two ranks when the machine has two cores;
  4. ``pretrain export``: the hub folder of the pretrained model;
  5. ``finetune --recipe smoke --task sr_x2``: fine-tuning from the export, validated on Set5 (or held-out
     embedded images when the benchmarks are not on the machine);
  6. scoring (``tasks.evaluate``: bicubic vs pretrained-only vs fine-tuned), the before/after picture, the
     training-curve plot and ``summary.json``.

Every long stage runs under a wall-clock budget: pretraining that overruns is stopped and its latest complete
checkpoint exported; the fine-tuning step count is sized from the measured pretraining speed, and the run is stopped
at its budget all the same (its last validated export is kept). The pipeline is that of EDT (Li et al., "On
Efficient Transformer-Based Image Pre-training for Low-Level Vision", IJCAI 2023): multi-task pretraining, then
single-task fine-tuning, at toy scale.

This module holds the settings and the order of the stages; the stages are in `finetune.demo_stages`, the commands
run under `finetune.demo_process`, the corpus comes from `finetune.demo_corpus`, the outputs are written by
`finetune.demo_report`, and its picture by `finetune.picture.before_after_picture`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune import demo_stages as stages
from finetune.demo_corpus import EMBEDDED_PHOTOS, HELD_OUT, embedded_photo_dir, stage_corpus
from finetune.picture import before_after_picture
from finetune.demo_process import StageClock, run_stage
from finetune.demo_report import build_summary, plot_curves, print_outcome, summary_table, write_summary
from finetune.demo_stages import PRETRAIN_TASKS, TASK, read_log

__all__ = [
    "EMBEDDED_PHOTOS", "HELD_OUT", "DemoSettings", "QUICK", "FULL", "embedded_photo_dir", "stage_corpus",
    "plot_curves", "before_after_picture", "write_summary", "read_log", "run_demo", "main",
    "run_stage", "summary_table", "PRETRAIN_TASKS", "TASK",
]



@dataclass(frozen=True)
class DemoSettings:
    """Step counts, patch sizes and budgets of one demo run (`FULL` for ``make demo``, `QUICK` for tests).

    Budgets are wall-clock seconds; ``validations`` is how many times fine-tuning scores the evaluation set (besides
    step 0). ``ft_steps`` is an upper bound: the step count is sized so that fine-tuning fits
    ``ft_budget_s`` at the speed pretraining showed (``ft_step_cost`` = one fine-tuning step's time over one
    pretraining step's, measured on this machine), and never below ``ft_min_steps``.
    """

    pretrain: tuple[str, ...]
    pretrain_budget_s: float
    finetune: tuple[str, ...]
    ft_steps: int
    ft_min_steps: int
    ft_budget_s: float
    ft_step_cost: float
    validations: int = 5
    val_limit: int | None = None


FULL = DemoSettings(
    # 4 tasks x 4 patches per rank per step (LR 16 px; 32 px for denoise/derain, the same 16 px body features)
    pretrain=("steps=300", "batch_size=4", "lr=2e-3", "warmup_steps=20", "min_lr=2e-5", "ema=0", "ckpt_every=30",
              "log_every=10", "keep_last=2", "num_workers=1"),
    pretrain_budget_s=360,
    # 4 LR patches of 24 px (48 px HR) per rank and step
    finetune=("batch_size=4", "lr_patch=24", "lr=1e-3", "schedule=cosine", "min_lr=1e-5", "warmup_steps=0",
              "log_every=10", "keep_last=1", "num_workers=1"),
    ft_steps=1500,
    ft_min_steps=150,
    ft_budget_s=300,
    ft_step_cost=0.35,
)
QUICK = DemoSettings(
    pretrain=("steps=4", "batch_size=1", "ckpt_every=2", "log_every=1", "keep_last=1", "num_workers=0", "ema=0",
              "warmup_steps=0"),
    pretrain_budget_s=120,
    finetune=("batch_size=1", "log_every=1", "keep_last=1", "num_workers=0"),
    ft_steps=4,
    ft_min_steps=4,
    ft_budget_s=120,
    ft_step_cost=1.0,
    validations=2,
    val_limit=1,
)


def run_demo(out: str | Path = "demo-out", data: str | None = None, *, settings: DemoSettings = FULL,
             ranks: int | None = None) -> dict[str, Any]:
    """Run every stage into ``out`` and return the summary (also written to ``out/summary.json``).

    Args:
        out: the output folder; its ``work/`` (corpus, shards, runs, logs) is rebuilt on every run.
        data: an image folder to use instead of the embedded photographs.
        settings: `FULL` (``make demo``) or `QUICK`.
        ranks: DeepSpeed ranks for pretraining and fine-tuning (default: 2 on a machine with 2 cores or more).
    """
    clock = StageClock(total=7)
    out = Path(out).resolve()
    stages.prepare_work(out)
    cores = os.cpu_count() or 1
    run = stages.DemoRun(out, settings, data, ranks or (2 if cores >= 2 else 1), cores)
    print(f"Restore demo: {'quick pass' if settings is QUICK else 'full run'}, {cores} cores, {run.ranks} DeepSpeed "
          f"rank(s), output {out}", flush=True)
    with clock.stage(1, "stage the corpus"):
        corpus, evalset = stages.corpus_and_eval_set(run)
    with clock.stage(2, "build webdataset shards (pretrain shards)"):
        urls = stages.build_shards(run, corpus)
    with clock.stage(3, f"pretrain `smoke` on {', '.join(PRETRAIN_TASKS)} ({run.ranks} rank(s), ZeRO-2)"):
        pre = stages.pretrain(run, urls)
    with clock.stage(4, "export the pretrained model (pretrain export)"):
        stages.export_pretrained(run, pre)
    with clock.stage(5, f"fine-tune {TASK} from the export (finetune --recipe smoke, {run.ranks} rank(s))"):
        ft = stages.finetune(run, corpus, evalset, pre)
    with clock.stage(6, f"score on {evalset.name} ({TASK}, Y channel, border 2)"):
        scores = stages.score(run, evalset, pre, ft)
    with clock.stage(7, "before/after picture, training curves, summary"):
        summary = _write_outputs(run, corpus, evalset, pre, ft, scores, clock)
    summary["total_seconds"] = clock.seconds()  # now with the last stage
    write_summary(summary, out / "summary.json")
    print_outcome(summary, scores, clock)
    return summary


def _write_outputs(run: stages.DemoRun, corpus: dict[str, Any], evalset: stages.EvalSet, pre: stages.Pretrained,
                   ft: stages.Finetuned, scores: dict[str, Any], clock: StageClock) -> dict[str, Any]:
    """Stage 7: ``before_after.png`` (with the shipped model), ``training_curves.png`` and ``summary.json``."""
    from restore.model import RestorationModel

    model = RestorationModel.from_pretrained(str(ft.model)).eval()
    picture = before_after_picture(model, evalset.folder, run.out / "before_after.png")
    plot_curves(pre.log, ft.log, ft.history, run.out / "training_curves.png", metric=ft.metric,
                bicubic=scores["bicubic"].psnr)
    summary = build_summary(run, corpus, evalset, pre, ft, scores, picture, clock)
    write_summary(summary, run.out / "summary.json")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.demo", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="image folder to use instead of scikit-image's bundled photographs")
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out; its work/ is rebuilt)")
    p.add_argument("--quick", action="store_true", help="a few steps per stage: checks the pipeline in about a minute")
    p.add_argument("--ranks", type=int, default=None, help="DeepSpeed ranks (default 2 on 2+ cores)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_demo(args.out, args.data, settings=QUICK if args.quick else FULL, ranks=args.ranks)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
