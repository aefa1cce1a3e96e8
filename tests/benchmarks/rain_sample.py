"""Write docs/rain_sample.png: one clean image next to light and heavy synthetic rain (tasks.degradations.add_rain).

    .venv/bin/python tests/benchmarks/rain_sample.py [--image PATH] [--out docs/rain_sample.png]

Not a test. Uses a benchmark image (Set14 ``lenna``-free: BSD100 by default) cropped to 240x160, seed 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import tasks
from tasks.degradations import add_rain

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=None, help="clean image (default: BSD100/HR/86000.png)")
    parser.add_argument("--out", default=str(REPO / "docs" / "rain_sample.png"))
    args = parser.parse_args()
    path = args.image or tasks.evaluate.__globals__["benchmark_root"]() / "BSD100" / "HR" / "86000.png"
    hr = tasks.read_image(path)[None, :3]  # (1, 3, H, W)
    h, w = hr.shape[-2:]
    hr = hr[..., (h - 160) // 2 : (h - 160) // 2 + 160, (w - 240) // 2 : (w - 240) // 2 + 240]
    panels = [hr]
    for level in ("light", "heavy"):
        panels.append(add_rain(hr, level=level, generator=torch.Generator().manual_seed(0)))
    row = torch.cat([torch.nn.functional.pad(p, (2, 2, 0, 0), value=1.0) for p in panels], dim=-1)[0]
    arr = (row.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    canvas = Image.new("RGB", (arr.shape[1], arr.shape[0] + 16), "white")
    canvas.paste(Image.fromarray(arr), (0, 16))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(("clean", "add_rain(level='light')", "add_rain(level='heavy')")):
        draw.text((i * 244 + 6, 2), label, fill="black")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    canvas.save(tmp, optimize=True)
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
