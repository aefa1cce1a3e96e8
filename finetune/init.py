"""Where fine-tuning starts: a Hub id, an exported folder, a pretraining run or ``step-N`` checkpoint, or nothing.

A run folder or ``step-N`` checkpoint is loaded by `pretrain.export.checkpoint_model`, the code ``pretrain
export`` uses (the checkpoint's own ``config.json`` and fp32 weights; older checkpoints from their DeepSpeed
files). The tasks are then fitted to the run: the chosen tasks' heads and tails and the shared body are kept, the others dropped (`RestorationModel.keep_tasks`); a task the checkpoint lacks gets a fresh
head and tail on the pretrained body (`RestorationModel.add_task`), as EDT fine-tunes new tasks on a shared body.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.export import checkpoint_model
from restore.checkpoints import training_folder
from restore.model import RestorationModel

__all__ = ["InitResult", "load_init", "fit_tasks", "is_hub_id"]

log = logging.getLogger("finetune.init")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass
class InitResult:
    """The model to fine-tune and where it came from (for the card's lineage)."""

    model: RestorationModel
    source: str  # "hub", "folder", "checkpoint" or "scratch"
    description: str
    base_model: str | None = None  # a Hub id, when the init is one
    added_tasks: list[str] = field(default_factory=list)
    dropped_tasks: list[str] = field(default_factory=list)


def is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.fullmatch(text)) and not Path(text).exists()


def load_init(init: str, *, variant: str | None = None, arch: dict | None = None, tasks: list[str] | None = None,
              revision: str | None = None, ema: bool = False) -> InitResult:
    """Load the starting model.

    Args:
        init: ``none`` (from scratch: needs ``variant``), a folder written by ``save_pretrained``/``pretrain
            export``, a pretraining run folder (its latest complete checkpoint) or a ``step-N`` folder, or a Hub id.
        variant, arch: the architecture when ``init`` is ``none``.
        tasks: the tasks to build when ``init`` is ``none``.
        revision: Hub branch, tag or sha.
        ema: take a raw checkpoint's EMA weights instead of the raw ones.
    """
    if init.lower() == "none":
        if not variant:
            raise ValueError("--init none trains from scratch and needs --variant NAME (see `restore.list_variants()`)")
        model = RestorationModel(variant, tasks=list(tasks or ["sr_x2"]), arch=arch)
        return InitResult(model, "scratch", f"randomly initialised {variant} (from scratch)")
    path = Path(init).expanduser()
    if path.is_dir():
        ckpt = training_folder(path)
        if ckpt is not None:
            return InitResult(checkpoint_model(ckpt, ema=ema), "checkpoint",
                              f"pretraining checkpoint `{ckpt}`" + (" (EMA weights)" if ema else ""))
        if (path / "config.json").is_file():
            return InitResult(RestorationModel.from_pretrained(str(path)), "folder", f"exported model `{path}`")
        raise FileNotFoundError(
            f"--init {init}: the folder holds neither a model (config.json + model.safetensors), a pretraining run "
            "(checkpoints/step-N) nor a step-N checkpoint"
        )
    if is_hub_id(init):
        model = RestorationModel.from_pretrained(init, revision=revision)
        rev = f"@{revision}" if revision else ""
        return InitResult(model, "hub", f"Hub model `{init}{rev}`", base_model=init)
    raise FileNotFoundError(f"--init {init!r} is neither an existing folder nor a Hub id (org/name), nor 'none'")


def fit_tasks(result: InitResult, tasks: list[str]) -> InitResult:
    """Keep ``tasks`` (heads, tails, body) and add fresh heads and tails for the ones the model lacks."""
    model = result.model
    have = set(model.tasks)
    result.added_tasks = [t for t in tasks if t not in have]
    result.dropped_tasks = [t for t in model.tasks if t not in tasks]
    for t in result.added_tasks:  # add first: keep_tasks then never sees an empty list
        model.add_task(t)
    model.keep_tasks(list(tasks))
    if result.added_tasks and result.source != "scratch":
        log.info("new head and tail for %s on the pretrained body", ", ".join(result.added_tasks))
    return result
