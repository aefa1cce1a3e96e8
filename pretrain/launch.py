"""Process setup for DeepSpeed runs: plain ``python``/``pretrain run`` (one rank), ``deepspeed`` and ``torchrun``.

- Without a launcher, DeepSpeed needs all of RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, or it
  falls back to MPI discovery and fails (ECOSYSTEM.md section 3); `setup_single_rank_env` sets them.
- On the CPU accelerator every dist init JIT-builds DeepSpeed's ``deepspeed_shm_comm`` op with g++ (about a
  minute cold); it only serves ``inference_all_reduce``, so `skip_shm_op_build` replaces the builder with a no-op.
  The module must be fetched with ``importlib.import_module``: ``import deepspeed.comm.torch as m`` binds
  ``torch`` itself, because ``deepspeed.comm`` has an attribute of that name (the trap in ECOSYSTEM.md).
"""

from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass

__all__ = ["DistInfo", "setup_single_rank_env", "skip_shm_op_build", "free_port", "dist_info", "init_distributed"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int


_OWN_PORT = "RESTORE_CHOSE_MASTER_PORT"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_single_rank_env(local_rank: int | None = None) -> bool:
    """Fill in the rendezvous variables of a one-process run when no launcher did. Returns True if it did.

    Under ``deepspeed`` or ``torchrun`` (RANK and WORLD_SIZE already set) nothing changes, except LOCAL_RANK taken
    from a ``--local_rank`` argument when the launcher passed only that.
    """
    if local_rank is not None and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(local_rank)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return False
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
        os.environ[_OWN_PORT] = "1"  # ours to change if another process takes it before we bind
    return True


def skip_shm_op_build() -> None:
    """Stop DeepSpeed from compiling its shared-memory comm op on CPU (needs no compiler; collectives use gloo)."""
    if "DS_ACCELERATOR" not in os.environ and not _has_cuda():
        os.environ["DS_ACCELERATOR"] = "cpu"
    if os.environ.get("DS_ACCELERATOR", "cpu") != "cpu":
        return
    ds_comm_torch = importlib.import_module("deepspeed.comm.torch")  # not `import ... as`: see the module docstring
    ds_comm_torch.build_shm_op = lambda: None


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def dist_info() -> DistInfo:
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed() -> DistInfo:
    """Initialise torch.distributed through DeepSpeed (gloo on CPU, nccl on GPU) and bind the local device."""
    skip_shm_op_build()
    import deepspeed
    import torch

    info = dist_info()
    if torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") != "cpu":
        torch.cuda.set_device(info.local_rank)
        deepspeed.init_distributed(dist_backend="nccl")
    else:
        _init_gloo_retrying(deepspeed)
    return info


def _init_gloo_retrying(deepspeed, attempts: int = 5) -> None:
    """``init_distributed`` over gloo; a single-rank run whose port we picked retries on another port if a
    concurrent process bound that port between `free_port` and the rendezvous (a race, not a user error)."""
    import torch.distributed as dist

    for attempt in range(attempts):
        try:
            deepspeed.init_distributed(dist_backend="gloo")
            return
        except dist.DistNetworkError as err:
            if os.environ.get(_OWN_PORT) != "1" or "EADDRINUSE" not in str(err) or attempt == attempts - 1:
                raise
            os.environ["MASTER_PORT"] = str(free_port())
