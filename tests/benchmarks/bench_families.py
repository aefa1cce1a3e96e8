"""Speed of our HAT/SwinIR/IPT bodies against the official code (spandrel's copy), same config and weights.

Run: .venv/bin/python tests/benchmarks/bench_families.py [--repeats 3]
Prints CPU forward and forward+backward times and the ratio ours/reference (< 1: we are faster).
"""

from __future__ import annotations

import argparse
import time

import torch
from spandrel.architectures.HAT import HAT
from spandrel.architectures.IPT import IPT
from spandrel.architectures.SwinIR import SwinIR

from restore.convert import convert_checkpoint


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (caches, allocator)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench(name: str, ref: torch.nn.Module, ref_call, family: str, size: int, repeats: int, **kw) -> None:
    ref.eval()
    ours = convert_checkpoint(ref.state_dict(), family, **kw)
    task = ours.tasks[0]
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        t_ref = _time(lambda: ref_call(ref, x), repeats)
        t_ours = _time(lambda: ours(x, task), repeats)

    def fwd_bwd(call):
        def run():
            ref.zero_grad(set_to_none=True)
            ours.zero_grad(set_to_none=True)
            call().mean().backward()
        return run

    tb_ref = _time(fwd_bwd(lambda: ref_call(ref, x)), repeats)
    tb_ours = _time(fwd_bwd(lambda: ours(x, task)), repeats)
    print(f"| {name} | {size}x{size} | {t_ref * 1e3:.0f} | {t_ours * 1e3:.0f} | {t_ours / t_ref:.2f} "
          f"| {tb_ref * 1e3:.0f} | {tb_ours * 1e3:.0f} | {tb_ours / tb_ref:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, fp32, batch 1; times in ms (best of "
          f"{args.repeats})")
    print("| config | input | ref fwd | ours fwd | ratio | ref fwd+bwd | ours fwd+bwd | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    plain = lambda m, x: m(x)  # noqa: E731
    small = dict(depths=[2, 2], num_heads=[2, 2], mlp_ratio=2.0)
    bench("SwinIR small (C=32, ws 8) x2", SwinIR(embed_dim=32, window_size=8, upsampler="pixelshuffle", upscale=2,
                                                  img_size=64, **small), plain, "swinir", 32, args.repeats)
    bench("SwinIR-S published x2", SwinIR(embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, window_size=8,
                                           mlp_ratio=2.0, upsampler="pixelshuffledirect", upscale=2, img_size=64),
          plain, "swinir", 64, args.repeats)
    bench("HAT small (C=32, ws 16) x2", HAT(embed_dim=30, window_size=16, upscale=2, img_size=64, squeeze_factor=6,
                                            **small), plain, "hat", 32, args.repeats)
    ipt_call = lambda m, x: m(x * 255) / 255  # noqa: E731
    bench("IPT small (C=16, 2+2 layers) x2", IPT(n_feats=16, num_heads=4, num_layers=2, scale=[2]), ipt_call,
          "ipt", 48, args.repeats, num_heads=4)


if __name__ == "__main__":
    main()
