"""Running the demo's stages: each is the real command a user would type, run as a subprocess under a wall-clock
budget, its full output in a log file and its progress lines on the console, each stage timed."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

__all__ = ["run_stage", "stage_env", "launcher", "log_tail", "StageClock"]


def _echo_line(line: str) -> bool:
    """Which lines of a stage's output reach the console (all go to its log file)."""
    text = line.strip()
    return (text.startswith("step ") or "validation at step" in text or "error" in text.lower()
            or text.startswith(("done:", "exported to", "best at step", "last (step", "Traceback"))
            or " samples in " in text)


def run_stage(cmd: list[str], log_path: Path, budget_s: float, env: dict[str, str]) -> tuple[int | None, bool]:
    """Run ``cmd`` (its own process group), tee selected lines to the console, stop it after ``budget_s``.

    Returns ``(exit code, stopped)``; a stopped run gets SIGTERM, then SIGKILL after 15 s (the launcher and all of
    its ranks: they share the group).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print("  $ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    with open(log_path, "w", buffering=1) as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True, bufsize=1)

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                if _echo_line(line):
                    print("    " + line.rstrip()[:160], flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        stopped = False
        try:
            proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            stopped = True
            print(f"  budget of {budget_s:.0f}s reached: stopping the run", flush=True)
            _stop_group(proc)
        reader.join(timeout=10)
    return proc.returncode, stopped


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def log_tail(path: Path, n: int = 40) -> str:
    """The last ``n`` lines of a stage's log, for the error message of a failed stage."""
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(lines[-n:])


def stage_env(threads: int) -> dict[str, str]:
    """The environment of a stage's subprocess: CPU DeepSpeed, ``threads`` OpenMP threads, offline hub, this repo."""
    env = dict(os.environ)
    env.setdefault("DS_ACCELERATOR", "cpu")
    env["OMP_NUM_THREADS"] = str(threads)  # ranks x threads = cores: oversubscribed CPUs run several times slower
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")  # every model the demo loads is a local folder: never wait on a network
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def launcher(ranks: int) -> list[str]:
    """The command prefix that runs a module on ``ranks`` CPU ranks: the deepspeed launcher, or plain python."""
    if ranks == 1:
        return [sys.executable, "-m"]
    from pretrain.launch import free_port

    return [str(Path(sys.executable).parent / "deepspeed"), "--num_accelerators", str(ranks), "--master_port",
            str(free_port()), "--module"]


@dataclass
class StageClock:
    """Prints ``[n/total] title (elapsed ...)`` and ``done in ..s`` around each stage and keeps their seconds."""

    total: int
    t0: float = field(default_factory=time.time)
    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, n: int, title: str) -> Iterator[None]:
        start = time.time()
        print(f"\n[{n}/{self.total}] {title}  (elapsed {self.elapsed()})", flush=True)
        yield
        took = time.time() - start
        self.stages[title] = round(took, 1)
        print(f"  done in {took:.0f}s", flush=True)

    def seconds(self) -> float:
        return round(time.time() - self.t0, 1)

    def elapsed(self) -> str:
        s = int(time.time() - self.t0)
        return f"{s // 60}m{s % 60:02d}s"
