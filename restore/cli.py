"""The ``restore`` command: ``restore run`` (restore image files), ``restore eval`` and ``restore convert``.

``restore run --model ID_OR_DIR --task sr_x4 IN... -o OUT`` restores files and folders (recursively) with a
progress bar. A file that cannot be read as an image is reported by name and skipped; the run goes on and
exits with status 1 at the end. Outputs are written to a temporary file and renamed, so OUT never holds a
half-written image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "run_main", "build_run_parser", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# formats written as they came (lossless); lossy or exotic inputs are written as PNG so nothing is lost twice
_KEEP_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")

_USAGE = """usage: restore <command> [options]

commands:
  run       restore image files or folders with a model
  eval      score a model on benchmarks (PSNR/SSIM table)
  convert   convert an official checkpoint (EDT/HAT/SwinIR/IPT) to the restore format

`restore <command> --help` describes each command.
"""


def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="restore run", description="Restore image files or folders with a model.")
    p.add_argument("inputs", nargs="+", type=Path, help="image files and/or folders (searched recursively)")
    p.add_argument("--model", required=True, help="Hub repo id (org/name) or local folder from save_pretrained")
    p.add_argument("--task", required=True, help="task name, e.g. sr_x4, denoise_g25, derain")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    p.add_argument("--tile", type=int, default=None, help="restore in tiles of about this many pixels")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (default 32)")
    p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble (8x slower)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="compute dtype: float32 (default), fp16, bf16")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _collect(inputs: Sequence[Path]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(file, output path relative to OUT) pairs, and errors for inputs that do not exist."""
    files: list[tuple[Path, Path]] = []
    errors: list[str] = []
    for inp in inputs:
        if inp.is_dir():
            for f in sorted(inp.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((f, f.relative_to(inp)))
        elif inp.is_file():
            files.append((inp, Path(inp.name)))
        else:
            errors.append(f"{inp}: no such file or folder")
    return files, errors


def _output_path(out_dir: Path, rel: Path) -> Path:
    suffix = rel.suffix.lower() if rel.suffix.lower() in _KEEP_SUFFIXES else ".png"
    return out_dir / rel.with_suffix(suffix)


def _save_atomic(image, path: Path) -> None:
    from tasks.io import atomic_path

    with atomic_path(path) as tmp:
        image.save(tmp)


def run_main(argv: Sequence[str] | None = None) -> int:
    """``restore run``: returns the exit status (0 all restored, 1 some inputs failed, 2 bad arguments)."""
    args = build_run_parser().parse_args(argv)
    import torch
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    from restore.inference import resolve_dtype, restore_image
    from restore.model import RestorationModel

    try:
        resolve_dtype(args.dtype)
    except ValueError as err:
        print(f"restore run: {err}", file=sys.stderr)
        return 2
    files, errors = _collect(args.inputs)
    if not files:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        print("restore run: no image files found in the inputs", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = RestorationModel.from_pretrained(args.model, revision=args.revision, map_location=device)
    except (OSError, ValueError) as err:
        print(f"restore run: cannot load model {args.model!r}: {err}", file=sys.stderr)
        return 2
    if args.task not in model.tasks:
        print(f"restore run: model {args.model} has no task {args.task!r}; its tasks: {', '.join(model.tasks)}",
              file=sys.stderr)
        return 2
    failed = list(errors)
    bar = tqdm(files, unit="img", disable=args.no_progress, file=sys.stderr)
    for src, rel in bar:
        bar.set_postfix_str(src.name, refresh=False)
        try:
            with Image.open(src) as im:
                im.load()  # decodes now, so truncated files fail here rather than half-way through saving
                image = im.copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            failed.append(f"{src}: not a readable image ({err})")
            tqdm.write(f"skipped {src}: not a readable image ({err})", file=sys.stderr)
            continue
        out = restore_image(model, image, args.task, tile=args.tile, overlap=args.overlap,
                            ensemble=args.ensemble, device=device, dtype=args.dtype)
        _save_atomic(out, _output_path(args.output, rel))
    bar.close()
    done = len(files) - (len(failed) - len(errors))
    print(f"restored {done} of {len(files)} image(s) into {args.output}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} input(s) failed:", file=sys.stderr)
        for e in failed:
            print(f"  {e}", file=sys.stderr)
        return 1
    return 0


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
        return _dispatch("tasks.cli", "eval_main", rest, "restore eval")
    if command == "convert":
        return _dispatch("restore.convert", "convert_main", rest, "restore convert")
    print(f"restore: unknown command {command!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
