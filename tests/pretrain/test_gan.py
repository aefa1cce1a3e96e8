"""The GAN stage: losses and discriminator against BasicSR (the test-only ``basicsr-fixed``), then real runs of the
stage through `pretrain.train.run_training` on one-process gloo DeepSpeed engines (tiny EDT, random VGG features):
finite losses, a discriminator step equal to a plain PyTorch one, and a resume equal to the straight run."""

from __future__ import annotations

import types
from dataclasses import replace

import pytest
import torch

from pretrain.losses import (REALESRGAN_LAYER_WEIGHTS, VGG19_LAYERS, PerceptualLoss, UNetDiscriminatorSN,
                             discriminator_gan_loss, generator_gan_loss, vgg19_weights_file)
from tasks.errors import InputError
from tests.pretrain.test_gpu_paths import gloo  # noqa: F401 - fixture


def _images(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------- perceptual loss, VGG19


def test_vgg19_layer_names_are_basicsrs():
    from basicsr.archs.vgg_arch import NAMES

    assert VGG19_LAYERS == NAMES["vgg19"]


def test_perceptual_loss_equals_basicsrs(monkeypatch, tmp_path):
    import basicsr.archs.vgg_arch as vgg_arch
    from basicsr.losses.basic_loss import PerceptualLoss as BasicPerceptual

    torch.manual_seed(0)
    ours = PerceptualLoss(random_init=True)
    assert ours.layer_weights == {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["E"])  # BasicSR's copy of the same weights, through its own constructor
    features[: len(ours.vgg.features)].load_state_dict(ours.vgg.features.state_dict())
    monkeypatch.chdir(tmp_path)  # no experiments/pretrained_models/ here: BasicSR asks torchvision for vgg19
    monkeypatch.setattr(vgg_arch.vgg, "vgg19", lambda **_kw: types.SimpleNamespace(features=features))
    ref = BasicPerceptual(REALESRGAN_LAYER_WEIGHTS, vgg_type="vgg19", use_input_norm=True, range_norm=False,
                          perceptual_weight=1.0, style_weight=0.0, criterion="l1")
    x, gt = _images(2, 3, 32, 32, seed=1).requires_grad_(), _images(2, 3, 32, 32, seed=2)
    x_ref = x.detach().clone().requires_grad_()
    loss = ours(x, gt)
    expected, style = ref(x_ref, gt)
    assert style is None
    assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-7), (loss.item(), expected.item())
    loss.backward()
    expected.backward()
    assert torch.allclose(x.grad, x_ref.grad, rtol=1e-5, atol=1e-9)
    assert not any(p.requires_grad for p in ours.parameters())


def test_vgg19_weights_come_from_the_torch_cache_or_a_clear_error(tmp_path, monkeypatch):
    # torch.hub.set_dir pins the folder for the whole session (a later TORCH_HOME would be ignored): patch the
    # module's own setting instead, restored after the test
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    path = vgg19_weights_file()
    assert path == tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(InputError, match=rf"place vgg19-dcbb9e9d.pth .* in {path.parent}.*perceptual_random_init"):
        PerceptualLoss()
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(3)
    features = make_layers(cfgs["E"])
    path.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    loaded = PerceptualLoss().vgg.features.state_dict()
    assert loaded and all(torch.equal(v, features.state_dict()[k]) for k, v in loaded.items())


# ------------------------------------------------------------------------------------------------ GAN losses


def test_gan_losses_equal_basicsrs():
    from basicsr.losses.gan_loss import GANLoss

    real, fake = torch.randn(2, 1, 8, 8) + 0.5, torch.randn(2, 1, 8, 8) - 0.3
    for kind in ("vanilla", "hinge"):
        ref = GANLoss(kind)
        assert torch.allclose(generator_gan_loss(kind, fake), ref(fake, True, is_disc=False))
        d_real, d_fake = discriminator_gan_loss(kind, real, fake)
        assert torch.allclose(d_real, ref(real, True, is_disc=True))
        assert torch.allclose(d_fake, ref(fake, False, is_disc=True))
    # relativistic: ESRGAN's formulas over BasicSR's vanilla GANLoss (basicsr/models/esrgan_model.py)
    ref = GANLoss("vanilla")
    g = (ref(real - fake.mean(), False) + ref(fake - real.mean(), True)) / 2
    assert torch.allclose(generator_gan_loss("relativistic", fake, real), g)
    d_real, d_fake = discriminator_gan_loss("relativistic", real, fake)
    assert torch.allclose(d_real, ref(real - fake.mean(), True, is_disc=True) * 0.5)
    assert torch.allclose(d_fake, ref(fake - real.mean(), False, is_disc=True) * 0.5)
    with pytest.raises(ValueError, match="vanilla, hinge, relativistic"):
        generator_gan_loss("wgan", fake)


# --------------------------------------------------------------------------------------------- discriminator


@pytest.mark.parametrize("skip", [True, False])
def test_unet_discriminator_equals_basicsrs(skip):
    from basicsr.archs.discriminator_arch import UNetDiscriminatorSN as Reference

    torch.manual_seed(0)
    ref = Reference(3, num_feat=16, skip_connection=skip)
    ours = UNetDiscriminatorSN(3, num_feat=16, skip_connection=skip)
    state = ref.state_dict()
    assert sorted(ours.state_dict()) == sorted(state)
    ours.load_state_dict(state)
    x = _images(2, 3, 32, 40)
    for _ in range(2):  # training mode: each forward runs one power iteration on the saved vectors
        assert torch.allclose(ours(x), ref(x), atol=1e-6)
    assert all(torch.allclose(v, ref.state_dict()[k], atol=1e-6) for k, v in ours.state_dict().items())
    ours.eval(), ref.eval()
    assert ours(x).shape == (2, 1, 32, 40) and torch.allclose(ours(x), ref(x), atol=1e-6)


# ----------------------------------------------------------------------------- the stage on real engines


def _recipe(**changes):
    from finetune.recipes import get_recipe

    base = replace(get_recipe("gan_smoke"), tasks=("sr_x2",), lr_patch=8, batch_size=2, steps=6, log_every=1,
                   ckpt_every=3, val_every=0, keep_last=3)
    return replace(base, **changes)


@pytest.mark.parametrize("kind", ["vanilla", "hinge", "relativistic"])
def test_discriminator_step_equals_a_plain_pytorch_step(gloo, kind):
    from pretrain.gan import GANStage

    recipe = _recipe(gan_type=kind)
    stage = GANStage(recipe, micro_batch=2, world_size=1, device=torch.device("cpu"))
    ref = UNetDiscriminatorSN(3, recipe.disc_feat)
    before = {k: v.clone() for k, v in stage.module.state_dict().items()}
    ref.load_state_dict(before)
    out, gt = _images(2, 3, 16, 16, seed=1).requires_grad_(), _images(2, 3, 16, 16, seed=2)

    total, terms = stage.generator_loss({"sr_x2": out}, {"sr_x2": gt})
    total.backward()
    assert out.grad is not None and set(terms) == {"perceptual", "gan"}
    assert all(p.grad is None for p in stage.module.parameters())  # frozen for the generator's step
    parts = stage.discriminator_step()

    if kind == "relativistic":
        ref(gt)
    ref(out.detach())  # the generator step's forwards (a power iteration each), as the stage ran them
    real_term, fake_term = discriminator_gan_loss(kind, ref(gt), ref(out.detach()))
    opt = torch.optim.AdamW(ref.parameters(), lr=recipe.disc_lr, betas=recipe.betas, weight_decay=0)
    (real_term + fake_term).backward()
    opt.step()
    assert torch.allclose(parts["d_real"], real_term) and torch.allclose(parts["d_fake"], fake_term)
    after = stage.module.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items())
    for k, v in ref.state_dict().items():
        assert torch.allclose(after[k], v, atol=1e-6), k


def test_seeded_builds_leave_every_random_stream_of_the_run_alone(gloo, monkeypatch):
    """The discriminator (and LPIPS's random backbone) are built from fixed seeds in the middle of a run. With
    ``torch.manual_seed`` there every GPU would be reseeded, which ``fork_rng(devices=[])`` does not restore: each
    rank would leave with the same CUDA stream (the same dropout and stochastic-depth masks). Checked on CPU by
    recording what would reach the GPUs."""
    from pretrain.gan import GANStage
    from tasks.perceptual import LPIPSMetric
    from tasks.seeding import cpu_seeded

    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    torch.manual_seed(123)  # the run's own seeding: this one reaches the GPUs
    assert reseeded == [123]
    cpu_before = torch.random.get_rng_state()
    with cpu_seeded(3):
        first = torch.rand(4)
    with cpu_seeded(3):
        assert torch.equal(torch.rand(4), first)
    assert torch.equal(torch.random.get_rng_state(), cpu_before)
    stage = GANStage(_recipe(), micro_batch=2, world_size=1, device=torch.device("cpu"))
    LPIPSMetric("alex", backbone="random")
    assert reseeded == [123], "a seeded build reseeded the CUDA streams"
    assert torch.equal(torch.random.get_rng_state(), cpu_before)
    again = GANStage(_recipe(), micro_batch=2, world_size=1, device=torch.device("cpu"))
    for k, v in stage.module.state_dict().items():  # and the seed still fixes the discriminator
        assert torch.equal(again.module.state_dict()[k], v), k


class Stream:
    """Random (lq, gt) batches that depend only on the step (a resumed stream continues the same sequence)."""

    def __init__(self, state=None):
        self.step = (state or {}).get("step", 0)

    def __iter__(self):
        return self

    def __next__(self):
        from pretrain.data import Batch, StepData

        self.step += 1
        gen = torch.Generator().manual_seed(self.step)
        return StepData(self.step, {"sr_x2": Batch(torch.rand(2, 3, 8, 8, generator=gen),
                                                   torch.rand(2, 3, 16, 16, generator=gen), "sr_x2")})

    def state_dict(self):
        return {"step": self.step}


def _run(recipe, run_dir, resume_path=None, stop_after=None):
    from pretrain.train import run_training
    from restore.model import RestorationModel

    torch.manual_seed(0)
    model = RestorationModel(recipe.variant, tasks=list(recipe.tasks), arch=recipe.arch_dict())
    return run_training(recipe, model, lambda _info, state: Stream(state), run_dir=run_dir,
                        resume_path=resume_path, stop_after=stop_after)


def _optimizer_state(folder):
    """The ZeRO optimizer state DeepSpeed saved in ``folder`` (one rank)."""
    return torch.load(next(folder.glob("*optim_states.pt")), map_location="cpu", weights_only=False)


def _disc_files(step_dir):
    d = step_dir / "discriminator"
    module = torch.load(d / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    return module, _optimizer_state(d)


def _assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, (int, float, str, bool, type(None))):
        assert a == b, where


def test_gan_run_trains_both_networks_and_resumes_exactly(gloo, tmp_path):
    from safetensors.torch import load_file

    recipe = _recipe()
    straight = _run(recipe, tmp_path / "straight")
    assert straight.step == 6
    for key in ("loss", "loss:sr_x2", "loss:perceptual", "loss:gan", "loss:d_real", "loss:d_fake"):
        assert key in straight.losses and torch.isfinite(torch.tensor(straight.losses[key])), key
    end = tmp_path / "straight" / "checkpoints" / "step-6"
    assert (end / "COMPLETE").exists() and (end / "discriminator").is_dir()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        initial = UNetDiscriminatorSN(3, recipe.disc_feat).state_dict()
    trained, _ = _disc_files(end)
    assert any(not torch.equal(trained[k], v) for k, v in initial.items() if k.endswith(("weight", "weight_orig")))

    # what a run killed after step 3 leaves: the straight run's own step-3 checkpoint, resumed in a new folder
    half = tmp_path / "straight" / "checkpoints" / "step-3"
    assert (half / "COMPLETE").exists() and (half / "discriminator").is_dir()
    resumed = _run(recipe, tmp_path / "resumed", resume_path=half)
    assert resumed.step == 6
    again = tmp_path / "resumed" / "checkpoints" / "step-6"
    for name in ("model.safetensors", "ema.safetensors"):
        _assert_same(load_file(str(end / name)), load_file(str(again / name)), name)
    (m1, o1), (m2, o2) = _disc_files(end), _disc_files(again)
    _assert_same(m1, m2, "discriminator")
    _assert_same(o1["optimizer_state_dict"], o2["optimizer_state_dict"], "discriminator optimizer")
    _assert_same(_optimizer_state(end)["optimizer_state_dict"], _optimizer_state(again)["optimizer_state_dict"],
                 "generator optimizer")
    assert straight.losses == resumed.losses


def test_gan_stage_refuses_point_outputs_and_odd_patches():
    from dataclasses import replace

    from pretrain.gan import check_gan_patches
    from pretrain.recipes import get_recipe

    base = get_recipe("smoke", ["gan_weight=0.1", "lr_patch=16"])
    check_gan_patches(replace(base, tasks=("realsr_x4",)))
    with pytest.raises(ValueError, match="sr_any"):
        check_gan_patches(replace(base, tasks=("sr_any",)))
    with pytest.raises(ValueError, match="divisible by 8"):
        check_gan_patches(replace(base, tasks=("realsr_x4",), lr_patch=15))
