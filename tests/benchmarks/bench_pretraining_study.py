"""Does pretraining pay, and which pretraining? Every strategy of issue 15 at equal compute, scored on held-out data.

    DS_ACCELERATOR=cpu nice -n 10 .venv/bin/python tests/benchmarks/bench_pretraining_study.py --out /tmp/study
    (GPU: --variant edt_b --pretrain-steps 20000 --finetune-steps 5000; --toy for the test suite's few-step run)

Arms (strategies), each pretrained for the same ``--pretrain-steps`` on shards of the shared ImageNet sample with
about ``--patches`` training patches per step (EDT mode: that many split over its tasks, IPT mode and single-task
arms: that many of one task), then exported (`pretrain.export`, which drops the ``masked`` head):

- ``scratch``: no pretraining (fine-tuning builds the same architecture from random weights);
- ``same-task``: ``sr_x4`` only (HAT-style);
- ``multi-task EDT``: sr_x2, sr_x3, sr_x4, denoise_g25, derain, all in every step (EDT);
- ``multi-task IPT``: the same tasks, one random task per step (IPT);
- ``masked``: the self-supervised masked task alone (RAM-style, the recipe's mask options);
- ``masked + multi-task``: the masked task beside the five supervised ones, EDT mode.

Cells: each arm's export is fine-tuned for the same ``--finetune-steps`` (``finetune``'s ``smoke`` recipe, constant
LR) on ``sr_x4`` with 8 and with 64 training images, and on ``denoise_g50`` (a sigma no arm pretrains on) with 8.
The fine-tuning images are the first 64 files of the sorted corpus; pretraining uses only the others, so no
fine-tuning image is seen in pretraining. Scores are the **last** weights (no selection), on held-out benchmarks:
Set14 for sr_x4, McMaster (first 4 images, for time) for denoise_g50. The curves are validation on the first
2 images of Set5 (both tasks), which select nothing and are never the reported benchmark.

Seeds are at the fine-tuning level (``--seeds``: data order, crops, noise, new heads, scratch weights); each arm is
pretrained once (seed 0), so the spread is that of fine-tuning from one pretrained model. Writes ``study.json``,
``study.md`` (the table) and ``study.png`` (curves and final PSNR per arm) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

CORPUS = Path(os.environ.get("RESTORE_SHARED", "/work/shared")) / "corpus" / "imagenet-sample"
SUPERVISED = ("sr_x2", "sr_x3", "sr_x4", "denoise_g25", "derain")
# arm -> (mode, pretraining tasks); None: no pretraining
ARMS: dict[str, tuple[str, tuple[str, ...]] | None] = {
    "scratch": None,
    "same-task": ("edt", ("sr_x4",)),
    "multi-task EDT": ("edt", SUPERVISED),
    "multi-task IPT": ("ipt", SUPERVISED),
    "masked": ("edt", ("masked",)),
    "masked + multi-task": ("edt", ("masked",) + SUPERVISED),
}
FINETUNE_POOL = 64  # the first files of the sorted corpus, kept out of pretraining
# what each variant trains with: the tiny one at the `smoke` recipes' sizes, edt_b at the edt_b recipe's patches
VARIANTS = {
    "edt_tiny": {"arch": '{"window_size": [4, 8], "head_depth": 1}', "lr_patch": 16, "dn_patch": 32,
                 "pretrain_lr": 1e-3, "finetune_lr": 5e-4, "precision": "fp32"},
    "edt_b": {"arch": "", "lr_patch": 48, "dn_patch": 192, "pretrain_lr": 2e-4, "finetune_lr": 1e-4,
              "precision": "bf16"},
}


@dataclass(frozen=True)
class Cell:
    """One fine-tuning setting: a task, how many training images, the curve benchmark and the reported one."""

    task: str
    images: int
    curve: str
    test: str
    test_limit: int | None = None

    @property
    def name(self) -> str:
        return f"{self.task} / {self.images} img"


CELLS = (Cell("sr_x4", 8, "Set5", "Set14"), Cell("sr_x4", 64, "Set5", "Set14"),
         Cell("denoise_g50", 8, "Set5", "McMaster", test_limit=4))


@dataclass(frozen=True)
class Budget:
    pretrain_steps: int
    finetune_steps: int
    seeds: int
    variant: str
    patches: int
    cells: tuple[Cell, ...]
    curve_points: int = 2  # validations per fine-tuning run after the step-0 one
    curve_limit: int = 2  # images of the curve benchmark scored at each validation
    thumbnail: int | None = None  # shrink every image to this side first (the toy run)
    eval_limit: int | None = None  # score only this many benchmark images (the toy run)


def toy_budget(variant: str) -> Budget:
    """A few steps per arm, one seed, thumbnails, one image per benchmark, the sr_x4 cell only (the denoise cell
    runs the same code with another task): the pipeline end to end for the test, in about a minute on 2 cores."""
    cells = (Cell("sr_x4", 2, "Set5", "Set14"),)
    v = VARIANTS[variant]
    side = max(128, 4 * v["lr_patch"], v["dn_patch"])  # the largest HR patch of any task (sr_x4, denoise/derain)
    return Budget(pretrain_steps=2, finetune_steps=2, seeds=1, variant=variant, patches=2, cells=cells,
                  curve_points=1, curve_limit=1, thumbnail=side, eval_limit=1)


# ---- data ------------------------------------------------------------------------------------------------------


def stage_images(files: list[Path], folder: Path, thumbnail: int | None) -> Path:
    """``files`` in ``folder`` as links, or as PNG thumbnails of side ``thumbnail`` (quick decoding)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        if thumbnail is None:
            (folder / f.name).symlink_to(f)
            continue
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((thumbnail, thumbnail))
            im.save(folder / f"{f.stem}.png")
    return folder


def prepare_data(work: Path, budget: Budget) -> tuple[str, dict[int, Path]]:
    """Pretraining shard URLs (built once, from the corpus minus the fine-tuning pool) and a folder per size."""
    from pretrain.shards import build_shards

    files = sorted(CORPUS.glob("*.JPEG"))
    sizes = sorted({c.images for c in budget.cells})
    pool, rest = files[:FINETUNE_POOL], files[FINETUNE_POOL:]
    if budget.thumbnail:
        rest = rest[:6]
    if len(pool) < max(sizes) or not rest:
        raise ValueError(f"{CORPUS} holds {len(files)} images; the study needs more than {FINETUNE_POOL}")
    src = stage_images(rest, work / "pretrain-images" / "n00000000", budget.thumbnail).parent
    urls = build_shards(src, str(work / "shards" / "train-%04d.tar"), maxcount=64, workers=1, progress=False).urls
    folders = {n: stage_images(pool[:n], work / f"finetune-{n}", budget.thumbnail) for n in sizes}
    return urls, folders


# ---- runs ------------------------------------------------------------------------------------------------------


def per_task_batch(mode: str, tasks: tuple[str, ...], patches: int) -> int:
    """The recipe's ``batch_size`` giving about ``patches`` patches per step (EDT mode counts it per task)."""
    return max(1, round(patches / len(tasks))) if mode == "edt" else patches


def pretrain_arm(arm: str, spec: tuple[str, tuple[str, ...]], urls: str, work: Path, budget: Budget) -> Path:
    """Pretrain one arm for ``budget.pretrain_steps`` and export it; returns the export folder."""
    from pretrain.export import export_checkpoint
    from pretrain.recipes import get_recipe
    from pretrain.train import run_pretraining

    mode, tasks = spec
    v, steps = VARIANTS[budget.variant], budget.pretrain_steps
    recipe = get_recipe("smoke", [
        f"variant={budget.variant}", f"arch={v['arch']}", f"lr_patch={v['lr_patch']}", f"dn_patch={v['dn_patch']}",
        f"precision={v['precision']}", f"lr={v['pretrain_lr']}", f"tasks={','.join(tasks)}", f"mode={mode}",
        f"batch_size={per_task_batch(mode, tasks, budget.patches)}", f"steps={steps}", f"ckpt_every={steps}",
        f"log_every={max(1, steps // 5)}", f"warmup_steps={min(10, steps // 10)}", "ema=0", "num_workers=0",
        "keep_last=1", "seed=0"])
    run = work / "pretrain" / slug(arm)
    run_pretraining(recipe, run_dir=run, data=urls)
    return export_checkpoint(run, work / "exports" / slug(arm))


def finetune_cell(init: Path | None, cell: Cell, seed: int, folder: Path, out: Path, budget: Budget) -> dict:
    """Fine-tune ``init`` (None: scratch) on one cell with one seed; the curve and the held-out score of the
    last weights."""
    import tasks as tasks_lib
    from finetune.recipes import get_recipe
    from finetune.train import FinetuneConfig, run_finetune
    from restore.model import RestorationModel

    v, steps = VARIANTS[budget.variant], budget.finetune_steps
    recipe = get_recipe("smoke", [
        f"variant={budget.variant}", f"arch={v['arch']}", f"lr_patch={v['lr_patch']}", f"dn_patch={v['dn_patch']}",
        f"precision={v['precision']}", f"lr={v['finetune_lr']}", f"steps={steps}", f"ckpt_every={steps}",
        f"val_every={max(1, steps // budget.curve_points)}", f"log_every={max(1, steps // 5)}", f"seed={seed}",
        "keep_last=1"])
    torch.manual_seed(seed)  # scratch weights and new heads are drawn before the run seeds itself
    t0 = time.time()
    result = run_finetune(FinetuneConfig(
        init=str(init) if init else "none", tasks=[cell.task], train=[str(folder)], val=[cell.curve],
        recipe=recipe, out=out, variant=budget.variant if init is None else None, val_limit=budget.curve_limit))
    seconds = time.time() - t0
    model = RestorationModel.from_pretrained(str(result.last_dir)).eval()
    limit = budget.eval_limit or cell.test_limit
    device = "cuda" if torch.cuda.is_available() else None
    score = tasks_lib.evaluate(model.to(device or "cpu"), cell.test, cell.task, limit=limit, device=device)
    key = f"{cell.task}/{cell.curve}/psnr"
    return {"seed": seed, "psnr": float(score.psnr), "ssim": float(score.ssim), "images": len(score.per_image),
            "train_seconds": seconds, "curve": [(h["step"], h[key]) for h in result.history]}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


# ---- report ----------------------------------------------------------------------------------------------------


def cell_stats(runs: list[dict]) -> dict:
    """Mean, sample std (0 for one seed), min and max of the held-out PSNR over seeds."""
    values = [r["psnr"] for r in runs]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def markdown(study: dict) -> str:
    """The table: mean ± std (min-max) of the held-out PSNR per arm and cell, the gap to scratch, the wall time."""
    cells = study["cells"]
    head = "| arm | " + " | ".join(f"{c['name']}: {c['test']} PSNR" for c in cells) + \
        " | pretrain s | fine-tune s (all cells, seeds) |"
    lines = [head, "|---" * (len(cells) + 3) + "|"]
    scratch = study["arms"].get("scratch")
    for arm, res in study["arms"].items():
        parts = []
        for c in cells:
            s = res["cells"][c["name"]]["stats"]
            gap = "" if scratch is None or arm == "scratch" else \
                f" [{s['mean'] - scratch['cells'][c['name']]['stats']['mean']:+.2f}]"
            parts.append(f"{s['mean']:.2f} ± {s['std']:.2f} ({s['min']:.2f}-{s['max']:.2f}){gap}")
        ft = sum(r["train_seconds"] for c in res["cells"].values() for r in c["runs"])
        lines.append(f"| {arm} | " + " | ".join(parts) + f" | {res['pretrain_seconds']:.0f} | {ft:.0f} |")
    return "\n".join(lines)


def plot(study: dict, path: Path) -> list[str]:
    """Validation curves (mean over seeds) per arm above, final held-out PSNR (mean, min-max bar) below; returns
    the arms the legend names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.io import atomic_path

    cells = study["cells"]
    fig, axes = plt.subplots(2, len(cells), figsize=(4.2 * len(cells), 7), squeeze=False)
    arms = list(study["arms"])
    for j, c in enumerate(cells):
        top, bottom = axes[0][j], axes[1][j]
        for i, arm in enumerate(arms):
            runs = study["arms"][arm]["cells"][c["name"]]["runs"]
            steps = [s for s, _ in runs[0]["curve"]]
            mean = [statistics.fmean(r["curve"][k][1] for r in runs) for k in range(len(steps))]
            top.plot(steps, mean, marker="o", ms=3, label=arm)
            s = study["arms"][arm]["cells"][c["name"]]["stats"]
            bottom.errorbar([i], [s["mean"]], yerr=[[s["mean"] - s["min"]], [s["max"] - s["mean"]]], fmt="o",
                            capsize=4)
        top.set_title(f"{c['name']}: {c['curve']} (curve)", fontsize=9)
        top.set_xlabel("fine-tuning step")
        top.set_ylabel("PSNR (dB)")
        bottom.set_title(f"{c['name']}: {c['test']} (held out), last weights", fontsize=9)
        bottom.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=8)
        bottom.set_ylabel("PSNR (dB), mean and min-max")
    legend = axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{study['variant']}: {study['pretrain_steps']} pretraining + {study['finetune_steps']} "
                 f"fine-tuning steps, {study['seeds']} seed(s)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return [t.get_text() for t in legend.get_texts()]


def write_outputs(study: dict, out: Path) -> str:
    from tasks.io import atomic_path

    table = markdown(study)
    for name, text in (("study.json", json.dumps(study, indent=1)), ("study.md", table + "\n")):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    plot(study, out / "study.png")
    return table


# ---- entry -----------------------------------------------------------------------------------------------------


def run_study(budget: Budget, out: Path) -> dict:
    """Every arm: pretrain (timed), then every cell x seed fine-tuned and scored; the results as a dict."""
    work = out / "work"
    if work.exists():
        raise ValueError(f"{work} exists from an earlier study: pass another --out or remove it")
    urls, folders = prepare_data(work, budget)
    study = {"variant": budget.variant, "pretrain_steps": budget.pretrain_steps,
             "finetune_steps": budget.finetune_steps, "seeds": budget.seeds, "patches_per_step": budget.patches,
             "cells": [{"name": c.name, "task": c.task, "images": c.images, "curve": c.curve, "test": c.test,
                        "test_images": budget.eval_limit or c.test_limit, "curve_images": budget.curve_limit}
                       for c in budget.cells], "arms": {}}
    for arm, spec in ARMS.items():
        t0 = time.time()
        init = pretrain_arm(arm, spec, urls, work, budget) if spec else None
        patches = per_task_batch(*spec, budget.patches) * (len(spec[1]) if spec[0] == "edt" else 1) if spec else 0
        res = {"pretrain_tasks": list(spec[1]) if spec else [], "mode": spec[0] if spec else None,
               "pretrain_patches_per_step": patches, "pretrain_seconds": time.time() - t0, "cells": {}}
        for c in budget.cells:
            runs = [finetune_cell(init, c, seed, folders[c.images], work / "finetune" / slug(arm) /
                                  f"{slug(c.name)}-s{seed}", budget) for seed in range(budget.seeds)]
            res["cells"][c.name] = {"runs": runs, "stats": cell_stats(runs)}
        res["wall_seconds"] = time.time() - t0
        study["arms"][arm] = res
        print(f"[study] {arm}: {res['wall_seconds']:.0f} s", flush=True)
    return study


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain-steps", type=int, default=100)
    ap.add_argument("--finetune-steps", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per cell (default 3)")
    ap.add_argument("--variant", default="edt_tiny", choices=sorted(VARIANTS))
    ap.add_argument("--patches", type=int, default=10, help="training patches per pretraining step (default 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the box is shared)")
    ap.add_argument("--out", required=True, type=Path, help="folder for study.json, study.md, study.png")
    ap.add_argument("--toy", action="store_true", help="a few steps per arm, 1 seed, thumbnails (the test)")
    args = ap.parse_args(argv)
    for name in ("pretrain_steps", "finetune_steps", "seeds", "patches", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    budget = toy_budget(args.variant) if args.toy else Budget(
        args.pretrain_steps, args.finetune_steps, args.seeds, args.variant, args.patches, CELLS)
    t0 = time.time()
    study = run_study(budget, args.out)
    study["wall_seconds"] = time.time() - t0
    table = write_outputs(study, args.out)
    print(f"\n{budget.variant}, {budget.pretrain_steps} pretraining steps (~{budget.patches} patches each), "
          f"{budget.finetune_steps} fine-tuning steps, {budget.seeds} seed(s); held-out PSNR of the last weights, "
          f"mean ± std (min-max) [gap to scratch]; {study['wall_seconds'] / 60:.1f} min\n{table}\n"
          f"written to {args.out}")
    return study


if __name__ == "__main__":
    main()
