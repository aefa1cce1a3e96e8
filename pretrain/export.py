"""``pretrain export RUN_DIR OUT_DIR``: a training checkpoint (any ZeRO stage) to the `restore` hub format.

A ``step-N`` checkpoint carries the model's ``config.json`` and full fp32 weights (`pretrain.checkpoint`), so
export is `checkpoint_model` (``from_pretrained``) plus a card. Checkpoints written before that are rebuilt from
their recipe: ZeRO partitions are consolidated with DeepSpeed's ``get_fp32_state_dict_from_zero_checkpoint`` (it reads the fp32
master partitions of every rank, so ZeRO-3's ``(0,)``-shaped module parameters never reach the export; ECOSYSTEM.md
section 3). The result is loaded strictly into a fresh `RestorationModel` and saved with ``save_pretrained``:
``model.safetensors`` + ``config.json`` + a ``README.md`` card naming the data, steps, tasks and recipe.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pretrain.checkpoint import COMPLETE, atomic_write_text, latest_checkpoint, list_checkpoints
from pretrain.engine import unwrap_state_dict
from pretrain.recipes import Recipe, recipe_from_dict

if TYPE_CHECKING:
    from restore.model import RestorationModel

__all__ = ["export_checkpoint", "consolidated_state_dict", "find_checkpoint", "checkpoint_model"]


def find_checkpoint(run_dir: str | Path, step: int | None = None) -> tuple[int, Path]:
    """The complete checkpoint of ``run_dir`` at ``step`` (default: the latest)."""
    root = Path(run_dir) / "checkpoints"
    found = list_checkpoints(root)
    if not found:
        raise FileNotFoundError(f"no complete checkpoint (step-N/ with a {COMPLETE} marker) under {root}")
    if step is None:
        return latest_checkpoint(root)
    for s, p in found:
        if s == step:
            return s, p
    raise FileNotFoundError(f"no complete checkpoint for step {step} in {root}; available steps: {[s for s, _ in found]}")


def consolidated_state_dict(path: Path, recipe: Recipe, ema: bool = False) -> dict[str, torch.Tensor]:
    """Full fp32 weights of a checkpoint directory, keyed like `RestorationModel.state_dict`."""
    if ema:
        from safetensors.torch import load_file

        ema_file = path / "ema.safetensors"
        if not ema_file.exists():
            raise FileNotFoundError(f"{path} holds no EMA weights (the recipe had ema=0); export without --ema")
        return load_file(str(ema_file))
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not torch.cuda.is_available() else "cuda")
    if recipe.zero_stage == 0:
        # no ZeRO partitions: rank 0's model file holds the whole module (our own run's file, written by DeepSpeed)
        states = torch.load(path / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        state = {k: v.float() for k, v in states["module"].items()}
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name)
    return unwrap_state_dict(state)


def checkpoint_model(path: str | Path, ema: bool = False) -> "RestorationModel":
    """The `RestorationModel` of a complete ``step-N`` folder (its raw or EMA weights), in eval mode.

    A checkpoint carries its ``config.json`` and fp32 weights, so this is ``RestorationModel.from_pretrained``; a
    checkpoint written before it did (no ``config.json``) is rebuilt from its recipe and its DeepSpeed files
    (`consolidated_state_dict`), loaded with the same strict loader.
    """
    from restore.hub import CONFIG_NAME, load_state_dict_strict
    from restore.model import RestorationModel

    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return RestorationModel.from_pretrained(str(path), ema=ema)
    recipe = recipe_from_dict(json.loads((path / "recipe.json").read_text()))
    model = RestorationModel(recipe.variant, tasks=list(recipe.tasks), arch=recipe.arch_dict())
    state = consolidated_state_dict(path, recipe, ema=ema)
    load_state_dict_strict(model, state, str(path), against=f"{recipe.variant} {list(recipe.tasks)} (its recipe)")
    return model.eval()


def _training_text(recipe: Recipe, step: int, ema: bool, world_size: int | None) -> str:
    sched = (f"cosine to {recipe.min_lr:g}" if recipe.schedule == "cosine"
             else f"x{recipe.gamma:g} at steps {', '.join(str(m) for m in recipe.milestones) or '(none)'}")
    per = "per task " if recipe.mode == "edt" else ""
    lines = [
        f"Pretrained with `pretrain run --recipe {recipe.name}` for {step} of {recipe.steps} steps on "
        f"{recipe.data_name} (shards: `{recipe.data}`).",
        "",
        f"- tasks: {', '.join(recipe.tasks)} ({recipe.mode.upper()}-style multi-task: "
        + ("every step carries all tasks through one body pass)" if recipe.mode == "edt" else "one random task per step)"),
        f"- batch {recipe.batch_size} {per}per rank x {world_size or '?'} ranks x {recipe.grad_accum} accumulation; "
        f"LR patch {recipe.lr_patch} (SR), patch {recipe.dn_patch} (scale-1 tasks)",
        f"- AdamW lr {recipe.lr:g}, betas {tuple(recipe.betas)}, weight decay {recipe.weight_decay:g}, "
        f"warm-up {recipe.warmup_steps}, schedule {sched}; L1 loss"
        + (f" + {recipe.contrastive_weight:g} x SupCon" if recipe.contrastive_weight else ""),
        f"- DeepSpeed ZeRO-{recipe.zero_stage}, {recipe.precision}; weights: {'EMA ' + format(recipe.ema, 'g') if ema else 'raw (not EMA)'}",
    ]
    return "\n".join(lines)


def export_checkpoint(run_dir: str | Path, out_dir: str | Path, *, step: int | None = None, ema: bool = False,
                      keep_masked: bool = False) -> Path:
    """Write the checkpoint of ``run_dir`` (latest, or ``step``) as a `RestorationModel` folder ``out_dir``.

    The self-supervised ``masked`` task's head and tail are dropped unless ``keep_masked`` (they only served
    pretraining; a model pretrained on ``masked`` alone keeps them, or it would have no task left).
    """
    from tasks.registry import TaskKind, get_task

    s, path = find_checkpoint(run_dir, step)
    recipe = recipe_from_dict(json.loads((path / "recipe.json").read_text()))
    trainer_info = json.loads((path / "trainer.json").read_text()) if (path / "trainer.json").exists() else {}
    model = checkpoint_model(path, ema=ema)
    supervised = [t for t in model.tasks if get_task(t).kind is not TaskKind.MASKED]
    if not keep_masked and supervised and len(supervised) < len(model.tasks):
        model.keep_tasks(supervised)
    out_dir = Path(out_dir)
    model.save_pretrained(
        out_dir,
        model_card_kwargs={
            "model_name": f"restore-{model.variant}-{recipe.name}-step{s}" + ("-ema" if ema else ""),
            "datasets": [recipe.data_name],
            "training": _training_text(recipe, s, ema, trainer_info.get("world_size")),
        },
    )
    atomic_write_text(out_dir / "pretrain_recipe.json",
                      json.dumps({"step": s, "ema": ema, "recipe": recipe.to_dict()}, indent=1))
    return out_dir
