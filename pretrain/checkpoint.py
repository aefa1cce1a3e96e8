"""Training checkpoints ``RUN_DIR/checkpoints/step-N/``: save, find the latest complete one, resume, prune.

A checkpoint directory holds DeepSpeed's files (model, optimizer and scheduler state of every ZeRO partition) plus:

- ``rank-<r>.json``: that rank's data-stream position and Python/NumPy RNG states; ``rank-<r>-rng.safetensors``:
  its torch RNG state. (DeepSpeed's ``client_state`` is written by one rank only, so per-rank state lives here.)
- ``config.json`` and ``model.safetensors``: the model's constructor arguments and full fp32 weights (the
  optimizer's masters, gathered from every ZeRO partition), so that a ``step-N`` folder loads with
  ``RestorationModel.from_pretrained`` like an exported one (`restore.checkpoints` reads the layout);
  ``ema.safetensors``: the EMA weights, when the recipe keeps them; ``recipe.json``: the resolved recipe;
  ``trainer.json``: step, images seen, wall time; ``discriminator/``: the GAN stage's discriminator engine
  (DeepSpeed's files; `pretrain.gan`), when the recipe has one.
- ``COMPLETE``: written last, by rank 0, after every rank has finished writing (a barrier). A directory without
  it (a run killed mid-write) is never resumed from or exported, and is removed when a later run resumes.

The directory layout follows torchtitan's ``step-N`` checkpoints, which also carry the data loader state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from pretrain.ema import full_fp32_state_dict
from restore.checkpoints import COMPLETE, EMA_WEIGHTS, is_step_dir, latest_checkpoint, list_checkpoints
from restore.hub import CONFIG_NAME, WEIGHTS_NAME
from tasks.io import atomic_path

__all__ = ["list_checkpoints", "latest_checkpoint", "save_checkpoint", "load_checkpoint", "COMPLETE",
           "checkpoint_config", "atomic_write_text", "RUN_ENTRIES", "check_resume_dir", "check_run_dir",
           "run_dir_guard"]

log = logging.getLogger("pretrain.checkpoint")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def remove_incomplete(root: str | Path) -> list[Path]:
    """Delete checkpoint directories without a completion marker (rank 0 only). Returns what it removed."""
    removed = []
    for _step, p in list_checkpoints(root, complete_only=False):
        if not (p / COMPLETE).exists():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    plain = {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    return plain, tensors


def _set_rng_state(plain: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])


def save_checkpoint(
    trainer, root: str | Path, step: int, *, rank: int, data_state: dict, recipe: dict, info: dict,
    keep_last: int,
) -> Path:
    """Save ``step-<step>`` under ``root`` from every rank (collective), mark it complete, prune old ones."""
    import torch.distributed as dist

    root = Path(root)
    tag = f"step-{step}"
    path = root / tag
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if path.exists() and not (path / COMPLETE).exists():
            shutil.rmtree(path)  # a leftover of a killed save at the same step
    dist.barrier()
    trainer.engine.save_checkpoint(str(root), tag=tag, client_state={"pretrain_step": step}, save_latest=False)
    if trainer.gan is not None:
        trainer.gan.save_checkpoint(path)
    weights = full_fp32_state_dict(trainer.module)  # collective: every rank takes part
    ema = trainer.ema.gather() if trainer.ema is not None else None  # collective where it is sharded
    plain, tensors = _rng_state()
    atomic_write_text(path / f"rank-{rank}.json", json.dumps({"step": step, "data": data_state, "rng": plain}))
    _atomic_save_tensors(tensors, path / f"rank-{rank}-rng.safetensors")
    if rank == 0:
        _atomic_save_tensors({k: v.to("cpu", copy=True) for k, v in weights.items()}, path / WEIGHTS_NAME)
        atomic_write_text(path / CONFIG_NAME, json.dumps(trainer.module.config_dict(), indent=1))
        if ema is not None:  # copies: a gathered EMA's tensors are views of one buffer, which safetensors refuses
            _atomic_save_tensors({k: v.to("cpu", copy=True) for k, v in ema.items()}, path / EMA_WEIGHTS)
        atomic_write_text(path / "recipe.json", json.dumps(recipe, indent=1))
        atomic_write_text(path / "trainer.json", json.dumps({"step": step, **info}, indent=1))
    dist.barrier()  # every rank's files are on disk before the marker
    if rank == 0:
        atomic_write_text(path / COMPLETE, f"{step}\n")
        for _s, old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return path


def checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The model's constructor arguments (variant, tasks, arch, format_version) saved in checkpoint ``path``:
    its ``config.json``; for a checkpoint written before checkpoints carried one, its recipe's."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return json.loads((path / CONFIG_NAME).read_text())
    from pretrain.recipes import recipe_from_dict
    from restore.model import RestorationModel

    recipe = recipe_from_dict(json.loads((path / "recipe.json").read_text()))
    with torch.random.fork_rng(devices=[]):  # the config of the model the recipe builds, normalised as saved
        return RestorationModel(recipe.variant, tasks=list(recipe.tasks), arch=recipe.arch_dict()).config_dict()


def load_checkpoint(trainer, path: str | Path, *, rank: int) -> dict[str, Any]:
    """Restore engine (and the GAN stage's), EMA and this rank's RNG from ``path``; returns ``{"step", "data"}``
    for the loop."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / COMPLETE).exists():
        raise FileNotFoundError(f"{path} has no {COMPLETE} marker: it was interrupted mid-write; resume from another")
    _check_world_size(path, trainer.recipe.zero_stage)
    load_path, _client = trainer.engine.load_checkpoint(
        str(path.parent), tag=path.name, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint at {path}")
    if trainer.gan is not None:
        trainer.gan.load_checkpoint(path)
    if trainer.ema is not None:
        ema_file = path / EMA_WEIGHTS
        if ema_file.exists():
            trainer.ema.load_state_dict(load_file(str(ema_file)))  # onto the live shadow's device, not the CPU
        else:
            log.warning("%s has no EMA weights; the EMA restarts from the current weights", path)
    rank_file = path / f"rank-{rank}.json"
    step = int((path / COMPLETE).read_text().strip())
    if not rank_file.exists():  # a different world size than the saved run
        log.warning("%s has no state for rank %d: its data stream restarts at step %d", path, rank, step)
        return {"step": step, "data": {"step": step}}
    state = json.loads(rank_file.read_text())
    _set_rng_state(state["rng"], load_file(str(path / f"rank-{rank}-rng.safetensors")))
    return {"step": state["step"], "data": state["data"]}


def _check_world_size(path: Path, zero_stage: int) -> None:
    """Refuse (`InputError`) to resume a ZeRO >= 1 checkpoint on another number of ranks than saved it.

    ZeRO partitions the optimizer state per data-parallel rank, and DeepSpeed's ``load_checkpoint`` cannot
    repartition it (``ZeRORuntimeException``, "Automatic adjustment of ZeRO's optimizer state partitioning with a
    new world size is not currently supported"). Every rank raises the same error, before any rank loads, so
    none waits in a collective. ZeRO-0 checkpoints resume on any world size (each rank's data stream restarts).
    """
    import torch.distributed as dist

    from tasks.errors import InputError

    saved = len(list(path.glob("rank-*.json")))  # each rank writes its own (save_checkpoint)
    now = dist.get_world_size() if dist.is_initialized() else 1
    if zero_stage >= 1 and saved and saved != now:
        raise InputError(
            f"--resume {path}: saved by {saved} rank(s), this run has {now}; ZeRO-{zero_stage} keeps the optimizer "
            f"state split per rank and DeepSpeed cannot re-split it: resume with {saved} rank(s), or fine-tune from "
            f"its weights ({WEIGHTS_NAME}) with finetune --init {path}"
        )


# --------------------------------------------------------------------------------------------- the run folder

# what `pretrain run` and `finetune` write directly in a run folder; anything else there belongs to the user
RUN_ENTRIES = frozenset({"checkpoints", "recipe.json", "ds_config.json", "log.jsonl", "tb", "summary.json",
                         "init.json", "validation.json", "best", "last"})


def check_resume_dir(path: str | Path) -> Path:
    """``path`` if it is a complete ``step-N`` checkpoint folder, else an `InputError` naming what it is instead."""
    from tasks.errors import InputError

    path = Path(path).expanduser()
    if not path.is_dir():
        raise InputError(f"--resume {path}: no such folder; pass 'auto' or a RUN/checkpoints/step-N folder")
    if not is_step_dir(path) or not (path / "recipe.json").is_file():
        raise InputError(f"--resume {path} is not a step-N checkpoint folder; pass 'auto' or "
                         "RUN/checkpoints/step-N")
    if not (path / COMPLETE).exists():
        raise InputError(f"--resume {path} has no {COMPLETE} marker (a save that was interrupted); pass 'auto' "
                         "or an earlier step-N")
    return path


def check_run_dir(out: str | Path, *, resume: str | None, recipe_name: str | None = None) -> Path:
    """Refuse, before any work, a run folder that cannot be used (an `InputError`, exit 2).

    Refused: a file; a folder that cannot be created or written; a folder with files that are not a training
    run's (the user's own); a fresh run into a folder that holds complete checkpoints (they would mix); resuming
    a run of another recipe. A leftover of a run that died before its first checkpoint (only `RUN_ENTRIES`) is
    reused.
    """
    import os

    from tasks.errors import InputError

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; pass a folder for the run (it is created if missing)")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: {parent} is not writable; pass a folder you can write to")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        foreign = [e for e in entries if e not in RUN_ENTRIES]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise InputError(f"--out {out} already holds files that are not a training run's ({shown}); pass a "
                             "new or empty folder")
        found = latest_checkpoint(out / "checkpoints")
        if found is not None and resume is None:
            raise InputError(f"--out {out} already holds a run (checkpoints up to step {found[0]}); continue it "
                             "with --resume auto, or pass another --out")
        saved = out / "recipe.json"
        if found is not None and recipe_name and saved.is_file():
            name = json.loads(saved.read_text()).get("name")
            if name != recipe_name:
                raise InputError(f"--out {out} holds a run of recipe {name!r}, this one is {recipe_name!r}; "
                                 "pass another --out or the same --recipe")
    return out


@contextlib.contextmanager
def run_dir_guard(out: str | Path, *, rank: int = 0) -> Iterator[Path]:
    """Remove what the run created in ``out`` if it dies (error or Ctrl-C) before its first complete checkpoint.

    Such a folder holds nothing resumable, and a half-written one would stand in the rerun's way. Entries that
    were there before are kept (a user's folder, or the checkpoints a resumed run started from); only rank 0
    removes.
    """
    out = Path(out).expanduser()
    top = out  # the outermost folder this run creates
    while not top.parent.exists():
        top = top.parent
    before = {p.name for p in out.iterdir()} if out.is_dir() else None
    try:
        yield out
    except BaseException:
        if rank == 0 and latest_checkpoint(out / "checkpoints") is None:
            if before is None:
                shutil.rmtree(top if top.exists() else out, ignore_errors=True)
            elif out.is_dir():
                for p in out.iterdir():
                    if p.name in before:
                        continue
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
            log.info("removed what the run wrote in %s: it stopped before its first checkpoint", out)
        raise
