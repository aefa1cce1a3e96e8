"""Reading training run folders: ``RUN/checkpoints/step-N/`` as `pretrain` writes them.

Every complete ``step-N`` folder is also a model folder: besides DeepSpeed's optimizer and RNG state it holds the
model's ``config.json`` and its full fp32 weights (``model.safetensors``; ``ema.safetensors`` when the recipe keeps
an EMA), so ``RestorationModel.from_pretrained`` loads a run folder (its latest complete checkpoint), a ``step-N``
folder, or either with ``ema=True``, without DeepSpeed. ``COMPLETE`` is written last; a folder without it was
interrupted mid-write and is never read.

This module is the reader; `pretrain.checkpoint` writes the same layout (and re-exports these names).
"""

from __future__ import annotations

import re
from pathlib import Path

from tasks.errors import InputError

__all__ = ["COMPLETE", "EMA_WEIGHTS", "list_checkpoints", "latest_checkpoint", "is_step_dir", "training_folder"]

COMPLETE = "COMPLETE"
EMA_WEIGHTS = "ema.safetensors"
STEP_DIR = re.compile(r"step-(\d+)")


def is_step_dir(path: str | Path) -> bool:
    """Whether ``path`` is named like a training checkpoint (``step-N``)."""
    return STEP_DIR.fullmatch(Path(path).name) is not None


def list_checkpoints(root: str | Path, complete_only: bool = True) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints under ``root`` (a run's ``checkpoints/`` folder), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.fullmatch(p.name)
        if m and p.is_dir() and (not complete_only or (p / COMPLETE).exists()):
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def training_folder(folder: Path) -> Path | None:
    """The complete ``step-N`` folder meant by ``folder`` (itself, or a run folder's latest), None for any other
    folder; `InputError` for a checkpoint that cannot be read (interrupted, none complete yet)."""
    if is_step_dir(folder) and ((folder / COMPLETE).exists() or (folder / "recipe.json").is_file()):
        if not (folder / COMPLETE).exists():
            raise InputError(f"{folder} has no {COMPLETE} marker: the save was interrupted; load an earlier step-N "
                             "or the run folder (its latest complete checkpoint)")
        return folder
    if (folder / "checkpoints").is_dir() and not (folder / "config.json").is_file():
        found = latest_checkpoint(folder / "checkpoints")
        if found is None:
            raise InputError(f"{folder} is a training run without a complete checkpoint yet (checkpoints/step-N "
                             f"with a {COMPLETE} marker); wait for the first one or load another folder")
        return found[1]
    return None
