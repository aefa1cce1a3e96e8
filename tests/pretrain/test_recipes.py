"""Recipes: frozen dataclasses, typed overrides with clear errors, the published protocols, the generated config."""

from __future__ import annotations

import dataclasses

import pytest

from pretrain.engine import build_ds_config, lr_lambda
from pretrain.recipes import Recipe, get_recipe, list_recipes, recipe_from_dict


def test_registry_and_frozen():
    assert {"smoke", "edt_b", "hat", "ipt"} <= set(list_recipes())
    r = get_recipe("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.lr = 1.0
    with pytest.raises(ValueError, match="unknown recipe 'nope'.*smoke"):
        get_recipe("nope")


def test_overrides_are_typed():
    r = get_recipe("smoke", ["steps=1e3", "lr=3e-4", "tasks=sr_x2, sr_x3", "activation_checkpointing=yes",
                             "betas=0.9,0.95", "milestones=", "zero_stage=3", "ema=0", 'arch={"embed_dim": 12}'])
    assert r.steps == 1000 and r.lr == 3e-4 and r.tasks == ("sr_x2", "sr_x3")
    assert r.activation_checkpointing is True and r.betas == (0.9, 0.95) and r.milestones == ()
    assert r.arch_dict() == {"embed_dim": 12}
    assert recipe_from_dict(r.to_dict()) == r  # JSON-style round trip (lists back to tuples)


@pytest.mark.parametrize(
    "override, message",
    [
        ("stpes=10", "unknown recipe key 'stpes' \\(did you mean 'steps'\\?\\)"),
        ("steps=ten", "override steps='ten': cannot read it as int"),
        ("betas=0.9", "needs 2 comma-separated values"),
        ("activation_checkpointing=maybe", "cannot read it as bool"),
        ("steps", "must read key=value"),
        ("mode=mixed", "mode='mixed'"),
        ("task_weights=1,2", "task_weights has 2 values for 4 tasks"),
        ("arch=[1]", "must be a JSON object"),
        ("gan_type=wgan", "gan_type='wgan': use one of vanilla, hinge, relativistic"),
        ("perceptual_weight=1", "perceptual_weight is a term of the GAN stage: set gan_weight > 0"),
        ("gan_weight=-0.1", "gan_weight=-0.1 must be a finite number >= 0"),
        ("disc_feat=0", "disc_feat=0 must be at least 1"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ValueError, match=message):
        get_recipe("smoke", [override])


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_16_bit_training_needs_a_zero_stage_whose_fp32_masters_the_ema_can_read(precision):
    with pytest.raises(ValueError, match=f"precision={precision} needs zero_stage>=1"):
        get_recipe("smoke", [f"precision={precision}", "zero_stage=0"])
    assert get_recipe("smoke", [f"precision={precision}", "zero_stage=1"]).zero_stage == 1


def test_published_protocols():
    edt, hat, ipt = get_recipe("edt_b"), get_recipe("hat"), get_recipe("ipt")
    assert (edt.lr, edt.betas, edt.steps, edt.milestones) == (2e-4, (0.9, 0.99), 500_000, (250_000, 400_000, 450_000, 475_000))
    assert (edt.mode, edt.batch_size, edt.lr_patch, edt.dn_patch) == ("edt", 4, 48, 192)
    assert (hat.lr_patch, hat.steps, hat.ema, hat.milestones[0]) == (64, 800_000, 0.999, 300_000)
    assert (ipt.mode, ipt.lr, ipt.betas, ipt.contrastive_weight, ipt.grad_clip) == ("ipt", 5e-5, (0.9, 0.999), 0.1, 1.0)
    # IPT: 5e-5 decayed to 2e-5 at epoch 200 of 300
    f = lr_lambda(ipt)
    assert f(0) == 1.0 and f(ipt.milestones[0]) * ipt.lr == pytest.approx(2e-5)
    # EDT: halved at each milestone
    g = lr_lambda(edt)
    assert [g(s) for s in (0, 250_000, 400_000, 475_000)] == [1.0, 0.5, 0.25, 0.0625]


def test_gan_recipes_follow_realesrgan():
    from finetune.recipes import get_recipe as get_finetune_recipe

    gan = get_finetune_recipe("gan")
    # Real-ESRGAN options/train_realesrgan_x4plus.yml: Adam(0.9, 0.99) 1e-4 for G and D, L1 1 / perceptual 1 /
    # GAN 0.1 (vanilla), U-Net D with 64 features, EMA 0.999, 400K iterations, GT 256 (LR 64 at x4), 12 per GPU
    assert (gan.lr, gan.disc_lr, gan.betas, gan.weight_decay) == (1e-4, 1e-4, (0.9, 0.99), 0.0)
    assert (gan.perceptual_weight, gan.gan_weight, gan.gan_type, gan.disc_feat) == (1.0, 0.1, "vanilla", 64)
    assert (gan.ema, gan.steps, gan.lr_patch, gan.batch_size, gan.tasks) == (0.999, 400_000, 64, 12, ("realsr_x4",))
    assert not gan.perceptual_random_init and lr_lambda(gan)(399_999) == 1.0
    smoke = get_finetune_recipe("gan_smoke")
    assert smoke.perceptual_random_init and smoke.precision == "fp32" and smoke.steps <= 50 and smoke.gan_weight > 0
    # the GAN stage is off by default, and refused where its discriminator is untried
    assert get_recipe("smoke").gan_weight == 0 and get_recipe("smoke").perceptual_weight == 0
    with pytest.raises(ValueError, match="not tried under ZeRO-3"):
        get_finetune_recipe("gan", ["zero_stage=3", "ema=0"])


def test_warmup_cosine_schedule():
    r = get_recipe("smoke", ["warmup_steps=10", "steps=110", "lr=1e-3", "min_lr=1e-5"])
    f = lr_lambda(r)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx((1e-2 + 1) / 2, rel=1e-6)
    assert f(110) * r.lr == pytest.approx(1e-5)


def test_generated_deepspeed_config():
    r = get_recipe("ipt", ["grad_accum=4"])
    cfg = build_ds_config(r, micro_batch=8, world_size=32)
    assert cfg["train_batch_size"] == 8 * 4 * 32 == 1024
    assert cfg["fp16"]["enabled"] and cfg["fp16"]["loss_scale"] == 0
    assert cfg["gradient_clipping"] == 1.0 and cfg["zero_allow_untested_optimizer"]
    z3 = build_ds_config(get_recipe("smoke", ["zero_stage=3", "ema=0", "precision=bf16"]), 4, 2)
    assert z3["zero_optimization"]["stage"] == 3 and z3["bf16"]["enabled"] and "gradient_clipping" in z3
    assert "bf16" not in build_ds_config(Recipe(name="x", variant="edt_tiny", tasks=("sr_x2",), precision="fp32"), 1, 1)
