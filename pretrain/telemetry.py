"""Run logging: a console line per interval, TensorBoard scalars and a JSON-lines log (rank 0 writes)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["RunLogger", "format_seconds"]


def format_seconds(s: float) -> str:
    s = int(max(0, s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


class RunLogger:
    """Writes ``RUN_DIR/log.jsonl`` and ``RUN_DIR/tb/`` and prints one line per `log` call (only on rank 0)."""

    def __init__(self, run_dir: str | Path, *, rank: int, total_steps: int, start_step: int = 0,
                 tensorboard: bool = True, echo: bool = True):
        self.enabled = rank == 0
        self.total, self.start_step = total_steps, start_step
        self.t0 = time.time()
        self.echo = echo
        self._json = None
        self._tb = None
        if self.enabled:
            run_dir = Path(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            self._json = open(run_dir / "log.jsonl", "a", buffering=1)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tb"))

    def event(self, kind: str, **fields: Any) -> None:
        """A JSON-lines record (e.g. ``start``, ``checkpoint``, ``skips``, ``end``), echoed to the console."""
        if not self.enabled:
            return
        record = {"event": kind, "time": round(time.time(), 3), **fields}
        self._json.write(json.dumps(record) + "\n")
        if self.echo:
            print(f"[pretrain] {kind}: " + ", ".join(f"{k}={v}" for k, v in fields.items()), flush=True)

    def log(self, step: int, scalars: dict[str, float], *, images_per_s: float | None = None,
            data_wait: float | None = None) -> None:
        """The interval line: step, per-task losses, LR, images/s, the share of the time the step waited for its
        batches (``data_wait``, the slowest rank's) and ETA; the same values to TensorBoard."""
        if not self.enabled:
            return
        elapsed = time.time() - self.t0
        done = step - self.start_step
        eta = elapsed / done * (self.total - step) if done > 0 else 0.0
        record = {"event": "train", "step": step, **{k: float(v) for k, v in scalars.items()}}
        if images_per_s is not None:
            record["images_per_s"] = round(images_per_s, 2)
        if data_wait is not None:
            record["data_wait"] = round(data_wait, 4)
        record["eta_s"] = round(eta, 1)
        self._json.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k.replace(":", "/"), float(v), step)
            if images_per_s is not None:
                self._tb.add_scalar("perf/images_per_s", images_per_s, step)
            if data_wait is not None:
                self._tb.add_scalar("perf/data_wait", data_wait, step)
        if self.echo:
            parts = [f"step {step}/{self.total}"]
            parts += [f"{k} {v:.4g}" for k, v in scalars.items()]
            if images_per_s is not None:
                parts.append(f"{images_per_s:.1f} img/s")
            if data_wait is not None:
                parts.append(f"data {data_wait:.0%}")
            parts.append(f"ETA {format_seconds(eta)}")
            print(" | ".join(parts), flush=True)

    def close(self) -> None:
        if self._json is not None:
            self._json.close()
        if self._tb is not None:
            self._tb.close()
