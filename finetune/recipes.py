"""Fine-tuning recipes: `pretrain.recipes.Recipe` values (the same dataclass, engine and schedules as pretraining).

The published protocols (ANCHORS.md section 3):
- EDT (Li et al., IJCAI 2023, ``configs/SRx2_EDTB_Div2kFlickr2K__*.py``): SR fine-tuning on DF2K for 500K iterations at
  a constant LR of 1e-5, Adam(0.9, 0.99), LR patch 48, L1. Denoising fine-tunes 800K and deraining 200K iterations at
  the same constant 1e-5 (``steps=800000`` / ``steps=200000``).
- HAT (Chen et al., CVPR 2023, ``options/train/train_HAT_SRx*_ImageNet_from_scratch.yml`` then the fine-tune
  configs): after ImageNet pretraining, 250K iterations from 1e-5 halved at 125K/200K/225K/240K, LR patch 64, EMA
  0.999.

A constant LR is a ``multistep`` schedule without milestones. ``variant`` and ``arch`` only matter for ``--init
none`` (training from scratch); a pretrained init brings its own architecture. Overrides are the pretraining
recipe's ``key=value`` (``steps=1000``, ``val_every=500``, ``lr_patch=64`` ...).
"""

from __future__ import annotations

from pretrain.recipes import Recipe, RecipeBook

__all__ = ["get_recipe", "list_recipes", "register_recipe"]

_BOOK = RecipeBook("fine-tuning recipe")
register_recipe = _BOOK.register
list_recipes = _BOOK.names
get_recipe = _BOOK.get


@register_recipe
def smoke() -> Recipe:
    """The tiny variant on a CPU: a high constant LR so that a few hundred steps show progress on Set5.

    The architecture overrides are those of ``pretrain``'s ``smoke`` recipe, so ``--init none`` builds the same
    network as a smoke-pretrained export (a fair pretrained-vs-scratch comparison).
    """
    return Recipe(
        name="ft_smoke", variant="edt_tiny", tasks=("sr_x2",), data_name="images",
        arch='{"window_size": [4, 8], "head_depth": 1}',
        mode="edt", batch_size=4, lr_patch=16, dn_patch=32, num_workers=0, steps=200, lr=5e-4, betas=(0.9, 0.99),
        warmup_steps=0, schedule="multistep", milestones=(), grad_clip=1.0, zero_stage=2, precision="fp32",
        log_every=10, ckpt_every=100, keep_last=1, val_every=50,
    )


@register_recipe
def edt() -> Recipe:
    """EDT fine-tuning: constant 1e-5 for 500K steps, LR patch 48 (SR) / 192 (denoise, derain), batch 4 per GPU."""
    return Recipe(
        name="ft_edt", variant="edt_b", tasks=("sr_x2",), data_name="DF2K",
        mode="edt", batch_size=4, lr_patch=48, dn_patch=192, num_workers=4, steps=500_000, lr=1e-5,
        betas=(0.9, 0.99), schedule="multistep", milestones=(), zero_stage=2, precision="bf16",
        log_every=100, ckpt_every=5000, keep_last=2, val_every=5000,
    )


@register_recipe
def hat() -> Recipe:
    """HAT fine-tuning after ImageNet pretraining: 250K steps from 1e-5, halved at 125K/200K/225K/240K, EMA 0.999."""
    return Recipe(
        name="ft_hat", variant="hat", tasks=("sr_x4",), data_name="DF2K",
        mode="edt", batch_size=4, lr_patch=64, dn_patch=192, num_workers=4, steps=250_000, lr=1e-5,
        betas=(0.9, 0.99), schedule="multistep", milestones=(125_000, 200_000, 225_000, 240_000), gamma=0.5,
        ema=0.999, zero_stage=2, precision="bf16", log_every=100, ckpt_every=5000, keep_last=2, val_every=5000,
    )
