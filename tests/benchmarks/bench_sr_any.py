"""One model for every scale vs fixed tails: the tiny EDT body trained on ``sr_any`` against the same body with fixed
``sr_x2``/``sr_x4`` tails, scored on Set5 and Set14 at x2, x3, x4 and x6, x8 (out of distribution) against bicubic.

    DS_ACCELERATOR=cpu nice -n 10 .venv/bin/python tests/benchmarks/bench_sr_any.py [--steps 150] [--limit 2] [--out D]
    DS_ACCELERATOR=cpu .venv/bin/python tests/benchmarks/bench_sr_any.py --steps 1000 --limit 0 --threads 1  # README
    DS_ACCELERATOR=cpu nice -n 10 .venv/bin/python tests/benchmarks/bench_sr_any.py --memory --out D

- Budget: the same number of optimizer steps for both models (``--steps``), not a wall-clock budget, so the result
  does not depend on the machine's load. Both see 4 HR crops per step: ``sr_any`` 4 patches at scales drawn from
  [1, 4] (LIIF's protocol, scored on ``min(2304, lr_patch**2)`` sampled HR pixels each), the fixed model 2 per tail
  (EDT mode: one body pass for both tasks, each scored on all its pixels). Equal steps are not equal FLOPs.
- Both run ``finetune``'s ``smoke`` recipe (AdamW 5e-4 constant) on the shared ImageNet sample from the same init:
  ``make demo``'s multi-task pretrained edt_tiny (``demo-out/work/pretrained``) where it exists, else from scratch
  (``--init none``: edt_tiny, window (4, 8), one head block); ``--init`` picks another. From the pretrained init
  the fixed model keeps its pretrained sr_x2/sr_x4 heads and tails, and ``sr_any`` gets a fresh head and tail on
  the pretrained body. The implicit tail is LTE, narrowed to the tiny body (hidden [64, 64], 64 frequencies) so
  that scoring every output pixel of Set14 at five scales fits the run.
- Scores: `tasks.evaluate` (PSNR on Y; integer scales use the benchmarks' stored LR files and ``crop_border = s``,
  as LIIF's benchmark scripts do); bicubic is MATLAB's, on the same pairs. The fixed-tail model has no x3, x6 or x8
  tail: n/a.
- ``--limit N`` scores the first N images (by name) of each benchmark: on a loaded 2-core box every output pixel
  costs tens of microseconds, and Set14 alone has 3.3 M of them per scale.
- ``--memory``: only the peak RSS of a tiled 4K-output ``sr_any`` inference (960x540 input at x4, tile 128, the
  default overlap 32) with the ``sr_any`` model trained into ``--out``, in a fresh subprocess (`common.peak_rss_mb`);
  a separate run, as it decodes 16 M queries (tiles overlap).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CORPUS = Path(os.environ.get("RESTORE_SHARED", "/work/shared")) / "corpus" / "imagenet-sample"
DEMO_PRETRAINED = Path(__file__).resolve().parents[2] / "demo-out" / "work" / "pretrained"
SCALES = (2, 3, 4, 6, 8)
TRAINED_UP_TO = 4  # sr_any's training range is [1, 4]
BENCHMARKS = ("Set5", "Set14")
ARCH = 'arch={"window_size": [4, 8], "head_depth": 1, "implicit_hidden": [64, 64], "implicit_dim": 64}'

MEMORY_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {here!r})
from common import peak_rss_mb
from restore.inference import restore_image
from restore.model import RestorationModel
model = RestorationModel.from_pretrained({model!r}).eval()
torch.manual_seed(0)
before = peak_rss_mb()
with torch.no_grad():
    out = restore_image(model, torch.rand(1, 3, 540, 960), task="sr_any", scale=4, tile=128)
print(before, peak_rss_mb(), *out.shape[-2:])
"""


def narrowed_init(init: str, out: Path) -> str:
    """``init`` with a fresh ``sr_any`` head and the narrowed LTE tail on its body, saved to ``out``."""
    from restore.model import RestorationModel

    model = RestorationModel.from_pretrained(init)
    model.arch.update(json.loads(ARCH.split("=", 1)[1]))  # the body keys equal the demo's; the implicit keys are new
    model.add_task("sr_any").keep_tasks(["sr_any"])
    model.save_pretrained(out)
    return str(out)


def train(init: str, folder: Path, out: Path, tasks: list[str], batch: int, steps: int, lr_patch: int) -> Path:
    """``finetune --init INIT --recipe smoke`` for ``steps`` steps; returns the ``last`` export."""
    from finetune.cli import main

    arch = [ARCH] if init == "none" else []
    code = main(["--init", init, "--task", *tasks, "--train", str(folder), "--recipe", "smoke", "--out", str(out),
                 *arch, f"steps={steps}", f"batch_size={batch}", f"lr_patch={lr_patch}", f"ckpt_every={steps}",
                 "val_every=0", f"log_every={max(1, steps // 4)}"])
    if code != 0:
        raise SystemExit(f"finetune {tasks} failed with exit code {code}")
    return out / "last"


def scores(model, limit: int | None) -> dict[tuple[str, int], float]:
    """PSNR (Y) per (benchmark, scale) of ``model`` ("bicubic" for the baseline), at the scales it serves."""
    import tasks
    from tasks.evaluate import bicubic_baseline

    out = {}
    for bench in BENCHMARKS:
        for s in SCALES:
            if model == "bicubic":
                fn, task, kw = bicubic_baseline(f"sr_x{s}"), f"sr_x{s}", {}
            elif "sr_any" in model.tasks:
                fn, task, kw = model, "sr_any", {"scale": s}
            elif f"sr_x{s}" in model.tasks:
                fn, task, kw = model, f"sr_x{s}", {}
            else:
                continue
            out[(bench, s)] = float(tasks.evaluate(fn, bench, task=task, limit=limit, **kw).psnr)
    return out


def memory(export: Path) -> tuple[float, float, int, int]:
    """(peak RSS MB after loading, peak RSS MB after the 4K inference, out_h, out_w), in a fresh process."""
    here = Path(__file__).resolve().parent
    script = MEMORY_SCRIPT.format(root=str(here.parents[1]), here=str(here), model=str(export))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, peak, h, w = res.stdout.split()[-4:]
    return float(before), float(peak), int(h), int(w)


def table(results: dict[str, dict[tuple[str, int], float]]) -> str:
    head = "| model | " + " | ".join(f"{b} x{s}{' (OOD)' if s > TRAINED_UP_TO else ''}" for b in BENCHMARKS
                                      for s in SCALES) + " |"
    lines = [head, "|---|" + "---|" * (len(BENCHMARKS) * len(SCALES))]
    for name, got in results.items():
        cells = [f"{got[(b, s)]:.2f}" if (b, s) in got else "n/a" for b in BENCHMARKS for s in SCALES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150, help="optimizer steps of each model (default 150)")
    p.add_argument("--lr-patch", type=int, default=16, help="LR patch side of both models (default 16)")
    p.add_argument("--limit", type=int, default=2,
                   help="score the first N images of each benchmark (default 2; 0: every image)")
    p.add_argument("--out", default=None, help="keep the runs in this folder (default: a temporary one)")
    p.add_argument("--memory", action="store_true", help="only measure the 4K inference of --out's sr_any model")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--init", default=str(DEMO_PRETRAINED) if DEMO_PRETRAINED.is_dir() else "none",
                   help="init of both models (default: make demo's pretrained edt_tiny where it exists, else none)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.limit = args.limit or None

    import torch

    torch.set_num_threads(args.threads)
    if args.memory:
        if args.out is None:
            raise SystemExit("--memory needs --out, the folder of an earlier run")
        t0 = time.time()
        loaded, peak, out_h, out_w = memory(Path(args.out) / "sr_any" / "last")
        print(f"tiled 4K sr_any inference (960x540 -> {out_w}x{out_h}, x4, tile 128): peak RSS {peak:.0f} MB "
              f"({loaded:.0f} MB after loading the model), {time.time() - t0:.0f} s")
        return 0
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(args.out) if args.out else Path(tmp_name)
        folder = tmp / "corpus"
        folder.mkdir(parents=True)
        for f in sorted(CORPUS.glob("*.JPEG")):
            (folder / f.name).symlink_to(f)
        exports, seconds = {}, {}
        any_init = args.init if args.init == "none" else narrowed_init(args.init, tmp / "sr_any_init")
        for name, init, tasks, batch in (("sr_any", any_init, ["sr_any"], 4),
                                         ("fixed", args.init, ["sr_x2", "sr_x4"], 2)):
            t0 = time.time()
            exports[name] = train(init, folder, tmp / name, tasks, batch, args.steps, args.lr_patch)
            seconds[name] = time.time() - t0
        from restore.model import RestorationModel

        t0 = time.time()
        results = {"bicubic": scores("bicubic", args.limit)}
        for name, label in (("sr_any", "sr_any (one LTE tail)"), ("fixed", "fixed sr_x2 + sr_x4 tails")):
            results[label] = scores(RestorationModel.from_pretrained(str(exports[name])).eval(), args.limit)
        seconds["eval"] = time.time() - t0

    init = "make demo's pretrained edt_tiny" if args.init == str(DEMO_PRETRAINED) else f"--init {args.init}"
    print(f"\nSet5/Set14 PSNR (Y, dB), from {init}, {args.steps} steps each, LR patch {args.lr_patch}, "
          "4 HR crops per step"
          f"{f', first {args.limit} images' if args.limit else ''}:\n")
    print(table(results))
    any_label = "sr_any (one LTE tail)"
    beaten = [k for k, v in results[any_label].items() if v <= results["bicubic"][k]]
    print(f"\nsr_any beats bicubic at every scale: {not beaten}" + (f" (not at {beaten})" if beaten else ""))
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + f", total {time.time() - started:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "init": args.init, "steps": args.steps, "lr_patch": args.lr_patch, "limit": args.limit, "seconds": seconds,
            "psnr": {name: {f"{b} x{s}": v for (b, s), v in got.items()} for name, got in results.items()},
        }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
