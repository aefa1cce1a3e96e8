"""The DeepSpeed engine around a `RestorationModel`: generated config, AdamW, schedules, EMA, losses.

- The DeepSpeed JSON is generated from the recipe (torchtitan's "configs are code" idea), never hand-kept.
- ``torch.optim.AdamW`` is passed in with ``zero_allow_untested_optimizer``: DeepSpeed's own ``"Adam"`` JIT-builds
  ``fused_adam`` even on CPU (ECOSYSTEM.md section 3).
- Schedules: linear warm-up, then cosine to ``min_lr`` or step decay at milestones (the EDT/HAT schedules).
- Activation checkpointing wraps the body's blocks (the elements of its outermost ``nn.ModuleList``s, or what the
  body lists in ``checkpoint_blocks()``) in non-reentrant ``torch.utils.checkpoint`` from the outside, so the model
  code knows nothing of it and its parameter names do not change (checkpoints stay loadable either way). One level
  only: a checkpointed block inside a checkpointed group would run its forward three times per step.
- bf16: gradients are reduced across ranks in fp32 (``communication_data_type``); a bf16 sum over many ranks
  loses the small gradients' low bits before the fp32 master weights ever see them.
- The step keeps its losses as device tensors (a ``float()`` per task per micro-step would synchronise the GPU);
  the loop converts them at log steps only.
- EMA (`pretrain.ema`): kept in fp32 on the engine's device, updated with one fused ``_foreach_lerp_`` from the
  optimizer's fp32 master weights (under bf16 the module holds bf16 copies), sharded over the ranks as ZeRO shards
  those (`master_slices`) and gathered only for checkpoints and validation.
- Losses: L1 per task, weighted and summed (EDT sums over tasks; ``sr_any`` on its sampled query points); IPT's
  supervised contrastive term (Khosla et al. 2020, as in IPT's MindSpore ``src/loss.py``: temperature 0.07,
  weight 0.1) on the body's output features, where patches cut from the same image are positives.
- The GAN stage (``gan_weight > 0``, Real-ESRGAN's fine-tuning): `pretrain.gan.GANStage` adds its perceptual and
  adversarial terms in `Trainer.losses` and trains its discriminator, on its own engine, after each generator step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.batch import Batch, StepData
from pretrain.data import masked_l1, stream_tasks
from pretrain.degrade import degrade_pending
from pretrain.ema import EMA, fp32_master_weights, full_fp32_state_dict, master_slices  # noqa: F401 (re-exported)
from pretrain.recipes import Recipe

__all__ = [
    "build_ds_config", "lr_lambda", "EMA", "fp32_master_weights", "master_slices", "full_fp32_state_dict",
    "enable_activation_checkpointing",
    "checkpoint_blocks", "Trainer", "MultiTask", "model_input", "unwrap_state_dict", "supcon_loss",
]


def build_ds_config(recipe: Recipe, micro_batch: int, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for ``recipe``; ``micro_batch`` is the images one rank feeds per micro-step."""
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": recipe.grad_accum,
        "train_batch_size": micro_batch * recipe.grad_accum * world_size,
        "zero_optimization": {"stage": recipe.zero_stage},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # the loop logs; DeepSpeed's own step prints would interleave
        "wall_clock_breakdown": False,
    }
    if recipe.zero_stage == 3:
        # gather the full weights into the consolidated 16-bit state dict on save too (cheap at these sizes)
        cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    if recipe.grad_clip > 0:
        cfg["gradient_clipping"] = recipe.grad_clip
    if recipe.precision == "bf16":
        cfg["bf16"] = {"enabled": True}
        cfg["communication_data_type"] = "fp32"  # DeepSpeed's default for bf16 is bf16 all-reduce/reduce-scatter
    elif recipe.precision == "fp16":
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}  # dynamic loss scaling (IPT)
    return cfg


def lr_lambda(recipe: Recipe):
    """The LR multiplier per optimizer step: linear warm-up, then cosine or multistep decay."""

    def factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        if recipe.schedule == "cosine":
            span = max(1, recipe.steps - recipe.warmup_steps)
            t = min(1.0, (step - recipe.warmup_steps) / span)
            floor = recipe.min_lr / recipe.lr
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        return recipe.gamma ** sum(step >= m for m in recipe.milestones)

    return factor


def checkpoint_blocks(body: nn.Module) -> list[nn.Module]:
    """The modules activation checkpointing wraps: ``body.checkpoint_blocks()`` when the family declares them,
    else the elements of the body's outermost ``nn.ModuleList``s (the groups; lists nested in them are left)."""
    if hasattr(body, "checkpoint_blocks"):
        return list(body.checkpoint_blocks())
    blocks: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.ModuleList):
                blocks.extend(child)  # not descended into: one checkpoint level
            else:
                visit(child)

    visit(body)
    return blocks


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each body block (`checkpoint_blocks`) in the backward pass. Returns the number of blocks wrapped."""
    from torch.utils.checkpoint import checkpoint

    wrapped = 0
    for block in checkpoint_blocks(model.body):
        if getattr(block, "_ckpt_wrapped", False):
            continue
        inner = block.forward

        def forward(*args, _inner=inner, **kwargs):
            if not torch.is_grad_enabled():
                return _inner(*args, **kwargs)
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        block.forward = forward  # an instance attribute: parameter names stay the same
        block._ckpt_wrapped = True
        wrapped += 1
    return wrapped


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over (N, D) features with (N,) integer labels."""
    z = F.normalize(features.float(), dim=1)
    logits = z @ z.t() / temperature
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_anchor = -(log_prob.masked_fill(~positives, 0).sum(1)) / positives.sum(1).clamp(min=1)
    # the mean over the anchors that have a positive, without a host sync (an `if` on a CUDA tensor or a boolean
    # index waits for the device, twice per body pass): 0 where none has one
    has = positives.any(1)
    return (per_anchor * has).sum() / has.sum().clamp(min=1)


def _patch_features(feat: torch.Tensor, grid: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut body features (B, C, h, w) into grid x grid pooled patch vectors (B*grid^2, C), labelled by image."""
    b = feat.shape[0]
    pooled = F.adaptive_avg_pool2d(feat, grid).flatten(2).transpose(1, 2).reshape(b * grid * grid, -1)
    labels = torch.arange(b, device=feat.device).repeat_interleave(grid * grid)
    return pooled, labels


class MultiTask(nn.Module):
    """The module DeepSpeed wraps: ``forward({task: lq}) -> {task: out}`` through the engine's own ``__call__``.

    Every forward goes through ``engine(...)`` so ZeRO-3's parameter gathering and DeepSpeed's bookkeeping hooks
    fire; several tasks run `forward_multi` (one body pass), a single task the plain ``forward``, or
    ``query_points`` for ``sr_any``, whose input is ``(lq, coord, cell)`` (`model_input`). State-dict keys carry a
    ``model.`` prefix, which `unwrap_state_dict` removes.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batches: dict[str, torch.Tensor | tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
        if len(batches) == 1:
            (task, x), = batches.items()
            if isinstance(x, tuple):
                return {task: self.model.query_points(x[0], task, x[1], x[2])}
            return {task: self.model(x, task=task)}
        return self.model.forward_multi(batches)


def model_input(batch: Batch, device: torch.device, dtype: torch.dtype) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """What `MultiTask` takes for one task's batch, on ``device``: ``lq`` in the engine's dtype, and for ``sr_any``
    ``(lq, coord, cell)`` with the points left in fp32: bf16 rounds a coordinate near +-1 to steps of 1/256, a third
    of an HR pixel of a 192 px crop (2/192)."""
    # non_blocking: a no-op for pageable memory, an overlapped copy for pinned batches (StepData.pin_memory)
    lq = batch.lq.to(device, dtype, non_blocking=True)
    if batch.coord is None:
        return lq
    return lq, batch.coord.to(device, non_blocking=True), batch.cell.to(device, non_blocking=True)


def unwrap_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the `MultiTask` wrapper's ``model.`` prefix from state-dict keys."""
    return {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}


@dataclass
class StepResult:
    """One optimizer step's mean losses, as 0-d fp32 tensors on the engine's device (``float()`` them to read)."""

    loss: torch.Tensor
    task_losses: dict[str, torch.Tensor]
    images: int


def _keeper(store: list[torch.Tensor]):
    """A forward hook appending the module's output to ``store``: a plain closure over a list, not a bound method
    of the trainer, so a copy of the model never drags the trainer (and its engine) along."""

    def keep(_module, _inputs, output) -> None:
        store.append(output)

    return keep


class Trainer:
    """A DeepSpeed engine for one model and recipe; `step` runs one optimizer step over ``grad_accum`` batches.

    Args:
        model: the `RestorationModel` (or any module with per-task ``forward(x, task)``/``forward_multi``).
        recipe: the recipe (optimizer, schedule, precision, ZeRO stage, EMA, loss terms).
        micro_batch: images per rank per micro-step (for DeepSpeed's batch-size bookkeeping).
        world_size: number of ranks.
        params: the parameters to optimise (default: all); fine-tuning may pass a subset.
    """

    def __init__(self, model: nn.Module, recipe: Recipe, micro_batch: int, world_size: int, params=None):
        from pretrain.launch import skip_shm_op_build

        skip_shm_op_build()
        import deepspeed

        self.recipe = recipe
        if recipe.activation_checkpointing:
            enable_activation_checkpointing(model)
        params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(recipe))
        self.ds_config = build_ds_config(recipe, micro_batch, world_size)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=MultiTask(model), optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config
        )
        # explicit: every tensor of ours (inputs, loss sums, the loop's all-reduces) goes here; nccl takes CUDA only
        self.device = torch.device(self.engine.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # training shapes are fixed per task: tune each conv once
        # the EMA of a sharded optimizer is sharded the same way: no all-reduce of the whole model per step
        self.ema = EMA(self.module, recipe.ema, master_slices=master_slices(self.module)) if recipe.ema > 0 else None
        self._tasks = stream_tasks(recipe.tasks, recipe.mask_ratio, recipe.mask_patch)  # for degrade_pending
        # every body pass of the micro-step (forward_multi runs one per group of equal feature shape)
        self._body_outs: list[torch.Tensor] = []
        if recipe.contrastive_weight > 0:
            self.module.body.register_forward_hook(_keeper(self._body_outs))
        self.gan = None
        if recipe.gan_weight > 0:
            from pretrain.gan import GANStage  # late: it imports this module

            self.gan = GANStage(recipe, micro_batch, world_size, self.device)

    @property
    def module(self) -> nn.Module:
        """The wrapped model (under ZeRO-3 its parameters are partitioned: shape (0,) outside a gather)."""
        return self.engine.module.model

    @property
    def dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.recipe.precision, torch.float32)

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def losses(self, data: StepData) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted loss of one micro-batch and the plain L1 of each task in it (and the GAN stage's terms)."""
        r = self.recipe
        data = degrade_pending(data, self._tasks, r.lr_patch, self.device)  # degrade_on=device: here, batched
        inputs = {t: model_input(b, self.device, self.dtype) for t, b in data.batches.items()}
        # non_blocking: a no-op for pageable memory, an overlapped copy for pinned batches (StepData.pin_memory)
        targets = {t: b.gt.to(self.device, non_blocking=True) for t, b in data.batches.items()}
        masks = {t: b.mask.to(self.device, non_blocking=True) for t, b in data.batches.items() if b.mask is not None}
        self._body_outs.clear()
        outputs = self.engine(inputs)
        # L1 per task; the masked task's only on the pixels it hid (RAM's MaskL1Loss)
        per_task = {t: masked_l1(outputs[t].float(), targets[t], masks.get(t)) for t in outputs}
        total = sum(r.weight(t) * l for t, l in per_task.items())
        if self.gan is not None:
            adversarial, gan_terms = self.gan.generator_loss(outputs, targets)
            total = total + adversarial
            per_task.update(gan_terms)
        if r.contrastive_weight > 0 and self._body_outs:
            # patches of one image are positives within a body pass; each pass (task group) is its own problem
            terms = [supcon_loss(*_patch_features(feat)) for feat in self._body_outs]
            per_task["contrastive"] = torch.stack(terms).mean()
            total = total + r.contrastive_weight * per_task["contrastive"]
        self._body_outs.clear()  # the features belong to this micro-step's graph only
        return total, per_task

    def step(self, micro_batches: list[StepData]) -> StepResult:
        """One optimizer step: forward/backward over each micro-batch, then the optimizer and EMA update."""
        self.engine.train()
        sums: dict[str, torch.Tensor] = {}
        total_loss, images = torch.zeros((), device=self.device), 0
        for data in micro_batches:
            loss, per_task = self.losses(data)
            self.engine.backward(loss)
            self.engine.step()  # DeepSpeed steps the optimizer and scheduler only at the accumulation boundary
            total_loss = total_loss + loss.detach().float()
            for t, v in per_task.items():
                sums[t] = sums.get(t, 0.0) + v.detach().float()
            images += data.images
        if self.gan is not None:  # the discriminator's turn, on this step's outputs
            for t, v in self.gan.discriminator_step().items():
                sums[t] = sums.get(t, 0.0) + v.float()
        # fp16: a step whose gradients overflowed is skipped by DeepSpeed's loss scaler (weights unchanged): the EMA
        # skips it too
        if self.ema is not None and self.engine.was_step_applied():
            self.ema.update(self.module, master_slices=master_slices(self.module))
        n = len(micro_batches)
        return StepResult(total_loss / n, {t: v / n for t, v in sums.items()}, images)
