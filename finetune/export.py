"""Fine-tuned exports and their publication.

An export is the `restore` hub format (``model.safetensors`` + ``config.json`` + ``README.md``) plus
``finetune.json`` (step, scores, validation history, lineage, recipe) and ``comparison.png`` (`finetune.picture`).
The card's metadata carries the validation scores as ``model-index`` results (``huggingface_hub.EvalResult``) and
the lineage as ``base_model`` (ECOSYSTEM.md section 1), so the Hub shows them and ``ModelCard.load`` re-reads them.
An ``sr_any`` model's card also lists the scales it was scored at (`sr_any_scales`): validation scores its
registered x4 (``sr_any/Set5/psnr``), and scores at other scales (``sr_any x3/Set5/psnr``, `metric_key`'s ``scale``)
join the table when they are in the metrics.

Publication uses the real ``huggingface_hub`` client: ``create_repo(exist_ok=True)``, ``upload_folder`` and, for
``--revision``, ``create_tag`` on the uploaded commit.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrain.checkpoint import atomic_write_text
from pretrain.recipes import Recipe
from restore.model import ARBITRARY_SCALE_TASK
from tasks.registry import get_task

__all__ = ["ExportInfo", "eval_results", "export_model", "push_folder", "metric_key", "sr_any_scales"]

log = logging.getLogger("finetune.export")
# sr_any's training range (tasks.degradations.sr_any_batch): scales above it are out of distribution
_SR_ANY_TRAINED_UP_TO = 4.0


def metric_key(task: str, benchmark: str, metric: str = "psnr", scale: float | None = None) -> str:
    """The name of one validation score, as logged: ``sr_x2/Set5/psnr``; ``sr_any x3/Set5/psnr`` with a scale
    (the `tasks.evaluate` result's ``label``)."""
    return f"{task if scale is None else f'{task} x{scale:g}'}/{benchmark}/{metric}"


def sr_any_scales(metrics: dict[str, float]) -> dict[float, str]:
    """The scales ``sr_any`` was scored at in ``metrics`` -> the task part of their keys, in increasing order.

    A key without a scale is validation's default, the task's registered x4; an explicit x4 score replaces it.
    """
    found: dict[float, str] = {}
    for key in metrics:
        label = key.split("/")[0]
        if label == ARBITRARY_SCALE_TASK:
            found.setdefault(float(get_task(label).scale), label)
        elif label.startswith(f"{ARBITRARY_SCALE_TASK} x"):
            found[float(label.removeprefix(f"{ARBITRARY_SCALE_TASK} x"))] = label
    return dict(sorted(found.items()))


def _score_labels(task: str, metrics: dict[str, float]) -> list[tuple[str, str]]:
    """(the task part of the metric keys, the card's task name) of each evaluation of ``task`` in ``metrics``."""
    title = get_task(task).title
    if task != ARBITRARY_SCALE_TASK:
        return [(task, title)]
    return [(label, f"{title} x{s:g}") for s, label in sr_any_scales(metrics).items()]


@dataclass
class ExportInfo:
    """What the card and ``finetune.json`` say about a run (everything but the weights and scores)."""

    recipe: Recipe
    tasks: list[str]
    benchmarks: list[str]
    init: str
    init_description: str
    data_description: str
    datasets: list[str]
    base_model: str | None = None
    model_name: str | None = None
    repo_id: str | None = None
    added_tasks: list[str] = field(default_factory=list)
    val_specs: list[str] = field(default_factory=list)  # the benchmarks as given (names or folders)


def eval_results(metrics: dict[str, float], tasks: list[str], benchmarks: list[str]) -> list:
    """``huggingface_hub.EvalResult`` entries (PSNR and SSIM per task and benchmark) for the card's model-index."""
    from huggingface_hub import EvalResult

    results = []
    for task in tasks:
        channel = "Y" if get_task(task).y_channel else "RGB"
        for scored, task_name in _score_labels(task, metrics):
            for bench in benchmarks:
                for metric, label in (("psnr", f"PSNR ({channel})"), ("ssim", f"SSIM ({channel})")):
                    value = metrics.get(metric_key(scored, bench, metric))
                    if value is None:
                        continue
                    results.append(EvalResult(
                        task_type="image-to-image", task_name=task_name, dataset_type=bench.lower(),
                        dataset_name=bench, dataset_split="test", metric_type=metric, metric_name=label,
                        metric_value=round(float(value), 4),
                    ))
    return results


def _scales_text(metrics: dict[str, float], tasks: list[str], benchmarks: list[str]) -> str | None:
    """The card's table of the scales an ``sr_any`` model was scored at (PSNR, Y), None for other models."""
    scales = sr_any_scales(metrics) if ARBITRARY_SCALE_TASK in tasks else {}
    if not scales or not benchmarks:
        return None
    lines = [f"`{ARBITRARY_SCALE_TASK}` scored at {', '.join(f'x{s:g}' for s in scales)} only (PSNR in dB on Y, "
             f"border ceil(scale); trained on scales in [1, {_SR_ANY_TRAINED_UP_TO:g}], * = out of distribution). "
             "Other scales run (`--scale`) but are not scored here.", "",
             "| scale | " + " | ".join(benchmarks) + " |", "|---|" + "---|" * len(benchmarks)]
    for s, label in scales.items():
        cells = [metrics.get(metric_key(label, b)) for b in benchmarks]
        shown = " | ".join("n/a" if v is None else f"{v:.2f}" for v in cells)
        lines.append(f"| x{s:g}{' *' if s > _SR_ANY_TRAINED_UP_TO else ''} | {shown} |")
    return "\n".join(lines)


def _training_text(info: ExportInfo, kind: str, step: int, history: list[dict[str, Any]]) -> str:
    r = info.recipe
    primary = metric_key(info.tasks[0], info.benchmarks[0]) if info.benchmarks else None
    sched = ("constant" if r.schedule == "multistep" and not r.milestones else
             f"cosine to {r.min_lr:g}" if r.schedule == "cosine" else
             f"x{r.gamma:g} at steps {', '.join(str(m) for m in r.milestones)}")
    lines = [
        f"Fine-tuned with `finetune --recipe {r.name.removeprefix('ft_')}` from {info.init_description} for {step} of "
        f"{r.steps} steps on {info.data_description}.",
        "",
        f"- tasks: {', '.join(info.tasks)}"
        + (f" (new head and tail: {', '.join(info.added_tasks)})" if info.added_tasks else ""),
        f"- batch {r.batch_size} per task per rank, LR patch {r.lr_patch} (SR) / patch {r.dn_patch} (scale-1 tasks); "
        f"AdamW lr {r.lr:g}, betas {tuple(r.betas)}, schedule {sched}, warm-up {r.warmup_steps}; L1 loss"
        + (f"; EMA {r.ema:g} (exported)" if r.ema else ""),
        f"- DeepSpeed ZeRO-{r.zero_stage}, {r.precision}",
    ]
    if primary:
        which = (f"the best of {len(history)} validations by {primary}" if kind == "best"
                 else "the weights at the last step")
        lines.append(f"- this export: {which}")
    if history and primary:
        lines += ["", f"Validation ({primary}, dB):", "", "| step | PSNR |", "|---|---|"]
        shown = history if len(history) <= 20 else history[:: max(1, len(history) // 20)] + [history[-1]]
        seen = set()
        for h in shown:
            if h["step"] in seen or primary not in h:
                continue
            seen.add(h["step"])
            lines.append(f"| {h['step']} | {h[primary]:.3f} |")
    return "\n".join(lines)


def export_model(model, out_dir: str | Path, *, info: ExportInfo, kind: str, step: int, metrics: dict[str, float],
                 history: list[dict[str, Any]], picture: bool = True, root: str | None = None) -> Path:
    """Save ``model`` (a float32 `RestorationModel`) with its card, ``finetune.json`` and ``comparison.png``."""
    out_dir = Path(out_dir)
    variant_tasks = "-".join(info.tasks)
    name = info.model_name or f"restore-{model.variant}-{variant_tasks}"
    model.save_pretrained(out_dir, model_card_kwargs={
        "model_name": name,
        "base_model": info.base_model,
        "datasets": info.datasets,
        "eval_results": eval_results(metrics, info.tasks, info.benchmarks) or None,
        "training": _training_text(info, kind, step, history),
        "scales": _scales_text(metrics, info.tasks, info.benchmarks),
        "repo_id": info.repo_id,
    })
    record = {
        "kind": kind, "step": step, "metrics": metrics, "history": history, "init": info.init,
        "base_model": info.base_model, "added_tasks": info.added_tasks, "data": info.data_description,
        "benchmarks": info.benchmarks, "recipe": info.recipe.to_dict(),
    }
    atomic_write_text(out_dir / "finetune.json", json.dumps(record, indent=1))
    if picture and info.benchmarks:
        from finetune.picture import comparison_picture

        try:
            bench = (info.val_specs or info.benchmarks)[0]
            comparison_picture(model, info.tasks[0], bench, out_dir / "comparison.png", root=root)
        except (FileNotFoundError, ValueError, IndexError) as err:  # a picture is a courtesy, never a failed run
            log.warning("no comparison picture for %s: %s", out_dir, err)
    return out_dir


def push_folder(folder: str | Path, repo_id: str, *, revision: str | None = None, private: bool = False,
                commit_message: str | None = None, token: str | None = None) -> str:
    """Upload an export folder to the Hub repo ``repo_id`` (created if needed); tag the commit with ``revision``.

    Returns the commit sha.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True, private=private)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), path_in_repo=".",
        commit_message=commit_message or f"Upload fine-tuned model from {Path(folder).name}",
    )
    sha = getattr(info, "oid", None) or str(info)
    if revision:
        api.create_tag(repo_id, tag=revision, revision=sha if getattr(info, "oid", None) else None, exist_ok=True)
    return sha
