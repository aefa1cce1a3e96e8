"""Write docs/realsr_samples.png: one clean image and blind degradations of it (tasks.blind), and time the pipelines.

    .venv/bin/python tests/benchmarks/realsr_sample.py [--out docs/realsr_samples.png] [--no-bench]

Not a test. The image is scikit-image's ``astronaut`` (512x512, public domain) cropped to 256x256. Top row: the
clean crop, its MATLAB-bicubic x4 LR (``sr_x4``), and ``realsr_x4`` with seeds 0-2; bottom row: ``realsr_x2`` with
seed 0 and ``bsrgan_x4`` with seeds 0-3. LR panels are shown enlarged with nearest neighbour to the HR size, so the
pixels the model sees are visible. Each label names the task, the seed and the main drawn parameters.

Throughput: samples/s of each pipeline on one CPU thread for 128x128 HR patches (batches of 16, after a warm-up).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from skimage import data as skdata

import tasks
from tasks import blind

REPO = Path(__file__).resolve().parents[2]
PANEL = 256
LABEL_H = 28


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _describe(task: tasks.Task, seed: int) -> str:
    """The drawn parameters of image 0 of a one-image batch with this seed (what degrade will use)."""
    g = torch.Generator().manual_seed(blind.image_seeds(1, _gen(seed))[0])
    if task.pipeline == "realesrgan":
        s = blind.sample_realesrgan(blind.RealESRGANParams(), g)
        n1, n2 = s.noise1, s.noise2
        noise = "/".join(f"{'g' if k == 'gaussian' else 'p'}{lvl:.1f}" for k, lvl, _ in (n1, n2))
        return f"{s.kernel1.kind} s{s.kernel1.sigma_x:.1f} x{s.resize1[0]:.2f} n{noise} q{s.jpeg1:.0f}/{s.jpeg2:.0f}"
    s = blind.sample_bsrgan(blind.BSRGANParams(), task.scale, g)
    jpeg = f"q{s.jpeg}/{s.final_jpeg}" if s.jpeg is not None else f"q{s.final_jpeg}"
    # correlated noise ignores the drawn level: it always uses the maximum (utils_blindsr.py line 371)
    level = blind.BSRGANParams().noise_level_range[1] if s.noise[0] == "correlated" else s.noise[1]
    return f"{s.noise[0]} n{level} {s.down2[0]} {jpeg}" + (" half" if s.down1 else "")


def _panel(img: torch.Tensor) -> torch.Tensor:
    return F.interpolate(img, size=(PANEL, PANEL), mode="nearest") if img.shape[-1] != PANEL else img


def make_grid(out: Path) -> None:
    hr = torch.from_numpy(skdata.astronaut()[40:296, 120:376].copy()).permute(2, 0, 1)[None].float() / 255
    cells = [(hr, "clean HR 256x256", ""), (tasks.get_task("sr_x4").degrade(hr), "sr_x4 (bicubic)", "")]
    for name, seeds in (("realsr_x4", (0, 1, 2)), ("realsr_x2", (0,)), ("bsrgan_x4", (0, 1, 2, 3))):
        task = tasks.get_task(name)
        for seed in seeds:
            cells.append((task.degrade(hr, _gen(seed)), f"{name} seed {seed}", _describe(task, seed)))
    cols = 5
    rows = (len(cells) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (PANEL + 4), rows * (PANEL + LABEL_H + 4) + 2 * 12 + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (img, title, detail) in enumerate(cells):
        x, y = (i % cols) * (PANEL + 4), (i // cols) * (PANEL + LABEL_H + 4)
        arr = (_panel(img)[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        canvas.paste(Image.fromarray(arr), (x, y + LABEL_H))
        size = f" ({img.shape[-1]}px)" if img.shape[-1] != PANEL else ""
        draw.text((x + 3, y + 2), title + size, fill="black")
        draw.text((x + 3, y + 14), detail, fill="black")
    foot = rows * (PANEL + LABEL_H + 4) + 2
    draw.text((3, foot), "realsr: kernel-1 type, sigma_x, first resize factor, noise stage 1/2 (g: Gaussian sigma, "
              "p: Poisson scale), JPEG quality stage 1/2.   bsrgan: noise kind and level, downsample-2 kind "
              "(resize or shifted blur + nearest),", fill="black")
    draw.text((3, foot + 12), "JPEG quality (in-order/final), 'half': x4 pre-halving.   LR panels enlarged with "
              "nearest neighbour; image: skimage.data.astronaut() crop; one degradation draw per panel.",
              fill="black")
    with tasks.io.atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    print(f"wrote {out}")


def bench() -> None:
    torch.set_num_threads(1)
    hr = torch.rand(16, 3, 128, 128, generator=_gen(0))
    for name in ("realsr_x4", "bsrgan_x4"):
        task = tasks.get_task(name)
        task.degrade(hr[:2], _gen(0))  # warm-up
        n, t0 = 0, time.perf_counter()
        for seed in range(4):
            task.degrade(hr, _gen(seed))
            n += hr.shape[0]
        dt = time.perf_counter() - t0
        print(f"{name}: {n / dt:.1f} samples/s (128x128 HR -> 32x32 LQ, 1 thread, {n} samples in {dt:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "realsr_samples.png"))
    parser.add_argument("--no-bench", action="store_true", help="only write the picture")
    args = parser.parse_args()
    make_grid(Path(args.out))
    if not args.no_bench:
        bench()


if __name__ == "__main__":
    main()
