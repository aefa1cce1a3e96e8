"""The task registry: what a task is, how its low-quality input is made, and how it is scored.

A task name is the key of its head and tail in every checkpoint, so a name never changes meaning.
Names: ``sr_x<s>`` (bicubic super-resolution), ``denoise_g<sigma>`` (colour Gaussian noise, sigma on the 0-255
scale), ``derain`` / ``derain_light`` / ``derain_heavy`` (synthetic rain streaks), ``realsr_x2`` / ``realsr_x4``
(Real-ESRGAN second-order blind degradation) and ``bsrgan_x4`` (BSRGAN shuffled degradation): ``tasks.blind``.
``masked`` is self-supervised masked image modelling (RAM, Qin et al., ECCV 2024): the input is the clean image with
a random part hidden, the target the image itself, so it needs no labels; its mask ratio and patch size are options
of the run (`masked_task`), not of the name, because they shape the training inputs, not the head and tail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import torch

__all__ = ["Task", "TaskKind", "get_task", "masked_task", "list_tasks", "COMMON_TASKS", "MASK_RATIO", "MASK_PATCH"]


class TaskKind(str, Enum):
    """What a task restores; models choose their head and tail structure from it, evaluation its protocol.

    A ``str`` enum: it equals its value (``TaskKind.SR == "sr"``), prints as it and is written to JSON as it.
    """

    SR = "sr"  # output larger than the input by the task's scale (bicubic, blind or arbitrary-scale)
    DENOISE = "denoise"  # same size, Gaussian noise removed
    DERAIN = "derain"  # same size, rain streaks removed
    MASKED = "masked"  # same size, hidden pixels filled in (self-supervised pretraining: no labels needed)

    def __str__(self) -> str:
        return self.value

COMMON_TASKS = (
    "sr_x2", "sr_x3", "sr_x4", "sr_x8",
    "denoise_g15", "denoise_g25", "denoise_g30", "denoise_g50",
    "derain", "derain_light", "derain_heavy",
    "realsr_x2", "realsr_x4", "bsrgan_x4",
)

_SR = re.compile(r"sr_x([1-9][0-9]*)")
_DENOISE = re.compile(r"denoise_g([1-9][0-9]*)")
_RAIN_LEVELS = {"derain": "mixed", "derain_light": "light", "derain_heavy": "heavy"}
# blind SR: kind "sr" (the models build the same heads and tails), the LQ from a blind pipeline of tasks.blind
_BLIND = {"realsr_x2": ("realesrgan", 2), "realsr_x4": ("realesrgan", 4), "bsrgan_x4": ("bsrgan", 4)}
# RAM's pretraining mask (official options/RAM_SwinIR/ram_swinir_pretrain.yaml, `mim:`): half the pixels, one by one
MASK_RATIO = 0.5
MASK_PATCH = 1


@dataclass(frozen=True)
class Task:
    """One restoration task.

    Attributes:
        name: the registry name, e.g. ``"sr_x4"``.
        kind: a `TaskKind` (SR, DENOISE, DERAIN or MASKED); models choose head and tail structure from it.
        scale: output size over input size (1 for denoising, deraining and the masked task).
        sigma: noise level on the 0-255 scale for denoising tasks, else None.
        rain: ``"light"``, ``"heavy"`` or ``"mixed"`` for deraining tasks, else None.
        pipeline: ``"realesrgan"`` or ``"bsrgan"`` for blind SR tasks (``tasks.blind``), else None (bicubic SR).
        mask_ratio: fraction of the image hidden, for the masked task, else None.
        mask_patch: side in pixels of the hidden cells (1: single pixels), for the masked task, else None.
        y_channel: evaluation protocol: score on the Y channel (True) or RGB (False).
        crop_border: evaluation protocol: pixels cropped at each border before scoring.
    """

    name: str
    kind: TaskKind
    scale: int = 1
    sigma: float | None = None
    rain: str | None = None
    pipeline: str | None = None
    mask_ratio: float | None = None
    mask_patch: int | None = None
    y_channel: bool = True
    crop_border: int = 0

    def degrade(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Make the low-quality input from a batch of clean images (B, 3, H, W) in [0, 1].

        SR: MATLAB bicubic, rounded to uint8 levels after each pass like the official LR files (the models train on
        the kind of LR they are scored on). Denoising: float Gaussian noise, not clipped. Deraining: synthetic rain
        (``tasks.degradations``). Blind SR: the Real-ESRGAN or BSRGAN pipeline (``tasks.blind``), one parameter
        draw per image. Masked: the image with a random part set to 0 (`degrade_with_mask` also gives the mask the
        loss needs). Pass a ``torch.Generator`` for reproducible noise, rain, masks and blind degradations.
        """
        from tasks import degradations  # late: degradations imports the registry's users

        if self.kind is TaskKind.MASKED:
            return self.degrade_with_mask(hr, generator)[0]
        if self.pipeline is not None:
            from tasks import blind

            return blind.degrade(hr, self.pipeline, self.scale, generator=generator)
        if self.kind is TaskKind.SR:
            return degradations.bicubic_downscale(hr, self.scale)
        if self.kind is TaskKind.DENOISE:
            return degradations.add_gaussian_noise(hr, self.sigma, generator=generator)
        return degradations.add_rain(hr, level=self.rain, generator=generator)

    def degrade_with_mask(
        self, hr: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The low-quality input and, for the masked task, its mask (B, 1, H, W), 1 on the hidden pixels.

        The masked task's loss scores only the hidden pixels, so the data streams need the mask beside the input;
        every other task scores the whole output and gets None.
        """
        if self.kind is not TaskKind.MASKED:
            return self.degrade(hr, generator), None
        from tasks import degradations

        return degradations.mask_images(hr, self.mask_ratio, self.mask_patch, generator=generator)

    @property
    def title(self) -> str:
        """A human title, e.g. ``"Super-resolution x4"`` (model cards, pictures)."""
        if self.kind is TaskKind.SR:
            return "Arbitrary-scale super-resolution" if self.name == "sr_any" else f"Super-resolution x{self.scale}"
        if self.kind is TaskKind.DENOISE:
            return f"Colour denoising sigma={self.sigma:g}"
        if self.kind is TaskKind.MASKED:
            return f"Masked image modelling ({self.mask_ratio:g} of {self.mask_patch}-px cells hidden)"
        return f"Deraining ({self.rain})"

    @property
    def protocol(self) -> dict:
        """The evaluation protocol as keyword arguments for ``tasks.psnr`` / ``tasks.ssim``."""
        return {"y_channel": self.y_channel, "crop_border": self.crop_border}


def get_task(name: str) -> Task:
    """Return the task called ``name``; raise ValueError naming the valid forms otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"task name must be a string, got {type(name).__name__}")
    if m := _SR.fullmatch(name):
        s = int(m.group(1))
        if s < 2:
            raise ValueError(f"unknown task {name!r}: super-resolution needs a scale of 2 or more")
        return Task(name=name, kind=TaskKind.SR, scale=s, y_channel=True, crop_border=s)
    if m := _DENOISE.fullmatch(name):
        return Task(name=name, kind=TaskKind.DENOISE, sigma=float(m.group(1)), y_channel=False, crop_border=0)
    if name in _RAIN_LEVELS:
        return Task(name=name, kind=TaskKind.DERAIN, rain=_RAIN_LEVELS[name], y_channel=True, crop_border=0)
    if name in _BLIND:
        pipeline, s = _BLIND[name]
        return Task(name=name, kind=TaskKind.SR, scale=s, pipeline=pipeline, y_channel=True, crop_border=s)
    if name == "sr_any":
        # arbitrary-scale SR (restore.implicit): SR heads (kind "sr"); the model takes the scale per call, so
        # `scale` here is only the fixed-scale fallback (degrade(), default eval): x4, the top of the training
        # range [1, 4]; training draws its own scales (tasks.degradations.sr_any_batch)
        return Task(name=name, kind=TaskKind.SR, scale=4, y_channel=True, crop_border=4)
    if name == "masked":
        return masked_task()
    raise ValueError(
        f"unknown task {name!r}; valid tasks are sr_x<scale> (e.g. sr_x2), denoise_g<sigma> (e.g. denoise_g25), "
        f"derain, derain_light, derain_heavy, {', '.join(_BLIND)}, sr_any (any scale), masked (self-supervised). "
        f"Common ones: {', '.join(COMMON_TASKS)}"
    )


def masked_task(ratio: float = MASK_RATIO, patch: int = MASK_PATCH) -> Task:
    """The ``masked`` task hiding ``ratio`` of each image in ``patch`` x ``patch`` cells (the recipe's
    ``mask_ratio`` and ``mask_patch``; `tasks.degradations.random_mask`). Evaluated on RGB without a border crop,
    as RAM scores; raises ValueError for a ratio outside (0, 1) or a patch side below 1."""
    from tasks.degradations import check_mask_options

    check_mask_options(ratio, patch)
    return Task(name="masked", kind=TaskKind.MASKED, mask_ratio=float(ratio), mask_patch=int(patch), y_channel=False,
                crop_border=0)


def list_tasks() -> list[str]:
    """The common task names (any ``sr_x<s>`` and ``denoise_g<sigma>`` is also accepted by ``get_task``)."""
    return list(COMMON_TASKS)
