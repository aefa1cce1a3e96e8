"""What the first GPU run depends on, checked on CPU: devices and dtypes of collectives, resume, validation copies,
rank placement under srun/mpirun, per-rank seeds, the bf16 DeepSpeed config, EMA, activation checkpointing.

The engine tests run a real one-process gloo group and real DeepSpeed engines (fp32 and bf16) on the tiny EDT.
"""

from __future__ import annotations

import gc
import os
import sys
import types
from pathlib import Path
from dataclasses import replace

import pytest
import torch

from pretrain.data import Batch, StepData
from pretrain.engine import (EMA, MultiTask, _patch_features, build_ds_config, enable_activation_checkpointing,
                             supcon_loss)
from pretrain.launch import (DEFAULT_MASTER_PORT, DEFAULT_TIMEOUT_MINUTES, collective_timeout, cuda_device_index,
                             local_device_env, rendezvous_env)
from pretrain.recipes import smoke
from tasks.errors import InputError

TASKS = ("sr_x2", "denoise_g25")


def tiny_recipe(**changes):
    base = replace(smoke(), tasks=TASKS, batch_size=2, steps=2, log_every=1, ckpt_every=2, warmup_steps=0,
                   num_workers=0, ema=0.9, val_every=0)
    return replace(base, **changes)


class Synthetic:
    """A `StepData` stream of random batches (lq sizes per task), with the ``state_dict`` the loop saves."""

    def __init__(self, sizes: dict[str, int], batch: int = 2):
        self.sizes, self.batch, self.step = sizes, batch, 0
        self.gen = torch.Generator().manual_seed(0)

    def __iter__(self):
        return self

    def __next__(self) -> StepData:
        from tasks.registry import get_task

        self.step += 1
        batches = {}
        for task, n in self.sizes.items():
            s = get_task(task).scale
            batches[task] = Batch(torch.rand(self.batch, 3, n, n, generator=self.gen),
                                  torch.rand(self.batch, 3, n * s, n * s, generator=self.gen), task)
        return StepData(self.step, batches)

    def state_dict(self) -> dict:
        return {"step": self.step}


@pytest.fixture(scope="module")
def gloo():
    """A one-process gloo group through `pretrain.launch` (as `pretrain run` makes it); the environment is restored."""
    from pretrain.launch import init_distributed, setup_single_rank_env

    saved = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(k, None)
    os.environ["DS_ACCELERATOR"] = "cpu"
    setup_single_rank_env()
    init_distributed()
    yield
    # the group stays up, as after an in-process `pretrain run`: DeepSpeed caches its communication backend, so a
    # destroyed default group would make a later in-process run of this session fail with "Group not registered"
    os.environ.clear()
    os.environ.update(saved)


def make_trainer(recipe):
    from pretrain.engine import Trainer
    from restore.model import RestorationModel

    torch.manual_seed(0)
    model = RestorationModel(recipe.variant, tasks=list(recipe.tasks), arch=recipe.arch_dict())
    return Trainer(model, recipe, recipe.batch_size * len(recipe.tasks), world_size=1)


@pytest.fixture(scope="module")
def fp32_trainer(gloo):
    return make_trainer(tiny_recipe())


@pytest.fixture(scope="module")
def bf16_trainer(gloo):
    return make_trainer(tiny_recipe(precision="bf16", activation_checkpointing=True, contrastive_weight=0.1,
                                    ema=0.0))


# ------------------------------------------------------------------- 1, 2: collectives and resume on the device


def test_loop_collectives_use_the_engine_device(fp32_trainer, tmp_path, monkeypatch):
    from pretrain.loop import train_loop

    trainer = fp32_trainer
    assert isinstance(trainer.device, torch.device)
    assert all(p.device == trainer.device for p in trainer.engine.module.parameters())
    seen = []
    real = torch.distributed.all_reduce

    def spy(tensor, *args, **kwargs):
        if sys._getframe(1).f_code.co_filename.endswith(os.path.join("pretrain", "loop.py")):  # not DeepSpeed's
            seen.append((tensor.device, tensor.dtype))
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.distributed, "all_reduce", spy)
    result = train_loop(trainer, Synthetic({"sr_x2": 8, "denoise_g25": 16}), run_dir=tmp_path, rank=0,
                        world_size=1, stop_after=2)
    assert seen, "the loop's losses and skip counts were never all-reduced"
    assert all(device == trainer.device for device, _ in seen), seen
    assert set(result.losses) == {"loss", "loss:sr_x2", "loss:denoise_g25"}
    assert all(isinstance(v, float) for v in result.losses.values())
    assert (tmp_path / "checkpoints" / "step-2" / "ema.safetensors").exists()


def test_resume_puts_the_ema_on_the_live_weights_device(fp32_trainer, tmp_path):
    from pretrain.checkpoint import load_checkpoint, save_checkpoint

    trainer = fp32_trainer
    path = save_checkpoint(trainer, tmp_path, 3, rank=0, data_state={"step": 3}, recipe=trainer.recipe.to_dict(),
                           info={}, keep_last=2)
    load_checkpoint(trainer, path, rank=0)
    for k, v in trainer.ema.shadow.items():
        assert v.device == trainer.device and v.dtype == torch.float32, k
    trainer.step([next(Synthetic({"sr_x2": 8, "denoise_g25": 16}))])  # the EMA update after a resume


def test_ema_load_follows_the_live_shadow_device_and_dtype():
    # the meta device stands in for CUDA: a file always loads onto the CPU, the live shadow lives elsewhere
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(model, 0.9)
    saved = {k: torch.ones(v.shape, dtype=torch.bfloat16) for k, v in ema.shadow.items()}
    ema.load_state_dict(saved)
    assert all(v.device.type == "meta" and v.dtype == torch.float32 for v in ema.shadow.values())
    ema.update(model)  # mixing CPU and meta (or CUDA) tensors would raise here
    with pytest.raises(ValueError, match="missing"):
        ema.load_state_dict({"0.weight": torch.zeros(4, 3)})


# ------------------------------------------------------------------------ 3: the validation model of bf16 runs


def _reaches(root, kinds: tuple[type, ...], limit: int = 2_000_000) -> bool:
    """Whether ``root`` references an instance of ``kinds`` (through attributes, containers, closures and bound
    methods; not through a function's globals or classes, which reach everything)."""
    seen, stack = set(), [root]
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, kinds):
            return True
        if isinstance(obj, (type, types.ModuleType, torch.Tensor, str, bytes)):
            continue
        if isinstance(obj, types.FunctionType):
            for cell in obj.__closure__ or ():
                try:
                    stack.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
            continue
        stack.extend(gc.get_referents(obj))
    return False


def test_validation_model_is_a_float_rebuild_free_of_the_engine(bf16_trainer):
    from deepspeed.runtime.engine import DeepSpeedEngine

    from pretrain.engine import Trainer
    from pretrain.train import validation_model

    trainer = bf16_trainer
    module = trainer.module
    assert next(module.parameters()).dtype == torch.bfloat16
    assert any(getattr(m, "_ckpt_wrapped", False) for m in module.body.modules())
    rng = torch.get_rng_state()
    with torch.no_grad():
        model = validation_model(module)
    assert torch.equal(rng, torch.get_rng_state())  # rebuilding drew no numbers from training's stream
    assert model is not module and not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not _reaches(model, (Trainer, DeepSpeedEngine))
    assert not any(getattr(m, "_ckpt_wrapped", False) or m._forward_hooks for m in model.modules())
    ref = {k: v.float() for k, v in module.state_dict().items()}
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in module.modules()]
    try:
        with torch.no_grad():
            y = model(torch.rand(1, 3, 8, 8), "sr_x2")
    finally:
        for h in hooks:
            h.remove()
    assert y.dtype == torch.float32 and not calls  # the training module's blocks never ran


# ------------------------------------------------------------------------------- 9: bf16 gradient reduction


def test_bf16_gradients_are_reduced_in_fp32(bf16_trainer):
    assert build_ds_config(tiny_recipe(precision="bf16"), 4, 8)["communication_data_type"] == "fp32"
    assert "communication_data_type" not in build_ds_config(tiny_recipe(precision="fp32"), 4, 8)
    assert bf16_trainer.engine.communication_data_type == torch.float32  # DeepSpeed read the key


# ----------------------------------------------------------------------------- 12.5: contrastive over passes


def test_contrastive_term_uses_every_body_pass(bf16_trainer):
    trainer = bf16_trainer
    passes = []
    handle = trainer.module.body.register_forward_hook(lambda _m, _i, out: passes.append(out.detach()))
    try:
        # 8 px SR input: 8 px features; 32 px denoise input through the downsampling head: 16 px features
        _total, per_task = trainer.losses(next(Synthetic({"sr_x2": 8, "denoise_g25": 32})))
    finally:
        handle.remove()
    assert len(passes) == 2
    expected = torch.stack([supcon_loss(*_patch_features(f)) for f in passes]).mean()
    assert torch.allclose(per_task["contrastive"].float(), expected.float(), atol=1e-3)
    assert not trainer._body_outs  # nothing kept past the micro-step


# ---------------------------------------------------------------------------------- 12: EMA, checkpointing


def test_ema_foreach_update_equals_the_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.BatchNorm1d(6))
    ema = EMA(model, decay=0.97)
    ref = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].num_batches_tracked += 1
        ema.update(model)
        for k, v in model.state_dict().items():
            ref[k] = ref[k] * 0.97 + v.double() * 0.03 if v.dtype.is_floating_point else v.double()
    for k in ref:
        assert torch.allclose(ema.shadow[k].double(), ref[k], atol=1e-6), k
    assert ema.shadow["1.num_batches_tracked"].item() == 5


@pytest.mark.parametrize("variant,arch,block", [
    ("edt_tiny", {"window_size": [4, 8], "head_depth": 1}, "EDTBlock"),
    ("swinir", dict(embed_dim=12, depths=[2, 2], num_heads=[2, 2], window_size=4), "SwinBlock"),
])
def test_activation_checkpointing_recomputes_each_block_once(variant, arch, block):
    from restore.model import RestorationModel

    torch.manual_seed(0)
    model = RestorationModel(variant, tasks=["sr_x2"], arch=arch)
    assert enable_activation_checkpointing(model) == len(next(c for c in model.body.children()
                                                              if isinstance(c, torch.nn.ModuleList)))
    counts: dict[int, int] = {}
    blocks = [m for m in model.modules() if type(m).__name__ == block]
    for m in blocks:
        m.register_forward_pre_hook(lambda mod, _a: counts.__setitem__(id(mod), counts.get(id(mod), 0) + 1))
    MultiTask(model)({"sr_x2": torch.rand(1, 3, 8, 8)})["sr_x2"].mean().backward()
    # one forward, one recomputation in the backward; nested checkpoints would make it three
    assert sorted(set(counts.values())) == [2] and len(counts) == len(blocks)


def _cached_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """What the bodies cache per input size (shift masks: SwinIR/HAT's `ShiftMaskCache`, EDT's ``masks``) and
    their buffers (the relative position indices, cached per process)."""
    from restore.families.windows import ShiftMaskCache

    out = list(model.buffers())
    for m in model.modules():
        caches = [m._masks] if isinstance(getattr(m, "_masks", None), dict) else []
        caches += [v._masks for v in vars(m).values() if isinstance(v, ShiftMaskCache)]
        for cache in caches:
            for v in cache.values():
                out += list(v) if isinstance(v, tuple) else [v]
    return out


@pytest.mark.parametrize("variant,arch", [
    ("edt_tiny", {"window_size": [4, 8], "head_depth": 1}),
    ("swinir", dict(embed_dim=12, depths=[2], num_heads=[2], window_size=4)),
    ("hat", dict(embed_dim=12, depths=[2], num_heads=[2], window_size=4, compress_ratio=3, squeeze_factor=6)),
])
def test_what_inference_fills_the_caches_with_still_trains(variant, arch):
    """Inference first, then training, in one process (validation before training, a notebook, a server that
    fine-tunes): the tensors the bodies cache must not be inference tensors. A shift mask built under
    ``torch.inference_mode()`` broke the next training step on CUDA only (the fused SDPA kernels save the mask
    for backward); a position index cached so broke every later model of that window size, CPU included."""
    from restore.families.windows import relative_position_index
    from restore.model import RestorationModel

    relative_position_index.cache_clear()
    with torch.inference_mode():  # a model built for inference first fills the process-wide index cache
        RestorationModel(variant, tasks=["sr_x2"], arch=arch)
    torch.manual_seed(0)
    model = RestorationModel(variant, tasks=["sr_x2"], arch=arch)
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        model.eval()(x, "sr_x2")
    cached = _cached_tensors(model)
    assert len(cached) > len(list(model.buffers())), "no shift mask was cached: the test checks nothing"
    assert not [t.shape for t in cached if t.is_inference()]
    model.train()(x, "sr_x2").mean().backward()
    assert all(p.grad is not None for p in model.body.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- 7, 8: ranks, seeds, devices


SRUN = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1", "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.7"}
MPI = {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
       "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}


@pytest.mark.parametrize("env,expected", [
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "SLURM_PROCID": "0"}, {}),  # torchrun/deepspeed win
    (SRUN, {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.7",
            "MASTER_PORT": DEFAULT_MASTER_PORT}),
    ({**SRUN, "MASTER_ADDR": "node01", "MASTER_PORT": "12345"},
     {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node01", "MASTER_PORT": "12345"}),
    ({**MPI, "MASTER_ADDR": "node01"}, {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1",
                                        "MASTER_ADDR": "node01", "MASTER_PORT": DEFAULT_MASTER_PORT}),
    ({**MPI, "OMPI_COMM_WORLD_LOCAL_SIZE": "8"}, {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1",
                                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": DEFAULT_MASTER_PORT}),
])
def test_launcher_variables_place_each_rank(env, expected):
    assert rendezvous_env(env) == expected


@pytest.mark.parametrize("env", [
    {"SLURM_NTASKS": "4", "SLURM_PROCID": "0"},  # an sbatch script's own shell: no srun step, one process
    {"SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"},
    {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1"},
    {},
])
def test_single_processes_become_rank_zero_of_one(env):
    out = rendezvous_env({**env, "MASTER_PORT": "2222"})
    assert (out["RANK"], out["WORLD_SIZE"], out["LOCAL_RANK"], out["MASTER_ADDR"]) == ("0", "1", "0", "127.0.0.1")
    assert "MASTER_PORT" not in out  # the given port is kept
    assert int(rendezvous_env(env)["MASTER_PORT"]) > 0


@pytest.mark.parametrize("env,match", [
    ({k: v for k, v in SRUN.items() if k != "SLURM_LAUNCH_NODE_IPADDR"}, "MASTER_ADDR"),
    (MPI, "MASTER_ADDR"),
    ({"PMI_RANK": "1", "PMI_SIZE": "4"}, "PMI_SIZE"),
])
def test_unplaceable_launches_are_refused(env, match):
    with pytest.raises(InputError, match=match):
        rendezvous_env(env)


def test_cuda_device_of_a_rank():
    assert cuda_device_index(1, 8) == 1
    assert cuda_device_index(3, 1) == 0  # srun --gpus-per-task=1: each task sees its GPU as device 0
    with pytest.raises(InputError, match="LOCAL_RANK=3"):
        cuda_device_index(3, 2)


def test_a_rank_with_one_visible_gpu_tells_deepspeed_one_local_rank(gloo, monkeypatch):
    """mpirun with one GPU per rank (CUDA_VISIBLE_DEVICES set per rank): every rank binds cuda:0, so LOCAL_RANK
    becomes 0; OMPI_COMM_WORLD_LOCAL_RANK must follow, or DeepSpeed's engine asserts "conflicting local rank info"
    on every rank but the first of each node. The real engine (gloo, CPU) checks the variables."""
    env = {**MPI, "LOCAL_RANK": "1"}
    assert local_device_env(env, 8) == (1, {})
    assert local_device_env(env, 1) == (0, {"LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "0"})
    assert local_device_env({"LOCAL_RANK": "2"}, 1) == (0, {"LOCAL_RANK": "0"})  # srun: no OMPI variables
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")  # what the rank had before the update
    with pytest.raises(AssertionError, match="conflicting local rank"):
        make_trainer(tiny_recipe(ema=0))
    for k, v in local_device_env(env, 1)[1].items():
        monkeypatch.setenv(k, v)
    make_trainer(tiny_recipe(ema=0))


def test_collectives_wait_for_a_long_validation_on_rank_zero(gloo):
    """Rank 0 validates and exports while the others wait at a barrier: the group's timeout is an hour (DeepSpeed's
    default, 10 minutes, would kill a run with a long validation), DEEPSPEED_TIMEOUT minutes where set."""
    import datetime

    import torch.distributed as dist

    assert collective_timeout({}) == datetime.timedelta(minutes=DEFAULT_TIMEOUT_MINUTES) >= datetime.timedelta(hours=1)
    assert collective_timeout({"DEEPSPEED_TIMEOUT": "90"}) == datetime.timedelta(minutes=90)
    for bad in ("0", "-5", "ten"):
        with pytest.raises(InputError, match="DEEPSPEED_TIMEOUT"):
            collective_timeout({"DEEPSPEED_TIMEOUT": bad})
    backend = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
    assert backend.options._timeout == collective_timeout()  # the group init_distributed made


def test_resuming_zero_state_on_another_world_size_is_refused_clearly(fp32_trainer, tmp_path):
    """ZeRO splits the optimizer state per rank and DeepSpeed cannot re-split it on load: a checkpoint saved by
    two ranks resumed by one is an InputError naming both counts and the fix, before DeepSpeed's own exception."""
    import json

    from pretrain.checkpoint import load_checkpoint, save_checkpoint

    trainer = fp32_trainer
    assert trainer.recipe.zero_stage >= 1
    path = save_checkpoint(trainer, tmp_path, 3, rank=0, data_state={"step": 3}, recipe=trainer.recipe.to_dict(),
                           info={}, keep_last=2)
    (path / "rank-1.json").write_text(json.dumps({"step": 3}))  # as a second rank of the saving run left it
    with pytest.raises(InputError, match=r"saved by 2 rank\(s\), this run has 1.*finetune --init"):
        load_checkpoint(trainer, path, rank=0)
    (path / "rank-1.json").unlink()
    assert load_checkpoint(trainer, path, rank=0)["step"] == 3


def test_ranks_share_initial_weights_but_not_random_streams():
    from pretrain.train import build_rank_model, rank_seed

    recipe = tiny_recipe()
    weights, draws = [], []
    for rank in (0, 1, 0):
        model = build_rank_model(recipe, rank)
        weights.append(model.state_dict())
        draws.append(torch.rand(8))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(draws[0], draws[1])  # DropPath masks differ between ranks
    assert torch.equal(draws[0], draws[2])  # and are reproducible per rank (resume stays bit-identical)
    assert len({rank_seed(s, r) for s in range(4) for r in range(4)}) == 16


# ------------------------------------------------------------------------------------ 14: the GPU benchmark


def test_allocation_failures_read_as_out_of_memory():
    """What bench_gpu's batch halving and `restore run`'s tile halving retry on."""
    from restore.inference import is_out_of_memory as is_oom

    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_oom(ValueError("out of memory"))  # not a runtime error from the allocator


# --------------------------------------------------------------------------- 12.3: EMA from the fp32 masters


def test_bf16_ema_follows_the_fp32_master_weights(gloo):
    from deepspeed.utils import safe_get_full_fp32_param

    recipe = tiny_recipe(precision="bf16", ema=0.5)
    trainer = make_trainer(recipe)
    names = [n for n, _p in trainer.module.named_parameters()]
    # DeepSpeed casts the module to bf16 before it builds the masters: they start equal, then part
    start = {n: safe_get_full_fp32_param(p) for n, p in trainer.module.named_parameters()}
    assert trainer.ema.sharded  # kept as ZeRO keeps the masters: in this rank's slices
    assert all(torch.equal(trainer.ema.gather()[n], start[n]) for n in names)
    before = {n: trainer.ema.shadow[n].clone() for n in names}
    trainer.step([next(Synthetic({"sr_x2": 8, "denoise_g25": 16}))])
    with pytest.raises(RuntimeError, match="gather"):  # updated since: the old gather would be stale
        trainer.ema.shadow
    masters = {n: safe_get_full_fp32_param(p) for n, p in trainer.module.named_parameters()}
    shadow = trainer.ema.gather()
    for n, p in trainer.module.named_parameters():
        assert p.dtype == torch.bfloat16
        assert torch.allclose(shadow[n], 0.5 * before[n] + 0.5 * masters[n], atol=1e-7, rtol=0), n
    rounded = [n for n, p in trainer.module.named_parameters() if not torch.equal(p.float(), masters[n])]
    assert rounded  # the bf16 module weights are not the masters: an EMA of them would differ


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_sharded_ema_on_two_ranks(tmp_path, zero_stage):
    """bf16 ZeRO-2 and ZeRO-3 on 2 ranks: each rank keeps the EMA of its own slices of the fp32 masters (fewer
    elements than the model; no collective per update), and the gathered EMA is the full-model EMA of the masters
    (bit for bit here; the bound leaves room for lerp's vectorised and scalar parts, which split a slice elsewhere
    than the whole tensor); a checkpoint holds the full EMA and a resume loads it back into the same slices."""
    import json
    import subprocess

    from pretrain.launch import free_port
    from tests.pretrain.helpers import PYTHON, REPO, pretrain_env

    cmd = [str(Path(PYTHON).parent / "deepspeed"), "--num_accelerators", "2", "--master_port", str(free_port()),
           str(REPO / "tests" / "pretrain" / "ema_ranks.py"), str(tmp_path), str(zero_stage)]
    proc = subprocess.run(cmd, cwd=REPO, env=pretrain_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    for f in ranks:
        assert f["world_size"] == 2 and f["sharded"] and f["same_keys"], f
        assert 0 < f["slice_numel"] < f["param_numel"], f  # only a part of the model on each rank
        assert f["update_collectives"] == 0, f
        assert f["max_diff"] <= 1e-6, f
        assert f["reloaded"] and f["regathered"], f
    together = ranks[0]["slice_numel"] + ranks[1]["slice_numel"]
    if zero_stage == 2:  # the slices tile the masters
        assert together == ranks[0]["param_numel"]
    else:  # every rank an equal partition of every parameter, the last one padded
        assert ranks[0]["slices"] == ranks[0]["params"] and ranks[0]["slice_numel"] == ranks[1]["slice_numel"]
        assert ranks[0]["param_numel"] <= together < ranks[0]["param_numel"] + 2 * ranks[0]["params"]


def test_validation_gathers_a_sharded_ema_only_for_a_validator_that_scores_it(gloo):
    """Pretraining's validators score the live model: gathering the whole EMA on every rank for them would only
    cost memory (under ZeRO-3 on top of the gathered parameters). A validator with ``scores_ema`` gets it."""
    from pretrain.loop import _validate

    trainer = make_trainer(tiny_recipe(precision="bf16", ema=0.5))
    trainer.step([next(Synthetic({"sr_x2": 8, "denoise_g25": 16}))])
    assert trainer.ema.sharded
    seen = {}

    def plain(step, model):
        return {"psnr": 1.0}

    def scoring(step, model):
        seen["ema"] = trainer.ema.shadow  # raises if the loop did not gather
        return {"psnr": 1.0}

    scoring.scores_ema = True
    _validate(trainer, plain, 1, 0)
    with pytest.raises(RuntimeError, match="gather"):
        trainer.ema.shadow
    _validate(trainer, scoring, 1, 0)
    assert set(seen["ema"]) == set(trainer.module.state_dict())
