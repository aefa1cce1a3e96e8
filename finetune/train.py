"""``finetune``: check everything, load the init, fit the tasks, train through `pretrain.train.run_training`, export.

Parse, build, run, close (STYLE.md). Training is the platform's one entry, `pretrain.train.run_training`, the one
``pretrain run`` calls (distributed set-up, engine, resume, logging, the loop, ``step-N`` checkpoints that carry
the model). Fine-tuning brings only what is its own: the init (`finetune.init`), its data (`finetune.data`), the
validation that keeps the best weights (`Validator`), and the exports and publication (`finetune.export`).

Run folder ``OUT``: ``checkpoints/step-N/`` and logs as in pretraining, ``validation.json`` (history and best),
``best/`` and ``last/`` exports, ``summary.json`` (with the files skipped as unreadable). It is checked before any
work (`pretrain.checkpoint.check_run_dir`: not a file, not the user's own folder) and a run that stops before its
first complete checkpoint removes what it wrote there (`pretrain.checkpoint.run_dir_guard`), so a rerun starts clean.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finetune.data import DataError, build_stream, is_shard_spec, scan_training_data, shard_data
from finetune.export import ExportInfo, export_model, metric_key, push_folder
from finetune.init import InitResult, fit_tasks, load_init
from pretrain.checkpoint import atomic_write_text, check_resume_dir, check_run_dir, checkpoint_config, run_dir_guard
from pretrain.degrade import worker_roles
from pretrain.launch import DistInfo, setup_single_rank_env
from pretrain.recipes import Recipe
from pretrain.train import resume_point, run_training
from restore.model import RestorationModel

__all__ = ["FinetuneConfig", "FinetuneResult", "Validator", "run_finetune", "check_benchmarks", "snapshot",
           "stream_roles"]

log = logging.getLogger("finetune.train")


@dataclass
class FinetuneConfig:
    """One fine-tuning run (the CLI's arguments).

    Attributes:
        init: Hub id, exported folder, pretraining run or ``step-N`` folder, or ``"none"``.
        tasks: the tasks to fine-tune (kept or added).
        train: training data specs (folders or shards).
        val: benchmark names or folders; the best export is chosen by the first one's PSNR on ``tasks[0]``.
        recipe: the resolved recipe (`finetune.recipes.get_recipe`).
        out: the run folder.
        variant: the architecture for ``init="none"``.
        init_revision, init_ema: Hub revision of the init; EMA weights of a raw checkpoint.
        val_limit: score only the first N images of each benchmark (quick runs).
        benchmarks_root: where benchmark names are looked up (default: ``tasks.evaluate``'s search).
        resume: ``"auto"`` (latest complete checkpoint in ``out``), a ``step-N`` folder, or None.
        push_to_hub, revision, private: publish the best export to this repo, tagged ``revision``.
        base_model: the Hub id of a local init, for the card's lineage (a Hub init names itself).
        model_name, data_name: names for the card.
        stop_after: leave after this many steps (tests).
    """

    init: str
    tasks: list[str]
    train: list[str]
    val: list[str]
    recipe: Recipe
    out: str | Path
    variant: str | None = None
    init_revision: str | None = None
    init_ema: bool = False
    val_limit: int | None = None
    benchmarks_root: str | None = None
    resume: str | None = None
    push_to_hub: str | None = None
    revision: str | None = None
    private: bool = False
    base_model: str | None = None
    model_name: str | None = None
    data_name: str | None = None
    stop_after: int | None = None


@dataclass
class FinetuneResult:
    step: int
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    best_dir: Path | None
    last_dir: Path | None
    pushed: str | None = None
    losses: dict[str, float] = field(default_factory=dict)
    skips: dict[str, int] = field(default_factory=dict)  # samples skipped in training, by kind (`pretrain.data`)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why): the scan's and training's


def check_benchmarks(benchmarks: list[str], tasks: list[str], root: str | None) -> list[str]:
    """Fail now, not at the first validation, when a benchmark cannot be scored for a task.

    Scores one image with the no-model baseline, which reads the benchmark exactly as validation will. Returns the
    benchmarks' display names (``set5`` -> ``Set5``, a folder -> its name), which key the scores.
    """
    from tasks.evaluate import bicubic_baseline, evaluate

    names = []
    for bench in benchmarks:
        for task in tasks:
            try:
                result = evaluate(bicubic_baseline(task), bench, task=task, root=root, limit=1)
            except (FileNotFoundError, ValueError) as err:
                raise DataError(f"validation benchmark {bench!r} cannot be used for {task}: {err}") from err
        names.append(result.benchmark)
    if len(set(names)) != len(names):
        raise DataError(f"validation benchmarks {benchmarks} have clashing names {names}; rename the folders")
    return names


def snapshot(model: nn.Module, ema: dict[str, torch.Tensor] | None = None) -> RestorationModel:
    """A float32 copy of ``model`` (or of the EMA weights) in eval mode: what validation scores and exports save.

    A copy keeps the trained module's mode, dtype (bf16 under DeepSpeed) and graph untouched.
    """
    state = ema if ema is not None else model.state_dict()
    copy = RestorationModel(**model.config_dict())
    copy.load_state_dict({k: v.detach().float() for k, v in state.items()}, strict=True)
    device = next(model.parameters()).device
    return copy.to(device).eval()


class Validator:
    """``on_validate`` for `pretrain.loop.train_loop`: scores every task on every benchmark, keeps the best export.

    The best is chosen by PSNR of ``tasks[0]`` on ``benchmarks[0]``; it is exported the moment it is found (a
    killed run keeps it), and the history and best are written to ``OUT/validation.json`` for a resumed run.
    """

    def __init__(self, tasks: list[str], benchmarks: list[str], *, out: Path, info: ExportInfo, trainer=None,
                 root: str | None = None, limit: int | None = None, rank: int = 0, names: list[str] | None = None):
        self.tasks, self.benchmarks, self.out, self.info = tasks, benchmarks, out, info
        self.names = names or list(benchmarks)  # display names, which key the scores
        self.trainer, self.root, self.limit, self.rank = trainer, root, limit, rank
        self.primary = metric_key(tasks[0], self.names[0])
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        state_file = out / "validation.json"
        if state_file.is_file():
            saved = json.loads(state_file.read_text())
            self.history, self.best = saved.get("history", []), saved.get("best")

    # it scores the trainer's EMA where there is one: the loop gathers a sharded EMA on every rank first
    scores_ema = True

    def score(self, model: nn.Module) -> dict[str, float]:
        import tasks as tasks_lib

        metrics: dict[str, float] = {}
        for task in self.tasks:
            for bench, name in zip(self.benchmarks, self.names):
                r = tasks_lib.evaluate(model, bench, task=task, root=self.root, limit=self.limit)
                metrics[metric_key(task, name)] = float(r.psnr)
                metrics[metric_key(task, name, "ssim")] = float(r.ssim)
        return metrics

    def __call__(self, step: int, model: nn.Module) -> dict[str, float]:
        ema = self.trainer.ema.shadow if (self.trainer is not None and self.trainer.ema is not None) else None
        weights = snapshot(model, ema)
        metrics = self.score(weights)
        self.history = [h for h in self.history if h["step"] < step] + [{"step": step, **metrics}]
        improved = self.best is None or metrics[self.primary] > self.best["metrics"][self.primary]
        if improved:
            self.best = {"step": step, "metrics": metrics}
        if self.rank == 0:
            if improved:
                export_model(weights, self.out / "best", info=self.info, kind="best", step=step, metrics=metrics,
                             history=self.history, root=self.root)
            state = {"primary": self.primary, "history": self.history, "best": self.best}
            atomic_write_text(self.out / "validation.json", json.dumps(state, indent=1))
        scores = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.endswith("psnr"))
        log.info("validation at step %d: %s%s", step, scores, " (best so far)" if improved else "")
        return metrics


def run_finetune(cfg: FinetuneConfig) -> FinetuneResult:
    """Fine-tune as ``cfg`` says; every check on tasks, data, benchmarks and init happens before training."""
    from tasks.registry import get_task

    if not cfg.tasks:
        raise ValueError("no task: pass --task, e.g. --task sr_x2")
    for t in cfg.tasks:
        get_task(t)  # unknown names raise, listing the valid forms
    if not cfg.train:
        raise DataError("no training data: pass --train FOLDER (or shards)")
    recipe = replace(cfg.recipe, tasks=tuple(cfg.tasks), data=shard_data(cfg.train))
    out = check_run_dir(cfg.out, resume=cfg.resume, recipe_name=recipe.name)
    if cfg.resume not in (None, "auto"):
        check_resume_dir(cfg.resume)
    data = None
    if all(is_shard_spec(s) for s in cfg.train):
        from pretrain.data import check_shards, expand_urls, hr_patch

        check_shards(expand_urls(recipe.data), max(hr_patch(t, recipe.lr_patch, recipe.dn_patch) for t in cfg.tasks))
    else:
        data = scan_training_data(cfg.train, cfg.tasks, lr_patch=recipe.lr_patch, dn_patch=recipe.dn_patch)
    val_names = check_benchmarks(cfg.val, cfg.tasks, cfg.benchmarks_root)

    resume_path = resume_point(out, cfg.resume)
    if resume_path is None:
        (out / "validation.json").unlink(missing_ok=True)  # scores of a run that never reached a checkpoint
        init = _load_init(cfg)
    else:
        init = _resumed_init(cfg, out, resume_path)
    base_model = cfg.base_model or init.base_model
    info = ExportInfo(
        recipe=recipe, tasks=list(cfg.tasks), benchmarks=val_names, init=cfg.init,
        init_description=init.description, base_model=base_model,
        data_description=data.describe() if data else f"shards `{recipe.data}`",
        datasets=[cfg.data_name] if cfg.data_name else (data.names if data else [recipe.data_name]),
        model_name=cfg.model_name, repo_id=cfg.push_to_hub, added_tasks=init.added_tasks, val_specs=list(cfg.val),
    )
    # a run that dies before its first checkpoint takes what it wrote with it, so that the rerun finds the folder
    # free; rank 0 removes it, so each process must know its rank first: srun/mpirun set only their own variables
    setup_single_rank_env()
    with run_dir_guard(out, rank=int(os.environ["RANK"])):
        result = _train(cfg, recipe, init, info, out, data, resume_path)
    return result


def _load_init(cfg: FinetuneConfig) -> InitResult:
    """The starting model of a fresh run, fitted to the run's tasks.

    Seeded with the recipe's seed first, like pretraining's model: fresh weights (``--init none``) and fresh heads
    and tails of added tasks are then the same in every process and on every rank, and a rerun is reproducible.
    """
    torch.manual_seed(cfg.recipe.seed)
    scratch = cfg.init.lower() == "none"
    if cfg.variant and not scratch:
        raise ValueError("--variant is only for --init none: a pretrained init brings its own architecture")
    loaded = load_init(cfg.init, variant=(cfg.variant or cfg.recipe.variant) if scratch else None,
                       arch=cfg.recipe.arch_dict() if scratch else None, tasks=cfg.tasks,
                       revision=cfg.init_revision, ema=cfg.init_ema)
    return fit_tasks(loaded, cfg.tasks)


def _resumed_init(cfg: FinetuneConfig, out: Path, resume_path: Path) -> InitResult:
    """The model a resumed run continues: built from the checkpoint's own ``config.json`` (the engine loads its
    weights), with the init's lineage from ``init.json``."""
    config = checkpoint_config(resume_path)
    if list(config["tasks"]) != list(cfg.tasks):
        raise ValueError(f"cannot resume {resume_path}: it fine-tunes {list(config['tasks'])}, this run asks for "
                         f"{cfg.tasks}; use another --out or the same --task")
    saved = json.loads((out / "init.json").read_text()) if (out / "init.json").is_file() else {}
    return InitResult(RestorationModel(**config), saved.get("source", "checkpoint"),
                      saved.get("description", cfg.init), saved.get("base_model"), saved.get("added_tasks", []))


def stream_roles(recipe: Recipe, folders: bool) -> dict[str, Any]:
    """The stream's ``degrade`` and ``decode`` (`pretrain.degrade.worker_roles`). Image folders are decoded by the
    workers whatever ``decode_on`` says (only shards decode on the device), so for folders the degradations are
    placed as with decoding in the workers: under ``auto`` on CUDA the blind ones stay there."""
    return worker_roles(recipe.degrade_on, "workers" if folders else recipe.decode_on, recipe.tasks)


def _train(cfg: FinetuneConfig, recipe: Recipe, init: InitResult, info: ExportInfo, out: Path, data, resume_path):
    made: dict[str, Any] = {}  # what run_training builds through these factories, read back after the run

    def stream(dist: DistInfo, state: dict | None):
        made["stream"] = build_stream(
            cfg.train, list(recipe.tasks), batch_size=recipe.batch_size, lr_patch=recipe.lr_patch,
            dn_patch=recipe.dn_patch, seed=recipe.seed, rank=dist.rank, world_size=dist.world_size,
            num_workers=recipe.num_workers, state=state, data=data, mode=recipe.mode,
            mask_ratio=recipe.mask_ratio, mask_patch=recipe.mask_patch,
            **stream_roles(recipe, folders=data is not None))
        return made["stream"]

    def make_validator(trainer) -> Validator | None:
        if cfg.val:
            made["validator"] = Validator(list(recipe.tasks), list(cfg.val), out=out, info=info, trainer=trainer,
                                          root=cfg.benchmarks_root, limit=cfg.val_limit,
                                          rank=int(os.environ["RANK"]), names=info.benchmarks)
        return made.get("validator")

    result = run_training(
        recipe, init.model, stream, run_dir=out, resume_path=resume_path, make_validator=make_validator,
        validate_first=True, stop_after=cfg.stop_after,
        run_files={"init.json": {
            "init": cfg.init, "source": init.source, "description": init.description, "base_model": info.base_model,
            "added_tasks": init.added_tasks, "dropped_tasks": init.dropped_tasks}},
        start_info={"init": cfg.init, "added_tasks": ",".join(init.added_tasks) or None, "data": info.data_description},
    )
    validator, rank = made.get("validator"), int(os.environ["RANK"])
    if rank != 0:
        return FinetuneResult(result.step, [], None, None, None, losses=result.losses, skips=result.skips)

    last_dir = _export_last(recipe, out, info, validator, result.step, cfg.benchmarks_root)
    best_dir = out / "best" if (out / "best").is_dir() else None
    pushed = None
    if cfg.push_to_hub:
        folder = best_dir or last_dir
        pushed = push_folder(folder, cfg.push_to_hub, revision=cfg.revision, private=cfg.private,
                             commit_message=f"finetune {','.join(recipe.tasks)} from {cfg.init} ({folder.name})")
        log.info("pushed %s to %s (commit %s%s)", folder, cfg.push_to_hub, pushed,
                 f", tag {cfg.revision}" if cfg.revision else "")
    history = validator.history if validator else []
    best = validator.best if validator else None
    skipped = sorted({**dict(data.skipped if data else []), **getattr(made["stream"], "bad_files", {})}.items())
    atomic_write_text(out / "summary.json", json.dumps({
        "step": result.step, "losses": result.losses, "history": history, "best": best,
        "best_dir": str(best_dir) if best_dir else None, "last_dir": str(last_dir), "pushed": pushed,
        "skips": result.skips, "skipped": [{"path": p, "reason": why} for p, why in skipped]}, indent=1))
    return FinetuneResult(result.step, history, best, best_dir, last_dir, pushed, result.losses, result.skips,
                          skipped)


def _export_last(recipe: Recipe, out: Path, info: ExportInfo, validator: Validator | None, step: int,
                 root: str | None) -> Path:
    """Export the last checkpoint's weights (its raw weights, or its EMA when the recipe keeps one)."""
    from pretrain.export import checkpoint_model, find_checkpoint

    s, path = find_checkpoint(out)
    model = checkpoint_model(path, ema=recipe.ema > 0)
    history = validator.history if validator else []
    metrics = next((h for h in reversed(history) if h["step"] == s), {})
    metrics = {k: v for k, v in metrics.items() if k != "step"}
    return export_model(model.eval(), out / "last", info=info, kind="last", step=s, metrics=metrics,
                        history=history, root=root)
