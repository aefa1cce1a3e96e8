"""``pretrain run``: build the model, engine and data stream from a recipe, resume if asked, train.

Parse, build, run, close (STYLE.md): all logic lives in `pretrain.engine`, `pretrain.data`, `pretrain.loop` and
`pretrain.checkpoint`; this module wires them. The same entry works as one plain process (it sets up a one-rank
environment), under ``deepspeed --num_gpus N`` / ``--hostfile`` and under ``torchrun``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from pretrain.checkpoint import (
    atomic_write_text, checkpoint_config, latest_checkpoint, load_checkpoint, remove_incomplete,
)
from pretrain.batch import StepData
from pretrain.data import DataStream, expand_urls
from pretrain.degrade import worker_roles
from pretrain.launch import DistInfo, init_distributed, setup_single_rank_env
from pretrain.loop import LoopResult, train_loop
from pretrain.recipes import Recipe
from pretrain.telemetry import RunLogger

__all__ = ["run_pretraining", "run_training", "benchmark_validator", "validation_model", "rank_seed",
           "build_rank_model", "resume_point", "check_resume_fits", "MODEL_KEYS"]

log = logging.getLogger("pretrain.train")
MODEL_KEYS = ("variant", "tasks", "arch")  # a resumed run must not change these: the checkpoint would not fit


def validation_model(model: nn.Module) -> nn.Module:
    """``model`` itself when it is fp32; otherwise a fresh fp32 `RestorationModel` rebuilt from its
    ``config_dict()`` and its (gathered) weights, on its device.

    Not ``copy.deepcopy``: the training module carries the activation-checkpointing wrappers (closures over the
    original bf16 blocks, so the "copy" would run the bf16 weights) and forward hooks, which would copy whatever
    they reference. The rebuild draws initial weights, so the RNG is forked: training's random stream is unchanged.
    """
    first = next(model.parameters())
    if first.dtype == torch.float32:
        return model
    from restore.model import RestorationModel

    cfg = model.config_dict()
    with torch.random.fork_rng(devices=[]):
        fresh = RestorationModel(cfg["variant"], tasks=list(cfg["tasks"]), arch=cfg["arch"],
                                 format_version=cfg["format_version"])
    fresh.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    return fresh.to(first.device).eval()


def benchmark_validator(
    pairs: tuple[str, ...], limit: int = 0, root: str | None = None
) -> Callable[[int, nn.Module], dict]:
    """``on_validate`` scoring ``task:Benchmark`` pairs with ``tasks.evaluate`` (PSNR with the task's protocol).

    ``limit`` > 0 scores only the first ``limit`` images of each benchmark (a quick signal during pretraining).
    """

    def validate(step: int, model: nn.Module) -> dict[str, float]:
        from tasks import evaluate

        model = validation_model(model)  # bf16/fp16 engines: score a float copy
        out = {}
        for pair in pairs:
            task, bench = pair.split(":", 1)
            try:
                result = evaluate(model, bench, task=task, root=root, limit=limit or None)
            except (FileNotFoundError, ValueError) as err:  # a benchmark not on this machine: skip, say why
                log.warning("validation on %s skipped: %s", pair, err)
                continue
            out[f"{task}/{bench}/psnr"] = float(result.psnr)
        return out

    return validate


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of ``rank`` after model construction: distinct streams per rank (DropPath masks, dropout),
    well mixed by NumPy's ``SeedSequence`` so that (seed, rank) and (seed + 1, rank - 1) do not collide."""
    import numpy as np

    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def build_rank_model(recipe: Recipe, rank: int, model: nn.Module | None = None) -> nn.Module:
    """The model of ``rank``: identical initial weights on every rank (seeded with ``recipe.seed``; ZeRO-3
    partitions local copies), then the torch RNG (CPU and CUDA) reseeded per rank with `rank_seed`, so that
    stochastic depth and dropout draw independent masks on each rank instead of the same ones."""
    from restore.model import RestorationModel

    torch.manual_seed(recipe.seed)
    if model is None:
        model = RestorationModel(recipe.variant, tasks=list(recipe.tasks), arch=recipe.arch_dict())
    torch.manual_seed(rank_seed(recipe.seed, rank))
    return model


Validate = Callable[[int, nn.Module], dict]
StreamFactory = Callable[[DistInfo, "dict | None"], Iterator[StepData]]


def resume_point(run_dir: Path, resume: str | None) -> Path | None:
    """The ``step-N`` folder a run continues from: ``"auto"`` is the latest complete one of ``run_dir`` (None
    when there is none yet), a path is itself, None is a fresh start."""
    if resume == "auto":
        found = latest_checkpoint(run_dir / "checkpoints")
        return found[1] if found else None
    return Path(resume) if resume else None


def check_resume_fits(resume_path: Path, model: nn.Module) -> None:
    """Refuse to resume ``resume_path`` into ``model`` when the checkpoint's model (its ``config.json``, or for an
    older checkpoint its recipe) has another variant, task list or architecture: the weights would not fit."""
    saved = checkpoint_config(resume_path)
    want = model.config_dict()
    for key in MODEL_KEYS:
        if saved.get(key) != want.get(key):
            raise ValueError(f"cannot resume {resume_path}: it was trained with {key}={saved.get(key)!r}, this run "
                             f"asks for {want.get(key)!r}. Use another --out, or the same {key}.")


def run_training(
    recipe: Recipe,
    model: nn.Module | None,
    stream_factory: StreamFactory,
    *,
    run_dir: str | Path,
    resume_path: Path | None = None,
    make_validator: Callable[[Any], Validate | None] | None = None,
    validate_first: bool = False,
    stop_after: int | None = None,
    run_files: dict[str, Any] | None = None,
    start_info: dict[str, Any] | None = None,
) -> LoopResult:
    """The one training entry of the platform: ``pretrain run`` and ``finetune`` both call it.

    It owns the distributed set-up, the per-rank seeding, the engine, removal of interrupted checkpoints, resume,
    the run folder's ``recipe.json``/``ds_config.json``, logging and the loop; the callers bring what differs.

    Args:
        recipe: the resolved recipe (optimizer, schedule, precision, steps, checkpoint cadence).
        model: the model to train (fine-tuning's init; identical on every rank), or None for a fresh one from
            the recipe (pretraining; `build_rank_model`).
        stream_factory: ``(dist_info, saved_state) -> iterator of StepData`` with ``state_dict()`` (the shard
            stream, fine-tuning's paired data); ``saved_state`` is the checkpoint's data position or None.
        run_dir: output folder (checkpoints, logs); on many nodes a shared filesystem.
        resume_path: the ``step-N`` folder to continue from (`resume_point`), or None.
        make_validator: ``trainer -> on_validate`` (or None), called once the engine exists (fine-tuning's
            validator scores the trainer's EMA).
        validate_first: score the model once before the first step of a fresh run (fine-tuning's step 0).
        stop_after: leave after this many steps (tests simulate interruptions with it).
        run_files: ``{name: JSON-able}`` written into ``run_dir`` by rank 0 next to ``recipe.json``.
        start_info: extra fields of the log's ``start`` event.
    """
    from pretrain.engine import Trainer  # late: imports deepspeed

    setup_single_rank_env()
    info = init_distributed()
    run_dir = Path(run_dir)
    model = build_rank_model(recipe, info.rank, model)
    if resume_path is not None:
        check_resume_fits(resume_path, model)
    micro_batch = recipe.batch_size * (len(recipe.tasks) if recipe.mode == "edt" else 1)
    trainer = Trainer(model, recipe, micro_batch, info.world_size)

    start_step, data_state = 0, None
    if info.rank == 0:
        for p in remove_incomplete(run_dir / "checkpoints"):
            log.warning("removed %s: a checkpoint interrupted mid-write", p)
    if resume_path is not None:
        restored = load_checkpoint(trainer, resume_path, rank=info.rank)
        start_step, data_state = restored["step"], restored["data"]
    stream = stream_factory(info, data_state)

    logger = RunLogger(run_dir, rank=info.rank, total_steps=recipe.steps, start_step=start_step)
    if info.rank == 0:
        files = {"recipe.json": recipe.to_dict(), "ds_config.json": trainer.ds_config, **(run_files or {})}
        for name, content in files.items():
            atomic_write_text(run_dir / name, json.dumps(content, indent=1))
    params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())  # ZeRO-3 leaves empty placeholders
    logger.event("start", recipe=recipe.name, variant=model.variant, tasks=",".join(recipe.tasks),
                 world_size=info.world_size, params=params,
                 start_step=start_step, resumed_from=str(resume_path) if resume_path else None, **(start_info or {}))
    on_validate = make_validator(trainer) if make_validator is not None else None
    result = train_loop(
        trainer, stream, run_dir=run_dir, rank=info.rank, world_size=info.world_size, start_step=start_step,
        recipe_dict=recipe.to_dict(), on_validate=on_validate, logger=logger, stop_after=stop_after,
        validate_first=validate_first,
    )
    logger.event("end", step=result.step, seconds=result.seconds,
                 **{f"skipped_{k}": v for k, v in result.skips.items()})
    logger.close()
    return result


def run_pretraining(
    recipe: Recipe,
    *,
    run_dir: str | Path,
    data: str | None = None,
    resume: str | None = None,
    on_validate: Validate | None = None,
    stop_after: int | None = None,
) -> LoopResult:
    """Pretrain ``recipe`` into ``run_dir`` on shards; ``resume="auto"`` continues from the latest complete
    checkpoint there (`run_training` with a fresh model and the shard `DataStream`).

    Args:
        recipe: the resolved recipe.
        run_dir: output folder (checkpoints, logs); on many nodes it must be a shared filesystem.
        data: shard URLs (overrides ``recipe.data``).
        resume: None (fresh run), ``"auto"`` (latest complete checkpoint in ``run_dir`` if any) or a
            ``step-N`` directory.
        on_validate: validation callback; by default the recipe's ``val`` pairs through ``tasks.evaluate``.
        stop_after: leave after this many steps (tests simulate interruptions with it).
    """
    data = data or recipe.data
    if not data:
        raise ValueError("no training data: pass --data 'shards/train-{000000..000099}.tar' or set data=... ")
    urls = expand_urls(data)
    if data != recipe.data:
        from dataclasses import replace

        recipe = replace(recipe, data=data)

    def stream(info: DistInfo, state: dict | None) -> DataStream:
        return DataStream(
            urls, recipe.tasks, mode=recipe.mode, batch_size=recipe.batch_size, lr_patch=recipe.lr_patch,
            dn_patch=recipe.dn_patch, seed=recipe.seed, rank=info.rank, world_size=info.world_size,
            num_workers=recipe.num_workers, state=state, mask_ratio=recipe.mask_ratio, mask_patch=recipe.mask_patch,
            **worker_roles(recipe.degrade_on, recipe.decode_on, recipe.tasks),
        )

    if on_validate is None and recipe.val:
        on_validate = benchmark_validator(recipe.val, recipe.val_images)
    run_dir = Path(run_dir)
    result = run_training(
        recipe, None, stream, run_dir=run_dir,
        resume_path=resume_point(run_dir, resume), make_validator=lambda _trainer: on_validate,
        stop_after=stop_after, start_info={"shards": len(urls)},
    )
    if int(os.environ.get("RANK", "0")) == 0:
        summary: dict[str, Any] = {"step": result.step, "losses": result.losses, "skips": result.skips,
                                   "validation": result.validation, "seconds": result.seconds}
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1))
    return result
