"""``make demo``: the whole platform on a laptop CPU in minutes, on photographs that ship with scikit-image.

    python -m finetune.demo                      # embedded corpus, outputs in demo-out/
    python -m finetune.demo --data DIR --out X   # any image folder instead (e.g. ../shared/corpus/imagenet-sample)
    python -m finetune.demo --quick              # a one-minute pass through every stage (the tests run it)

Stages, each the real command a user would type (printed before it runs, its full log in ``OUT/work/logs``):
  1. stage the corpus: the real photographs in ``skimage/data`` (no download), or ``--data DIR``;
  2. ``pretrain shards``: webdataset shards;
  3. ``deepspeed --module pretrain.cli run --recipe smoke``: multi-task pretraining (SR x2/x4, denoising,
     deraining in one body pass, EDT-style) on two ranks when the machine has two cores;
  4. ``pretrain export``: the hub folder of the pretrained model;
  5. ``finetune --recipe smoke --task sr_x2``: fine-tuning from the export, validated on Set5 (or held-out
     embedded images when the benchmarks are not on the machine);
  6. scoring (``tasks.evaluate``: bicubic vs pretrained-only vs fine-tuned), the before/after picture, the
     training-curve plot and ``summary.json``.

Every long stage runs under a wall-clock budget: pretraining that overruns is stopped and its latest complete
checkpoint exported; the fine-tuning step count is sized from the measured pretraining speed, and the run is stopped
at its budget all the same (its last validated export is kept). The pipeline is that of EDT (Li et al., "On
Efficient Transformer-Based Image Pre-training for Low-Level Vision", IJCAI 2023): multi-task pretraining, then
single-task fine-tuning, at toy scale.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EMBEDDED_PHOTOS", "HELD_OUT", "DemoSettings", "QUICK", "FULL", "embedded_photo_dir", "stage_corpus",
    "plot_curves", "before_after_picture", "write_summary", "read_log", "run_demo", "main",
]

# Real photographs shipped inside scikit-image (skimage/data); synthetic images (chessboard, logo, text, phantom,
# color, horse, clock) are left out: they would teach the model edges that photographs do not have.
EMBEDDED_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png",
    "retina.jpg", "rocket.jpg",
)
# Scored instead of Set5 when the benchmarks are not on the machine; then they are kept out of training.
HELD_OUT = ("chelsea.png", "coffee.png", "motorcycle_right.png")
HELD_OUT_FROM_DIR = 3  # the last N images (by name) of a --data folder, under the same rule
PRETRAIN_TASKS = ("sr_x2", "sr_x4", "denoise_g25", "derain")
TASK = "sr_x2"


@dataclass(frozen=True)
class DemoSettings:
    """Step counts, patch sizes and budgets of one demo run (`FULL` for ``make demo``, `QUICK` for tests).

    Budgets are wall-clock seconds; ``validations`` is how many times fine-tuning scores the evaluation set (besides
    step 0). ``ft_steps`` is an upper bound: the step count is sized so that fine-tuning fits
    ``ft_budget_s`` at the speed pretraining showed (``ft_step_cost`` = one fine-tuning step's time over one
    pretraining step's, measured on this machine), and never below ``ft_min_steps``.
    """

    pretrain: tuple[str, ...]
    pretrain_budget_s: float
    finetune: tuple[str, ...]
    ft_steps: int
    ft_min_steps: int
    ft_budget_s: float
    ft_step_cost: float
    validations: int = 5
    val_limit: int | None = None


FULL = DemoSettings(
    # 4 tasks x 4 patches per rank per step (LR 16 px; 32 px for denoise/derain, the same 16 px body features)
    pretrain=("steps=300", "batch_size=4", "lr=2e-3", "warmup_steps=20", "min_lr=2e-5", "ema=0", "ckpt_every=30",
              "log_every=10", "keep_last=2", "num_workers=1"),
    pretrain_budget_s=360,
    # 4 LR patches of 24 px (48 px HR) per rank and step
    finetune=("batch_size=4", "lr_patch=24", "lr=1e-3", "schedule=cosine", "min_lr=1e-5", "warmup_steps=0",
              "log_every=10", "keep_last=1", "num_workers=1"),
    ft_steps=1500,
    ft_min_steps=150,
    ft_budget_s=300,
    ft_step_cost=0.35,
)
QUICK = DemoSettings(
    pretrain=("steps=4", "batch_size=1", "ckpt_every=2", "log_every=1", "keep_last=1", "num_workers=0", "ema=0",
              "warmup_steps=0"),
    pretrain_budget_s=120,
    finetune=("batch_size=1", "log_every=1", "keep_last=1", "num_workers=0"),
    ft_steps=4,
    ft_min_steps=4,
    ft_budget_s=120,
    ft_step_cost=1.0,
    validations=2,
    val_limit=1,
)


# ---- corpus ------------------------------------------------------------------------------------------------------


def embedded_photo_dir() -> Path:
    """The folder of scikit-image's bundled images (installed with the package; nothing is downloaded)."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    missing = [name for name in EMBEDDED_PHOTOS if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"scikit-image's bundled photographs {missing} are not in {folder}; reinstall scikit-image "
            f"(pip install --force-reinstall scikit-image) or pass --data DIR with your own images"
        )
    return folder


def _image_files(folder: Path) -> list[Path]:
    from pretrain.shards import IMAGE_SUFFIXES

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def stage_corpus(dest: Path, data: str | Path | None = None, hold_out: bool = False) -> dict[str, Any]:
    """Lay out ``dest/train`` (and ``dest/heldout`` when ``hold_out``) from the embedded photos or ``data``.

    The embedded photos are copied (a few MB); a user folder is linked, flattened to unique names, so a class tree
    works too. Held-out images never enter ``train``. Returns what was staged (names and counts).
    """
    train, held = dest / "train", dest / "heldout"
    if dest.exists():
        shutil.rmtree(dest)
    train.mkdir(parents=True)
    if data is None:
        src = embedded_photo_dir()
        files = [src / name for name in EMBEDDED_PHOTOS]
        held_names = set(HELD_OUT) if hold_out else set()
        source = f"scikit-image's bundled photographs ({src})"
        link = False
    else:
        src = Path(data).expanduser().resolve()
        if not src.is_dir():
            raise FileNotFoundError(f"--data {data}: no such folder; pass a folder of images (any depth)")
        files = _image_files(src)
        if len(files) < 2 + (HELD_OUT_FROM_DIR if hold_out else 0):
            raise ValueError(f"--data {data}: found {len(files)} images (.jpg/.png/...); the demo needs at least "
                             f"{2 + (HELD_OUT_FROM_DIR if hold_out else 0)}")
        held_names = {str(p.relative_to(src)) for p in files[-HELD_OUT_FROM_DIR:]} if hold_out else set()
        source = str(src)
        link = True
    staged: dict[str, list[str]] = {"train": [], "heldout": []}
    for f in files:
        rel = f.name if data is None else str(f.relative_to(src))
        part = "heldout" if rel in held_names else "train"
        flat = rel.replace(os.sep, "__")  # unique: relative paths are unique
        target = (held if part == "heldout" else train) / flat
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            target.symlink_to(f)
        else:
            shutil.copyfile(f, target)
        staged[part].append(flat)
    return {"source": source, "train": staged["train"], "heldout": staged["heldout"],
            "train_dir": str(train), "heldout_dir": str(held) if staged["heldout"] else None}


# ---- subprocesses under a budget ---------------------------------------------------------------------------------


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
    print("  $ " + " ".join(_quote(c) for c in cmd), flush=True)
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


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _tail(path: Path, n: int = 40) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(lines[-n:])


# ---- reading runs, plotting, the picture -------------------------------------------------------------------------


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


def plot_curves(pretrain_log: list[dict], finetune_log: list[dict], history: list[dict[str, Any]], path: Path, *,
                metric: str, bicubic: float | None = None) -> Path:
    """Two panels: pretraining L1 per task vs step; fine-tuning L1 and validation PSNR (``metric``) vs step."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    keys = sorted({k for r in pretrain_log for k in r if k.startswith("loss:")})
    for k in keys:
        pts = [(r["step"], r[k]) for r in pretrain_log if k in r]
        ax1.plot(*zip(*pts), label=k[len("loss:"):])
    ax1.set(title="Pretraining (multi-task)", xlabel="step", ylabel="L1 loss")
    ax1.set_yscale("log")
    if keys:
        ax1.legend()
    pts = [(r["step"], r["loss"]) for r in finetune_log if "loss" in r]
    if pts:
        steps, losses = zip(*pts)
        ax2.plot(steps, losses, color="tab:blue", alpha=0.3)
        ax2.plot(steps, _moving_average(losses, 9), color="tab:blue", label="L1 loss (moving average)")
    ax2.set(title=f"Fine-tuning {TASK}", xlabel="step", ylabel="L1 loss")
    ax3 = ax2.twinx()
    val = [(h["step"], h[metric]) for h in history if metric in h]
    if val:
        ax3.plot(*zip(*val), "o-", color="tab:red", label=f"validation PSNR ({metric.split('/')[1]})")
    if bicubic is not None:
        ax3.axhline(bicubic, ls="--", color="gray", label=f"bicubic {bicubic:.2f} dB")
    ax3.set_ylabel("PSNR (dB)")
    handles = ax2.get_legend_handles_labels()[0] + ax3.get_legend_handles_labels()[0]
    if handles:
        ax2.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.15),
                   ncol=3, fontsize="small")
    fig.tight_layout()
    return _save_figure(fig, path)


def _moving_average(values: tuple[float, ...] | list[float], width: int) -> list[float]:
    """Centred moving average (shorter windows at the ends): the per-interval losses of small batches are noisy."""
    half = width // 2
    return [sum(values[max(0, i - half) : i + half + 1]) / len(values[max(0, i - half) : i + half + 1])
            for i in range(len(values))]


def _save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _sr_pairs(folder: Path, scale: int) -> list[tuple[str, Any, Any]]:
    """(name, lq (1, 3, h, w), gt (1, 3, H, W)) of every image of an SR benchmark folder, read as evaluation does."""
    import torch

    from tasks.imresize import imresize
    from tasks.io import list_images, read_image, to_uint8

    hr_dir = folder / "HR" if (folder / "HR").is_dir() else folder
    pairs = []
    for hr_path in list_images(hr_dir):
        gt = read_image(hr_path)
        gt = gt.expand(3, -1, -1) if gt.shape[0] == 1 else gt
        gt = gt[:, : gt.shape[1] - gt.shape[1] % scale, : gt.shape[2] - gt.shape[2] % scale][None]  # mod-crop
        stored = sorted((folder / "LR_bicubic" / f"X{scale}").glob(f"{hr_path.stem}x{scale}.*"))
        if stored:
            lq = read_image(stored[0])
            lq = (lq.expand(3, -1, -1) if lq.shape[0] == 1 else lq)[None]
        else:  # MATLAB bicubic of the uint8 HR, as tasks.evaluate does
            lq = to_uint8(imresize(to_uint8(gt), 1 / scale)).float() / 255
        pairs.append((hr_path.stem, lq.to(torch.float32), gt))
    return pairs


def before_after_picture(model, benchmark_dir: Path, path: Path, *, task: str = TASK, crop: int = 40,
                         context: int = 16, zoom: int = 2) -> dict[str, Any]:
    """Save ``[bicubic | ours | ground truth]`` of one crop, each panel zoomed ``zoom`` x (nearest) for the eye.

    The crop (``crop`` LR pixels square) is where bicubic upscaling errs most over the benchmark's images, a choice
    that does not look at the model; the model sees ``context`` extra LR pixels each side, cut away afterwards.
    Returns the image name, the crop box and both crops' PSNR (Y channel, as the benchmark protocol).
    """
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageDraw

    import restore
    from tasks.evaluate import bicubic_baseline
    from tasks.metrics import psnr
    from tasks.registry import get_task

    t = get_task(task)
    s = t.scale
    bicubic = bicubic_baseline(t)
    best = None
    for name, lq, gt in _sr_pairs(Path(benchmark_dir), s):
        h, w = lq.shape[-2:]
        c = min(crop, h, w)
        up = bicubic(lq).float() / 255  # (1, 3, H, W)
        err = (up - gt).abs().mean(1, keepdim=True)  # (1, 1, H, W)
        window = F.avg_pool2d(err, c * s, stride=s * 4)  # (1, 1, ., .) mean error of each HR window
        score, idx = window.flatten().max(0)
        if best is None or float(score) > best[0]:
            top, left = divmod(int(idx), window.shape[-1])
            best = (float(score), name, lq, gt, up, top * 4, left * 4, c)
    if best is None:
        raise ValueError(f"no images in {benchmark_dir} for the before/after picture")
    _, name, lq, gt, up, top, left, c = best
    y0, x0 = max(0, top - context), max(0, left - context)
    y1, x1 = min(lq.shape[-2], top + c + context), min(lq.shape[-1], left + c + context)
    with torch.no_grad():
        out = restore.restore_image(model, lq[:, :, y0:y1, x0:x1], task).float().clamp(0, 1)
    oy, ox = (top - y0) * s, (left - x0) * s
    box = (slice(top * s, (top + c) * s), slice(left * s, (left + c) * s))
    ours = (out[..., oy : oy + c * s, ox : ox + c * s] * 255).round() / 255  # uint8 levels, as scored
    panels = {"bicubic": up[..., box[0], box[1]], "ours (fine-tuned)": ours, "ground truth": gt[..., box[0], box[1]]}
    gt_crop = panels["ground truth"]
    scores = {k: float(psnr(v, gt_crop, **t.protocol)[0]) for k, v in panels.items() if k != "ground truth"}

    side, gap, strip = c * s * zoom, 6, 16
    canvas = Image.new("RGB", (3 * side + 2 * gap, side + strip), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (label, img) in enumerate(panels.items()):
        arr = (img[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        tile = Image.fromarray(arr).resize((side, side), Image.NEAREST)
        canvas.paste(tile, (i * (side + gap), strip))
        caption = label + (f" {scores[label]:.2f} dB" if label in scores else "")
        draw.text((i * (side + gap) + 2, 2), caption, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    canvas.save(tmp, format="PNG")
    os.replace(tmp, path)
    return {"image": name, "lr_box": [top, left, c, c], "psnr_crop": scores}


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    """``summary.json``, written atomically."""
    from pretrain.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(summary, indent=1))
    return path


def summary_table(rows: list[tuple[str, float, float]], title: str) -> str:
    """A small fixed-width table: one row per model with PSNR and SSIM."""
    width = max([5] + [len(name) for name, _, _ in rows])
    lines = [title, f"  {'model':<{width}} {'PSNR (dB)':>9} {'SSIM':>7}"]
    lines += [f"  {name:<{width}} {p:>9.2f} {s:>7.4f}" for name, p, s in rows]
    return "\n".join(lines)


# ---- the demo ----------------------------------------------------------------------------------------------------


@dataclass
class _Clock:
    t0: float = field(default_factory=time.time)
    stages: dict[str, float] = field(default_factory=dict)
    _start: float = 0.0

    def begin(self, n: int, total: int, title: str) -> None:
        self._start = time.time()
        self._name = title
        print(f"\n[{n}/{total}] {title}  (elapsed {self.elapsed()})", flush=True)

    def end(self) -> float:
        took = time.time() - self._start
        self.stages[self._name] = round(took, 1)
        print(f"  done in {took:.0f}s", flush=True)
        return took

    def elapsed(self) -> str:
        s = int(time.time() - self.t0)
        return f"{s // 60}m{s % 60:02d}s"


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DS_ACCELERATOR", "cpu")
    env["OMP_NUM_THREADS"] = str(threads)  # ranks x threads = cores: oversubscribed CPUs run several times slower
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")  # every model the demo loads is a local folder: never wait on a network
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _benchmark_dir() -> tuple[Path | None, str]:
    """Set5's folder under the benchmark root (tasks' rules), or None with the reason."""
    from tasks.evaluate import benchmark_root

    try:
        root = benchmark_root()
    except FileNotFoundError as err:
        return None, str(err)
    folder = root / "Set5"
    return (folder, "") if folder.is_dir() else (None, f"no Set5 folder under {root}")


def _launcher(ranks: int, py: str, bin_dir: Path) -> list[str]:
    """The command prefix that runs a module on ``ranks`` CPU ranks: the deepspeed launcher, or plain python."""
    if ranks == 1:
        return [py, "-m"]
    from pretrain.launch import free_port

    return [str(bin_dir / "deepspeed"), "--num_accelerators", str(ranks), "--master_port", str(free_port()),
            "--module"]


def _pretrain_speed(records: list[dict], per_step_images: int) -> float | None:
    """Seconds per pretraining step from the logged throughput (the median of the later intervals)."""
    rates = sorted(r["images_per_s"] for r in records[1:] if r.get("images_per_s"))
    if not rates:
        return None
    return per_step_images / rates[len(rates) // 2]


def _override(items: tuple[str, ...], key: str, default: str) -> str:
    for item in items:
        if item.startswith(key + "="):
            return item.split("=", 1)[1]
    return default


def run_demo(out: str | Path = "demo-out", data: str | None = None, *, settings: DemoSettings = FULL,
             ranks: int | None = None) -> dict[str, Any]:
    """Run every stage into ``out`` and return the summary (also written to ``out/summary.json``).

    Args:
        out: the output folder; its ``work/`` (corpus, shards, runs, logs) is rebuilt on every run.
        data: an image folder to use instead of the embedded photographs.
        settings: `FULL` (``make demo``) or `QUICK`.
        ranks: DeepSpeed ranks for pretraining and fine-tuning (default: 2 on a machine with 2 cores or more).
    """
    from tasks.evaluate import bicubic_baseline, evaluate

    clock = _Clock()
    out = Path(out).resolve()
    work = out / "work"
    marker = work / ".restore-demo"
    if work.exists() and not marker.is_file():
        raise ValueError(f"{work} exists and was not made by the demo; pass another --out")
    if work.exists():
        shutil.rmtree(work)  # a rerun starts clean: stale checkpoints would be resumed or refused
    work.mkdir(parents=True)
    marker.write_text("made by python -m finetune.demo; deleted on the next run\n")
    logs = work / "logs"
    cores = os.cpu_count() or 1
    ranks = ranks or (2 if cores >= 2 else 1)
    bin_dir = Path(sys.executable).parent
    py = sys.executable
    total = 7
    bench_dir, why_not = _benchmark_dir()
    print(f"Restore demo: {'quick pass' if settings is QUICK else 'full run'}, {cores} cores, {ranks} DeepSpeed "
          f"rank(s), output {out}", flush=True)

    # 1. corpus
    clock.begin(1, total, "stage the corpus")
    corpus = stage_corpus(work / "corpus", data, hold_out=bench_dir is None)
    if bench_dir is None:
        eval_dir, eval_name = Path(corpus["heldout_dir"]), "held-out images"
        print(f"  Set5 not found ({why_not}): scoring on {len(corpus['heldout'])} held-out images "
              f"{corpus['heldout']}, excluded from training", flush=True)
    else:
        eval_dir, eval_name = bench_dir, "Set5"
    print(f"  {len(corpus['train'])} training images from {corpus['source']}", flush=True)
    clock.end()

    # 2. shards: at least one shard per rank, so the ranks read different images
    clock.begin(2, total, "build webdataset shards (pretrain shards)")
    per_shard = max(1, -(-len(corpus["train"]) // (2 * ranks)))
    pattern = str(work / "shards" / "train-%04d.tar")
    code, _ = run_stage([py, "-m", "pretrain.cli", "shards", corpus["train_dir"], pattern, "--maxcount",
                         str(per_shard), "--workers", "1", "--no-progress"], logs / "shards.log", 300, _env(cores))
    if code != 0:
        raise RuntimeError(f"pretrain shards failed (exit {code}):\n{_tail(logs / 'shards.log')}")
    n_shards = len(list((work / "shards").glob("train-*.tar")))
    urls = str(work / "shards" / f"train-{{0000..{n_shards - 1:04d}}}.tar")
    clock.end()

    # 3. multi-task pretraining under DeepSpeed
    clock.begin(3, total, f"pretrain `smoke` on {', '.join(PRETRAIN_TASKS)} ({ranks} rank(s), ZeRO-2)")
    pre_dir = work / "pretrain"
    cmd = [*_launcher(ranks, py, bin_dir), "pretrain.cli", "run", "--recipe", "smoke", "--data", urls, "--out",
           str(pre_dir), f"tasks={','.join(PRETRAIN_TASKS)}", *settings.pretrain]
    code, stopped = run_stage(cmd, logs / "pretrain.log", settings.pretrain_budget_s, _env(max(1, cores // ranks)))
    if code != 0 and not stopped:
        raise RuntimeError(f"pretraining failed (exit {code}):\n{_tail(logs / 'pretrain.log')}")
    pre_log = read_log(pre_dir)
    from pretrain.checkpoint import latest_checkpoint

    saved = latest_checkpoint(pre_dir / "checkpoints")
    pre_steps = saved[0] if saved else 0  # what the export holds (a stopped run logged a few steps more)
    if stopped:
        print(f"  exporting the last complete checkpoint, step {pre_steps}", flush=True)
    clock.end()

    # 4. export (the latest complete checkpoint: the last step, or the last one saved before a stop)
    clock.begin(4, total, "export the pretrained model (pretrain export)")
    pre_export = work / "pretrained"
    code, _ = run_stage([py, "-m", "pretrain.cli", "export", str(pre_dir), str(pre_export)], logs / "export.log",
                        300, _env(cores))
    if code != 0:
        raise RuntimeError(f"pretrain export failed (exit {code}); was a checkpoint saved?\n"
                           f"{_tail(logs / 'export.log')}")
    clock.end()

    # 5. fine-tuning sr_x2, sized to its budget from the measured pretraining speed
    clock.begin(5, total, f"fine-tune {TASK} from the export (finetune --recipe smoke, {ranks} rank(s))")
    per_step_images = int(_override(settings.pretrain, "batch_size", "2")) * len(PRETRAIN_TASKS) * ranks
    pre_step_s = _pretrain_speed(pre_log, per_step_images)
    steps = settings.ft_steps
    if pre_step_s is not None:
        affordable = int(settings.ft_budget_s * 0.85 / (pre_step_s * settings.ft_step_cost))
        steps = max(settings.ft_min_steps, min(settings.ft_steps, affordable))
    val_every = max(1, steps // settings.validations)
    steps = val_every * settings.validations  # the last step is a validation step: no double scoring at the end
    print(f"  {steps} steps (pretraining ran {pre_step_s or float('nan'):.2f} s/step; budget "
          f"{settings.ft_budget_s:.0f}s), validation on {eval_name} every {val_every}", flush=True)
    ft_dir = work / "finetune"
    cmd = [*_launcher(ranks, py, bin_dir), "finetune.cli", "--init", str(pre_export), "--task", TASK,
           "--train", corpus["train_dir"],
           "--val", str(eval_dir), "--recipe", "smoke", "--out", str(ft_dir), "--data-name",
           "skimage-photos" if data is None else Path(data).name, "--name", "restore-demo-edt_tiny-sr_x2",
           f"steps={steps}", f"val_every={val_every}", f"ckpt_every={val_every}", *settings.finetune]
    if settings.val_limit:
        cmd += ["--val-limit", str(settings.val_limit)]
    code, ft_stopped = run_stage(cmd, logs / "finetune.log", settings.ft_budget_s + 60, _env(max(1, cores // ranks)))
    if code != 0 and not ft_stopped:
        raise RuntimeError(f"fine-tuning failed (exit {code}):\n{_tail(logs / 'finetune.log')}")
    chosen = ft_dir / "last" if (ft_dir / "last" / "model.safetensors").is_file() else ft_dir / "best"
    if not (chosen / "model.safetensors").is_file():
        raise RuntimeError(f"fine-tuning left no export in {ft_dir}:\n{_tail(logs / 'finetune.log')}")
    model_dir = out / "model"
    tmp = out / f".model.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(chosen, tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)
    clock.end()

    # 6. scores: bicubic, pretrained only (step 0 of fine-tuning's validation), fine-tuned (the shipped folder)
    clock.begin(6, total, f"score on {eval_name} ({TASK}, Y channel, border {2})")
    from restore.model import RestorationModel

    limit = settings.val_limit
    model = RestorationModel.from_pretrained(str(model_dir)).eval()
    pre_model = RestorationModel.from_pretrained(str(pre_export), tasks=[TASK]).eval()
    scores = {
        "bicubic": evaluate(bicubic_baseline(TASK), eval_dir, TASK, limit=limit),
        "pretrained only (multi-task, no fine-tuning)": evaluate(pre_model, eval_dir, TASK, limit=limit),
        "fine-tuned (shipped in model/)": evaluate(model, eval_dir, TASK, limit=limit),
    }
    table = {k: {"psnr": round(v.psnr, 4), "ssim": round(v.ssim, 4)} for k, v in scores.items()}
    clock.end()

    # 7. picture, plot, summary
    clock.begin(7, total, "before/after picture, training curves, summary")
    picture = before_after_picture(model, eval_dir, out / "before_after.png")
    validation = json.loads((ft_dir / "validation.json").read_text()) if (ft_dir / "validation.json").is_file() else {}
    history = validation.get("history", [])
    metric = validation.get("primary", f"{TASK}/{eval_dir.name}/psnr")
    ft_log = read_log(ft_dir)
    plot_curves(pre_log, ft_log, history, out / "training_curves.png", metric=metric,
                bicubic=scores["bicubic"].psnr)
    gain = scores["fine-tuned (shipped in model/)"].psnr - scores["bicubic"].psnr
    summary = {
        "evaluation": {"benchmark": eval_name, "folder": str(eval_dir), "task": TASK, "images": limit or "all",
                       "protocol": "PSNR/SSIM on Y, border 2 px cropped (tasks.evaluate)", "scores": table,
                       "fine_tuned_minus_bicubic_db": round(gain, 4)},
        "corpus": {k: corpus[k] for k in ("source", "train", "heldout")},
        "pretraining": {"recipe": "smoke", "tasks": list(PRETRAIN_TASKS), "ranks": ranks, "steps": pre_steps,
                        "stopped_by_budget": stopped, "overrides": list(settings.pretrain),
                        "seconds_per_step": round(pre_step_s, 3) if pre_step_s else None, "run": str(pre_dir),
                        "export": str(pre_export)},
        "finetuning": {"recipe": "smoke", "task": TASK, "steps_planned": steps,
                       "steps_done": ft_log[-1]["step"] if ft_log else 0, "stopped_by_budget": ft_stopped,
                       "overrides": [f"steps={steps}", f"val_every={val_every}", *settings.finetune],
                       "exported": chosen.name, "validation_history": history, "run": str(ft_dir)},
        "picture": picture,
        "stage_seconds": clock.stages,
        "total_seconds": round(time.time() - clock.t0, 1),
        "files": {"model": str(model_dir), "before_after": str(out / "before_after.png"),
                  "training_curves": str(out / "training_curves.png"), "summary": str(out / "summary.json"),
                  "logs": str(logs)},
    }
    write_summary(summary, out / "summary.json")
    clock.end()
    summary["total_seconds"] = round(time.time() - clock.t0, 1)
    write_summary(summary, out / "summary.json")

    n_img = f"first {limit} image(s)" if limit else "all images"
    print("\n" + summary_table([(k, v.psnr, v.ssim) for k, v in scores.items()],
                               f"{eval_name} x2 ({n_img}; Y channel, MATLAB bicubic LR):"), flush=True)
    verdict = "above" if gain > 0 else "NOT above"
    print(f"  fine-tuned is {gain:+.2f} dB vs bicubic ({verdict} bicubic)", flush=True)
    print(f"\nTotal {clock.elapsed()}. Stages: " + ", ".join(f"{k.split(' (')[0]} {v:.0f}s"
                                                           for k, v in clock.stages.items()))
    print(f"Outputs in {out}:\n  model/             hub-ready folder (model.safetensors, config.json, README.md card)"
          f"\n  before_after.png   bicubic | ours | ground truth ({picture['image']})"
          f"\n  training_curves.png\n  summary.json\n  work/              corpus, shards, runs and logs", flush=True)
    print(f"Try it: restore run IMAGE --model {model_dir} --task {TASK} -o OUT_DIR", flush=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.demo", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="image folder to use instead of scikit-image's bundled photographs")
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out; its work/ is rebuilt)")
    p.add_argument("--quick", action="store_true", help="a few steps per stage: checks the pipeline in about a minute")
    p.add_argument("--ranks", type=int, default=None, help="DeepSpeed ranks (default 2 on 2+ cores)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_demo(args.out, args.data, settings=QUICK if args.quick else FULL, ranks=args.ranks)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
