"""Does training on blind degradations pay off on real-world-style inputs? edt_tiny, realsr_x4 vs sr_x4 training.

    DS_ACCELERATOR=cpu nice -n 10 .venv/bin/python tests/benchmarks/bench_realsr.py [--steps 600] [--gan-steps 60]
        [--picture docs/realsr_before_after.png] [--keep DIR]

Arms, each fine-tuned with the ``smoke`` recipe (batch 4, LR patch 16, constant 5e-4) from the same init for the
same number of steps, ``--steps``:

1. ``realsr_x4``: the LR of every training patch made by Real-ESRGAN's second-order pipeline (`tasks.blind`);
2. ``sr_x4``: the same images with MATLAB-bicubic LR only;
3. optionally (``--gan-steps N``) arm 1 followed by N steps of ``gan_smoke``, whose perceptual loss uses a VGG19
   with RANDOM weights (no ImageNet weights on a CPU box): a smoke run of the GAN stage, not a Real-ESRGAN model.

The budget is a number of steps, not of seconds, so both arms get equal model compute whatever the machine's load
(the realsr arm also pays for its degradation pipeline on the data side, which is not model compute). The init is
``demo-out/work/pretrained`` (``make demo``'s multi-task pretrained edt_tiny) where it exists, else ``none``
(edt_tiny from scratch); ``--init`` overrides. From the pretrained init the sr_x4 arm keeps the pretrained sr_x4
head and tail, while realsr_x4 gets fresh ones on the shared body (`finetune.init.fit_tasks`). Those fresh weights
(and all weights for ``--init none``) come from torch's global RNG, which `finetune` does not seed before building
the model, so the realsr_x4 row varies a little from run to run; the sr_x4 row from the pretrained init does not.

Scores (`tasks.evaluate`, Y channel, border 4): Set14 degraded once by ``realsr_x4`` with seed 0 and stored as LR
files (`tasks.blind_benchmark`, in the run folder), and clean MATLAB-bicubic Set14 x4 for context. A model serving
only one x4 task is scored on the other benchmark through its restorer for its own task. LPIPS (AlexNet) is
scored where its ImageNet backbone is in the torch cache, else reported as n/a.

``--picture PATH`` also writes the README's before/after picture (`picture`): the centre 320 px of two corpus photos
shrunk to 40 px with PIL's bicubic and saved as JPEG quality 30 (a real encoder, not the training pipeline), each
shown as the input, bicubic x4 and the x4 output of the realsr_x4 and sr_x4 arms.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import torch  # noqa: E402

SHARED = Path(os.environ.get("RESTORE_SHARED", REPO.parent / "shared"))  # as tests/shared.py
CORPUS = SHARED / "corpus" / "imagenet-sample"
DEMO_PRETRAINED = REPO / "demo-out" / "work" / "pretrained"
PHOTOS = ("n01558993_robin.JPEG", "n02980441_castle.JPEG")  # corpus photos for the picture
NO_LPIPS = "n/a (no AlexNet weights in the torch cache)"
SOURCE, INPUT = 320, 40  # the photo's centre square, shrunk to the input side: a picture under 300 KB


def finetune(init: str, task: str, out: Path, steps: int, recipe: str = "smoke") -> Path:
    """Fine-tune ``task`` from ``init`` for exactly ``steps`` steps on the corpus; returns the last export."""
    from finetune.recipes import get_recipe
    from finetune.train import FinetuneConfig, run_finetune

    overrides = [f"steps={steps}", f"ckpt_every={steps}", f"log_every={max(1, steps // 10)}"]
    cfg = FinetuneConfig(init=init, tasks=[task], train=[str(CORPUS)], val=[], recipe=get_recipe(recipe, overrides),
                         out=out, variant="edt_tiny" if init == "none" else None)
    return run_finetune(cfg).last_dir


def lpips_metric():
    """LPIPS-AlexNet where its ImageNet backbone is in the torch cache, else None (never a random backbone here)."""
    from tasks.perceptual import LPIPSMetric, backbone_weights_path

    return LPIPSMetric() if backbone_weights_path("alex").is_file() else None


def score(restorer, benchmark: str | Path, task: str, metric, limit: int | None) -> dict[str, str]:
    """PSNR / SSIM / LPIPS cells of one restorer on one benchmark, by `tasks.evaluate`."""
    import tasks

    r = tasks.evaluate(restorer, benchmark, task, limit=limit, lpips=metric or False)
    return {"psnr": f"{r.psnr:.2f}", "ssim": f"{r.ssim:.4f}",
            "lpips": f"{r.lpips:.4f}" if metric is not None else NO_LPIPS}


def real_input(photo: Path, out: Path, quality: int = 30) -> Path:
    """A "real" low-quality input: the photo's centre ``SOURCE`` px square shrunk to ``INPUT`` px by PIL's bicubic
    and saved as JPEG ``quality`` (a real encoder, not the training pipeline)."""
    from PIL import Image

    im = Image.open(photo).convert("RGB")
    side = min(SOURCE, *im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    small = im.crop((left, top, left + side, top + side)).resize((INPUT, INPUT), Image.BICUBIC)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return out


def caption(steps: int) -> str:
    """The picture's honest label: what the models are and how the inputs were made."""
    return (f"Tiny demo-sized model (edt_tiny), {steps} fine-tuning steps on CPU per model. Not a production model.\n"
            f"Input: centre {SOURCE} px of a corpus photo, PIL bicubic to {INPUT} px, saved as JPEG quality 30.\n"
            "realsr_x4: trained on Real-ESRGAN-degraded LR; sr_x4: trained on bicubic LR only; same init and steps.")


def _pil(x: torch.Tensor):
    """(1, 3, H, W) float -> PIL RGB image, rounded to uint8."""
    from PIL import Image

    return Image.fromarray((x[0].float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def picture(arms: dict[str, tuple], photos: list[Path], work: Path, path: Path, text: str) -> Path:
    """Rows of [input (nearest x4) | bicubic x4 | each arm x4] for each photo, captioned, saved as PNG.

    Drawn here with PIL rather than with `finetune.picture`, whose panels need a ground truth these inputs lack.
    """
    import torch.nn.functional as F
    from PIL import Image, ImageDraw

    import restore
    from tasks.io import atomic_path, read_image

    labels = ["input (JPEG q30, nearest x4)", "bicubic x4"] + [f"{name} model x4" for name in arms]
    rows = []
    for photo in photos:
        lq = read_image(real_input(photo, work / f"{photo.stem}_q30.jpg"))[None]  # (1, 3, h, w)
        rows.append([F.interpolate(lq, scale_factor=4, mode="nearest"),
                     F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False)]
                    + [restore.restore_image(model, lq, task) for model, task in arms.values()])
    h, w = rows[0][0].shape[-2:]
    gap, strip, foot = 4, 14, 4 + 12 * len(text.split("\n"))
    canvas = Image.new("RGB", (len(labels) * (w + gap) - gap, strip + len(rows) * (h + gap) - gap + foot), "white")
    draw = ImageDraw.Draw(canvas)
    for j, label in enumerate(labels):
        draw.text((j * (w + gap) + 2, 1), label, fill="black")
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            canvas.paste(_pil(panel), (j * (w + gap), strip + i * (h + gap)))
    for k, line in enumerate(text.split("\n")):
        draw.text((2, canvas.height - foot + 3 + 12 * k), line, fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG", optimize=True)
    return path


def main(argv: list[str] | None = None) -> dict:
    """Train the arms, print the table (and draw the picture); returns the table's cells by arm."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="fine-tuning steps per arm (default 600)")
    ap.add_argument("--gan-steps", type=int, default=60, help="gan_smoke steps after the realsr arm (default 60; "
                    "0: no GAN arm)")
    ap.add_argument("--init", default=str(DEMO_PRETRAINED) if DEMO_PRETRAINED.is_dir() else "none",
                    help="init of both arms (default: make demo's pretrained edt_tiny, else none)")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N images (smoke tests)")
    ap.add_argument("--picture", type=Path, default=None, help="also write the before/after picture here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", default=None, help="keep the runs in this folder")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from restore import RestorationModel
    from tasks.blind_benchmark import make_blind_benchmark
    from tasks.evaluate import bicubic_baseline

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-realsr-"))
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    degraded = make_blind_benchmark("Set14", tmp / "lr", "realsr_x4", seed=0)
    runs, minutes = {}, {}  # arm name -> (task, last export), training minutes
    for name, task in (("realsr_x4", "realsr_x4"), ("sr_x4 (bicubic-only)", "sr_x4")):
        t = time.time()
        runs[name] = (task, finetune(args.init, task, tmp / task, args.steps))
        minutes[name] = (time.time() - t) / 60
    if args.gan_steps:
        t = time.time()
        gan_dir = finetune(str(runs["realsr_x4"][1]), "realsr_x4", tmp / "gan", args.gan_steps, recipe="gan_smoke")
        runs["realsr_x4 + gan_smoke (RANDOM VGG)"] = ("realsr_x4", gan_dir)
        minutes["realsr_x4 + gan_smoke (RANDOM VGG)"] = (time.time() - t) / 60
    models = {name: (RestorationModel.from_pretrained(str(d)).eval(), task) for name, (task, d) in runs.items()}
    metric = lpips_metric()
    table = {"bicubic": {"steps": "-", "min": "-",
                         "realsr": score(bicubic_baseline("sr_x4"), degraded, "realsr_x4", metric, args.limit),
                         "clean": score(bicubic_baseline("sr_x4"), "Set14", "sr_x4", metric, args.limit)}}
    for name, (model, task) in models.items():
        fn = model.restorer(task)  # one x4 head scored on both x4 benchmarks
        steps = f"{args.steps}+{args.gan_steps} GAN" if "gan" in name else str(args.steps)
        table[name] = {"steps": steps, "min": f"{minutes[name]:.1f}",
                       "realsr": score(fn, degraded, "realsr_x4", metric, args.limit),
                       "clean": score(fn, "Set14", "sr_x4", metric, args.limit)}
    init = "make demo's pretrained edt_tiny" if args.init == str(DEMO_PRETRAINED) else args.init
    print(f"\nedt_tiny fine-tuned with the smoke recipe from {init}, {args.steps} steps per arm (batch 4, LR patch "
          f"16), {args.threads} thread(s); Y channel, border 4; total {(time.time() - t0) / 60:.1f} min")
    print("| model | train steps | train min | Set14 realsr_x4 seed 0 PSNR | SSIM | LPIPS | clean Set14 x4 PSNR "
          "| SSIM |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in table.items():
        r, c = row["realsr"], row["clean"]
        print(f"| {name} | {row['steps']} | {row['min']} | {r['psnr']} | {r['ssim']} | {r['lpips']} | {c['psnr']} "
              f"| {c['ssim']} |")
    if args.picture:
        shown = {name: m for name, m in models.items() if "gan" not in name}
        photos = [CORPUS / p for p in PHOTOS]
        print(f"wrote {picture(shown, photos, tmp / 'picture', args.picture, caption(args.steps))}")
    print(f"runs in {tmp}")
    return table


if __name__ == "__main__":
    main()
