"""Run under the deepspeed launcher with 2 ranks (`test_gpu_paths.test_sharded_ema_on_two_ranks`): a bf16 ZeRO-2 or
ZeRO-3 trainer's sharded EMA against the full-model EMA of the fp32 masters.

    deepspeed --num_accelerators 2 tests/pretrain/ema_ranks.py OUT_DIR ZERO_STAGE

writes one JSON of findings per rank into OUT_DIR."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


def main(out: Path, zero_stage: int) -> None:
    from pretrain.engine import EMA, Trainer, fp32_master_weights, master_slices
    from pretrain.launch import init_distributed, shutdown_distributed
    from restore.model import RestorationModel
    from tests.pretrain.test_gpu_paths import Synthetic, tiny_recipe

    info = init_distributed()
    recipe = tiny_recipe(precision="bf16", ema=0.5, zero_stage=zero_stage)
    torch.manual_seed(0)
    model = RestorationModel(recipe.variant, tasks=list(recipe.tasks), arch=recipe.arch_dict())
    trainer = Trainer(model, recipe, recipe.batch_size * len(recipe.tasks), world_size=info.world_size)
    module = trainer.module
    ref = EMA(module, 0.5, fp32_master_weights(module))  # the full-model EMA (one all-reduce per update)
    data = Synthetic({"sr_x2": 8, "denoise_g25": 16})
    data.gen.manual_seed(info.rank)  # each rank its own batches, as in training
    calls = {"collectives": 0}
    real = {name: getattr(dist, name) for name in ("all_reduce", "all_gather_into_tensor", "all_gather", "broadcast")}

    def counting(fn):
        def call(*args, **kwargs):
            calls["collectives"] += 1
            return fn(*args, **kwargs)

        return call

    for _ in range(3):
        trainer.step([next(data)])
        ref.update(module, fp32_master_weights(module))
    for name, fn in real.items():
        setattr(dist, name, counting(fn))
    try:  # one more update by hand: the sharded one needs no collective
        trainer.ema.update(module, master_slices=master_slices(module))
    finally:
        for name, fn in real.items():
            setattr(dist, name, fn)
    ref.update(module, fp32_master_weights(module))
    gathered = trainer.ema.gather()
    diffs = {k: float((gathered[k] - ref.shadow[k]).abs().max()) for k in ref.shadow}
    exact = sum(torch.equal(gathered[k], ref.shadow[k]) for k in ref.shadow)
    # a checkpoint holds the full EMA; a resumed run loads it and takes its own slices of it back
    from pretrain.checkpoint import load_checkpoint, save_checkpoint
    from safetensors.torch import load_file

    slices = {k: v.clone() for k, v in trainer.ema._slices.items()}
    path = save_checkpoint(trainer, out / "checkpoints", 4, rank=info.rank, data_state={}, recipe=recipe.to_dict(),
                           info={}, keep_last=1)
    saved = load_file(str(path / "ema.safetensors"))
    trainer.step([next(data)])  # moves the EMA on, so that the load has something to undo
    load_checkpoint(trainer, path, rank=info.rank)
    params_by_name = dict(module.named_parameters())

    def valid(name: str, t: torch.Tensor) -> torch.Tensor:
        """The slice without ZeRO-3's end padding (what no parameter element is: its EMA is never read)."""
        p = params_by_name[name]
        if not hasattr(p, "ds_id"):
            return t
        return t.reshape(-1)[: max(0, min(t.numel(), p.ds_numel - info.rank * t.numel()))]

    reloaded = all(torch.equal(valid(k, trainer.ema._slices[k]), valid(k, v)) for k, v in slices.items())
    regathered = all(torch.equal(v, gathered[k]) and torch.equal(saved[k], v) for k, v in trainer.ema.gather().items())
    params = sum(p.ds_numel if hasattr(p, "ds_id") else p.numel() for p in module.parameters())
    findings = {
        "rank": info.rank, "slices": len(slices), "params": len(list(module.parameters())),
        "world_size": info.world_size, "sharded": trainer.ema.sharded,
        "slice_numel": sum(v.numel() for v in slices.values()), "param_numel": params,
        "update_collectives": calls["collectives"], "max_diff": max(diffs.values()), "keys": len(ref.shadow),
        "same_keys": sorted(gathered) == sorted(ref.shadow), "exact": exact, "reloaded": reloaded,
        "regathered": regathered,
    }
    (out / f"rank-{info.rank}.json").write_text(json.dumps(findings))
    shutdown_distributed()  # as the programs do (`pretrain.cli.entry`): a group left to exit can abort the process


if __name__ == "__main__":
    main(Path(sys.argv[-2]), int(sys.argv[-1]))  # the launcher puts --local_rank first
