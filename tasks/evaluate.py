"""Benchmark evaluation of any restorer with the protocol of published tables (ANCHORS.md section 5).

- Super-resolution: HR mod-cropped to a multiple of the scale; the official ``LR_bicubic/X{s}/<name>x{s}.png`` files
  where the benchmark has them, otherwise LR made with MATLAB-exact ``tasks.imresize`` from the uint8 HR; Y channel,
  ``crop_border = scale``.
- Blind SR (``realsr_x2``, ``realsr_x4``, ``bsrgan_x4``): the same, with the stored ``LR_realsr/X{s}`` (``LR_bsrgan``)
  files that ``python -m tasks.blind_benchmark`` writes, so every run scores the same inputs; a benchmark without
  them gets the pipeline's output made now from a seed per image (`blind_lr`, seed 0: what the script stores).
- Arbitrary scale (``sr_any``, ``scale=``; LIIF/LTE benchmark protocol): an integer scale s is scored exactly as
  ``sr_x<s>``. At a non-integer scale the LR side is ``floor(side / scale)`` (LIIF's ``SRImplicitDownsampled``), the HR
  is cropped to the model's output size ``ceil(scale * LR side)`` (MATLAB's rule) and the LR is MATLAB bicubic of it
  to that size (LIIF used PIL's bicubic); Y channel, ``crop_border = ceil(scale)``.
- Denoising: the seed-0 NumPy noise of the SwinIR/KAIR test scripts (``degradations.numpy_seed0_noise``) added to the
  float HR, not clipped, not quantised; RGB PSNR/SSIM, no crop.
- Deraining: paired ``rainy/`` + ``norain/`` folders (Rain100H layout), Y channel, no crop. A folder of clean images
  only gets synthetic rain with a seed-0 generator per image instead.
`benchmark_pairs` is the one reader of these pairs: `evaluate` scores what it yields, and anything else that shows or
trains on benchmark images (the fine-tuning picture, the demo) reads them through it.

A model is scored through the restorer it builds itself (``model.restorer(task=, tile=, overlap=, ensemble=,
device=)``, and ``scale=`` for ``sr_any``; ``restore.inference.restorer`` for a ``RestorationModel``): tasks sits
below the model library and never imports it. Outputs are clamped and rounded to uint8 before scoring. Grayscale
images (Set14's bridge.png, Set12) are scored on their own channel; models that need RGB get the channel replicated
and their output is turned back into gray with BT.601 weights. LPIPS (``lpips=``, `tasks.perceptual`) is scored
beside PSNR/SSIM on the same uint8 output: RGB in [-1, 1], the whole image.

Benchmarks live in one folder per dataset under the benchmark root: ``root`` if given, else the ``RESTORE_BENCHMARKS``
environment variable, else ``../shared/benchmarks`` from the current directory, else ``../shared/benchmarks`` next
to this repository's checkout. ``benchmark`` may also be a path to any folder of images (or one with ``HR/``).

Bad benchmark input raises ``tasks.errors.InputError`` naming the file: an unreadable (zero-byte, truncated, not an
image) file, or an image smaller than the protocol can score (SSIM's 11x11 window after the border crop). With
``skip_unreadable=True`` (``restore eval`` does this) such images are skipped instead and listed in
``EvalResult.skipped``, so the caller can report them and exit 1.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from tasks import degradations
from tasks.errors import InputError, check_device
from tasks.imresize import imresize, output_size
from tasks.io import list_images, read_image_raw, to_uint8
from tasks.metrics import psnr, ssim
from tasks.perceptual import LPIPSMetric
from tasks.registry import Task, TaskKind, get_task

__all__ = [
    "EvalResult", "BenchmarkPairs", "benchmark_root", "benchmark_pairs", "list_benchmarks", "evaluate",
    "bicubic_baseline", "blind_lr", "stored_lr_folder", "ENV_VAR",
]

ENV_VAR = "RESTORE_BENCHMARKS"
_ALIASES = {"b100": "BSD100", "bsd100": "BSD100", "set5": "Set5", "set14": "Set14", "rain100h": "Rain100H"}
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # BT.601 luma, i.e. (65.481, 128.553, 24.966) / 219
_STORED_LR = {None: "LR_bicubic", "realesrgan": "LR_realsr", "bsrgan": "LR_bsrgan"}  # by Task.pipeline


def benchmark_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds the benchmark datasets (see the module docstring for the search order)."""
    if root is not None:
        path = Path(root).expanduser()
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"benchmark root {str(path)!r} is a file, not a folder of benchmark datasets")
        if not path.is_dir():
            raise FileNotFoundError(f"benchmark root {str(path)!r} does not exist")
        return path
    candidates = []
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={str(path)!r} does not exist; point it at the benchmark folder")
        return path
    candidates.append(Path.cwd() / ".." / "shared" / "benchmarks")
    candidates.append(Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks")
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"no benchmark folder found (tried {tried}); set {ENV_VAR} or pass root=")


def list_benchmarks(root: str | os.PathLike | None = None) -> list[str]:
    """The dataset folders under the benchmark root, sorted."""
    base = benchmark_root(root)
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def _resolve_benchmark(benchmark: str | os.PathLike, root: str | os.PathLike | None) -> tuple[str, Path]:
    """(display name, folder) of a benchmark given by name (case-insensitive, B100 = BSD100) or by path."""
    as_path = Path(benchmark).expanduser()
    try:
        base = benchmark_root(root)
    except FileNotFoundError:
        if as_path.is_dir():
            return as_path.name, as_path
        raise
    names = list_benchmarks(base)
    wanted = _ALIASES.get(str(benchmark).lower(), str(benchmark)).lower()
    for name in names:
        if name.lower() == wanted:
            return name, base / name
    if as_path.is_dir():
        return as_path.name, as_path
    raise ValueError(
        f"unknown benchmark {str(benchmark)!r}; available under {base}: {', '.join(names)} "
        f"(or pass the path of a folder of images)"
    )


@dataclass
class EvalResult:
    """Scores of one restorer on one benchmark and task.

    Attributes:
        benchmark: dataset name.
        task: task name.
        psnr: mean PSNR (dB) over the images.
        ssim: mean SSIM over the images.
        per_image: one ``{"name", "psnr", "ssim"}`` dict per image (and ``"lpips"`` when scored), in file-name
            order.
        protocol: how it was scored (y_channel, crop_border, round_y, lq source, and the LPIPS network).
        skipped: one ``{"name", "reason"}`` dict per image left out (only with ``skip_unreadable=True``); the
            means are then over fewer images than the benchmark holds, which the caller must report.
        lpips: mean LPIPS (lower is better), None when it was not asked for.
        scale: the output scale of an ``sr_any`` evaluation, None for the fixed-scale tasks.
    """

    benchmark: str
    task: str
    psnr: float
    ssim: float
    per_image: list[dict[str, Any]] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    lpips: float | None = None
    scale: float | None = None

    @property
    def label(self) -> str:
        """The task as a table column: ``"sr_x4"``, or ``"sr_any x2.5"`` with the scale of an ``sr_any`` result."""
        return self.task if self.scale is None else f"{self.task} x{self.scale:g}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def bicubic_baseline(task: str | Task, scale: float | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The no-model baseline: MATLAB bicubic upscaling for SR (uint8 in, uint8 out), the input itself otherwise.

    ``scale``: for ``sr_any``, the scale to upscale by (default the task's registered scale, as `evaluate`).
    """
    task = get_task(task) if isinstance(task, str) else task
    s = _sr_any_scale(task, scale)
    if task.kind is not TaskKind.SR:
        return lambda lq: lq
    return lambda lq: imresize(to_uint8(lq), task.scale if s is None else s)


def _sr_any_scale(task: Task, scale: float | None) -> float | None:
    """The checked output scale of an ``sr_any`` evaluation (default: its registered scale); None for other tasks."""
    if task.name != "sr_any":
        if scale is not None:
            raise InputError(f"scale= is for task sr_any; {task.name} has the fixed scale {task.scale}: drop scale=")
        return None
    s = task.scale if scale is None else scale
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 1:
        raise InputError(f"the sr_any scale must be a number > 1 (e.g. 2.5 or 3), got {scale!r}")
    return float(s)


def _scored_as(task: Task, scale: float | None) -> tuple[Task, float | None]:
    """(the task whose pairs and protocol score ``task``, the non-integer ``sr_any`` scale or None).

    ``sr_any`` at an integer scale s is ``sr_x<s>`` (its stored LR files, ``crop_border = s``), as in LIIF's benchmark
    scripts; only a non-integer scale needs pairs of its own (`_arbitrary_pair`).
    """
    s = _sr_any_scale(task, scale)
    if s is None:
        return task, None
    if s.is_integer():
        return get_task(f"sr_x{int(s)}"), None
    return task, s


def _score_protocol(task: Task, fractional: float | None) -> dict[str, Any]:
    """The ``psnr``/``ssim`` keyword arguments: the task's, or LIIF/LTE's ``crop_border = ceil(scale)`` on Y."""
    return task.protocol if fractional is None else {"y_channel": True, "crop_border": math.ceil(fractional)}


def stored_lr_folder(task: Task) -> str:
    """Where a benchmark keeps the LR images of an SR task, relative to its folder: ``LR_bicubic/X4``,
    ``LR_realsr/X4`` (Real-ESRGAN pipeline), ``LR_bsrgan/X4``."""
    return f"{_STORED_LR[task.pipeline]}/X{task.scale}"


def blind_lr(hr: torch.Tensor, task: Task, name: str, seed: int = 0) -> torch.Tensor:
    """The uint8 LR (1, C, h, w) of blind SR ``task`` for the HR image (1, C, H, W) called ``name``.

    The HR is mod-cropped to the scale first; its generator is seeded from ``seed`` and the name (not the position
    in the folder, so adding an image changes no other). A grayscale HR is degraded as RGB and turned back into gray
    with BT.601 weights (colour noise and JPEG act on three channels).
    """
    s = task.scale
    h, w = hr.shape[-2:]
    rgb = _as_float(hr[..., : h - h % s, : w - w % s])
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    # one 32-bit number for both: torch's CPU generator keeps only the low 32 bits of a seed
    g = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))
    lq = to_uint8(task.degrade(rgb.contiguous(), generator=g))
    return _to_gray(lq) if hr.shape[1] == 1 else lq


def _make_restorer(
    model: Any, task: Task, tile: int | None, overlap: int, ensemble: bool, device: str | torch.device | None,
    scale: float | None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], int | None]:
    """A function lq (1, C, h, w) float -> restored (1, C', H, W), and the channel count it needs (None: any).

    An object with a ``restorer(task=, tile=, overlap=, ensemble=, device=)`` method (``restore.RestorationModel``)
    builds its own, asked for ``scale=`` too when ``scale`` is given (``sr_any``); tasks never imports the model
    library, which sits above it. A plain callable runs as it is.
    """
    make = getattr(model, "restorer", None)
    if callable(make):
        fn = make(task=task.name, tile=tile, overlap=overlap, ensemble=ensemble, device=device,
                  **({} if scale is None else {"scale": scale}))
        return fn, getattr(fn, "lq_channels", None)
    if not callable(model):
        raise TypeError(f"evaluate needs a RestorationModel or a callable lq -> restored, got {type(model).__name__}")
    if tile is not None or ensemble:
        raise InputError(
            "tile= and ensemble= are options of a model's restorer; tile or ensemble a plain callable by wrapping it: "
            "evaluate(restore.inference.restorer(fn, task, tile=..., ensemble=...), ...)"
        )

    def run_callable(lq: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(lq.to(device) if device is not None else lq)

    return run_callable, getattr(model, "lq_channels", None)


def _to_gray(y: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) -> (1, 1, H, W) with BT.601 weights, in float on the input's scale (uint8 is rounded back)."""
    w = torch.tensor(_GRAY_WEIGHTS, dtype=torch.float64, device=y.device).view(1, 3, 1, 1)
    g = (y.to(torch.float64) * w).sum(dim=1, keepdim=True)
    return g.round().clamp(0, 255).to(torch.uint8) if y.dtype == torch.uint8 else g.to(torch.float32)


def _min_side(crop_border: int, scale: float) -> int:
    """The smallest HR side the protocol can score: SSIM's 11x11 'valid' window after the border crop, and for SR
    a side that is still that large after the crop to the LR size times the scale."""
    need = 2 * crop_border + 11
    return math.ceil(math.ceil(need / scale - 1e-9) * scale - 1e-9)


def _check_size(path: Path, gt: torch.Tensor, label: str, crop_border: int, scale: float) -> None:
    m = _min_side(crop_border, scale)
    h, w = gt.shape[-2:]
    if h < m or w < m:
        raise InputError(
            f"benchmark image {path} is {w}x{h} pixels, too small for {label}: the protocol needs at least "
            f"{m}x{m} (SSIM's 11x11 window after cropping {crop_border} border pixels); "
            "remove it from the benchmark folder"
        )


_Reader = Callable[[], tuple[torch.Tensor, torch.Tensor, str]]


def _readers(task: Task, folder: Path, noise_channel_order: str,
             fractional: float | None) -> Iterator[tuple[str, _Reader]]:
    """(name, reader) per benchmark image, in file-name order; ``reader()`` gives (lq, gt, lq source) or raises
    `InputError` for an image that cannot be read or scored. Nothing is read until a reader is called.
    ``fractional``: the non-integer scale of an ``sr_any`` evaluation, else None."""
    if task.kind is TaskKind.DERAIN and (folder / "rainy").is_dir() and (folder / "norain").is_dir():
        rainy = {p.name: p for p in list_images(folder / "rainy")}
        clean = list_images(folder / "norain")
        missing = [p.name for p in clean if p.name not in rainy]
        if missing or not clean:
            raise ValueError(f"{folder}: rainy/ and norain/ must hold the same file names; unmatched: {missing[:5]}")
        for p in clean:
            yield p.stem, functools.partial(_rain_pair, task, p, rainy[p.name])
        return
    hr_dir = folder / "HR" if (folder / "HR").is_dir() else folder
    files = list_images(hr_dir)
    if not files:
        raise ValueError(f"no images in {hr_dir} (looked for {', '.join(('.png', '.jpg', '.bmp', '.tif'))} files)")
    for p in files:
        if fractional is not None:
            yield p.stem, functools.partial(_arbitrary_pair, p, fractional)
        else:
            yield p.stem, functools.partial(_pair, task, folder, p, noise_channel_order)


def _rain_pair(task: Task, clean: Path, rainy: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(lq, gt, lq source) of a stored ``rainy/`` + ``norain/`` pair."""
    gt = _load(clean)
    lq = _load(rainy)
    _check_size(clean, gt, task.name, task.crop_border, 1)
    return lq, gt, "rainy/"


def _pair(task: Task, folder: Path, p: Path, noise_channel_order: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(lq, gt, lq source) for the HR file ``p``: uint8 where the files are 8-bit, so bicubic LR is made from the
    uint8 HR as MATLAB does."""
    gt = _load(p)
    _check_size(p, gt, task.name, task.crop_border, task.scale)
    if task.kind is TaskKind.SR:
        s = task.scale
        h, w = gt.shape[-2:]
        gt = gt[..., : h - h % s, : w - w % s]  # mod-crop: HR = LR size * scale
        stored = stored_lr_folder(task)
        lr_files = sorted((folder / stored).glob(f"{p.stem}x{s}.*"))
        if not lr_files and task.pipeline is not None:
            return blind_lr(gt, task, p.stem), gt, f"{task.name} seed 0 (made now)"
        if not lr_files:
            return imresize(gt, 1.0 / s), gt, "imresize"
        lq = _load(lr_files[0])
        if tuple(lq.shape[-2:]) != (gt.shape[-2] // s, gt.shape[-1] // s):
            raise InputError(
                f"{lr_files[0]} is {tuple(lq.shape[-2:])}, expected {(gt.shape[-2] // s, gt.shape[-1] // s)} "
                f"(HR {tuple(gt.shape[-2:])} mod-cropped by {s})"
            )
        return lq, gt, stored
    if task.kind is TaskKind.DENOISE:
        noisy = degradations.numpy_seed0_noise(_as_float(gt)[0], task.sigma, channel_order=noise_channel_order)
        return noisy[None], gt, f"numpy seed 0 ({noise_channel_order})"
    g = torch.Generator().manual_seed(0)
    hr = _as_float(gt)
    if task.kind is TaskKind.MASKED:  # the masked task's own fill-in score (pretraining's signal), seed 0
        lq, _mask = task.degrade_with_mask(hr, g)
        return lq, gt, f"mask (ratio {task.mask_ratio:g}, {task.mask_patch} px, seed 0)"
    lq = degradations.add_rain(hr.expand(-1, 3, -1, -1) if hr.shape[1] == 1 else hr, task.rain, generator=g)
    return lq[:, : hr.shape[1]], gt, f"synthetic rain ({task.rain}, seed 0)"


def _arbitrary_pair(p: Path, scale: float) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(lq, gt, lq source) for the HR file ``p`` at a non-integer ``sr_any`` scale (the module docstring's rule)."""
    gt = _load(p)
    _check_size(p, gt, f"sr_any x{scale:g}", math.ceil(scale), scale)
    lr_size = tuple(math.floor(n / scale + 1e-9) for n in gt.shape[-2:])
    out_h, out_w = output_size(lr_size, scale)  # <= the HR side, as floor(side / scale) * scale is
    gt = gt[..., :out_h, :out_w]
    return imresize(gt, size=lr_size), gt, f"imresize x{scale:g}"


def _load(path: Path) -> torch.Tensor:
    """(1, C, H, W): uint8 for 8-bit files (exact), float in [0, 1] for 16-bit ones; `InputError` naming an
    unreadable file (zero bytes, truncated, not an image)."""
    from PIL import Image

    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"benchmark image {path} is empty (0 bytes); replace or remove it")
    try:
        raw, peak = read_image_raw(path)
    except (FileNotFoundError, InputError):  # these name the file already
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:  # PIL's ways of saying "corrupt"
        raise InputError(f"benchmark image {path} is not a readable image ({' '.join(str(err).split())}); "
                         "replace or remove it") from err
    return raw.to(torch.uint8)[None] if peak == 255 else (raw.to(torch.float64) / peak).to(torch.float32)[None]


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32) / 255 if x.dtype == torch.uint8 else x


class BenchmarkPairs:
    """The (name, lq, gt) pairs of one benchmark for one task, read lazily in file-name order (`benchmark_pairs`).

    Attributes:
        name: the benchmark's display name (its folder's name).
        folder: the benchmark's folder.
        skipped: ``{"name", "reason"}`` per image left out so far (only with ``skip_unreadable=True``).
        sources: where the LQ images read so far came from (``"LR_bicubic/X4"``, ``"imresize"``, ...).
    """

    def __init__(self, task: Task, name: str, folder: Path, limit: int | None, skip_unreadable: bool,
                 noise_channel_order: str, fractional: float | None = None) -> None:
        self.name, self.folder = name, folder
        self.skipped: list[dict[str, str]] = []
        self.sources: set[str] = set()
        self._skip = skip_unreadable
        self._readers = itertools.islice(_readers(task, folder, noise_channel_order, fractional), limit)

    def __iter__(self) -> BenchmarkPairs:
        return self

    def __next__(self) -> tuple[str, torch.Tensor, torch.Tensor]:
        for name, read in self._readers:
            try:
                lq, gt, source = read()
            except InputError as err:
                if not self._skip:
                    raise
                self.skipped.append({"name": name, "reason": str(err)})
                continue
            self.sources.add(source)
            return name, _as_float(lq), _as_float(gt)
        raise StopIteration


def benchmark_pairs(
    benchmark: str | os.PathLike,
    task: str | Task,
    *,
    root: str | os.PathLike | None = None,
    limit: int | None = None,
    skip_unreadable: bool = False,
    noise_channel_order: str = "bgr",
    scale: float | None = None,
) -> BenchmarkPairs:
    """The (name, lq, gt) pairs that `evaluate` scores, read exactly as it reads them (it iterates this).

    ``lq`` is (1, C, h, w) and ``gt`` (1, C, H, W), float32 in [0, 1], C = 1 for grayscale files: the stored
    ``LR_bicubic`` image where the benchmark has one, otherwise MATLAB bicubic of the uint8 mod-cropped HR; the
    stored ``LR_realsr``/``LR_bsrgan`` image for the blind tasks, otherwise `blind_lr` with seed 0; the seed-0 noisy
    image for denoising (not clipped, as the protocol scores it); the rainy image for deraining.

    Args:
        benchmark, root: as in `evaluate` (a name under the benchmark root, or a folder path).
        task: task name or ``Task``.
        limit: only the first ``limit`` images (by file name; skipped ones count).
        skip_unreadable: leave out images that cannot be read or scored, listing them in ``.skipped``; by default
            the first one raises `InputError`.
        noise_channel_order: "bgr" (SwinIR/KAIR/EDT) or "rgb" (Restormer) for the seed-0 denoising noise.
        scale: for ``sr_any`` only: the output scale (default its registered x4); an integer one gives the pairs of
            ``sr_x<s>``.

    Raises:
        tasks.errors.InputError: a bad ``limit`` or ``scale``; ValueError: an unknown benchmark (listing the
            available ones).
    """
    task = get_task(task) if isinstance(task, str) else task
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be an integer >= 1, got {limit!r}")
    read_as, fractional = _scored_as(task, scale)
    name, folder = _resolve_benchmark(benchmark, root)
    return BenchmarkPairs(read_as, name, folder, limit, skip_unreadable, noise_channel_order, fractional)


def evaluate(
    model_or_callable: Any,
    benchmark: str | os.PathLike,
    task: str | Task,
    root: str | os.PathLike | None = None,
    *,
    tile: int | None = None,
    overlap: int = 32,
    ensemble: bool = False,
    device: str | torch.device | None = None,
    limit: int | None = None,
    round_y: bool = False,
    noise_channel_order: str = "bgr",
    progress: bool = False,
    skip_unreadable: bool = False,
    scale: float | None = None,
    lpips: bool | LPIPSMetric = False,
) -> EvalResult:
    """Score a restorer on a benchmark with the field's protocol for ``task``.

    Args:
        model_or_callable: a ``restore.RestorationModel``, or anything with its ``restorer(task=, tile=, overlap=,
            ensemble=, device=)`` method returning the callable to score; or any callable mapping an LQ tensor
            (1, C, h, w) float in [0, 1] to the restored (1, C, H, W) float in [0, 1] (or uint8), run as it is.
            Grayscale images come as one channel, replicated to RGB for a callable whose ``lq_channels`` is 3
            (a model's restorer); a 3-channel output is then turned back into gray.
        benchmark: a dataset name under the benchmark root (``list_benchmarks()``; B100 = BSD100) or a folder path.
        task: task name or ``Task``; its protocol (Y channel or RGB, border crop) is used.
        root: benchmark root (default: ``RESTORE_BENCHMARKS``, then ``../shared/benchmarks``).
        tile, overlap, ensemble: inference options passed to the model's ``restorer`` (tiling and x8
            self-ensemble). A plain callable takes none: wrap it with ``restore.inference.restorer(fn, task,
            tile=..., ensemble=...)`` to tile or ensemble it.
        device: where the restorer runs (a plain callable gets its input there); scores are computed on the CPU.
        limit: score only the first ``limit`` images (by file name).
        round_y: round Y to uint8 before scoring (MATLAB style); the default float Y reproduces the published
            bicubic tables to 0.015 dB (see tests/tasks/test_evaluate.py).
        noise_channel_order: "bgr" (SwinIR/KAIR/EDT) or "rgb" (Restormer) for the seed-0 denoising noise.
        progress: show a progress bar.
        skip_unreadable: leave out images that cannot be read or are too small to score, listing them in
            ``EvalResult.skipped`` (they count towards ``limit``); by default the first one raises `InputError`.
        scale: for ``sr_any`` only: the output scale (a number > 1; default its registered x4), asked of a model's
            restorer as ``scale=``; the pairs and protocol of the module docstring.
        lpips: also score LPIPS: True builds ``tasks.perceptual.LPIPSMetric()`` (AlexNet, ImageNet backbone from the
            torch hub cache); or pass an ``LPIPSMetric`` (another net, ``backbone="random"`` for tests, a device).

    Returns:
        An :class:`EvalResult` with mean and per-image PSNR/SSIM (and LPIPS).

    Raises:
        tasks.errors.InputError: an unknown benchmark (the message lists the available ones), an unreadable or
            too small image (naming the file and the minimum size), a bad ``limit``, ``scale`` or ``device``,
            ``tile`` or ``ensemble`` for a plain callable.
        FileNotFoundError: ``lpips=True`` without the backbone weights in the torch hub cache (naming the file).
    """
    task = get_task(task) if isinstance(task, str) else task
    pairs = benchmark_pairs(benchmark, task, root=root, limit=limit, skip_unreadable=skip_unreadable,
                            noise_channel_order=noise_channel_order, scale=scale)
    device = check_device(device, "device")
    out_scale = _sr_any_scale(task, scale)
    metric = LPIPSMetric() if lpips is True else lpips or None
    if metric is not None and not isinstance(metric, LPIPSMetric):
        raise InputError(f"lpips= takes True or a tasks.perceptual.LPIPSMetric, got {type(lpips).__name__}")
    restorer, needs_channels = _make_restorer(model_or_callable, task, tile, overlap, ensemble, device, out_scale)
    name, folder = pairs.name, pairs.folder
    score_kw = {**_score_protocol(*_scored_as(task, scale)), "round_y": round_y}
    protocol = dict(score_kw)
    per_image: list[dict[str, Any]] = []
    items = pairs
    if progress:
        from tqdm import tqdm

        items = tqdm(pairs, desc=f"{name} {task.name}", unit="img")
    for img_name, lq, gt in items:
        c = gt.shape[1]
        x = lq.expand(-1, 3, -1, -1).contiguous() if (c == 1 and needs_channels == 3) else lq
        out = restorer(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the restorer returned {type(out).__name__} for {img_name}; it must return a tensor")
        out = out.detach().cpu()
        if out.ndim == 3:
            out = out[None]
        if c == 1 and out.ndim == 4 and out.shape[1] == 3:
            out = _to_gray(out)
        expected = (1, c, gt.shape[-2], gt.shape[-1])
        if tuple(out.shape) != expected:
            raise ValueError(
                f"the restorer returned shape {tuple(out.shape)} for {name}/{img_name}; expected {expected} "
                f"(input {tuple(x.shape)}, task {task.name}, scale {out_scale or task.scale:g})"
            )
        row = {"name": img_name, "psnr": float(psnr(out, gt, **score_kw)[0]),
               "ssim": float(ssim(out, gt, **score_kw)[0])}
        if metric is not None:
            row["lpips"] = float(metric(out, gt)[0])
        per_image.append(row)
    skipped = pairs.skipped
    if not per_image:
        reasons = "; ".join(r["reason"] for r in skipped[:3])
        raise InputError(f"no images were evaluated in {folder}" + (f": all were skipped ({reasons})" if skipped
                                                                     else ""))
    protocol["lq"] = ", ".join(sorted(pairs.sources))
    if metric is not None:
        protocol["lpips"] = metric.protocol

    def mean(key: str) -> float:
        return sum(r[key] for r in per_image) / len(per_image)

    mean_p = mean("psnr")
    return EvalResult(name, task.name, mean_p if math.isfinite(mean_p) else float("inf"), mean("ssim"), per_image,
                      protocol, skipped, lpips=mean("lpips") if metric is not None else None, scale=out_scale)
