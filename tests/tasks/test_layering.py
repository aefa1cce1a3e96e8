"""tasks sits below restore (restore imports tasks): scoring any restorer must not import the model library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tasks

TASKS_DIR = Path(tasks.__file__).parent

# Evaluating a plain callable and an object with the restorer protocol (the shape of restore.RestorationModel:
# an nn.Module with tasks and scale) in a fresh interpreter, then listing which restore modules got imported.
_SCRIPT = """
import sys, torch, tasks
from tasks.evaluate import bicubic_baseline

folder = sys.argv[1]
g = torch.Generator().manual_seed(0)
tasks.save_image(torch.rand(3, 32, 40, generator=g), folder + "/a.png")
tasks.evaluate(bicubic_baseline("sr_x2"), folder, "sr_x2")
list(tasks.benchmark_pairs(folder, "sr_x2"))

class Protocol(torch.nn.Module):
    tasks = ["sr_x2"]

    def scale(self, task):
        return 2

    def restorer(self, task, tile, overlap, ensemble, device):
        base = bicubic_baseline(task)
        fn = lambda lq: base(lq)
        fn.lq_channels = 3
        return fn

tasks.evaluate(Protocol(), folder, "sr_x2", tile=16)
print(sorted(m for m in sys.modules if m == "restore" or m.startswith("restore.")))
"""


def test_evaluating_does_not_import_restore(tmp_path):
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_no_tasks_module_imports_restore():
    # tasks/cli.py included: `restore eval` hands it the model loader (restore.cli), it never imports one
    offenders = []
    for path in sorted(TASKS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}:{node.lineno}" for n in names if n == "restore" or n.startswith("restore.")]
    assert not offenders, f"tasks modules import restore: {offenders}"
