"""GPU section (run by `tests/benchmarks/gpu.sh` on a CUDA machine): training throughput and MFU, inference latency.

    .venv/bin/python tests/benchmarks/bench_gpu.py [--json gpu.json] [--peak-tflops 989] [--steps 10]

1. Training throughput (images/s) and model-FLOPs utilisation (MFU = achieved model FLOP/s over the card's dense
   bf16 peak) of ``edt_b`` and ``hat`` at their published per-step batches and patches, bf16 autocast, AdamW:
   EDT-B: SR x2/x3/x4 multi-task, LR 48x48, 32 per task (96 images, one body pass via ``forward_multi``);
   HAT: x4, LR 64x64, batch 32 (4 per GPU x 8 in the paper, here on one card). Model FLOPs of a step =
   3 x the forward's (`torch.utils.flop_counter.FlopCounterMode`, matmuls/convs/attention), the usual MFU
   convention. A batch that does not fit is halved until it does (the row says so).
2. Inference latency, x4 on a 256x256 input, batch 1: ``swinir_m`` (the classical SwinIR of the published
   0.539 s on an RTX 2080 Ti, SwinIR README) ours vs spandrel on this card (fp32, same weights, alternating),
   and ours in bf16 autocast.

Without CUDA it prints why and exits 0 (the CPU suite is `make bench`).
"""

from __future__ import annotations

import sys
import time

import torch

from common import Row, alternate, emit, machine, parser, setup, time_ratio_note

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets; --peak-tflops overrides.
PEAKS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
         "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
         "RTX 4090": 165.0, "RTX 3090": 71.0, "RTX A6000": 155.0, "GH200": 989.0, "B200": 2250.0}


def peak_tflops(name: str) -> float | None:
    for key in sorted(PEAKS, key=len, reverse=True):
        if key in name:
            return PEAKS[key]
    return None


def forward_flops(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """FLOPs of one forward_multi on ``inputs``, counted on the meta device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    from restore.model import RestorationModel

    with torch.device("meta"):
        meta = RestorationModel(model.variant, tasks=list(model.tasks), arch=dict(model.arch))
        meta_in = {t: torch.empty(x.shape) for t, x in inputs.items()}
    counter = FlopCounterMode(display=False)
    with counter:
        meta.forward_multi(meta_in)
    return float(counter.get_total_flops())


def train_row(variant: str, tasks: list[str], patch: int, batch: int, steps: int, peak: float | None) -> Row:
    from restore.model import RestorationModel
    from tasks.registry import get_task

    dev = torch.device("cuda")
    model = RestorationModel(variant, tasks=tasks).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, fused=True)
    note = ""
    while True:
        try:
            lq = {t: torch.rand(batch, 3, patch, patch, device=dev) for t in tasks}
            gt = {t: torch.rand(batch, 3, patch * get_task(t).scale, patch * get_task(t).scale, device=dev)
                  for t in tasks}

            def step() -> None:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = model.forward_multi(lq)
                    loss = sum((out[t].float() - gt[t]).abs().mean() for t in tasks)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            for _ in range(2):
                step()
            torch.cuda.synchronize()
            break
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            note = f"batch halved to {batch} per task to fit; "
            torch.cuda.empty_cache()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    images = batch * len(tasks)
    flops = 3 * forward_flops(model, lq)
    mfu = flops / dt / (peak * 1e12) if peak else None
    what = f"{variant} training, {'+'.join(tasks)}, {batch}/task x LR {patch}x{patch}, bf16 autocast, AdamW"
    note += f"{dt * 1e3:.0f} ms/step, {flops / dt / 1e12:.1f} model TFLOP/s"
    if mfu is not None:
        note += f", MFU {mfu * 100:.1f}% of {peak:g} TFLOP/s bf16 peak"
    mem = torch.cuda.max_memory_allocated() / 2**30
    note += f", peak {mem:.1f} GiB"
    del model, opt
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return Row("GPU training", what, images / dt, None, "images/s", None, note=note, machine=machine("cuda"))


def latency_rows(repeats: int) -> list[Row]:
    import bench_inference as bi

    ref, call, ours, task = bi.pair("swinir_m", 4)
    ref, ours = ref.cuda(), ours.cuda()
    x = torch.rand(1, 3, 256, 256, device="cuda")

    def timed(fn):
        def run() -> None:
            with torch.inference_mode():
                fn()
            torch.cuda.synchronize()
        return run

    def bf16() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return ours(x, task)

    t = alternate({"ours": timed(lambda: ours(x, task)), "ref": timed(lambda: call(ref, x)), "bf16": timed(bf16)},
                  repeats=repeats, warmup=2)
    with torch.inference_mode():
        diff = (ours(x, task) - call(ref, x)).abs().max().item()
    rows = []
    r = t["ref"] / t["ours"]
    rows.append(Row("GPU inference", "swinir_m x4 256x256 forward, fp32", t["ours"], t["ref"], "s", r,
                    reference_name="spandrel 0.4, same card", note=f"{time_ratio_note(r, 1.5)}; max diff {diff:.1e}",
                    machine=machine("cuda")))
    r = t["ref"] / t["bf16"]
    rows.append(Row("GPU inference", "swinir_m x4 256x256 forward, ours bf16 autocast vs spandrel fp32", t["bf16"],
                    t["ref"], "s", r, reference_name="spandrel 0.4 fp32, same card", note=time_ratio_note(r),
                    machine=machine("cuda")))
    r = 0.539 / t["ours"]
    rows.append(Row("GPU inference", "swinir_m x4 256x256 forward, fp32, vs published", t["ours"], 0.539, "s", r,
                    reference_name="SwinIR README, RTX 2080 Ti", note="different card: context only",
                    machine=machine("cuda")))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak (default: table)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device visible (torch.cuda.is_available() is False); nothing measured")
        return
    setup(args)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are fp32 on both sides
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or peak_tflops(name)
    print(f"{name}: bf16 peak {peak} TFLOP/s" + ("" if peak else " unknown (pass --peak-tflops for MFU)"))
    rows: list[Row] = []
    for label, fn in (("edt_b", lambda: train_row("edt_b", ["sr_x2", "sr_x3", "sr_x4"], 48, 32, args.steps, peak)),
                      ("hat", lambda: train_row("hat", ["sr_x4"], 64, 32, args.steps, peak)),
                      ("latency", lambda: latency_rows(args.repeats))):
        t = time.perf_counter()
        try:
            out = fn()
            rows += out if isinstance(out, list) else [out]
        except Exception as err:  # noqa: BLE001 - one failing section must not lose the others' rows
            rows.append(Row("GPU", f"{label}: FAILED", float("nan"), None, "s", None,
                            note=f"{type(err).__name__}: {str(err)[:200]}", machine=machine("cuda")))
        print(f"{label}: {time.perf_counter() - t:.0f} s", flush=True)
        sys.stdout.flush()
    for r in rows:
        r.command = "tests/benchmarks/gpu.sh"
    emit(rows, args, f"GPU ({name})")


if __name__ == "__main__":
    main()
