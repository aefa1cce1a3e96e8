"""The ``restore`` command: ``restore run`` (restore image files), ``restore eval``, ``restore convert``, ``restore export``.

``restore run --model ID_OR_DIR --task sr_x4 IN... -o OUT`` restores files and folders (recursively) with a
progress bar. ``--model`` may also be a model file of another project that spandrel loads (``RealESRGAN_x4.pth``,
``.safetensors``; `restore.thirdparty`), whose scale names the task when ``--task`` is left out. Before the model
loads it refuses (exit 2) bad options, a device this machine lacks, missing inputs, an output folder it cannot
write, and any plan that would overwrite an input file (compared through symlinks and hard links), send two inputs
to one output name, or replace existing outputs without ``--overwrite``. During the run a file that cannot be used
(unreadable, several frames, over the pixel budget, NaN output) is skipped by name; the run goes on, and the
summary ("restored N of M") lists each skipped file with its reason (exit 1). Outputs are written to a temporary
file and renamed, so OUT never holds a half-written image, even after Ctrl-C.

The plan (input files, output names and the refusals before the model loads) is `restore.run_plan`; this module
parses the options, loads the model and runs the plan.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

from restore.run_plan import IMAGE_SUFFIXES, SHOWN, Plan, check_output_folder, check_plan, collect, show
from tasks.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, at_least

__all__ = ["main", "run_main", "build_run_parser", "IMAGE_SUFFIXES"]

# a write that fails for one of these reasons fails for every later file too: the run stops instead of going on
_STOP_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)

_USAGE = """usage: restore <command> [options]

commands:
  run       restore image files or folders with a model
  eval      score a model on benchmarks (PSNR/SSIM table)
  convert   convert an official checkpoint (EDT/HAT/SwinIR/IPT) to the restore format
  export    export one task as ONNX, or in the official layout that spandrel/chaiNNer/ComfyUI load

`restore <command> --help` describes each command.
"""


def _positive_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number such as 2.7, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number such as 2.7, got {text}")
    return value


def _size_wxh(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. 1920x1080) -> (H, W), the order the library takes sizes in."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT in pixels such as 1920x1080, got {text!r}")
    return int(parts[1]), int(parts[0])


def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="restore run", description="Restore image files or folders with a model.")
    p.add_argument("inputs", nargs="+", type=Path, help="image files and/or folders (searched recursively)")
    p.add_argument("--model", required=True, help="Hub repo id (org/name), local folder from save_pretrained, or a "
                   "model file that spandrel loads (.pth, .pt, .ckpt, .safetensors: ESRGAN, SwinIR, HAT, DAT...)")
    p.add_argument("--task", default=None, help="task name, e.g. sr_x4, denoise_g25, derain (optional for a model "
                   "with one task, and for a model file of scale s > 1: sr_x<s>)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    p.add_argument("--tile", type=at_least(1), default=None, help="restore in tiles of about this many pixels")
    p.add_argument("--overlap", type=at_least(0), default=32, help="tile overlap in pixels (default 32)")
    p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble (8x slower)")
    p.add_argument("--scale", type=_positive_scale, default=None,
                   help="--task sr_any only: output scale, any number (e.g. 2.7); output ceil(scale * size)")
    p.add_argument("--size", type=_size_wxh, default=None, metavar="WxH",
                   help="--task sr_any only: output size in pixels instead of --scale (e.g. 1920x1080)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="compute dtype: float32 (default), fp16, bf16; a tile that "
                   "overflows is recomputed in float32 (with a warning)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (dynamic shapes; faster on "
                   "many or large images after a slow first one); runs eagerly, with a warning, where unavailable")
    p.add_argument("--max-pixels", type=at_least(1), default=None,
                   help="skip images with more pixels than this (default: $RESTORE_MAX_PIXELS or 89478485, "
                        "Pillow's decompression-bomb limit)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in the output folder "
                   "(never an input file)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _resolve_device(name: str | None) -> str:
    """``--device`` checked before the model loads (``tasks.errors.check_device``); default cuda when usable."""
    import torch

    from tasks.errors import check_device

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(check_device(name))

def _save_atomic(result: Any, path: Path, loaded: Any) -> None:
    """Write ``result`` atomically in the kind ``loaded`` (a `tasks.io.LoadedImage`) came in."""
    from tasks.io import write_image

    write_image(result, path, float_peak=loaded.float_peak, icc_profile=loaded.icc_profile)


def run_main(argv: Sequence[str] | None = None) -> int:
    """``restore run``: returns the exit status (0 all restored, 1 some inputs skipped or failed, 2 bad input).

    Everything that can be checked without the model is checked first: options, device, inputs, output names
    (no input is ever overwritten; collisions and existing outputs are refused), the output folder's permissions.
    """
    try:
        args = build_run_parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed the problem; return its status instead of exiting
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    from tasks.errors import InputError
    from tasks.io import pixel_budget

    from restore.inference import resolve_dtype

    try:
        resolve_dtype(args.dtype)
    except ValueError as err:
        raise InputError(f"--dtype: {err}") from None
    if args.task is not None:  # checked before anything else where the task is known
        _check_scale_options(args.task, args)
    device = _resolve_device(args.device)
    max_pixels = args.max_pixels or pixel_budget()
    plan = collect(args.inputs, args.output)
    check_plan(plan, args.overwrite)
    total = len(plan.jobs) + len(plan.skipped)
    if not plan.jobs:
        for line in plan.skipped:
            print(f"  skipped {line}", file=sys.stderr)
        where = ", ".join(show(p) for p in args.inputs[:SHOWN])
        raise InputError(f"no usable image files in {where} ({_suffix_note(plan.ignored) or 'nothing found'}; "
                         f"image suffixes: {' '.join(IMAGE_SUFFIXES)})")
    created = not args.output.exists()
    check_output_folder(args.output)
    try:
        return _run(args, plan, device, max_pixels, total)
    finally:
        if created:  # a folder this run made and wrote nothing into (the model failed to load...) is not left behind
            with contextlib.suppress(OSError):
                args.output.rmdir()


def _suffix_note(ignored: Counter) -> str:
    if not ignored:
        return ""
    kinds = ", ".join(f"{suffix}: {n}" for suffix, n in ignored.most_common())
    return f"{sum(ignored.values())} file(s) without an image suffix ignored ({kinds})"


def _check_scale_options(task: str, args: argparse.Namespace) -> None:
    """``--scale``/``--size``: exactly one for sr_any, neither for any other task; sr_any's ensemble untiled."""
    from tasks.errors import InputError

    if task == "sr_any" and (args.scale is None) == (args.size is None):
        raise InputError("--task sr_any needs exactly one of --scale (e.g. --scale 2.7) or --size WxH")
    if task != "sr_any" and (args.scale is not None or args.size is not None):
        raise InputError(f"--scale and --size are for --task sr_any; {task} has a fixed scale: drop them")
    if task == "sr_any" and args.ensemble and args.tile is not None:  # restore_image refuses it per image
        raise InputError("--ensemble with --task sr_any runs untiled only: drop --tile or --ensemble")


def _load_model(args: argparse.Namespace, device: str) -> tuple[Any, str]:
    """The model of ``--model`` (a restore model, or a model file through spandrel) and the task to run."""
    from restore.thirdparty import load_any
    from tasks.errors import InputError

    try:
        with _fallbacks_reported():  # e.g. the Hub unreachable: the model read from the local cache
            model = load_any(args.model, revision=args.revision, map_location=device,
                             tasks=None if args.task is None else [args.task])
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load model {args.model!r}: {err}") from None
    task = args.task
    if task is None:
        if len(model.tasks) != 1:
            raise InputError(f"model {args.model} serves several tasks; pass --task with one of: "
                             f"{', '.join(model.tasks)}")
        task = model.tasks[0]
        _check_scale_options(task, args)
    if task not in model.tasks:
        raise InputError(f"model {args.model} has no task {task!r}; its tasks: {', '.join(model.tasks)}")
    return model, task


@contextlib.contextmanager
def _fallbacks_reported() -> Iterator[None]:
    """`FallbackWarning`s raised inside (fp32 recompute, eager run, out-of-memory retry in smaller tiles, a Hub
    model read from the cache) printed as one line each, also when the work fails: the retries before it are part
    of the story."""
    from tqdm import tqdm

    from restore.inference import FallbackWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FallbackWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, FallbackWarning):
                    tqdm.write(f"warning: {show(str(w.message))}", file=sys.stderr)
                else:  # not ours: shown as Python would have
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _restore_reporting(**kwargs: Any) -> Any:
    """``restore_image(**kwargs)`` with its `FallbackWarning`s reported."""
    from restore.inference import restore_image

    with _fallbacks_reported():
        return restore_image(**kwargs)


def _run(args: argparse.Namespace, plan: Plan, device: str, max_pixels: int, total: int) -> int:
    """Load the model and restore ``plan.jobs``; a file that fails is skipped by name and the run goes on."""
    from tqdm import tqdm

    from tasks.io import load_image

    model, task = _load_model(args, device)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    skipped, done, stopped = list(plan.skipped), 0, None
    bar = tqdm(plan.jobs, unit="img", disable=args.no_progress, file=sys.stderr)

    def skip(src: Path, reason: str) -> None:
        skipped.append(f"{show(src)}: {reason}")
        tqdm.write(f"skipped {skipped[-1]}", file=sys.stderr)

    try:
        for i, (src, target) in enumerate(bar):
            bar.set_postfix_str(show(src.name), refresh=False)
            try:
                loaded = load_image(src, max_pixels=max_pixels)
            except (ValueError, OSError) as err:
                msg = " ".join(str(err).split())
                skip(src, msg.removeprefix(f"{src}: ") or type(err).__name__)
                continue
            if loaded.note:
                tqdm.write(f"note: {show(loaded.note)}", file=sys.stderr)
            try:
                out = _restore_reporting(model=model, image=loaded.image, task=task, tile=args.tile,
                                         overlap=args.overlap, ensemble=args.ensemble, device=device,
                                         dtype=args.dtype, scale=args.scale, size=args.size, compile=args.compile,
                                         name=show(src), fit_memory=True)
            except (FloatingPointError, ValueError) as err:
                skip(src, str(err))
                continue
            except RuntimeError as err:  # out of memory even in the smallest tiles, and other per-image failures
                skip(src, f"{type(err).__name__}: {' '.join(str(err).split())[:200]}")
                continue
            try:
                _save_atomic(out, target, loaded)
            except OSError as err:
                if err.errno in _STOP_ERRNOS:
                    stopped = (f"stopped at {show(src)}: cannot write {show(target)} ({err.strerror}); "
                               f"{len(plan.jobs) - i} image(s) not restored")
                    break
                skip(src, f"cannot write {show(target)} ({err.strerror or err})")
                continue
            done += 1
    except KeyboardInterrupt:
        bar.close()
        print(f"restored {done} of {total} image(s) into {show(args.output)} before the interrupt", file=sys.stderr)
        raise
    bar.close()
    print(f"restored {done} of {total} image(s) into {show(args.output)}", file=sys.stderr)
    if stopped:
        print(f"{stopped}; fix that and rerun with --overwrite (finished outputs are complete)", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} input(s) skipped:", file=sys.stderr)
        for line in skipped:
            print(f"  {line}", file=sys.stderr)
    if plan.ignored:
        print(_suffix_note(plan.ignored), file=sys.stderr)
    return EXIT_FAILED if skipped or stopped else EXIT_OK


def _eval_loader(argv: list[str]) -> Any:
    """``restore eval``'s loader (`restore.thirdparty.load_any`): a model file serves the ``--task``s asked for,
    checked against its scale; anything else is a restore model (`RestorationModel.from_pretrained`)."""

    def load(name: str, revision: str | None = None, map_location: Any = "cpu") -> Any:
        from restore.thirdparty import load_any
        from tasks.cli import build_parser

        tasks = build_parser().parse_known_args(argv)[0].task  # eval_main has parsed argv already: it is valid
        with _fallbacks_reported():
            return load_any(name, revision=revision, map_location=map_location, tasks=tasks)

    return load


def _dispatch(module: str, func: str, argv: list[str], what: str) -> int:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and module.startswith(err.name):
            print(f"restore: `{what}` is not available in this installation ({module} is missing)", file=sys.stderr)
            return 2
        raise
    result = getattr(mod, func)(argv)
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit codes 0 done, 1 failed during the work, 2 bad input, 130 interrupted (``tasks.errors``)."""
    from tasks.errors import run_command

    return run_command("restore", _main, argv)


def _main(argv: list[str]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return run_main(rest)
    if command == "eval":
        from tasks.cli import eval_main

        return int(eval_main(rest, load_model=_eval_loader(rest)) or 0)
    if command == "convert":
        return _dispatch("restore.convert", "convert_main", rest, "restore convert")
    if command == "export":
        return _dispatch("restore.export", "export_main", rest, "restore export")
    print(f"restore: unknown command {command!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
