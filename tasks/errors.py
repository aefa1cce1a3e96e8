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

import os
import sys
import traceback
from typing import Callable, Sequence

__all__ = [
    "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "InputError", "debug_enabled", "run_command",
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
