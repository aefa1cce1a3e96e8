"""Pretraining recipes: Python functions returning frozen `Recipe` dataclasses (the torchtitan style).

Published-scale recipes follow the papers' protocols as collected in ANCHORS.md section 2:
- EDT (Li et al., "On Efficient Transformer-Based Image Pre-training for Low-Level Vision", IJCAI 2023): multi-task batches, 4 images per task per GPU, LR patch
  48 (SR) / 192 (DN, DR), Adam(0.9, 0.99) 2e-4 halved at 250K/400K/450K/475K of 500K, L1 summed over tasks.
- HAT (Chen et al., "Activating More Pixels in Image Super-Resolution Transformer", CVPR 2023): one SR task,
  LR patch 64, 4 per GPU x 8 GPUs, Adam(0.9, 0.99) 2e-4, 800K iterations halved at 300K/500K/650K/700K/750K, EMA 0.999.
- IPT (Chen et al., "Pre-Trained Image Processing Transformer", CVPR 2021): one random task per batch, 48x48
  patches, batch 256 on 32 GPUs, Adam(0.9, 0.999) 5e-5 decayed to 2e-5 at epoch 200 of 300, L1 + 0.1 SupCon
  (temperature 0.07), clipping 1.0, mixed precision with dynamic loss scaling.

Overrides ``key=value`` are parsed against the field types; an unknown key raises with the valid names.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass
from typing import Any, Callable

from pretrain.degrade import DECODE_ON, DEGRADE_ON
from tasks.degradations import check_mask_options
from tasks.registry import MASK_PATCH, MASK_RATIO

__all__ = ["Recipe", "RecipeBook", "GAN_TYPES", "get_recipe", "list_recipes", "register_recipe", "apply_overrides",
           "recipe_from_dict"]

GAN_TYPES = ("vanilla", "hinge", "relativistic")  # `pretrain.losses`: BCE with logits, hinge, ESRGAN's RaGAN


@dataclass(frozen=True)
class Recipe:
    """Everything a pretraining run needs. Batch sizes are per rank; steps are optimizer steps.

    Attributes (grouped):
        model: ``variant`` (a `restore` variant name), ``tasks``, ``arch`` (JSON object of architecture
            overrides, e.g. ``{"window_size": [4, 8]}``; empty = the variant's own).
        data: ``data`` (shard URLs, brace form allowed, several separated by ``::``), ``mode`` (``"edt"``: every
            step carries all tasks through one body pass; ``"ipt"``: one random task per step), ``batch_size``
            (per task and rank in edt mode, per rank in ipt mode), ``lr_patch`` (input patch side of SR tasks; the
            HR patch is ``lr_patch * scale``), ``dn_patch`` (patch side of scale-1 tasks: denoising, deraining),
            ``num_workers`` (data loader processes per rank), ``task_weights`` (loss weight per task, empty = 1),
            ``degrade_on`` (where the degradations run: ``"workers"`` (CPU data-loader processes), ``"device"``
            (the training device, inside the step) or ``"auto"``: the device on CUDA (the blind pipelines
            excepted, which stay in the workers), the workers otherwise; `pretrain.degrade.worker_roles`),
            ``decode_on`` (where shards' RGB JPEGs are decoded: ``"workers"``, or ``"device"``: batched on the
            training device, nvjpeg on CUDA, with the degradation there too).
        optimisation: ``steps``, ``lr``, ``betas``, ``weight_decay``, ``warmup_steps``, ``schedule``
            (``"cosine"`` or ``"multistep"``), ``milestones``, ``gamma``, ``min_lr`` (cosine floor), ``grad_accum``,
            ``grad_clip`` (0 = off), ``ema`` (decay, 0 = off), ``contrastive_weight`` (IPT's SupCon term, 0 = off).
        engine: ``zero_stage`` (0-3), ``precision`` (``fp32``, ``bf16``, ``fp16``), ``activation_checkpointing``.
        run: ``seed``, ``log_every``, ``ckpt_every``, ``keep_last``, ``val_every`` (0 = off), ``val`` (pairs
            ``task:Benchmark`` scored with ``tasks.evaluate``), ``val_images`` (first N images per benchmark, 0 = all),
            ``data_name`` (named in the model card).
        GAN stage (`pretrain.gan`, Real-ESRGAN's fine-tuning; off while ``gan_weight`` is 0): ``gan_weight``
            (the adversarial term), ``perceptual_weight`` (the VGG19 term; part of the GAN stage), ``gan_type``
            (one of `GAN_TYPES`), ``disc_lr`` and ``disc_feat`` (the U-Net discriminator's LR and base width),
            ``perceptual_random_init`` (random VGG19 features, for tests: no weights file needed).
        self-supervised ``masked`` task (RAM): ``mask_ratio`` (fraction of each patch hidden, RAM 0.5) and
            ``mask_patch`` (side of the hidden cells in pixels, RAM 1: single pixels).
    """

    name: str
    variant: str
    tasks: tuple[str, ...]
    arch: str = ""
    data: str = ""
    data_name: str = "ImageNet-1k"
    mode: str = "edt"
    batch_size: int = 4
    lr_patch: int = 48
    dn_patch: int = 192
    num_workers: int = 4
    task_weights: tuple[float, ...] = ()
    steps: int = 500_000
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "multistep"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    min_lr: float = 0.0
    grad_accum: int = 1
    grad_clip: float = 0.0
    ema: float = 0.0
    contrastive_weight: float = 0.0
    zero_stage: int = 2
    precision: str = "bf16"
    activation_checkpointing: bool = False
    seed: int = 0
    log_every: int = 100
    ckpt_every: int = 5000
    keep_last: int = 3
    val_every: int = 0
    val: tuple[str, ...] = ()
    val_images: int = 0
    gan_weight: float = 0.0
    perceptual_weight: float = 0.0
    gan_type: str = "vanilla"
    disc_lr: float = 1e-4
    disc_feat: int = 64
    perceptual_random_init: bool = False
    mask_ratio: float = MASK_RATIO
    mask_patch: int = MASK_PATCH
    degrade_on: str = "auto"
    decode_on: str = "workers"

    def __post_init__(self) -> None:
        check_mask_options(self.mask_ratio, self.mask_patch)
        if self.degrade_on not in DEGRADE_ON:
            raise ValueError(f"degrade_on={self.degrade_on!r}: use one of {', '.join(DEGRADE_ON)}")
        if self.decode_on not in DECODE_ON:
            raise ValueError(f"decode_on={self.decode_on!r}: use one of {', '.join(DECODE_ON)}")
        if self.decode_on == "device" and self.degrade_on == "workers":
            raise ValueError("decode_on=device decodes on the training device, so the degradation runs there too: "
                             "set degrade_on=device (or auto), or decode_on=workers")
        if self.mode not in ("edt", "ipt"):
            raise ValueError(f"mode={self.mode!r}: use 'edt' (all tasks per step) or 'ipt' (one task per step)")
        if self.schedule not in ("cosine", "multistep"):
            raise ValueError(f"schedule={self.schedule!r}: use 'cosine' or 'multistep'")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision={self.precision!r}: use fp32, bf16 or fp16")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage={self.zero_stage}: DeepSpeed ZeRO stages are 0, 1, 2 and 3")
        if not self.tasks:
            raise ValueError("tasks is empty: name at least one task, e.g. tasks=sr_x2,sr_x4")
        if self.task_weights and len(self.task_weights) != len(self.tasks):
            raise ValueError(
                f"task_weights has {len(self.task_weights)} values for {len(self.tasks)} tasks {self.tasks}"
            )
        if self.precision in ("fp16", "bf16") and self.zero_stage == 0:
            # under ZeRO-0 DeepSpeed trains fp16, and bf16 too, with its FP16_UnfusedOptimizer, whose fp32 masters
            # `pretrain.ema.master_slices` cannot map: the EMA and each checkpoint's fp32 weights would be rounded
            # to 16 bits (seen with DeepSpeed 0.19.8's default bf16 config)
            raise ValueError(f"precision={self.precision} needs zero_stage>=1 (ZeRO-0's fp32 masters are not readable "
                             "for the EMA and the checkpoint's fp32 weights): use zero_stage=1 (no memory cost on "
                             "one GPU) or precision=fp32")
        for name in ("batch_size", "lr_patch", "dn_patch", "steps", "grad_accum", "log_every", "ckpt_every",
                     "disc_feat"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("lr", "weight_decay", "gamma", "min_lr", "grad_clip", "ema", "contrastive_weight",
                     "gan_weight", "perceptual_weight", "disc_lr"):
            if not 0 <= getattr(self, name) < float("inf"):  # nan fails every comparison
                raise ValueError(f"{name}={getattr(self, name)} must be a finite number >= 0")
        if self.gan_type not in GAN_TYPES:
            raise ValueError(f"gan_type={self.gan_type!r}: use one of {', '.join(GAN_TYPES)}")
        if self.perceptual_weight and not self.gan_weight:
            raise ValueError("perceptual_weight is a term of the GAN stage: set gan_weight > 0 too (Real-ESRGAN: "
                             "0.1), or perceptual_weight=0")
        if self.gan_weight and self.zero_stage == 3:
            raise ValueError("the GAN stage's discriminator is not tried under ZeRO-3: use zero_stage<=2 or "
                             "gan_weight=0")
        if self.arch:
            try:
                ok = isinstance(json.loads(self.arch), dict)
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"arch={self.arch!r} must be a JSON object, e.g. '{{\"window_size\": [4, 8]}}'")
        for pair in self.val:
            if ":" not in pair:
                raise ValueError(f"val entry {pair!r} must read task:Benchmark, e.g. sr_x2:Set5")

    def arch_dict(self) -> dict[str, Any] | None:
        """The architecture overrides as a dict (None when empty)."""
        return json.loads(self.arch) if self.arch else None

    def weight(self, task: str) -> float:
        """The loss weight of ``task``."""
        return self.task_weights[self.tasks.index(task)] if self.task_weights else 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RecipeBook:
    """Named recipe functions; pretraining and fine-tuning each keep one book of the same `Recipe` type."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._recipes: dict[str, Callable[[], Recipe]] = {}

    def register(self, fn: Callable[[], Recipe]) -> Callable[[], Recipe]:
        """Register a recipe function under its name (decorator)."""
        self._recipes[fn.__name__] = fn
        return fn

    def names(self) -> list[str]:
        return sorted(self._recipes)

    def get(self, name: str, overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
        """The recipe called ``name`` with ``key=value`` overrides applied."""
        if name not in self._recipes:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return apply_overrides(self._recipes[name](), overrides or [])


_BOOK = RecipeBook("recipe")
register_recipe = _BOOK.register
list_recipes = _BOOK.names
get_recipe = _BOOK.get


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Recipe)


def _parse(key: str, text: str, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    try:
        if tp is bool:
            low = text.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(text)
            return low in ("1", "true", "yes", "on")
        if tp is int:
            return int(float(text)) if "e" in text.lower() else int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
        if origin is tuple:
            items = [t for t in text.replace(" ", "").split(",") if t] if text.strip() else []
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_parse(key, t, args[0]) for t in items)
            if len(items) != len(args):
                raise ValueError(f"needs {len(args)} comma-separated values")
            return tuple(_parse(key, t, a) for t, a in zip(items, args))
    except ValueError as err:
        raise ValueError(f"override {key}={text!r}: cannot read it as {_type_name(tp)} ({err})") from None
    raise TypeError(f"override {key}: unsupported field type {tp}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def apply_overrides(recipe: Recipe, overrides: list[str] | dict[str, Any]) -> Recipe:
    """Return ``recipe`` with overrides (``["lr=1e-4", "tasks=sr_x2,sr_x4"]`` or a dict of typed values)."""
    types = _field_types()
    changes: dict[str, Any] = {}
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    for key, value in items:
        if key not in types:
            close = difflib.get_close_matches(key, types, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown recipe key {key!r}{hint}; valid keys: {', '.join(types)}")
        changes[key] = _parse(key, value, types[key]) if isinstance(value, str) and types[key] is not str else value
    return dataclasses.replace(recipe, **changes)


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"override {item!r} must read key=value, e.g. steps=1000")
    key, value = item.split("=", 1)
    return key.strip(), value


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """Rebuild a recipe from `Recipe.to_dict` output (JSON turns tuples into lists)."""
    types = _field_types()
    unknown = set(d) - set(types)
    if unknown:
        raise ValueError(f"recipe keys {sorted(unknown)} are not Recipe fields")
    return Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ---- recipes --------------------------------------------------------------------------------------------------


@register_recipe
def smoke() -> Recipe:
    """Tiny EDT-mode run over four tasks; finishes in minutes on a CPU (the demo and the tests use it)."""
    return Recipe(
        name="smoke", variant="edt_tiny", tasks=("sr_x2", "sr_x4", "denoise_g25", "derain"), data_name="images",
        # small windows and one downsampling head block: 16 px LR patches need no padding, and the 32 px
        # denoise/derain patches give the same 16 px features, so all four tasks share one body pass
        arch='{"window_size": [4, 8], "head_depth": 1}',
        mode="edt", batch_size=2, lr_patch=16, dn_patch=32, num_workers=1, steps=200, lr=1e-3, betas=(0.9, 0.99),
        warmup_steps=10, schedule="cosine", min_lr=1e-5, grad_clip=1.0, zero_stage=2, precision="fp32",
        ema=0.99, log_every=10, ckpt_every=50, keep_last=2,
    )


@register_recipe
def edt_b() -> Recipe:
    """EDT-B, SR x2/x3/x4 multi-task on a 200K ImageNet subset (ANCHORS 2, EDT ``SRx2x3x4`` config).

    4 images per task per GPU on 8 GPUs gives EDT's "32 per task". For the denoising model use
    ``tasks=denoise_g15,denoise_g25,denoise_g50 steps=800000 milestones=400000,640000,720000,760000``; for
    deraining ``tasks=derain_light,derain_heavy``.
    """
    return Recipe(
        name="edt_b", variant="edt_b", tasks=("sr_x2", "sr_x3", "sr_x4"), data_name="ImageNet-1k (200K subset)",
        mode="edt", batch_size=4, lr_patch=48, dn_patch=192, steps=500_000, lr=2e-4, betas=(0.9, 0.99),
        schedule="multistep", milestones=(250_000, 400_000, 450_000, 475_000), gamma=0.5, zero_stage=2,
        precision="bf16", log_every=100, ckpt_every=5000,
    )


@register_recipe
def hat() -> Recipe:
    """HAT ImageNet pretraining, one scale per run (``tasks=sr_x2`` etc.; HAT pretrains each scale apart)."""
    return Recipe(
        name="hat", variant="hat", tasks=("sr_x4",), mode="edt", batch_size=4, lr_patch=64, steps=800_000,
        lr=2e-4, betas=(0.9, 0.99), schedule="multistep",
        milestones=(300_000, 500_000, 650_000, 700_000, 750_000), gamma=0.5, ema=0.999, zero_stage=2,
        precision="bf16", log_every=100, ckpt_every=5000,
    )


@register_recipe
def ipt() -> Recipe:
    """IPT: one random task per batch over SR x2/x3/x4, noise 30/50 and rain; batch 8 per GPU x 32 = 256.

    300 epochs of ~10M 48x48 patches at batch 256 is ~11.7M steps; the LR drops 5e-5 -> 2e-5 (gamma 0.4) at
    epoch 200.
    """
    return Recipe(
        name="ipt", variant="ipt",
        tasks=("sr_x2", "sr_x3", "sr_x4", "denoise_g30", "denoise_g50", "derain"),
        mode="ipt", batch_size=8, lr_patch=48, dn_patch=48, steps=11_700_000, lr=5e-5, betas=(0.9, 0.999),
        schedule="multistep", milestones=(7_800_000,), gamma=0.4, grad_clip=1.0, contrastive_weight=0.1,
        zero_stage=2, precision="fp16", log_every=100, ckpt_every=10_000,
    )
