"""The demo's stages, one function each, in the order `finetune.demo.run_demo` calls them.

Each stage runs the real command a user would type (through `finetune.demo_process.run_stage`, under a budget) and
returns what the next stages need; a stage that fails raises `RuntimeError` with the tail of its log.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.demo_corpus import stage_corpus
from finetune.demo_process import launcher, log_tail, run_stage, stage_env

if TYPE_CHECKING:
    from finetune.demo import DemoSettings
    from tasks.evaluate import EvalResult

__all__ = [
    "TASK", "PRETRAIN_TASKS", "SCORE_NAMES", "DemoRun", "EvalSet", "Pretrained", "Finetuned", "read_log",
    "prepare_work", "benchmark_dir", "corpus_and_eval_set", "build_shards", "pretrain", "export_pretrained",
    "finetune_schedule", "finetune", "score",
]

PRETRAIN_TASKS = ("sr_x2", "sr_x4", "denoise_g25", "derain")
TASK = "sr_x2"
SCORE_NAMES = ("bicubic", "pretrained only (multi-task, no fine-tuning)", "fine-tuned (shipped in model/)")
_MARKER = ".restore-demo"


@dataclass(frozen=True)
class DemoRun:
    """Where one demo run writes and how it runs: ``out/work`` holds the corpus, shards, runs and logs."""

    out: Path
    settings: DemoSettings
    data: str | None
    ranks: int
    cores: int

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def env(self, ranks: int = 1) -> dict[str, str]:
        """A stage's environment, its OpenMP threads split over ``ranks`` processes (ranks x threads = cores)."""
        return stage_env(max(1, self.cores // ranks))

    def execute(self, cmd: list[str], log: str, budget_s: float, failure: str, *, ranks: int = 1,
                may_stop: bool = False) -> bool:
        """`run_stage` into ``logs/<log>.log``; returns whether the budget stopped it (allowed only if ``may_stop``).

        A failure raises `RuntimeError`: ``failure`` (formatted with the exit ``code``), then the log's tail.
        """
        code, stopped = run_stage(cmd, self.logs / f"{log}.log", budget_s, self.env(ranks))
        if code != 0 and not (stopped and may_stop):
            raise RuntimeError(failure.format(code=code) + "\n" + log_tail(self.logs / f"{log}.log"))
        return stopped


@dataclass(frozen=True)
class EvalSet:
    """The images the demo scores: Set5, or held-out photographs when the benchmarks are not on the machine."""

    folder: Path
    name: str


@dataclass(frozen=True)
class Pretrained:
    run: Path
    export: Path
    log: list[dict[str, Any]]
    steps: int  # what the export holds (a stopped run logged a few steps more)
    stopped: bool
    seconds_per_step: float | None = None


@dataclass(frozen=True)
class Finetuned:
    run: Path
    steps: int
    val_every: int
    stopped: bool
    exported: str  # "last" or "best": the run's folder that model/ is a copy of
    model: Path
    log: list[dict[str, Any]]
    history: list[dict[str, Any]]  # fine-tuning's validation scores, step 0 (the pretrained model) first
    metric: str  # the primary key of ``history``: ``sr_x2/<benchmark>/psnr``


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The ``train`` records of a run's ``log.jsonl`` (losses, LR, validation scores), in order."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:  # a line cut by a stopped run
            continue
        if r.get("event") == "train":
            records.append(r)
    return records


def prepare_work(out: Path) -> None:
    """Rebuild ``out/work`` (a rerun starts clean: stale checkpoints would be resumed or refused), refusing a
    ``work`` folder that the demo did not make."""
    work, marker = out / "work", out / "work" / _MARKER
    if work.exists() and not marker.is_file():
        raise ValueError(f"{work} exists and was not made by the demo; pass another --out")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    marker.write_text("made by python -m finetune.demo; deleted on the next run\n")


def benchmark_dir() -> tuple[Path | None, str]:
    """Set5's folder under the benchmark root (tasks' rules), or None with the reason."""
    from tasks.evaluate import benchmark_root

    try:
        root = benchmark_root()
    except FileNotFoundError as err:
        return None, str(err)
    folder = root / "Set5"
    return (folder, "") if folder.is_dir() else (None, f"no Set5 folder under {root}")


def corpus_and_eval_set(run: DemoRun) -> tuple[dict[str, Any], EvalSet]:
    """Stage the corpus, holding images out of training only when Set5 is missing (they are scored instead)."""
    bench, why_not = benchmark_dir()
    corpus = stage_corpus(run.work / "corpus", run.data, hold_out=bench is None)
    if bench is None:
        print(f"  Set5 not found ({why_not}): scoring on {len(corpus['heldout'])} held-out images "
              f"{corpus['heldout']}, excluded from training", flush=True)
        evalset = EvalSet(Path(corpus["heldout_dir"]), "held-out images")
    else:
        evalset = EvalSet(bench, "Set5")
    print(f"  {len(corpus['train'])} training images from {corpus['source']}", flush=True)
    return corpus, evalset


def build_shards(run: DemoRun, corpus: dict[str, Any]) -> str:
    """``pretrain shards``, at least one shard per rank so the ranks read different images; returns their URLs."""
    per_shard = max(1, -(-len(corpus["train"]) // (2 * run.ranks)))
    pattern = str(run.work / "shards" / "train-%04d.tar")
    run.execute([sys.executable, "-m", "pretrain.cli", "shards", corpus["train_dir"], pattern, "--maxcount",
                 str(per_shard), "--workers", "1", "--no-progress"], "shards", 300,
                "pretrain shards failed (exit {code}):")
    n_shards = len(list((run.work / "shards").glob("train-*.tar")))
    return str(run.work / "shards" / f"train-{{0000..{n_shards - 1:04d}}}.tar")


def _seconds_per_step(records: list[dict], per_step_images: int) -> float | None:
    """Seconds per pretraining step from the logged throughput (the median of the later intervals)."""
    rates = sorted(r["images_per_s"] for r in records[1:] if r.get("images_per_s"))
    if not rates:
        return None
    return per_step_images / rates[len(rates) // 2]


def pretrain(run: DemoRun, urls: str) -> Pretrained:
    """Multi-task pretraining of the `smoke` recipe under DeepSpeed, stopped at its budget."""
    from pretrain.checkpoint import latest_checkpoint
    from pretrain.recipes import apply_overrides, get_recipe

    overrides = [f"tasks={','.join(PRETRAIN_TASKS)}", *run.settings.pretrain]
    recipe = apply_overrides(get_recipe("smoke"), overrides)  # also checks the overrides before anything runs
    pre_dir = run.work / "pretrain"
    cmd = [*launcher(run.ranks), "pretrain.cli", "run", "--recipe", "smoke", "--data", urls, "--out", str(pre_dir),
           *overrides]
    stopped = run.execute(cmd, "pretrain", run.settings.pretrain_budget_s, "pretraining failed (exit {code}):",
                          ranks=run.ranks, may_stop=True)
    saved = latest_checkpoint(pre_dir / "checkpoints")
    steps = saved[0] if saved else 0
    if stopped:
        print(f"  exporting the last complete checkpoint, step {steps}", flush=True)
    log = read_log(pre_dir)
    speed = _seconds_per_step(log, recipe.batch_size * len(recipe.tasks) * run.ranks)
    return Pretrained(pre_dir, run.work / "pretrained", log, steps, stopped, speed)


def export_pretrained(run: DemoRun, pre: Pretrained) -> None:
    """``pretrain export`` of the latest complete checkpoint: the last step, or the last one saved before a stop."""
    run.execute([sys.executable, "-m", "pretrain.cli", "export", str(pre.run), str(pre.export)], "export", 300,
                "pretrain export failed (exit {code}); was a checkpoint saved?")


def finetune_schedule(settings: DemoSettings, pre_step_s: float | None) -> tuple[int, int]:
    """``(steps, val_every)``: as many steps as fit the fine-tuning budget at the measured pretraining speed, within
    ``[ft_min_steps, ft_steps]``, rounded so that the last step is a validation step (no double scoring at the end)."""
    steps = settings.ft_steps
    if pre_step_s is not None:
        affordable = int(settings.ft_budget_s * 0.85 / (pre_step_s * settings.ft_step_cost))
        steps = max(settings.ft_min_steps, min(settings.ft_steps, affordable))
    val_every = max(1, steps // settings.validations)
    return val_every * settings.validations, val_every


def finetune(run: DemoRun, corpus: dict[str, Any], evalset: EvalSet, pre: Pretrained) -> Finetuned:
    """``finetune --recipe smoke --task sr_x2`` from the export, then its last (or best) export copied to model/."""
    s = run.settings
    steps, val_every = finetune_schedule(s, pre.seconds_per_step)
    print(f"  {steps} steps (pretraining ran {pre.seconds_per_step or float('nan'):.2f} s/step; budget "
          f"{s.ft_budget_s:.0f}s), validation on {evalset.name} every {val_every}", flush=True)
    ft_dir = run.work / "finetune"
    cmd = [*launcher(run.ranks), "finetune.cli", "--init", str(pre.export), "--task", TASK,
           "--train", corpus["train_dir"], "--val", str(evalset.folder), "--recipe", "smoke", "--out", str(ft_dir),
           "--data-name", "skimage-photos" if run.data is None else Path(run.data).name,
           "--name", "restore-demo-edt_tiny-sr_x2",
           f"steps={steps}", f"val_every={val_every}", f"ckpt_every={val_every}", *s.finetune]
    if s.val_limit:
        cmd += ["--val-limit", str(s.val_limit)]
    stopped = run.execute(cmd, "finetune", s.ft_budget_s + 60, "fine-tuning failed (exit {code}):",
                          ranks=run.ranks, may_stop=True)
    chosen = ft_dir / "last" if (ft_dir / "last" / "model.safetensors").is_file() else ft_dir / "best"
    if not (chosen / "model.safetensors").is_file():
        raise RuntimeError(f"fine-tuning left no export in {ft_dir}:\n{log_tail(run.logs / 'finetune.log')}")
    history, metric = _validation(ft_dir, evalset)
    return Finetuned(ft_dir, steps, val_every, stopped, chosen.name, _ship(chosen, run.out / "model"),
                     read_log(ft_dir), history, metric)


def _ship(folder: Path, dest: Path) -> Path:
    """Copy ``folder`` to ``dest`` through a temporary sibling, so ``dest`` is never a half-copied model."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def score(run: DemoRun, evalset: EvalSet, pre: Pretrained, ft: Finetuned) -> dict[str, EvalResult]:
    """Bicubic, pretrained only and fine-tuned (the shipped folder) on the evaluation set, by `tasks.evaluate`."""
    from restore.model import RestorationModel
    from tasks.evaluate import bicubic_baseline, evaluate

    restorers = (bicubic_baseline(TASK), RestorationModel.from_pretrained(str(pre.export), tasks=[TASK]).eval(),
                 RestorationModel.from_pretrained(str(ft.model)).eval())
    return {name: evaluate(r, evalset.folder, TASK, limit=run.settings.val_limit)
            for name, r in zip(SCORE_NAMES, restorers)}


def _validation(ft_dir: Path, evalset: EvalSet) -> tuple[list[dict[str, Any]], str]:
    path = ft_dir / "validation.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    return record.get("history", []), record.get("primary", f"{TASK}/{evalset.folder.name}/psnr")
