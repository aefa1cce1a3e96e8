"""Inference speed of our HAT / SwinIR / IPT against the official architectures (spandrel's copies), same weights.

    .venv/bin/python tests/benchmarks/bench_inference.py [--configs swinir_s:4:64 hat_s:2:64 ...] [--full]

Each configuration builds the official module (spandrel 0.4), converts its state dict with
`restore.convert.convert_checkpoint` (so both hold the same weights), and times batch-1 ``torch.inference_mode``
forwards alternating ours / spandrel in this process (`common.alternate`, median). Ours is called through
`RestorationModel.forward` (padding included), spandrel's module directly on a window multiple. IPT runs one
48x48 patch (its fixed input; both sides do the same work). A ``bf16`` configuration times our model under CPU
``torch.autocast(dtype=torch.bfloat16)`` against spandrel in fp32 and reports the largest difference.

The default set fits `make bench`'s 15 minutes on a 2-core CPU; ``--full`` adds the 256x256 inputs of the large
models (minutes per forward on such a machine).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable

import torch

from common import Row, alternate, command, emit, machine, parser, setup, time_ratio_note

# The published configurations, as the official constructors spell them (ANCHORS §1; our variants of those names).
OFFICIAL: dict[str, tuple[str, dict[str, Any]]] = {
    "swinir_s": ("SwinIR", dict(embed_dim=60, depths=[6] * 4, num_heads=[6] * 4, window_size=8, mlp_ratio=2.0,
                                upsampler="pixelshuffledirect", img_size=64)),
    "swinir_m": ("SwinIR", dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=8, mlp_ratio=2.0,
                                upsampler="pixelshuffle", img_size=64)),
    "hat_s": ("HAT", dict(embed_dim=144, depths=[6] * 6, num_heads=[6] * 6, window_size=16, compress_ratio=24,
                          squeeze_factor=24, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2.0,
                          upsampler="pixelshuffle", img_size=64)),
    "hat": ("HAT", dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=16, compress_ratio=3,
                        squeeze_factor=30, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2.0,
                        upsampler="pixelshuffle", img_size=64)),
    "ipt": ("IPT", dict()),
}
FAMILY = {"SwinIR": "swinir", "HAT": "hat", "IPT": "ipt"}
WINDOW_BODIES = {"SwinIR", "HAT"}  # target >= 1.5 (fused/cached window attention); others >= 1.0

# (variant, scale, size, dtype): the default set sized for a 2-core CPU; --full adds the rest of issue 8's grid.
DEFAULT = ["swinir_s:2:64", "swinir_s:4:64", "swinir_s:4:256", "swinir_m:4:64", "hat_s:4:64", "ipt:2:48",
           "swinir_s:4:64:bf16"]
FULL = DEFAULT + ["hat_s:2:64", "swinir_s:2:256", "swinir_m:2:64", "swinir_m:4:256", "hat_s:4:256", "hat:4:64",
                  "swinir_m:4:64:bf16"]


def official(variant: str, scale: int) -> tuple[torch.nn.Module, Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]]:
    """The spandrel module of ``variant`` at ``scale`` (eval mode), and how to call it on a [0, 1] image."""
    import spandrel.architectures.HAT as hat
    import spandrel.architectures.IPT as ipt
    import spandrel.architectures.SwinIR as swinir

    cls_name, kw = OFFICIAL[variant]
    if cls_name == "IPT":
        ref = ipt.IPT(**kw, scale=[scale])
        return ref.eval(), lambda m, x: m(x * 255.0) / 255.0  # the official IPT works on 0..255
    cls = {"SwinIR": swinir.SwinIR, "HAT": hat.HAT}[cls_name]
    return cls(**kw, upscale=scale).eval(), lambda m, x: m(x)


def pair(variant: str, scale: int) -> tuple[torch.nn.Module, Callable, torch.nn.Module, str]:
    """(spandrel module, its call, our converted RestorationModel, task) holding the same (perturbed) weights."""
    from restore.convert import convert_checkpoint

    torch.manual_seed(0)
    ref, call = official(variant, scale)
    with torch.no_grad():  # random weights everywhere (init leaves biases/norms at 0/1)
        for p in ref.parameters():
            if p.requires_grad:  # IPT's MeanShift convs are frozen constants (ours: fixed buffers)
                p.add_(torch.randn_like(p) * 0.02)
    kw = {"num_heads": 12} if variant == "ipt" else {}
    ours = convert_checkpoint(ref.state_dict(), FAMILY[OFFICIAL[variant][0]], **kw).eval()
    return ref, call, ours, ours.tasks[0]


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return True  # unknown: make no claim
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bench_config(spec: str, repeats: int, budget_s: float) -> Row:
    variant, scale, size, *rest = spec.split(":")
    scale, size = int(scale), int(size)
    bf16 = rest == ["bf16"]
    ref, call, ours, task = pair(variant, scale)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def run_ours() -> torch.Tensor:
        with torch.inference_mode(), amp():
            return ours(x, task)

    def run_ref() -> torch.Tensor:
        with torch.inference_mode():
            return call(ref, x)

    diff = (run_ours().float() - run_ref()).abs().max().item()  # also the warm-up of both
    t = alternate({"ours": run_ours, "ref": run_ref}, repeats=repeats, warmup=0, budget_s=budget_s)
    ratio = t["ref"] / t["ours"]
    target = 1.5 if OFFICIAL[variant][0] in WINDOW_BODIES and not bf16 else 1.0
    what = f"{variant} x{scale} {size}x{size} forward, {'bf16 autocast (ours) vs fp32' if bf16 else 'fp32'}"
    hw_note = ""
    if bf16 and not _cpu_has_bf16():
        hw_note = "; this CPU has no bf16 instructions (no AVX512_BF16/AMX): bf16 matmuls are emulated"
    return Row("inference (CPU)", what, t["ours"], t["ref"], "s", ratio, reference_name="spandrel 0.4",
               note=f"{time_ratio_note(ratio, target)}; max diff {diff:.1e}{hw_note}", machine=machine())


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", help="variant:scale:size[:bf16] (default: a set that fits make bench)")
    p.add_argument("--full", action="store_true", help="the whole grid of issue 8 (slow on CPU)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=30.0, help="seconds of timed rounds per configuration")
    args = p.parse_args(argv)
    setup(args)
    rows = []
    for spec in args.configs or (FULL if args.full else DEFAULT):
        t = time.perf_counter()
        rows.append(bench_config(spec, args.repeats, args.budget))
        base = sys.argv[1:] if argv is None else argv
        rows[-1].command = command(base) if args.configs else command([*base, "--configs", spec])
        print(f"{spec}: {rows[-1].ours:.3f} s vs {rows[-1].reference:.3f} s ({rows[-1].ratio:.2f}x) "
              f"[{time.perf_counter() - t:.0f} s]", flush=True)
    emit(rows, args, "Inference: ours vs spandrel (CPU, batch 1)")


if __name__ == "__main__":
    main()
