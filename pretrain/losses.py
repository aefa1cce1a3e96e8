"""Training losses of the GAN stage: VGG19 perceptual loss, GAN losses, and Real-ESRGAN's U-Net discriminator.

- Perceptual: L1 between VGG19 features of output and target (Johnson et al. 2016), taken before the ReLU as
  ESRGAN and Real-ESRGAN take them (``conv*_*`` layers), on ImageNet-normalised [0, 1] inputs, with Real-ESRGAN's
  layer weights (``options/train_realesrgan_x4plus.yml``: conv1_2 0.1, conv2_2 0.1, conv3_4 1, conv4_4 1, conv5_4
  1). It is BasicSR's ``PerceptualLoss(use_input_norm=True, range_norm=False, criterion="l1")`` on torchvision's
  VGG19 (``basicsr/losses/basic_loss.py``, ``basicsr/archs/vgg_arch.py``).
- GAN losses on discriminator logits, as BasicSR's ``GANLoss`` (``basicsr/losses/gan_loss.py``): ``vanilla``
  (binary cross-entropy with logits, Real-ESRGAN's), ``hinge``, and ``relativistic`` (RaGAN as ESRGAN trains it,
  ``basicsr/models/esrgan_model.py``: each side's logits against the other side's mean).
- `UNetDiscriminatorSN`: Real-ESRGAN's U-Net discriminator with spectral normalisation (Wang et al. 2021,
  ``basicsr/archs/discriminator_arch.py``), with the same module and parameter names, so its state dicts load here.

Real-ESRGAN weighs L1 1, perceptual 1, GAN 0.1: the recipe fields of the GAN stage (``finetune.recipes.gan``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from pretrain.recipes import GAN_TYPES

__all__ = ["VGG19_LAYERS", "REALESRGAN_LAYER_WEIGHTS", "vgg19_weights_file",
           "VGGFeatures", "PerceptualLoss", "generator_gan_loss", "discriminator_gan_loss", "UNetDiscriminatorSN"]

REALESRGAN_LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _vgg19_layer_names() -> list[str]:
    """The names of ``torchvision``'s VGG19 ``features`` in order: conv/relu pairs per block, then a pool."""
    names = []
    for block, convs in enumerate((2, 2, 4, 4, 4), start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


VGG19_LAYERS = _vgg19_layer_names()


def vgg19_weights_file() -> Path:
    """Where torchvision looks for its ImageNet VGG19 weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    from torchvision.models import VGG19_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG19_Weights.IMAGENET1K_V1.url).name


class VGGFeatures(nn.Module):
    """torchvision's VGG19 ``features`` up to the deepest requested layer, frozen; ``forward`` returns the
    requested layers' outputs by name.

    Args:
        layers: names from `VGG19_LAYERS` (``conv*_*`` layers are taken before their ReLU).
        random_init: random weights instead of ImageNet's (tests; no file needed).
    """

    def __init__(self, layers: list[str], random_init: bool = False):
        super().__init__()
        from torchvision.models import VGG19_Weights
        from torchvision.models.vgg import cfgs, make_layers

        unknown = [name for name in layers if name not in VGG19_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; valid: {', '.join(VGG19_LAYERS)}")
        features = make_layers(cfgs["E"])  # what torchvision.models.vgg19 builds, without its 120M classifier
        if not random_init:
            path = vgg19_weights_file()
            if not path.is_file():
                from tasks.errors import InputError

                raise InputError(f"the ImageNet VGG19 weights of the perceptual loss are not in the torch cache: "
                                 f"place {path.name} (from {VGG19_Weights.IMAGENET1K_V1.url}) in {path.parent}, "
                                 "or set perceptual_random_init=true (tests only)")
            state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)  # reads the cached file
            features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
        last = max(VGG19_LAYERS.index(name) for name in layers)
        self.features = features[: last + 1]
        for module in self.features:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # an in-place ReLU would overwrite the pre-activation features kept
        self.layers = {VGG19_LAYERS.index(name): name for name in layers}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of (B, 3, H, W) images in [0, 1], by layer name."""
        x = (x - self.mean) / self.std
        out = {}
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self.layers:
                out[self.layers[i]] = x
        return out


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 features of output and target (``layer_weights``: Real-ESRGAN's by default)."""

    def __init__(self, layer_weights: dict[str, float] | None = None, random_init: bool = False):
        super().__init__()
        self.layer_weights = dict(layer_weights or REALESRGAN_LAYER_WEIGHTS)
        self.vgg = VGGFeatures(list(self.layer_weights), random_init=random_init)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = self.vgg(output)
        with torch.no_grad():  # the target's features carry no gradient
            ref = self.vgg(target)
        return sum(w * F.l1_loss(out[name], ref[name]) for name, w in self.layer_weights.items())


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


def generator_gan_loss(kind: str, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    """The generator's adversarial loss on the discriminator's logits of its outputs (``fake``).

    ``relativistic`` also needs the logits of the targets (``real``; no gradient flows into them): ESRGAN's
    ``(BCE(real - mean(fake), 0) + BCE(fake - mean(real), 1)) / 2``.
    """
    if kind == "vanilla":
        return _bce(fake, True)
    if kind == "hinge":
        return -fake.mean()
    if kind == "relativistic":
        if real is None:
            raise ValueError("the relativistic GAN loss needs the discriminator's logits of the targets (real=)")
        real = real.detach()
        return (_bce(real - fake.mean(), False) + _bce(fake - real.mean(), True)) / 2
    raise ValueError(f"gan_type={kind!r}: use one of {', '.join(GAN_TYPES)}")


def discriminator_gan_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's loss on its logits of targets (``real``) and of detached outputs (``fake``), as its
    real and fake terms (their sum is the loss). ``relativistic`` halves each term and compares each side with the
    other's detached mean (ESRGAN)."""
    if kind == "vanilla":
        return _bce(real, True), _bce(fake, False)
    if kind == "hinge":
        return F.relu(1 - real).mean(), F.relu(1 + fake).mean()
    if kind == "relativistic":
        return _bce(real - fake.detach().mean(), True) / 2, _bce(fake - real.detach().mean(), False) / 2
    raise ValueError(f"gan_type={kind!r}: use one of {', '.join(GAN_TYPES)}")


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator with spectral normalisation: per-pixel real/fake logits (B, 1, H, W).

    Three stride-2 downsampling convolutions, three bilinear upsamplings with skip connections, two extra
    convolutions; spectral norm on every convolution but the first and last. H and W must be multiples of 8.
    Module and parameter names are BasicSR's (``basicsr/archs/discriminator_arch.py``).
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        self.skip_connection = skip_connection
        f = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, f, kernel_size=3, stride=1, padding=1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def _up(self, conv: nn.Module, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)), 0.2)
        return x + skip if self.skip_connection else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = F.leaky_relu(self.conv0(x), 0.2)  # (B, f, H, W)
        x1 = F.leaky_relu(self.conv1(x0), 0.2)  # (B, 2f, H/2, W/2)
        x2 = F.leaky_relu(self.conv2(x1), 0.2)  # (B, 4f, H/4, W/4)
        x3 = F.leaky_relu(self.conv3(x2), 0.2)  # (B, 8f, H/8, W/8)
        x4 = self._up(self.conv4, x3, x2)
        x5 = self._up(self.conv5, x4, x1)
        x6 = self._up(self.conv6, x5, x0)
        out = F.leaky_relu(self.conv7(x6), 0.2)
        out = F.leaky_relu(self.conv8(out), 0.2)
        return self.conv9(out)  # (B, 1, H, W)
