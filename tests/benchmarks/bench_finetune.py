"""Does pretraining pay off for the tiny variant on a CPU budget? Set5 x2 PSNR over bicubic, pretrained vs scratch.

    DS_ACCELERATOR=cpu .venv/bin/python tests/benchmarks/bench_finetune.py [--minutes 15] [--chunk 50]

The budget is split three ways (the ANCHORS.md section 4d comparison, at toy scale):

1. pretraining: ``pretrain``'s ``smoke`` recipe (edt_tiny; sr_x2, sr_x4, denoise_g25, derain in one body pass) on
   shards of the shared ImageNet sample, for a third of the budget, then ``pretrain export``;
2. fine-tuning that export for ``sr_x2`` with the ``smoke`` fine-tuning recipe on the same images, for another third;
3. the same fine-tuning from scratch (``--init none --variant edt_tiny``, same architecture) for exactly as many
   steps as (2) took.

Runs are time-capped by training in chunks of ``--chunk`` steps and resuming (the checkpoints and data positions of
``pretrain`` make the chunked run identical to an uninterrupted one; the LRs are constant). Set5 x2 (Y channel,
border 2, the stored LR images) is scored after every chunk. The reference is MATLAB bicubic on the same protocol,
computed in this process (33.66 dB published). Torch uses one thread (``--threads``): the box is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import torch  # noqa: E402

CORPUS = Path(os.environ.get("RESTORE_SHARED", "/work/shared")) / "corpus" / "imagenet-sample"
PRETRAIN = ["lr_patch=16", "dn_patch=32", "batch_size=2", "num_workers=0", "ema=0", "warmup_steps=10",
            "schedule=multistep", "milestones=", "lr=1e-3", "steps=1000000", "keep_last=1"]


def shards(tmp: Path) -> str:
    from pretrain.shards import build_shards

    src = tmp / "src" / "n00000000"
    src.mkdir(parents=True)
    for f in sorted(CORPUS.glob("*.JPEG")):
        (src / f.name).symlink_to(f)
    return build_shards(tmp / "src", str(tmp / "shards" / "train-%04d.tar"), maxcount=64, workers=1,
                        progress=False).urls


def pretrain(tmp: Path, seconds: float, chunk: int) -> tuple[Path, int]:
    from pretrain.export import export_checkpoint
    from pretrain.recipes import get_recipe
    from pretrain.train import run_pretraining

    data = shards(tmp)
    recipe = get_recipe("smoke", PRETRAIN + [f"ckpt_every={chunk}", f"log_every={chunk}"])
    run, step, t0 = tmp / "pretrain", 0, time.time()
    while time.time() - t0 < seconds:
        step = run_pretraining(recipe, run_dir=run, data=data, resume="auto", stop_after=chunk).step
    return export_checkpoint(run, tmp / "pretrained"), step


def finetune(tmp: Path, name: str, init: str, *, seconds: float | None, steps: int | None, chunk: int) -> dict:
    """Fine-tune sr_x2 in chunks until ``seconds`` pass or ``steps`` are done; returns the validation history."""
    from finetune.recipes import get_recipe
    from finetune.train import FinetuneConfig, run_finetune

    recipe = get_recipe("smoke", ["steps=1000000", f"val_every={chunk}", f"ckpt_every={chunk}", f"log_every={chunk}"])
    done, t0 = 0, time.time()
    result = None
    while (steps is None or done < steps) and (seconds is None or time.time() - t0 < seconds):
        n = chunk if steps is None else min(chunk, steps - done)
        cfg = FinetuneConfig(init=init, tasks=["sr_x2"], train=[str(CORPUS)], val=["Set5"], recipe=recipe,
                             out=tmp / name, variant="edt_tiny" if init == "none" else None, resume="auto",
                             stop_after=n)
        result = run_finetune(cfg)
        done = result.step
    return {"steps": done, "seconds": time.time() - t0, "history": result.history}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="total CPU budget (default 15)")
    ap.add_argument("--chunk", type=int, default=50, help="steps between validations (default 50)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", default=None, help="keep the runs in this folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import tasks
    from tasks.evaluate import bicubic_baseline

    bicubic = tasks.evaluate(bicubic_baseline("sr_x2"), "Set5", "sr_x2").psnr
    third = args.minutes * 60 / 3
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-finetune-"))
    tmp.mkdir(parents=True, exist_ok=True)
    t = time.time()
    export, pre_steps = pretrain(tmp, third, args.chunk)
    pre_seconds = time.time() - t
    pre = finetune(tmp, "ft-pretrained", str(export), seconds=third, steps=None, chunk=args.chunk)
    scratch = finetune(tmp, "ft-scratch", "none", seconds=None, steps=pre["steps"], chunk=args.chunk)

    def row(name: str, run: dict, pre_steps: int) -> str:
        last = run["history"][-1]["sr_x2/Set5/psnr"]
        best = max(h["sr_x2/Set5/psnr"] for h in run["history"])
        return (f"| {name} | {pre_steps} | {run['steps']} | {run['seconds'] / 60:.1f} | {last:.2f} "
                f"| {last - bicubic:+.2f} | {best:.2f} | {best - bicubic:+.2f} |")

    print(f"\nSet5 x2 (Y, border 2), edt_tiny, {args.minutes:g} min budget, {args.threads} thread(s); "
          f"pretraining {pre_steps} steps in {pre_seconds / 60:.1f} min")
    print("| init | pretrain steps | fine-tune steps | fine-tune min | last PSNR | vs bicubic | best PSNR "
          "| vs bicubic |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| bicubic | - | - | - | {bicubic:.2f} | +0.00 | {bicubic:.2f} | +0.00 |")
    print(row("pretrained (smoke)", pre, pre_steps))
    print(row("scratch", scratch, 0))
    print("\nPSNR curve (step: pretrained / scratch):")
    curves = {h["step"]: [h["sr_x2/Set5/psnr"], None] for h in pre["history"]}
    for h in scratch["history"]:
        curves.setdefault(h["step"], [None, None])[1] = h["sr_x2/Set5/psnr"]
    for step, (a, b) in sorted(curves.items()):
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        print(f"  {step:5d}: {fmt(a)} / {fmt(b)}")
    (tmp / "bench_finetune.json").write_text(json.dumps({"bicubic": bicubic, "pretrain_steps": pre_steps,
                                                          "pretrained": pre, "scratch": scratch}, indent=1))
    print(f"runs in {tmp}")


if __name__ == "__main__":
    main()
