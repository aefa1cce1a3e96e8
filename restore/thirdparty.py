"""Models of other projects in `restore run` and `restore eval`: any model file that spandrel loads.

A published checkpoint (``RealESRGAN_x4plus.pth``, ``4x-UltraSharp.safetensors``, an EDSR/RCAN/SwinIR/HAT/DAT/DnCNN
release) is read as tensors only, with ``torch.load(weights_only=True)`` or safetensors: a file that only full
unpickling could read is refused, never run. spandrel detects its architecture and hyperparameters from the state
dict, and `ThirdPartyModel` gives the result the part of the `RestorationModel` interface that inference and
evaluation use, so such a model is run and scored with exactly our protocol (tiling, self-ensemble, Y-channel
PSNR with the task's border crop) next to ours. A file does not say what it was trained for, only its scale: a
x``s`` model serves ``sr_x<s>``; a x1 model (denoising, deblurring, JPEG...) needs its task named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from tasks.errors import InputError

__all__ = ["MODEL_SUFFIXES", "ThirdPartyModel", "is_model_file", "read_state_dict", "load_model_file", "load_any"]

MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


def is_model_file(name: str | Path) -> bool:
    """Whether ``name`` names a model file (by its suffix) rather than a Hub id or a `save_pretrained` folder."""
    return Path(str(name)).suffix.lower() in MODEL_SUFFIXES and not Path(str(name)).is_dir()


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """The tensors of a model file, read without running any code from it.

    Raises:
        FileNotFoundError: no such file.
        tasks.errors.InputError: a pickle holding Python objects besides tensors (refused: unpickling them can run
            arbitrary code), or a file that is not a PyTorch/safetensors checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found; check the path")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for any malformed file
            raise InputError(f"{path} is not a readable safetensors file ({' '.join(str(err).split())[:200]})"
                             ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a malformed pickle surfaces as any of several error types
        if "Weights only load failed" in str(err):
            raise InputError(f"{path} holds Python objects besides tensors; it is refused because unpickling them "
                             f"can run arbitrary code: re-save its state dict where you trust it "
                             f"(torch.save(model.state_dict(), ...)) or convert it to .safetensors") from None
        raise InputError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _serves(scale: int, tasks: Sequence[str] | None, path: Path) -> list[str]:
    """The tasks a x``scale`` model file is run for: ``tasks`` checked against its scale, or ``sr_x<scale>``."""
    from tasks.registry import get_task

    if not tasks:
        if scale == 1:
            raise InputError(f"{path} is a x1 model (denoising, deraining, deblurring...): the file does not say "
                             f"which task; pass --task (e.g. --task denoise_g25)")
        return [f"sr_x{scale}"]
    for name in tasks:
        task = get_task(name)
        if name == "sr_any" or task.scale != scale:
            what = "an arbitrary-scale task" if name == "sr_any" else f"a x{task.scale} task"
            raise InputError(f"--task {name} is {what}, but {path} is a x{scale} model; pass a x{scale} task"
                             + (f" such as sr_x{scale}" if scale > 1 else " such as denoise_g25"))
    return list(tasks)


class ThirdPartyModel(nn.Module):
    """A model spandrel loaded, with the interface `restore.inference` and `tasks.evaluate` use of a
    `RestorationModel`: ``tasks``, ``scale(task)``, ``pad_multiple(task)``, ``forward(x, task)``, ``restorer``.

    ``forward`` is spandrel's own call (its padding to the architecture's size requirements, the crop back, the
    clamp to [0, 1]); a one-channel model gets the mean of the RGB channels (exactly the gray of a grayscale image,
    which inference replicates to RGB) and its output is replicated back to RGB.
    """

    def __init__(self, descriptor: Any, tasks: Sequence[str], source: str) -> None:
        super().__init__()
        self.net = descriptor.model  # a submodule: .to(), .eval() and .parameters() reach the weights
        self.descriptor = descriptor
        self.tasks = list(tasks)
        self.architecture = descriptor.architecture.name
        self.source = source

    def _check(self, task: str) -> None:
        if task not in self.tasks:
            raise ValueError(f"task {task!r} is not served by {self.source}; its tasks are: {', '.join(self.tasks)}")

    def scale(self, task: str) -> int:
        self._check(task)
        return self.descriptor.scale

    def pad_multiple(self, task: str) -> int:
        """The side multiple the architecture needs (spandrel pads others itself): the tile grid's unit."""
        self._check(task)
        return self.descriptor.size_requirements.multiple_of

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:  # (B, 3, H, W) -> (B, 3, sH, sW)
        self._check(task)
        gray = self.descriptor.input_channels == 1
        y = self.descriptor(x.mean(dim=1, keepdim=True) if gray else x)
        return y.expand(-1, 3, -1, -1) if y.shape[1] == 1 else y

    def restorer(self, task: str, *, tile: int | None = None, overlap: int = 32, ensemble: bool = False,
                 device: torch.device | str | None = None, scale: float | None = None) -> Any:
        """This model as a callable lq -> restored for ``task`` (`restore.inference.restorer`), as a
        `RestorationModel` builds it: what ``tasks.evaluate`` scores."""
        from restore.inference import restorer

        return restorer(self, task, tile=tile, overlap=overlap, ensemble=ensemble, device=device, scale=scale)

    def extra_repr(self) -> str:
        return f"architecture={self.architecture!r}, tasks={self.tasks}, source={self.source!r}"


def load_model_file(path: str | Path, *, tasks: Sequence[str] | None = None,
                    map_location: torch.device | str = "cpu") -> ThirdPartyModel:
    """Load a model file of any architecture spandrel knows, for ``tasks`` (default: ``sr_x<its scale>``).

    Raises:
        FileNotFoundError: no such file.
        tasks.errors.InputError: a file refused by `read_state_dict`, an architecture spandrel does not know, a
            model that is not image-to-image with RGB or gray channels, a x1 model without ``tasks``, or a task of
            another scale.
    """
    import spandrel

    path = Path(path)
    state = spandrel.canonicalize_state_dict(read_state_dict(path))
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise InputError(f"{path}: spandrel {spandrel.__version__} does not recognise this architecture; pass a "
                         f"model of one it supports (ESRGAN, SwinIR, HAT, DAT, EDSR, RCAN, DnCNN...) or a restore "
                         f"model folder") from None
    except Exception as err:  # noqa: BLE001 - an architecture's loader fails with any error on an odd state dict
        raise InputError(f"{path}: spandrel detected a model but could not build it ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise InputError(f"{path} is a {descriptor.architecture.name} model that needs a mask (inpainting); "
                         f"restore runs image-to-image models only")
    channels = (descriptor.input_channels, descriptor.output_channels)
    if channels not in ((3, 3), (1, 1)):
        raise InputError(f"{path}: a {descriptor.architecture.name} model with {channels[0]} input and "
                         f"{channels[1]} output channels; restore runs RGB (3 -> 3) or gray (1 -> 1) models")
    model = ThirdPartyModel(descriptor, _serves(descriptor.scale, tasks, path), str(path))
    return model.to(map_location).eval()


def load_any(name: str | Path, *, revision: str | None = None, map_location: torch.device | str = "cpu",
             tasks: Sequence[str] | None = None) -> Any:
    """A model file (`load_model_file`, for ``tasks``), or else a Hub id or folder (`RestorationModel.from_pretrained`).

    This is the loader of ``restore run`` and ``restore eval``; ``tasks`` only matters for a model file.
    """
    if is_model_file(name):
        if revision is not None:
            raise InputError(f"--revision is for Hub models; {name} is a model file")
        return load_model_file(name, tasks=tasks, map_location=map_location)
    from restore.model import RestorationModel

    return RestorationModel.from_pretrained(name, revision=revision, map_location=map_location)
