"""The one error policy of every command (``restore``, ``pretrain``, ``finetune``): exit codes and one-line errors.

Exit codes (documented in the README, "What happens to bad input"):

- ``0``: everything asked for was done.
- ``1``: a failure during the work, or some inputs were skipped (each is named in the summary).
- ``2``: bad input: an argument, a file, a config or a checkpoint that cannot be used, found before the work
  starts wherever that is possible. The message names the problem and the fix.
- ``130``: interrupted (Ctrl-C); whatever was written so far is complete (writes are atomic).

Library code raises :class:`InputError` (a ``ValueError``) for bad input and lets other exceptions through;
:func:`run_command` turns them into one line on stderr and the exit code. The traceback is shown with ``--debug``
anywhere on the command line, or with ``RESTORE_DEBUG=1`` in the environment.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import torch

__all__ = [
    "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "InputError", "at_least", "check_device",
    "debug_enabled", "run_command",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEBUG_ENV = "RESTORE_DEBUG"

# exceptions that mean "the input is unusable" rather than "the work broke": exit 2
_BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
              FileExistsError)


class InputError(ValueError):
    """Bad input (an option, a file, a config): the message names the problem and the fix. Exit code 2."""


def debug_enabled() -> bool:
    """True when tracebacks were asked for (``RESTORE_DEBUG=1``; ``--debug`` sets it)."""
    return os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def run_command(prog: str, main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` under the policy above and return its exit code (never raises, except ``SystemExit``).

    ``--debug`` is removed from ``argv`` wherever it stands and turns on tracebacks for this process.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args = [a for a in args if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"  # also reaches the workers and ranks this command starts
    try:
        return int(main(args) or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; completed outputs are kept, nothing half-written is left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `restore ... | head`: the reader left; not an error of ours
        return EXIT_FAILED
    except Exception as err:  # noqa: BLE001 - the policy: one line, not a traceback
        if debug_enabled():
            traceback.print_exc()
        hint = "" if debug_enabled() else f" (rerun with --debug or {DEBUG_ENV}=1 for the traceback)"
        if isinstance(err, _BAD_INPUT):
            print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{prog}: failed: {type(err).__name__}: {_one_line(err)}{hint}", file=sys.stderr)
        return EXIT_FAILED


def at_least(minimum: float, kind: type = int) -> Callable[[str], float]:
    """An argparse ``type``: ``kind(text)`` (finite), refused below ``minimum``, so that ``--tile 0`` or
    ``--maxcount -1`` fail at parsing with a message naming the option instead of after the model loaded."""
    what = f"{'an integer' if kind is int else 'a number'} >= {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in its own messages
    return parse


def check_device(device: "str | torch.device | None", what: str = "--device") -> "torch.device | None":
    """``device`` as a ``torch.device`` that exists on this machine (None stays None), else an `InputError` naming
    ``what`` and the fix: checked before any model loads, so ``--device tpu9`` or ``cuda`` without a GPU fails at
    once instead of after minutes of work."""
    import torch  # late: the error policy itself must not cost a torch import

    if device is None:
        return None
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"{what} {device!r} is not a torch device; use cpu, cuda, cuda:1 or mps") from None
    usable = {
        "cpu": lambda: True,
        "cuda": torch.cuda.is_available,
        "mps": lambda: torch.backends.mps.is_available(),
        "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
    }
    if dev.type not in usable:
        raise InputError(f"{what} {dev}: models run on cpu, cuda, mps or xpu, not {dev.type}")
    if not usable[dev.type]():
        raise InputError(f"{what} {dev}: no {dev.type} device is usable on this machine; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"{what} {dev}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                         f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return dev
