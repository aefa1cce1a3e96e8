"""The weights DeepSpeed keeps in fp32 and the EMA of them: the optimizer's master slices of each rank, the full
fp32 weights assembled from them (what a ``step-N`` checkpoint exports), and the exponential moving average.

Under bf16/fp16 the module holds low-precision copies; the fp32 masters live in the optimizer, in slices: ZeRO-1/2
and DeepSpeed's bf16 optimizer split the flat masters over the data-parallel ranks (``_hp_mapping``), ZeRO-3
partitions every parameter (``ds_id``). `master_slices` reads this rank's slices (no collective); `_assemble` lays
every rank's into full tensors in one collective; `fp32_master_weights` and `full_fp32_state_dict` are the full
weights; `EMA` averages each rank's own slices, so training pays no collective for it, and gathers the whole
average only for checkpoints and validation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["EMA", "master_slices", "fp32_master_weights", "full_fp32_state_dict"]


def _with_weights(module: nn.Module, weights: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with the tensors of ``weights`` (e.g. `fp32_master_weights`) in place of its own."""
    return {**module.state_dict(), **(weights or {})}


class EMA:
    """Exponential moving average of the weights (fp32, on the model's device), as BasicSR's
    ``model_ema(decay=0.999)``.

    Where DeepSpeed shards the fp32 master weights over the data-parallel ranks (bf16/fp16 under ZeRO-1/2, and
    ZeRO-3 in any precision: `master_slices`), each rank keeps the average of its own slices only (buffers whole):
    no collective per step, and 1/N of the memory. `gather` (collective: every rank calls it) assembles the full
    average, which `shadow` then returns until the next `update`; checkpoints and validation gather. Otherwise (fp32) the
    average follows the module's own full weights and `shadow` is always current.
    """

    def __init__(self, model: nn.Module, decay: float, weights: dict[str, torch.Tensor] | None = None,
                 master_slices: dict[str, torch.Tensor] | None = None):
        self.decay = decay
        self._sharded = master_slices is not None
        if self._sharded:  # `master_slices`: this rank's slices of the fp32 masters (see `update`)
            self._params = _mapped_params(model)
            names = {n for n, _p in self._params}
            self._state = {k: v.detach().float().clone() for k, v in model.state_dict().items() if k not in names}
            self._slices = {n: v.detach().float().clone() for n, v in master_slices.items()}
            self._gathered: dict[str, torch.Tensor] | None = None
        else:
            state = _with_weights(model, weights)  # ``weights``: as in `update`
            self._state = {k: v.detach().float().clone() for k, v in state.items()}

    @property
    def sharded(self) -> bool:
        return self._sharded

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """The averaged weights, a full state dict (sharded: as of the last `gather`, which must follow the last
        `update`)."""
        if not self._sharded:
            return self._state
        if self._gathered is None:
            raise RuntimeError("the EMA is sharded over the ranks and was updated since its last gather(): call "
                               "gather() on every rank first")
        return self._gathered

    def gather(self) -> dict[str, torch.Tensor]:
        """`shadow`, assembled from every rank's slices where the EMA is sharded (one all-reduce; collective: every
        rank calls it); the full state at once otherwise."""
        if self._sharded and self._gathered is None:
            self._gathered = {**self._state, **_assemble(self._params, self._slices)}
        return self.shadow

    @torch.no_grad()
    def update(self, model: nn.Module, weights: dict[str, torch.Tensor] | None = None,
               master_slices: dict[str, torch.Tensor] | None = None) -> None:
        """shadow <- decay * shadow + (1 - decay) * weights, as one fused ``_foreach_lerp_`` over all tensors.

        ``weights`` (e.g. `fp32_master_weights`) replace the model's own tensors of those names: under bf16 the
        module holds bf16 copies of the optimizer's fp32 masters, and an EMA of those would average rounding steps.
        A sharded EMA takes ``master_slices`` (`master_slices`) instead, and the buffers from the model.
        """
        if self._sharded:
            if master_slices is None or master_slices.keys() != self._slices.keys():
                raise ValueError("a sharded EMA updates from this rank's master slices: pass master_slices(module)")
            names = list(self._slices)
            if names:  # a rank of a tiny model on many ranks may hold no slice at all
                torch._foreach_lerp_([self._slices[n] for n in names], [master_slices[n].float() for n in names],
                                     1 - self.decay)
            self._gathered = None
            state = {k: v for k, v in model.state_dict().items() if k in self._state}
        else:
            state = _with_weights(model, weights)
        floats = [k for k, v in state.items() if v.dtype.is_floating_point]
        if floats:
            torch._foreach_lerp_([self._state[k] for k in floats], [state[k].detach().float() for k in floats],
                                 1 - self.decay)
        for k, v in state.items():
            if not v.dtype.is_floating_point:
                self._state[k].copy_(v)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take saved EMA weights (a full state dict, as `shadow`), onto the device and dtype of the live average (a
        file loads onto the CPU; the next `update` would otherwise mix CPU and CUDA tensors); sharded: this rank's
        slices of them."""
        live = set(self._state) | ({n for n, _p in self._params} if self._sharded else set())
        missing, unexpected = sorted(live - set(state)), sorted(set(state) - live)
        if missing or unexpected:
            raise ValueError(f"the saved EMA weights do not fit this model: missing {missing[:8]}, "
                             f"unexpected {unexpected[:8]}; resume without EMA (ema=0) or from a matching run")
        self._state = {k: state[k].to(device=v.device, dtype=v.dtype) for k, v in self._state.items()}
        if self._sharded:
            for name, p in self._params:
                if name not in self._slices:
                    continue
                live_slice = self._slices[name]
                if hasattr(p, "ds_id"):  # ZeRO-3: this rank's equal partition
                    piece = _own_partition(state[name], live_slice.numel(), p.ds_process_group)
                else:
                    address = p._hp_mapping.lp_fragment_address
                    piece = state[name].reshape(-1).narrow(0, address.start, address.numel)
                piece = piece.reshape(live_slice.shape)
                self._slices[name] = piece.to(device=live_slice.device, dtype=live_slice.dtype).clone()
            self._gathered = None


def _mapped_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters whose fp32 masters DeepSpeed keeps in per-rank slices: ZeRO-3's partitioned ones (``ds_id``),
    else those of ZeRO-1/2 and the bf16 optimizer (``_hp_mapping``)."""
    zero3 = [(n, p) for n, p in module.named_parameters() if hasattr(p, "ds_id")]
    return zero3 or [(n, p) for n, p in module.named_parameters() if hasattr(p, "_hp_mapping")]


def master_slices(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """{name: this rank's slice of the parameter's fp32 master (a view of the optimizer's flat partition)} for the
    parameters this rank holds a slice of: ZeRO-3's partitions (in any precision: the module's parameters are
    partitioned too), or a bf16/fp16 ZeRO-1/2 module's slices; None when the module's parameters are the masters
    (fp32 without ZeRO-3). Local: no collective."""
    params = _mapped_params(module)
    if params and hasattr(params[0][1], "ds_id"):
        from deepspeed.utils import safe_get_local_fp32_param

        frozen = [n for n, p in params if not p.requires_grad]
        if frozen:  # no fp32 master to average, and the module holds only their partitions
            raise ValueError(f"ema under zero_stage=3 needs every parameter trained, {len(frozen)} are frozen "
                             f"({frozen[0]}, ...): use zero_stage<=2 or ema=0")
        return {n: safe_get_local_fp32_param(p) for n, p in params}
    if not params or all(p.dtype == torch.float32 for _n, p in params):
        return None
    return {n: p._hp_mapping.get_hp_fragment() for n, p in params if p._hp_mapping is not None}


def _assemble(params: list[tuple[str, nn.Parameter]], slices: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full fp32 tensors of ``params`` from every rank's ``slices``, in one collective (the per-parameter
    ``safe_get_full_fp32_param`` would issue one per tensor). ZeRO-1/2: each slice sits at its parameter's
    ``_hp_mapping`` address (a rank holds none of some parameters); the slices are laid into one flat buffer and
    summed over the data-parallel group in one all-reduce. ZeRO-3: every rank holds an equal (end-padded) partition
    of every parameter; they are all-gathered as one flat buffer and each parameter is its partitions in rank
    order. Collective: every rank calls it."""
    import torch.distributed as dist

    if hasattr(params[0][1], "ds_id"):
        return _assemble_partitions(params, slices)
    flat = torch.zeros(sum(p.numel() for _n, p in params), dtype=torch.float32, device=params[0][1].device)
    out, offset = {}, 0
    for name, p in params:
        view = flat.narrow(0, offset, p.numel())
        if name in slices:
            address = p._hp_mapping.lp_fragment_address
            view.narrow(0, address.start, address.numel).copy_(slices[name])
        out[name] = view.view(p.shape)
        offset += p.numel()
    if dist.is_initialized():
        dist.all_reduce(flat, group=params[0][1]._dp_group)
    return out


def _assemble_partitions(params: list[tuple[str, nn.Parameter]], slices: dict[str, torch.Tensor]):
    """`_assemble` for ZeRO-3 (as DeepSpeed's ``_fp32_state_allgather``, once for all parameters)."""
    import torch.distributed as dist

    names = [n for n, _p in params if n in slices]
    local = torch.cat([slices[n].reshape(-1).float() for n in names])
    group = params[0][1].ds_process_group  # the partition group (the world, without hpZ/MiCS)
    world = dist.get_world_size(group) if dist.is_initialized() else 1
    every = torch.empty(world * local.numel(), dtype=torch.float32, device=local.device)
    if world > 1:
        dist.all_gather_into_tensor(every, local, group=group)
    else:
        every.copy_(local)
    every = every.view(world, local.numel())
    shapes = {n: p.ds_shape for n, p in params}
    out, offset = {}, 0
    for n in names:
        part = slices[n].numel()
        full = every[:, offset : offset + part].reshape(-1)  # the partitions in rank order, the last one padded
        out[n] = full[: math.prod(shapes[n])].view(shapes[n])
        offset += part
    return out


def _own_partition(full: torch.Tensor, part: int, group: Any) -> torch.Tensor:
    """This rank's ZeRO-3 partition (``part`` elements, the last rank's end-padded with zeros) of a full tensor,
    ``group`` the parameter's partition group."""
    import torch.distributed as dist

    rank = dist.get_rank(group) if dist.is_initialized() else 0
    flat = full.reshape(-1)
    start = rank * part
    piece = flat[start : start + part]
    return torch.cat([piece, piece.new_zeros(part - piece.numel())]) if piece.numel() < part else piece


def fp32_master_weights(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """The optimizer's fp32 master copy of every parameter of a DeepSpeed bf16/fp16 module, or None when the
    module's parameters are the masters (fp32, no ZeRO mapping).

    ZeRO-1/2 and DeepSpeed's bf16 optimizer keep each rank's slice of the flat fp32 masters (`master_slices`),
    assembled by `_assemble` in one all-reduce. ZeRO-3 partitions the module's parameters themselves (shape (0,)
    outside a gather): each one is gathered from its fp32 partitions with ``safe_get_full_fp32_param``.
    Collective: every rank calls it.
    """
    params = _mapped_params(module)
    if params and hasattr(params[0][1], "ds_id"):  # ZeRO-3
        from deepspeed.utils import safe_get_full_fp32_param

        return {n: safe_get_full_fp32_param(p) for n, p in params}
    slices = master_slices(module)
    return None if slices is None else _assemble(params, slices)


def full_fp32_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` at full size, floats in fp32, its parameters taken from the optimizer's fp32 masters
    where DeepSpeed keeps them (`fp32_master_weights`): the weights a ``step-N`` checkpoint exports. Collective."""
    state = _with_weights(module, fp32_master_weights(module))
    return {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in state.items()}
