"""Training step (forward + L1 loss + backward + AdamW step) of ours against spandrel's official modules.

    .venv/bin/python tests/benchmarks/bench_training.py [--configs swinir_s:2:64:2 ...]

Both sides start from the same weights (`bench_inference.pair`), get the same batch and each its own
``torch.optim.AdamW(lr=2e-4)`` (the HAT/SwinIR recipes' optimizer family), in train mode. Steps alternate ours /
spandrel in this process, median kept. Patch sizes are the published LR training patches: 64x64 (SwinIR, HAT;
x2 and x4), 48x48 (IPT's fixed input; EDT's SR patch). Batches are small so that `make bench` fits 15 minutes on a
2-core CPU; the larger models run with fewer groups, named in the row (``@g2``: the first 2 groups/layers of the
published width).
"""

from __future__ import annotations

import sys
import time

import torch

import bench_inference as bi
from common import Row, alternate, command, emit, machine, parser, setup, time_ratio_note

# variant[@groups]:scale:patch:batch
DEFAULT = ["swinir_s:2:64:2", "swinir_s:4:64:2", "hat_s@2:4:64:1", "ipt@2:2:48:2"]


def _reduced(variant: str, groups: int | None) -> None:
    """Shrink the official constructor kwargs of ``variant`` to ``groups`` residual groups (IPT: layers)."""
    cls, kw = bi.OFFICIAL[variant]
    if groups is None:
        return
    if cls == "IPT":
        kw["num_layers"] = groups
    else:
        kw["depths"], kw["num_heads"] = kw["depths"][:groups], kw["num_heads"][:groups]


def bench_config(spec: str, repeats: int, budget_s: float) -> Row:
    name, scale, patch, batch = spec.split(":")
    variant, _, groups = name.partition("@")
    scale, patch, batch = int(scale), int(patch), int(batch)
    saved = {k: (c, dict(kw)) for k, (c, kw) in bi.OFFICIAL.items()}
    try:
        _reduced(variant, int(groups) if groups else None)
        ref, call, ours, task = bi.pair(variant, scale)
    finally:
        bi.OFFICIAL.update(saved)
    ref.train(), ours.train()
    g = torch.Generator().manual_seed(1)
    lq = torch.rand(batch, 3, patch, patch, generator=g)
    gt = torch.rand(batch, 3, patch * scale, patch * scale, generator=g)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=2e-4)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=2e-4)

    def step(model, opt, fn):
        def run() -> None:
            loss = (fn() - gt).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    t = alternate({"ours": step(ours, opt_ours, lambda: ours(lq, task)),
                   "ref": step(ref, opt_ref, lambda: call(ref, lq))}, repeats=repeats, warmup=1, budget_s=budget_s)
    ratio = t["ref"] / t["ours"]
    size = f"{variant} ({groups} groups)" if groups else variant
    what = f"{size} x{scale} train step, batch {batch} x {patch}x{patch}, AdamW, fp32"
    return Row("training step (CPU)", what, t["ours"], t["ref"], "s", ratio, reference_name="spandrel 0.4",
               note=time_ratio_note(ratio, 1.0), machine=machine())


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", help="variant[@groups]:scale:patch:batch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=30.0, help="seconds of timed rounds per configuration")
    args = p.parse_args(argv)
    setup(args)
    rows = []
    base = sys.argv[1:] if argv is None else argv
    for spec in args.configs or DEFAULT:
        t = time.perf_counter()
        rows.append(bench_config(spec, args.repeats, args.budget))
        rows[-1].command = command(base) if args.configs else command([*base, "--configs", spec])
        print(f"{spec}: {rows[-1].ours:.3f} s vs {rows[-1].reference:.3f} s ({rows[-1].ratio:.2f}x) "
              f"[{time.perf_counter() - t:.0f} s]", flush=True)
    emit(rows, args, "Training step: ours vs spandrel (CPU)")


if __name__ == "__main__":
    main()
