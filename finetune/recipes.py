"""Fine-tuning recipes: `pretrain.recipes.Recipe` values (the same dataclass, engine and schedules as pretraining).

The published protocols (ANCHORS.md section 3):
- EDT (Li et al., IJCAI 2023, ``configs/SRx2_EDTB_Div2kFlickr2K__*.py``): SR fine-tuning on DF2K for 500K iterations at
  a constant LR of 1e-5, Adam(0.9, 0.99), LR patch 48, L1. Denoising fine-tunes 800K and deraining 200K iterations at
  the same constant 1e-5 (``steps=800000`` / ``steps=200000``).
- HAT (Chen et al., CVPR 2023, ``options/train/train_HAT_SRx*_ImageNet_from_scratch.yml`` then the fine-tune
  configs): after ImageNet pretraining, 250K iterations from 1e-5 halved at 125K/200K/225K/240K, LR patch 64, EMA
  0.999.

- Real-ESRGAN (Wang et al., ICCVW 2021, ``options/train_realesrgan_x4plus.yml``): the GAN stage, started from the
  PSNR-oriented model (RealESRNet, trained with L1 alone): Adam(0.9, 0.99) at 1e-4 for the generator and the U-Net
  discriminator, L1 1 / perceptual 1 / GAN 0.1 (vanilla), EMA 0.999, 400K iterations, GT patch 256, 12 per GPU.

The GAN stage is its own run (``gan``, ``gan_smoke``) whose ``--init`` is the best export of an L1 fine-tune (``edt``,
``smoke``), as Real-ESRGAN ships two configs (RealESRNet, then RealESRGAN with ``pretrain_network_g``): the L1
stage keeps its best-PSNR export and its own schedule, and each run resumes as any other, with no switch-over step
inside one run's schedule and checkpoints.

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


@register_recipe
def sr_any() -> Recipe:
    """Arbitrary-scale SR (``sr_any``) with LIIF/LTE's protocol (``yinboc/liif``
    ``configs/train-div2k/train_edsr-baseline-liif.yaml``): batch 16 of 48 px LR patches at scales in [1, 4], 2304
    queries each, Adam 1e-4 (betas 0.9/0.999, no decay), 1000 epochs of 1000 iterations halved every 200 epochs.
    fp32, as LIIF and LTE train (under bf16 the implicit tail would get bf16 features beside fp32 query points, a
    mix it does not take)."""
    return Recipe(
        name="ft_sr_any", variant="edt_b", tasks=("sr_any",), data_name="DIV2K",
        mode="edt", batch_size=16, lr_patch=48, dn_patch=192, num_workers=4, steps=1_000_000, lr=1e-4,
        betas=(0.9, 0.999), schedule="multistep", milestones=(200_000, 400_000, 600_000, 800_000), gamma=0.5,
        zero_stage=2, precision="fp32", log_every=100, ckpt_every=5000, keep_last=2, val_every=5000,
    )


@register_recipe
def gan() -> Recipe:
    """Real-ESRGAN's GAN stage from an L1 fine-tune's export: 1e-4 for both networks, L1 1 / perceptual 1 / GAN 0.1,
    EMA 0.999, 400K steps at a constant LR (Real-ESRGAN's one milestone is its last step), LR patch 64 at x4."""
    return Recipe(
        name="ft_gan", variant="edt_b", tasks=("realsr_x4",), data_name="DF2K+OST",
        mode="edt", batch_size=12, lr_patch=64, dn_patch=256, num_workers=4, steps=400_000, lr=1e-4,
        betas=(0.9, 0.99), schedule="multistep", milestones=(), ema=0.999, gan_weight=0.1, perceptual_weight=1.0,
        gan_type="vanilla", disc_lr=1e-4, disc_feat=64, zero_stage=2, precision="bf16", log_every=100,
        ckpt_every=5000, keep_last=2, val_every=5000,
    )


@register_recipe
def gan_smoke() -> Recipe:
    """The GAN stage of the tiny variant on a CPU, from a ``smoke`` fine-tune's export: random VGG19 features (no
    weights file), a 16-channel discriminator, a few dozen steps."""
    return Recipe(
        name="ft_gan_smoke", variant="edt_tiny", tasks=("realsr_x4",), data_name="images",
        arch='{"window_size": [4, 8], "head_depth": 1}',
        mode="edt", batch_size=2, lr_patch=16, dn_patch=32, num_workers=0, steps=40, lr=2e-4, betas=(0.9, 0.99),
        schedule="multistep", milestones=(), ema=0.99, gan_weight=0.1, perceptual_weight=1.0, disc_lr=2e-4,
        disc_feat=16, perceptual_random_init=True, zero_stage=2, precision="fp32", log_every=10, ckpt_every=20,
        keep_last=1, val_every=20,
    )
