"""Inference: restore an image of any kind and size, optionally in blended tiles and with x8 self-ensemble.

The tiles and the ensemble are `restore.tiling`'s (re-exported here); this module turns any image (PIL, numpy,
tensor, file; grayscale, alpha, 16-bit) into the model's input and back (`restore.image_kinds`), and runs it
safely.

Half precision is made safe per tile: fp16 overflows (Transformer SR models give black or NaN images in the
field's trackers), so a tile whose fp16/bf16 output is not finite is recomputed in float32 and one
`FallbackWarning` per image names the file. ``compile=True`` runs the model through ``torch.compile`` with dynamic
shapes (after the first two or three sizes one compilation serves every tile and image size: the shift masks
are built in the graph), and runs it eagerly, with one warning, where the
backend is unavailable or compilation fails.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from restore.tiling import (effective_tile, round_tile, self_ensemble, smaller_tile, tile_covers, tiled_forward,
                            tiled_query)

from restore.image_kinds import to_input, to_output

if TYPE_CHECKING:
    from restore.model import RestorationModel
    from tasks.registry import Task

__all__ = [
    "restore_image", "restorer", "tiled_forward", "tiled_query", "self_ensemble", "round_tile", "resolve_dtype",
    "FallbackWarning", "is_out_of_memory", "effective_tile",
]

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"fp16"``/``"float16"``/``"bf16"``/``"bfloat16"``/``"float32"`` or a torch dtype -> torch dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


class FallbackWarning(RuntimeWarning):
    """The work was done another way than asked: a tile recomputed in float32 after a half-precision overflow, an
    eager run where ``torch.compile`` is unavailable, or a Hub model read from the local cache because the Hub is
    unreachable."""


def _call(model: Any, x: torch.Tensor, task: str, size: tuple[int, int] | None) -> torch.Tensor:
    return model(x, task) if size is None else model(x, task, size=size)


_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}  # backend -> `_call` compiled for it (guards key the model)
_EAGER: "weakref.WeakSet[Any]" = weakref.WeakSet()  # models whose compilation failed: warned once, then eager


def _one_line(err: BaseException) -> str:
    return (" ".join(str(err).split()) or type(err).__name__)[:200]


def _model_call(model: Any, compile: bool | str) -> Callable[[torch.Tensor, str, tuple[int, int] | None], torch.Tensor]:
    """``model(x, task[, size=])``, through ``torch.compile(dynamic=True)`` when ``compile`` is True (inductor) or
    a backend name; eager, with one `FallbackWarning` per model, where the backend is missing or compiling fails.

    The compiled function takes the model as an argument, so nothing here keeps a model alive, and dynamo's
    guards on the argument reuse one compilation per model across `restore_image` calls.
    """
    if not compile or model in _EAGER:
        return lambda x, task, size: _call(model, x, task, size)
    backend = "inductor" if compile is True else str(compile)

    def fall_back(err: BaseException) -> None:
        _EAGER.add(model)
        warnings.warn(f"torch.compile (backend {backend!r}) is unavailable here, running eagerly: {_one_line(err)}",
                      FallbackWarning, stacklevel=2)

    if backend not in _COMPILED:
        try:
            _COMPILED[backend] = torch.compile(_call, dynamic=True, backend=backend)
        except Exception as err:  # noqa: BLE001 - an unknown or unimportable backend: run eagerly instead
            fall_back(err)
            return lambda x, task, size: _call(model, x, task, size)
    compiled = _COMPILED[backend]

    def run(x: torch.Tensor, task: str, size: tuple[int, int] | None) -> torch.Tensor:
        if model not in _EAGER:
            try:
                return compiled(model, x, task, size)
            except Exception as err:  # noqa: BLE001 - compilation failed (no C compiler, an op inductor lacks, ...);
                # running out of memory is no reason to give compilation up (fit_memory retries in smaller tiles),
                # in whatever form it comes: cuBLAS's or cuDNN's allocation failure, or wrapped by dynamo
                if is_out_of_memory(err) or (err.__cause__ is not None and is_out_of_memory(err.__cause__)):
                    raise
                fall_back(err)  # an error of the model itself is raised again by the eager call below
        return _call(model, x, task, size)

    return run


# how running out of memory reads where it is not a torch.OutOfMemoryError: cuBLAS/cuDNN workspace allocations on the
# GPU, the CPU allocator
_OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "can't allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` means the device ran out of memory (so that smaller tiles or batches may fit)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m.lower() in str(err).lower() for m in _OOM_MARKERS)


def restore_image(
    model: "RestorationModel",
    image: Any,
    task: str,
    tile: int | None = None,
    overlap: int = 32,
    ensemble: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    compile: bool | str = False,
    name: str | None = None,
    fit_memory: bool = False,
) -> Any:
    """Restore one image with ``model`` for ``task``; returns the same kind of image as given.

    Args:
        model: a `RestorationModel` (put in eval mode for the call).
        image: a PIL image, a uint8/uint16/float numpy array (H, W[, C]), a tensor (C, H, W) or (B, C, H, W) in
            [0, 1] (or uint8), or a file path (read with `tasks.io.load_image`: a PIL image is returned, or a
            numpy array for 16-bit colour and float files). Grayscale is restored as grayscale
            (channels replicated in, averaged out); an alpha channel is kept (resized for SR); 16-bit stays 16-bit.
        task: the task name, one of ``model.tasks``.
        tile: restore in overlapping tiles of about this many input pixels (rounded to the model's window
            multiple); None runs the whole image at once.
        overlap: pixels shared by neighbouring tiles.
        ensemble: average the 8 flips/rotations (x8 self-ensemble; 8x slower, usually +0.05-0.1 dB).
        device: where to run the model (the model is moved there); default: where the model is.
        dtype: compute dtype under autocast (``"fp16"``, ``"bf16"``); default float32. A tile whose output
            overflows (NaN or inf) is recomputed in float32, with one `FallbackWarning` naming the image.
        scale, size: for ``sr_any`` only, exactly one: the scale (a float or (sh, sw); output
            ``ceil(scale * size)`` per side) or the output (out_h, out_w).
        compile: run the model through ``torch.compile`` with dynamic shapes (True: inductor; or a backend name),
            compiled once per model; eager, with one `FallbackWarning`, where that backend is unavailable.
        name: what warnings call the image (default: its path, or ``"input"``).
        fit_memory: where the device runs out of memory, retry in tiles of half the size that ran (the whole
            image first when ``tile`` is None), down to `restore.tiling.MIN_RETRY_TILE` px, with one
            `FallbackWarning` per retry; the out-of-memory error is raised once no smaller tile exists. Tiles
            change the output only near their seams (overlapping tiles are blended).

    Raises:
        FloatingPointError: the model's output holds NaN or inf even in float32 (an error, not a black image).
    """
    if task not in model.tasks:
        raise ValueError(f"task {task!r} is not served by this model; its tasks are: {', '.join(model.tasks)}")
    if name is None:
        name = str(image) if isinstance(image, (str, Path)) else "input"
    x, layout = to_input(image)
    if not torch.isfinite(x).all():
        raise ValueError("the image holds NaN or infinite values; fix or mask them before restoring")
    if device is not None:
        model.to(device)
    run_device = next(model.parameters()).device
    weight_dtype = next(model.parameters()).dtype  # a model cast to bf16/fp16 takes its input in that dtype
    compute_dtype = resolve_dtype(dtype)
    arbitrary = task == "sr_any"
    if arbitrary:
        out_size = model.output_size(task, x.shape[-2:], scale=scale, size=size)
    elif scale is not None or size is not None:
        raise ValueError(f"scale= and size= are for task 'sr_any'; {task!r} has a fixed scale "
                         f"(x{model.scale(task)})")
    fixed_scale = None if arbitrary else model.scale(task)

    half = compute_dtype not in (None, torch.float32)
    tiles = {"run": 0, "recomputed": 0}
    call = _model_call(model, compile)

    def autocast(lower: bool) -> Any:
        return torch.autocast(run_device.type, dtype=compute_dtype) if lower else contextlib.nullcontext()

    def run(z: torch.Tensor) -> torch.Tensor:
        if not arbitrary:
            return call(z, task, None)
        # a rotated (transposed) input asks for the transposed output
        transposed = z.shape[-2:] != x.shape[-2:]
        return call(z, task, out_size[::-1] if transposed else out_size)

    def safe(compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()`` in the compute dtype, or in float32 again where that overflowed (counted per tile)."""
        tiles["run"] += 1
        with autocast(half):
            y = compute().float()
        if half and not torch.isfinite(y).all():
            tiles["recomputed"] += 1
            y = compute().float()
        return y

    def fn(t: torch.Tensor) -> torch.Tensor:
        t = t.to(run_device, weight_dtype)
        return safe(lambda: self_ensemble(run, t) if ensemble else run(t))

    def query(patch: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        patch, coord, cell = patch.to(run_device, weight_dtype), coord.to(run_device), cell.to(run_device)
        return safe(lambda: model.query_points(patch, task, coord, cell))

    if arbitrary and ensemble and (tile is not None or (x.shape[-2] == x.shape[-1] and out_size[0] != out_size[1])):
        raise ValueError("ensemble=True with task 'sr_any' works untiled and for outputs that rotate with the "
                         "input (not a square input with a non-square output); drop tile= or ensemble=")
    multiple = model.pad_multiple(task)

    def forward(tile: int | None) -> torch.Tensor:
        if tile is None or tile_covers(tile, max(x.shape[-2:]), multiple):
            return fn(x).cpu()  # the same call untiled: bit-identical when the tile covers the image
        if arbitrary:
            return tiled_query(query, x, out_size, tile, overlap, multiple=multiple)
        return tiled_forward(fn, x, fixed_scale, tile, overlap, multiple=multiple)

    was_training = model.training
    model.eval()
    try:
        while True:
            tiles.update(run=0, recomputed=0)  # what the warning below reports is the attempt that gave the output
            try:
                with torch.inference_mode():
                    y = forward(tile)
                break
            except RuntimeError as err:
                # sr_any's ensemble runs untiled only (checked above): no smaller tile to retry with
                retry = fit_memory and is_out_of_memory(err) and not (arbitrary and ensemble)
                smaller = smaller_tile(tile, max(x.shape[-2:]), overlap, multiple) if retry else None
                if smaller is None:
                    raise
                where = "the whole image" if tile is None else f"tile {tile}"
                warnings.warn(f"{name}: out of memory at {where}; retrying with tile {smaller}", FallbackWarning,
                              stacklevel=2)
            # out of the except block, the error's traceback no longer holds the failed attempt's tensors: what
            # they left cached goes back before the retry
            if run_device.type == "cuda":
                torch.cuda.empty_cache()
            tile = smaller
    finally:
        model.train(was_training)
    if tiles["recomputed"]:
        precision = str(compute_dtype).removeprefix("torch.")
        warnings.warn(f"{name}: {precision} overflowed (NaN or inf) in {tiles['recomputed']} of {tiles['run']} "
                      f"tile(s); those were recomputed in float32", FallbackWarning, stacklevel=2)
    if not torch.isfinite(y).all():
        # clamping would turn NaN into black and inf into white: a wrong image that looks like a result
        again = " even after recomputing in float32" if tiles["recomputed"] else ""
        raise FloatingPointError(f"the model's output for this image holds NaN or infinite values{again}; check the "
                                 f"weights")
    return to_output(y, layout, fixed_scale)


# ------------------------------------------------------------------------------------- restorers for evaluation


class _Restorer:
    """``restorer(lq)``: (1, C, h, w) float in [0, 1] -> (1, C', H, W) float; ``lq_channels`` is the C it needs
    (3 for a model, which restores RGB; None: any), so `tasks.evaluate` knows to replicate grayscale."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], lq_channels: int | None) -> None:
        self._fn, self.lq_channels = fn, lq_channels

    def __call__(self, lq: torch.Tensor) -> torch.Tensor:
        return self._fn(lq)


def restorer(
    model: "RestorationModel | Callable[[torch.Tensor], torch.Tensor]",
    task: "str | Task",
    *,
    tile: int | None = None,
    overlap: int = 32,
    ensemble: bool = False,
    device: torch.device | str | None = None,
    scale: float | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable lq (1, C, h, w) float -> restored (1, C, H, W) float for ``task``, with the inference options bound.

    This is what `tasks.evaluate` scores (through ``RestorationModel.restorer``): tasks cannot import this library,
    so the library hands it a plain function. It also tiles and ensembles any plain callable, which evaluate runs
    as it is: ``tasks.evaluate(restorer(fn, "sr_x4", tile=128), "Set5", "sr_x4")``.

    Args:
        model: a `RestorationModel` or a `restore.thirdparty.ThirdPartyModel` (run through `restore_image`), or a
            callable lq -> restored (float in [0, 1] or uint8, which is turned into float) with the task's fixed
            scale.
        task: the task name or ``tasks.Task``; one of ``model.tasks`` for a model.
        tile, overlap, ensemble, device: as in `restore_image` (for a callable: `tiled_forward` without a window
            multiple, `self_ensemble`, and the device its input is moved to).
        scale: for ``sr_any``: the output scale (default: the task's registered scale, the one its benchmark pairs
            are made at).

    Returns:
        The callable; its ``lq_channels`` attribute is 3 for a model (grayscale must be replicated), None otherwise.
    """
    from restore.model import RestorationModel  # late: the model module imports this one
    from restore.thirdparty import ThirdPartyModel
    from tasks.registry import get_task

    task = get_task(task) if isinstance(task, str) else task
    if isinstance(model, (RestorationModel, ThirdPartyModel)):
        if task.name not in model.tasks:
            raise ValueError(f"the model serves tasks {list(model.tasks)}, not {task.name!r}")
        if task.name == "sr_any" and scale is None:
            scale = task.scale

        def run_model(lq: torch.Tensor) -> torch.Tensor:
            return restore_image(model, lq, task.name, tile=tile, overlap=overlap, ensemble=ensemble, device=device,
                                 scale=scale)

        return _Restorer(run_model, 3)
    if not callable(model):
        raise TypeError(f"restorer needs a RestorationModel or a callable lq -> restored, got {type(model).__name__}")
    if scale is not None:
        raise ValueError("scale= is for a RestorationModel serving 'sr_any'; a callable runs at the task's scale")

    def as_float(x: torch.Tensor) -> torch.Tensor:
        y = model(x)
        return y.float() / 255 if y.dtype == torch.uint8 else y.float()

    def tiled(x: torch.Tensor) -> torch.Tensor:
        return tiled_forward(as_float, x, task.scale, tile, overlap, device=device)

    def run_callable(lq: torch.Tensor) -> torch.Tensor:
        fn = tiled if tile is not None else as_float
        x = lq.to(device) if device is not None and tile is None else lq
        with torch.no_grad():
            return self_ensemble(fn, x) if ensemble else fn(x)

    return _Restorer(run_callable, None)
