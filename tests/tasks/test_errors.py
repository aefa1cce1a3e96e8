"""The one error policy of every command: exit codes, one-line messages, --debug tracebacks, Ctrl-C."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tasks.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, InputError, run_command


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.setenv("RESTORE_DEBUG", "0")  # recorded, so a test that turns it on is undone afterwards


def _raise(exc: BaseException):
    def main(argv):
        raise exc

    return main


@pytest.mark.parametrize("exc, code", [
    (InputError("bad --tile: 0; use a positive size"), EXIT_USAGE),
    (FileNotFoundError("model 'x' does not exist"), EXIT_USAGE),
    (PermissionError("cannot write to out/"), EXIT_USAGE),
    (RuntimeError("the engine broke"), EXIT_FAILED),
    (OSError(28, "No space left on device"), EXIT_FAILED),
    (KeyboardInterrupt(), EXIT_INTERRUPTED),
])
def test_exit_codes_and_one_line_messages(capsys, exc, code):
    assert run_command("restore", _raise(exc), []) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("restore: ")
    if code == EXIT_FAILED:
        assert "--debug" in lines[0] and type(exc).__name__ in lines[0]


def test_multi_line_message_is_folded_to_one_line(capsys):
    assert run_command("pretrain", _raise(InputError("first\n  second")), []) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == "pretrain: error: first second"


def test_debug_flag_shows_the_traceback_and_is_removed_from_argv(capsys):
    seen = []

    def main(argv):
        seen.append(argv)
        raise RuntimeError("boom")

    assert run_command("finetune", main, ["--task", "sr_x2", "--debug"]) == EXIT_FAILED
    assert seen == [["--task", "sr_x2"]]
    assert "Traceback" in capsys.readouterr().err
    assert os.environ["RESTORE_DEBUG"] == "1"


def test_success_and_explicit_codes_pass_through():
    assert run_command("restore", lambda argv: None, []) == EXIT_OK
    assert run_command("restore", lambda argv: 1, []) == EXIT_FAILED


def test_sigint_in_a_real_process_exits_130_without_traceback(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys, time
        from tasks.errors import run_command

        def main(argv):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered as KeyboardInterrupt
            time.sleep(10)

        sys.exit(run_command("restore", main))
    """))
    env = {k: v for k, v in os.environ.items() if k != "RESTORE_DEBUG"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in proc.stderr and "interrupted" in proc.stderr
