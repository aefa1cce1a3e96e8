"""Process setup for DeepSpeed runs: plain ``python``/``pretrain run`` (one rank), ``deepspeed``, ``torchrun``,
``srun`` (SLURM) and ``mpirun`` (OpenMPI).

- Without a launcher, DeepSpeed needs all of RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, or it
  falls back to MPI discovery and fails (ECOSYSTEM.md section 3); `setup_single_rank_env` sets them.
- ``srun`` and ``mpirun`` start every process themselves and say who is who in their own variables
  (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK); `rendezvous_env` maps them
  onto the torch names. Read naively, each process would become rank 0 of a one-process world: N copies of the
  same run writing the same checkpoints. An MPI launcher we cannot read (MPICH/Intel MPI's PMI_*) is refused.
- On the CPU accelerator every dist init JIT-builds DeepSpeed's ``deepspeed_shm_comm`` op with g++ (about a
  minute cold); it only serves ``inference_all_reduce``, so `skip_shm_op_build` replaces the builder with a no-op.
  The module must be fetched with ``importlib.import_module``: ``import deepspeed.comm.torch as m`` binds
  ``torch`` itself, because ``deepspeed.comm`` has an attribute of that name (the trap in ECOSYSTEM.md).
"""

from __future__ import annotations

import atexit
import importlib
import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Mapping, NoReturn

from tasks.errors import InputError

__all__ = [
    "DistInfo", "setup_single_rank_env", "rendezvous_env", "skip_shm_op_build", "free_port", "dist_info",
    "init_distributed", "shutdown_distributed", "exit_program", "cuda_device_index", "local_device_env",
    "local_ranks", "collective_timeout", "DEFAULT_MASTER_PORT",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int


_OWN_PORT = "RESTORE_CHOSE_MASTER_PORT"
DEFAULT_MASTER_PORT = "29500"  # torchrun's default: every rank of an srun/mpirun world must agree without talking


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendezvous_env(env: Mapping[str, str]) -> dict[str, str]:
    """The torch rendezvous variables to add to ``env`` so that this process knows its place (pure function).

    - RANK and WORLD_SIZE already set (``deepspeed``, ``torchrun``): nothing.
    - inside an ``srun`` step (SLURM_STEP_ID set): RANK=SLURM_PROCID, WORLD_SIZE=SLURM_STEP_NUM_TASKS (or
      SLURM_NTASKS), LOCAL_RANK=SLURM_LOCALID, MASTER_ADDR from the environment or SLURM_LAUNCH_NODE_IPADDR.
      (A batch script's own shell has SLURM_NTASKS but no step id: there it is a plain single process.)
    - under OpenMPI's ``mpirun``: OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK; MASTER_ADDR must be set (``mpirun -x
      MASTER_ADDR=<rank 0's host>``) unless all ranks are on this node.
    - MASTER_PORT defaults to 29500 for both; a plain process (no launcher) gets rank 0 of 1 on a free port.

    Raises `InputError` for a multi-process launch it cannot place (no MASTER_ADDR, MPICH/Intel MPI variables).
    """
    if "RANK" in env and "WORLD_SIZE" in env:
        return {}
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
        world = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
        if int(world) > 1:
            addr = env.get("MASTER_ADDR") or env.get("SLURM_LAUNCH_NODE_IPADDR")
            if not addr:
                raise InputError(
                    f"srun started {world} tasks but neither MASTER_ADDR nor SLURM_LAUNCH_NODE_IPADDR is set: "
                    "export MASTER_ADDR=<the first node's address> before srun"
                )
            return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": world, "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
                    "MASTER_ADDR": addr, "MASTER_PORT": env.get("MASTER_PORT", DEFAULT_MASTER_PORT)}
    if "OMPI_COMM_WORLD_RANK" in env:
        world = env.get("OMPI_COMM_WORLD_SIZE", "1")
        if int(world) > 1:
            one_node = env.get("OMPI_COMM_WORLD_LOCAL_SIZE") == world
            addr = env.get("MASTER_ADDR") or ("127.0.0.1" if one_node else "")
            if not addr:
                raise InputError(
                    f"mpirun started {world} ranks on several nodes but MASTER_ADDR is not set: pass "
                    "`mpirun -x MASTER_ADDR=<rank 0's host> -x MASTER_PORT=29500 ...`"
                )
            return {"RANK": env["OMPI_COMM_WORLD_RANK"], "WORLD_SIZE": world,
                    "LOCAL_RANK": env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
                    "MASTER_ADDR": addr, "MASTER_PORT": env.get("MASTER_PORT", DEFAULT_MASTER_PORT)}
    for size_var in ("PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
        if int(env.get(size_var, "1") or "1") > 1:
            raise InputError(
                f"{size_var}={env[size_var]}: an MPI launcher this program cannot read started several processes; "
                "set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT per process, or launch with "
                "deepspeed, torchrun, srun or OpenMPI's mpirun"
            )
    out = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": env.get("MASTER_ADDR", "127.0.0.1")}
    if "MASTER_PORT" not in env:
        out["MASTER_PORT"] = str(free_port())
        out[_OWN_PORT] = "1"  # ours to change if another process takes it before we bind
    return out


def setup_single_rank_env(local_rank: int | None = None) -> bool:
    """Fill in the rendezvous variables when no launcher set RANK/WORLD_SIZE (`rendezvous_env`). Returns True if
    it changed anything.

    Under ``deepspeed`` or ``torchrun`` (RANK and WORLD_SIZE already set) nothing changes, except LOCAL_RANK taken
    from a ``--local_rank`` argument when the launcher passed only that. Under ``srun``/``mpirun`` the launcher's
    own variables are mapped; a plain process becomes rank 0 of a one-process world.
    """
    if local_rank is not None and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(local_rank)
    update = rendezvous_env(os.environ)
    os.environ.update(update)
    return bool(update)


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


# How long a collective waits for the slowest rank. Rank 0 validates (full-size benchmark images), exports and may
# push to the Hub while the other ranks wait at a barrier (`pretrain.loop`); DeepSpeed's 10-minute default would
# kill such a run. DEEPSPEED_TIMEOUT (minutes: DeepSpeed's own variable) sets it.
DEFAULT_TIMEOUT_MINUTES = 60


def collective_timeout(env: Mapping[str, str] = os.environ) -> timedelta:
    """The process group's timeout: ``DEEPSPEED_TIMEOUT`` minutes, else `DEFAULT_TIMEOUT_MINUTES`."""
    raw = env.get("DEEPSPEED_TIMEOUT", "").strip()
    try:
        minutes = float(raw) if raw else DEFAULT_TIMEOUT_MINUTES
    except ValueError:
        minutes = -1.0
    if not minutes > 0:
        raise InputError(f"DEEPSPEED_TIMEOUT={raw!r}: give the collective timeout in minutes, e.g. 60")
    return timedelta(minutes=minutes)


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
        index, update = local_device_env(os.environ, torch.cuda.device_count())
        os.environ.update(update)
        info = DistInfo(info.rank, info.world_size, index)
        torch.cuda.set_device(index)
        _init_retrying(deepspeed, "nccl")
    else:
        _init_retrying(deepspeed, "gloo")
    if info.world_size == 1 and not _EXIT_HOOK:
        # a single rank has no peer to wait for: its group is destroyed at exit whatever happened (scripts,
        # benchmarks and test sessions that train in-process), before interpreter teardown could abort it
        _EXIT_HOOK.append(atexit.register(shutdown_distributed))
    return info


_EXIT_HOOK: list = []  # the atexit hook of a single-rank group, registered once


def shutdown_distributed() -> None:
    """Destroy the default process group at the end of a run that finished on every rank; the programs call it
    (`exit_program`) just before the interpreter exits.

    Left to interpreter exit, gloo's worker threads can still hold work whose tensors need the GIL while the
    interpreter is torn down, and the process aborts (SIGABRT, "terminate called without an active exception")
    after the run has finished and written everything (pytorch/pytorch#190489); NCCL warns that it was not
    destroyed. Only on success (as torchtitan, pytorch/torchtitan#1342): after an error other ranks may still be
    inside a collective, and destroying the group could hang instead of letting the launcher end the job. Not
    for a process that trains again: DeepSpeed keeps its groups of the destroyed one. A single-rank group
    (`init_distributed`) is destroyed at exit in any case: it has no peer to hang on.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_program(main: Callable[[], int]) -> NoReturn:
    """What the ``pretrain`` and ``finetune`` programs do (console scripts, ``python -m``): run ``main``, and after
    a run that succeeded `shutdown_distributed` before the interpreter exits; exit with ``main``'s status.
    In-process callers of ``main`` keep their process group."""
    code = main()
    if code == 0:
        shutdown_distributed()
    sys.exit(code)


def local_ranks(env: Mapping[str, str] = os.environ) -> int:
    """Ranks on this machine: the launchers' LOCAL_WORLD_SIZE (torchrun), LOCAL_SIZE (deepspeed) or
    OMPI_COMM_WORLD_LOCAL_SIZE (mpirun); 1 for a single process."""
    for var in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        if env.get(var, "").isdigit():
            return max(1, int(env[var]))
    return 1


def local_device_env(env: Mapping[str, str], visible: int) -> tuple[int, dict[str, str]]:
    """This rank's CUDA device (`cuda_device_index`) and the variables to change so that DeepSpeed agrees.

    DeepSpeed places its engine on ``cuda:LOCAL_RANK``, so a rank that sees one GPU (index 0) gets LOCAL_RANK=0;
    under mpirun ``OMPI_COMM_WORLD_LOCAL_RANK`` follows, as DeepSpeed's engine asserts the two are equal
    (``DeepSpeedEngine._configure_with_arguments``: "conflicting local rank info").
    """
    local_rank = int(env.get("LOCAL_RANK", 0))
    index = cuda_device_index(local_rank, visible)
    if index == local_rank:
        return index, {}
    update = {"LOCAL_RANK": str(index)}
    if "OMPI_COMM_WORLD_LOCAL_RANK" in env:
        update["OMPI_COMM_WORLD_LOCAL_RANK"] = str(index)
    return index, update


def cuda_device_index(local_rank: int, visible: int) -> int:
    """The CUDA device of this rank: its local rank, or 0 when the launcher gave each task one visible GPU
    (``srun --gpus-per-task=1`` sets CUDA_VISIBLE_DEVICES per task, so every task sees its GPU as device 0)."""
    if local_rank < visible:
        return local_rank
    if visible == 1:
        return 0
    raise InputError(
        f"LOCAL_RANK={local_rank} but only {visible} CUDA devices are visible: start at most {visible} ranks per "
        "node, or give each task its own GPU (srun --gpus-per-task=1)"
    )


def _init_retrying(deepspeed, backend: str, attempts: int = 5) -> None:
    """``init_distributed`` over ``backend``; a single-rank run whose port we picked retries on another port if a
    concurrent process bound that port between `free_port` and the rendezvous (a race, not a user error). The
    rendezvous store is the same TCP server for gloo and nccl, so both retry."""
    import torch.distributed as dist

    for attempt in range(attempts):
        try:
            deepspeed.init_distributed(dist_backend=backend, timeout=collective_timeout())
            return
        except dist.DistNetworkError as err:
            if "EADDRINUSE" not in str(err):
                raise
            if os.environ.get(_OWN_PORT) != "1":  # the launcher's or the user's port
                raise InputError(
                    f"MASTER_PORT={os.environ.get('MASTER_PORT')} is already in use on this machine (another run "
                    "holds it?): give the launcher a free one (deepspeed --master_port N, torchrun --master_port N) "
                    "or set MASTER_PORT"
                ) from None
            if attempt == attempts - 1:
                raise
            os.environ["MASTER_PORT"] = str(free_port())
