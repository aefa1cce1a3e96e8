"""What the demo reports: the training-curve plot, ``summary.json`` and the closing console report (score table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.demo_process import StageClock
from finetune.demo_stages import PRETRAIN_TASKS, TASK, DemoRun, EvalSet, Finetuned, Pretrained
from pretrain.checkpoint import atomic_write_text
from tasks.io import atomic_path

if TYPE_CHECKING:
    from tasks.evaluate import EvalResult

__all__ = ["plot_curves", "write_summary", "summary_table", "build_summary", "print_outcome"]


def plot_curves(pretrain_log: list[dict], finetune_log: list[dict], history: list[dict[str, Any]], path: Path, *,
                metric: str, bicubic: float | None = None) -> Path:
    """Two panels: pretraining L1 per task vs step; fine-tuning L1 and validation PSNR (``metric``) vs step."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    keys = sorted({k for r in pretrain_log for k in r if k.startswith("loss:")})
    for k in keys:
        pts = [(r["step"], r[k]) for r in pretrain_log if k in r]
        ax1.plot(*zip(*pts), label=k[len("loss:"):])
    ax1.set(title="Pretraining (multi-task)", xlabel="step", ylabel="L1 loss")
    ax1.set_yscale("log")
    if keys:
        ax1.legend()
    pts = [(r["step"], r["loss"]) for r in finetune_log if "loss" in r]
    if pts:
        steps, losses = zip(*pts)
        ax2.plot(steps, losses, color="tab:blue", alpha=0.3)
        ax2.plot(steps, _moving_average(losses, 9), color="tab:blue", label="L1 loss (moving average)")
    ax2.set(title=f"Fine-tuning {metric.split('/')[0]}", xlabel="step", ylabel="L1 loss")
    ax3 = ax2.twinx()
    val = [(h["step"], h[metric]) for h in history if metric in h]
    if val:
        ax3.plot(*zip(*val), "o-", color="tab:red", label=f"validation PSNR ({metric.split('/')[1]})")
    if bicubic is not None:
        ax3.axhline(bicubic, ls="--", color="gray", label=f"bicubic {bicubic:.2f} dB")
    ax3.set_ylabel("PSNR (dB)")
    handles = ax2.get_legend_handles_labels()[0] + ax3.get_legend_handles_labels()[0]
    if handles:
        ax2.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.15),
                   ncol=3, fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _moving_average(values: tuple[float, ...] | list[float], width: int) -> list[float]:
    """Centred moving average (shorter windows at the ends): the per-interval losses of small batches are noisy."""
    half = width // 2
    return [sum(values[max(0, i - half) : i + half + 1]) / len(values[max(0, i - half) : i + half + 1])
            for i in range(len(values))]


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    """``summary.json``, written atomically."""
    atomic_write_text(path, json.dumps(summary, indent=1))
    return path


def summary_table(rows: list[tuple[str, float, float]], title: str) -> str:
    """A small fixed-width table: one row per model with PSNR and SSIM."""
    width = max([5] + [len(name) for name, _, _ in rows])
    lines = [title, f"  {'model':<{width}} {'PSNR (dB)':>9} {'SSIM':>7}"]
    lines += [f"  {name:<{width}} {p:>9.2f} {s:>7.4f}" for name, p, s in rows]
    return "\n".join(lines)


def build_summary(run: DemoRun, corpus: dict[str, Any], evalset: EvalSet, pre: Pretrained, ft: Finetuned,
                  scores: dict[str, EvalResult], picture: dict[str, Any], clock: StageClock) -> dict[str, Any]:
    """The content of ``summary.json``: scores, corpus, both runs, the picture's crop, timings and file paths."""
    bicubic, fine_tuned = scores["bicubic"].psnr, scores["fine-tuned (shipped in model/)"].psnr
    return {
        "evaluation": {"benchmark": evalset.name, "folder": str(evalset.folder), "task": TASK,
                       "images": run.settings.val_limit or "all",
                       "protocol": "PSNR/SSIM on Y, border 2 px cropped (tasks.evaluate)",
                       "scores": {k: {"psnr": round(v.psnr, 4), "ssim": round(v.ssim, 4)} for k, v in scores.items()},
                       "fine_tuned_minus_bicubic_db": round(fine_tuned - bicubic, 4)},
        "corpus": {k: corpus[k] for k in ("source", "train", "heldout")},
        "pretraining": {"recipe": "smoke", "tasks": list(PRETRAIN_TASKS), "ranks": run.ranks, "steps": pre.steps,
                        "stopped_by_budget": pre.stopped, "overrides": list(run.settings.pretrain),
                        "seconds_per_step": round(pre.seconds_per_step, 3) if pre.seconds_per_step else None,
                        "run": str(pre.run), "export": str(pre.export)},
        "finetuning": {"recipe": "smoke", "task": TASK, "steps_planned": ft.steps,
                       "steps_done": ft.log[-1]["step"] if ft.log else 0, "stopped_by_budget": ft.stopped,
                       "overrides": [f"steps={ft.steps}", f"val_every={ft.val_every}", *run.settings.finetune],
                       "exported": ft.exported, "validation_history": ft.history, "run": str(ft.run)},
        "picture": picture,
        "stage_seconds": clock.stages,
        "total_seconds": clock.seconds(),
        "files": {"model": str(ft.model), "before_after": str(run.out / "before_after.png"),
                  "training_curves": str(run.out / "training_curves.png"), "summary": str(run.out / "summary.json"),
                  "logs": str(run.logs)},
    }


def print_outcome(summary: dict[str, Any], scores: dict[str, EvalResult], clock: StageClock) -> None:
    """The closing console report: the score table, the gain over bicubic, the timings and where the outputs are."""
    ev, limit = summary["evaluation"], summary["evaluation"]["images"]
    n_img = "all images" if limit == "all" else f"first {limit} image(s)"
    print("\n" + summary_table([(k, v.psnr, v.ssim) for k, v in scores.items()],
                               f"{ev['benchmark']} x2 ({n_img}; Y channel, MATLAB bicubic LR):"), flush=True)
    gain = scores["fine-tuned (shipped in model/)"].psnr - scores["bicubic"].psnr
    print(f"  fine-tuned is {gain:+.2f} dB vs bicubic ({'above' if gain > 0 else 'NOT above'} bicubic)", flush=True)
    print(f"\nTotal {clock.elapsed()}. Stages: " + ", ".join(f"{k.split(' (')[0]} {v:.0f}s"
                                                           for k, v in clock.stages.items()))
    model = summary["files"]["model"]
    print(f"Outputs in {Path(model).parent}:\n  model/             hub-ready folder (model.safetensors, config.json, "
          f"README.md card)\n  before_after.png   bicubic | ours | ground truth ({summary['picture']['image']})"
          f"\n  training_curves.png\n  summary.json\n  work/              corpus, shards, runs and logs", flush=True)
    print(f"Try it: restore run IMAGE --model {model} --task {TASK} -o OUT_DIR", flush=True)
