"""The DeepSpeed engine around a `RestorationModel`: generated config, AdamW, schedules, EMA, losses.

- The DeepSpeed JSON is generated from the recipe (torchtitan's "configs are code" idea), never hand-kept.
- ``torch.optim.AdamW`` is passed in with ``zero_allow_untested_optimizer``: DeepSpeed's own ``"Adam"`` JIT-builds
  ``fused_adam`` even on CPU (ECOSYSTEM.md section 3).
- Schedules: linear warm-up, then cosine to ``min_lr`` or step decay at milestones (the EDT/HAT schedules).
- Activation checkpointing wraps each block of the body's ``nn.ModuleList``s in non-reentrant
  ``torch.utils.checkpoint`` from the outside, so the model code knows nothing of it and its parameter names do
  not change (checkpoints stay loadable either way).
- Losses: L1 per task, weighted and summed (EDT sums over tasks); IPT's supervised contrastive term (Khosla et
  al. 2020, as in IPT's MindSpore ``src/loss.py``: temperature 0.07, weight 0.1) on the body's output features,
  where patches cut from the same image are positives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.data import StepData
from pretrain.recipes import Recipe

__all__ = ["build_ds_config", "lr_lambda", "EMA", "enable_activation_checkpointing", "Trainer", "MultiTask", "unwrap_state_dict", "supcon_loss"]


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


class EMA:
    """Exponential moving average of the weights (fp32), as BasicSR's ``model_ema(decay=0.999)``."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach().float(), alpha=1 - self.decay)
            else:
                self.shadow[k].copy_(v)


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each body block in the backward pass. Returns the number of blocks wrapped."""
    from torch.utils.checkpoint import checkpoint

    wrapped = 0
    for module in model.body.modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
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
    return per_anchor[positives.any(1)].mean() if positives.any() else logits.new_zeros(())


def _patch_features(feat: torch.Tensor, grid: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut body features (B, C, h, w) into grid x grid pooled patch vectors (B*grid^2, C), labelled by image."""
    b = feat.shape[0]
    pooled = F.adaptive_avg_pool2d(feat, grid).flatten(2).transpose(1, 2).reshape(b * grid * grid, -1)
    labels = torch.arange(b, device=feat.device).repeat_interleave(grid * grid)
    return pooled, labels


class MultiTask(nn.Module):
    """The module DeepSpeed wraps: ``forward({task: lq}) -> {task: out}`` through the engine's own ``__call__``.

    Every forward goes through ``engine(...)`` so ZeRO-3's parameter gathering and DeepSpeed's bookkeeping hooks
    fire; several tasks run `forward_multi` (one body pass), a single task the plain ``forward``. State-dict keys
    carry a ``model.`` prefix, which `unwrap_state_dict` removes.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batches: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(batches) == 1:
            (task, x), = batches.items()
            return {task: self.model(x, task=task)}
        return self.model.forward_multi(batches)


def unwrap_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the `MultiTask` wrapper's ``model.`` prefix from state-dict keys."""
    return {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}


@dataclass
class StepResult:
    loss: float
    task_losses: dict[str, float]
    images: int


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
        self.ema = EMA(self.module, recipe.ema) if recipe.ema > 0 else None
        self._body_out: torch.Tensor | None = None
        if recipe.contrastive_weight > 0:
            self.module.body.register_forward_hook(self._keep_body_output)

    @property
    def module(self) -> nn.Module:
        """The wrapped model (under ZeRO-3 its parameters are partitioned: shape (0,) outside a gather)."""
        return self.engine.module.model

    @property
    def dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.recipe.precision, torch.float32)

    @property
    def device(self) -> torch.device:
        return self.engine.device

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _keep_body_output(self, _module, _inputs, output) -> None:
        self._body_out = output

    def losses(self, data: StepData) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted loss of one micro-batch and the plain L1 of each task in it."""
        r = self.recipe
        inputs = {t: b.lq.to(self.device, self.dtype) for t, b in data.batches.items()}
        targets = {t: b.gt.to(self.device) for t, b in data.batches.items()}
        self._body_out = None
        outputs = self.engine(inputs)
        per_task = {t: F.l1_loss(outputs[t].float(), targets[t]) for t in outputs}
        total = sum(r.weight(t) * l for t, l in per_task.items())
        if r.contrastive_weight > 0 and self._body_out is not None:
            feats, labels = _patch_features(self._body_out)
            per_task["contrastive"] = supcon_loss(feats, labels)
            total = total + r.contrastive_weight * per_task["contrastive"]
        return total, per_task

    def step(self, micro_batches: list[StepData]) -> StepResult:
        """One optimizer step: forward/backward over each micro-batch, then the optimizer and EMA update."""
        self.engine.train()
        sums: dict[str, float] = {}
        total_loss, images = 0.0, 0
        for data in micro_batches:
            loss, per_task = self.losses(data)
            self.engine.backward(loss)
            self.engine.step()  # DeepSpeed steps the optimizer and scheduler only at the accumulation boundary
            total_loss += float(loss.detach())
            for t, v in per_task.items():
                sums[t] = sums.get(t, 0.0) + float(v.detach())
            images += data.images
        if self.ema is not None:
            self.ema.update(self.module)
        n = len(micro_batches)
        return StepResult(total_loss / n, {t: v / n for t, v in sums.items()}, images)
