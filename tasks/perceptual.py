"""LPIPS (Zhang et al., CVPR 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), as the
maintained ``lpips`` package computes it, built without unpickling anything but tensors.

The package ships its linear-layer weights (``lpips/weights/v0.1/<net>.pth``); its backbone is torchvision's
ImageNet AlexNet / VGG16 / SqueezeNet 1.1, which ``lpips`` would download. Here the backbone file is read from the
torch hub cache (``torch.hub.get_dir()/checkpoints/``, under the file name of torchvision's weights enum) and never
downloaded: a missing file is a one-line error naming the file and the folder to put it in. ``backbone="random"``
uses torchvision's random initialisation under seed 0 instead, for tests on machines without the weights: those
scores are not a perceptual distance.

Protocol (the ``lpips`` README; BasicSR ``scripts/metrics/calculate_lpips.py``): RGB quantised to uint8 levels as
for PSNR/SSIM, mapped to [-1, 1], the whole image (no border crop); a grayscale image is replicated to three
channels. Lower is better; identical images score 0.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

from tasks.errors import InputError
from tasks.metrics import quantize
from tasks.seeding import cpu_seeded

__all__ = ["LPIPSMetric", "NETS", "BACKBONES", "backbone_weights_path"]

# lpips' net name -> torchvision's weights enum: the ImageNet backbone that lpips' `pnet_rand=False` loads
_TORCHVISION_WEIGHTS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}
NETS = tuple(_TORCHVISION_WEIGHTS)
BACKBONES = ("imagenet", "random")
_VERSION = "0.1"  # the package's default and latest linear layers


def _import_lpips() -> Any:
    try:
        import lpips
    except ImportError as err:
        raise ModuleNotFoundError("LPIPS needs the lpips package: pip install restore[metrics]") from err
    return lpips


def _weights_enum(net: str) -> Any:
    import torchvision.models

    return getattr(torchvision.models, _TORCHVISION_WEIGHTS[net]).IMAGENET1K_V1


def backbone_weights_path(net: str = "alex") -> Path:
    """Where LPIPS-``net`` looks for its ImageNet backbone: the hub cache file torchvision downloads it to."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _weights_enum(net).url.rsplit("/", 1)[-1]


def _imagenet_features(net: str) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of torchvision's ImageNet ``net``, read from the hub cache (tensors only)."""
    path = backbone_weights_path(net)
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS ({net}) needs the ImageNet backbone file {path.name} in {path.parent}, and it is not there: "
            f"download {_weights_enum(net).url} into that folder (torch.hub.get_dir()/checkpoints; TORCH_HOME moves "
            "it); backbone='random' (restore eval --lpips-backbone random) is for tests only"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if k.startswith("features.")}


def _build(net: str, backbone: str) -> torch.nn.Module:
    """``lpips.LPIPS(pretrained=True, net=net, pnet_rand=(backbone == "random"))``, each file read as tensors only."""
    lpips = _import_lpips()
    # lpips builds the backbone with torchvision's random init, then the linear layers; seed 0 makes the random
    # backbone reproducible, and forking keeps the caller's global RNG where it was
    with cpu_seeded(0), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's deprecation of `pretrained=` inside lpips
        model = lpips.LPIPS(pretrained=False, net=net, version=_VERSION, pnet_rand=True, verbose=False)
    linear = Path(lpips.__file__).parent / "weights" / f"v{_VERSION}" / f"{net}.pth"
    _load_exactly(model, torch.load(linear, map_location="cpu", weights_only=True), str(linear), prefix="lin")
    if backbone == "imagenet":
        # lpips' slices hold torchvision's `features[i]` modules under their index: "sliceK.i.*" <- "features.i.*"
        names = {re.sub(r"^slice\d+\.", "features.", k): f"net.{k}" for k in model.net.state_dict()}
        features = _imagenet_features(net)
        _load_exactly(model, {names[k]: v for k, v in features.items() if k in names}, str(backbone_weights_path(net)),
                      prefix="net.")
    return model.eval().requires_grad_(False)


def _load_exactly(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, prefix: str) -> None:
    """Load ``state`` and insist it filled every parameter under ``prefix`` (a wrong file is an error, not noise)."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(prefix) and not k.startswith("lins.")]
    if missing or result.unexpected_keys:
        raise InputError(f"{source} does not fit LPIPS: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")


class LPIPSMetric:
    """LPIPS distance per image, the ``lpips`` package's network with its shipped linear layers.

    Args:
        net: ``"alex"`` (the package's default and its authors' advice for a forward metric), ``"vgg"`` (BasicSR's
            choice) or ``"squeeze"``.
        backbone: ``"imagenet"`` (torchvision's weights, read from the torch hub cache) or ``"random"`` (seed-0
            random init: tests only).
        device: where the network runs; the scores come back on the CPU.

    Raises:
        FileNotFoundError: the ImageNet backbone file is not in the hub cache (naming file and folder).
        ModuleNotFoundError: the ``lpips`` package is not installed (``pip install restore[metrics]``).
    """

    def __init__(self, net: str = "alex", backbone: str = "imagenet", device: str | torch.device | None = None):
        if net not in NETS:
            raise InputError(f"unknown LPIPS net {net!r}; valid: {', '.join(NETS)}")
        if backbone not in BACKBONES:
            raise InputError(f"unknown LPIPS backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
        self.net, self.backbone = net, backbone
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._model = _build(net, backbone).to(self.device)

    @property
    def protocol(self) -> dict[str, Any]:
        """How the scores were computed, for the evaluation record."""
        return {"net": self.net, "version": _VERSION, "backbone": self.backbone, "input": "RGB in [-1, 1]"}

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS of restored ``a`` against reference ``b``: (C, H, W) or (B, C, H, W), float in [0, 1] or uint8,
        C = 1 or 3; shape (B,) float64 (0-d for one unbatched image)."""
        if a.shape != b.shape or a.ndim not in (3, 4) or a.shape[-3] not in (1, 3):
            raise ValueError(f"LPIPS compares two images of one shape (C, H, W) or (B, C, H, W), C = 1 or 3; got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        single = a.ndim == 3
        x, y = (quantize(t if not single else t[None]) for t in (a, b))
        x, y = (t.expand(-1, 3, -1, -1) / 127.5 - 1 for t in (x, y))  # 0-255 levels -> [-1, 1]
        with torch.no_grad():
            d = self._model(x.to(self.device, torch.float32), y.to(self.device, torch.float32))
        out = d.flatten().cpu().to(torch.float64)
        return out[0] if single else out
