"""GPU section (run by `tests/benchmarks/gpu.sh` on a CUDA machine): training, inference and the data pipeline.

    .venv/bin/python tests/benchmarks/bench_gpu.py [--json gpu.json] [--peak-tflops 989] [--steps 10]

Step by step, with the expected time on one H100/H200 (each timed loop also stops at ``--budget-s``, default 45):

0. Attention kernels (about 10 s): one forward + backward of ``swinir_m``, ``hat`` and ``edt_b`` (bf16 autocast)
   with SDPA restricted to the fused kernels (memory-efficient, cuDNN): a row per family saying whether the window
   attention ran fused, or fell back to the math kernel (the call then fails under the restriction).
1. Training throughput (images/s) and model-FLOPs utilisation (MFU = achieved model FLOP/s over the card's dense
   bf16 peak) of ``edt_b`` and ``hat``, twice each:
   a. a plain PyTorch loop (bf16 autocast, fused AdamW) at the published per-step batches and patches, EDT-B: SR
      x2/x3/x4 multi-task, LR 48x48, 32 per task (96 images, one body pass via ``forward_multi``); HAT: x4, LR
      64x64, batch 32. A batch that does not fit is halved until it does (the row says so). About 30 s each.
   b. the platform's own step (`bench_gpu_sections.engine_train_row`): `pretrain.engine.Trainer`, DeepSpeed with
      the recipe's ZeRO-2 and bf16 (fp32 masters, EMA), one rank over nccl, batch 32 per task (HAT 16). About
      40 s each, DeepSpeed's set-up included.
   Model FLOPs of a step = 3 x the forward's (`torch.utils.flop_counter.FlopCounterMode`), the usual convention.
2. bf16 against fp32 (about 10 s): PSNR and max difference of the bf16-autocast output against fp32 for
   ``edt_b``, ``hat`` and ``swinir_m`` (random init, one 64x64 image, x4).
3. Tiled 4K inference (about 30 s): ``edt_b`` x4, 960x540 -> 3840x2160, tile 256, bf16: time and peak memory
   of the second of two calls on the same input (the first loads kernels and meets every tile shape).
4. Data pipeline on the device (about 60 s): per task set (SR x2/x3/x4, denoise, derain, masked, sr_any), the GPU's
   samples/s for the degradation alone (``degrade_on=device``) and for nvjpeg decoding + degradation
   (``decode_on=device``), against one CPU worker's decode + crop; the blind ``realsr_x4`` degradation on the
   GPU against one CPU worker (``degrade_on=auto`` keeps it in the workers: this row says whether it should);
   nvjpeg's pixels against libjpeg-turbo's; the GPU's noise sigma and mask ratio against the workers'. Shards from
   the shared ImageNet sample, or synthetic 500x375 JPEGs where it is absent.
5. Inference latency (about 15 s), x4 on a 256x256 input, batch 1: ``swinir_m`` (the classical SwinIR of the
   published 0.539 s on an RTX 2080 Ti, SwinIR README) ours vs spandrel on this card (fp32, same weights,
   alternating), and ours in bf16 autocast. Without spandrel installed the spandrel rows are left out.

In all about 4-5 minutes with imports and DeepSpeed's start; gpu.sh kills it at 8. A failing section leaves a
FAILED row and the others still run; the JSON is rewritten after every section, so a timeout or a
hang keeps the rows measured before it. Without CUDA it prints why and exits 1 (the CPU suite is `make bench`).
"""

from __future__ import annotations

import sys
import time

import torch

from common import Row, alternate, emit, machine, parser, setup, time_ratio_note, write_rows
from restore.inference import is_out_of_memory

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets; --peak-tflops overrides.
PEAKS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
         "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
         "RTX 4090": 165.0, "RTX 3090": 71.0, "RTX A6000": 155.0, "GH200": 989.0, "B200": 2250.0}


# the per-task batch the plain loop of each variant settled on (halved where 32 did not fit): the engine rows,
# which keep more state (fp32 masters, EMA), start from no more than it
FITTED_BATCH: dict[str, int] = {}


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


def attention_rows() -> list[Row]:
    """Whether each family's window attention runs in a fused SDPA kernel on this card (bf16, forward+backward)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from restore.model import RestorationModel

    rows = []
    for variant, task, size in (("swinir_m", "sr_x4", 64), ("hat", "sr_x4", 64), ("edt_b", "sr_x2", 48)):
        model = RestorationModel(variant, tasks=[task]).cuda().train()
        x = torch.rand(2, 3, size, size, device="cuda")
        try:
            with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]), \
                    torch.autocast("cuda", dtype=torch.bfloat16):
                model(x, task).float().mean().backward()
            torch.cuda.synchronize()
            ok, note = 1.0, "fused kernel (memory-efficient or cuDNN) took every window attention call"
        except RuntimeError as err:  # SDPA's refusal under the restriction; anything else is no answer
            msg = " ".join(str(err).split())
            fallback = "No available kernel" in msg
            ok = 0.0 if fallback else float("nan")
            note = f"{'MATH FALLBACK' if fallback else 'ERROR, not a kernel choice'}: {msg[:160]}"
        rows.append(Row("GPU attention", f"{variant} window attention, bf16 forward+backward, fused SDPA only", ok,
                        None, "ran fused (1 = yes)", None, note=note, machine=machine("cuda")))
        del model
        torch.cuda.empty_cache()
    return rows


def train_row(variant: str, tasks: list[str], patch: int, batch: int, steps: int, peak: float | None,
              budget_s: float = 90.0) -> Row:
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
        except RuntimeError as err:  # OutOfMemoryError is one; cuBLAS/cuDNN allocation failures are plain ones
            if not is_out_of_memory(err) or batch == 1:
                raise
        # outside the handler: its traceback no longer holds the failed step's tensors, so the cache frees them
        lq = gt = None
        opt.zero_grad(set_to_none=True)
        batch //= 2
        note = f"batch halved to {batch} per task to fit; "
        torch.cuda.empty_cache()
    FITTED_BATCH[variant] = batch
    t = time.perf_counter()
    done = 0
    while done < steps and (done < 3 or time.perf_counter() - t < budget_s):
        step()
        done += 1
        if done == 3:  # a first sync tells whether the remaining steps fit the budget
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / done
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


def latency_rows(repeats: int, budget_s: float = 90.0) -> list[Row]:
    try:
        import spandrel  # noqa: F401 - the reference; nothing is installed here (the GPU machine has no network)
    except ImportError:
        print("latency: spandrel is not installed in this environment: only our own rows are measured")
        return own_latency_rows(repeats, budget_s)
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
                  repeats=repeats, warmup=2, budget_s=budget_s)
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


def own_latency_rows(repeats: int, budget_s: float) -> list[Row]:
    """The latency rows without spandrel: ours fp32 and bf16, and fp32 against the published figure."""
    from restore.model import RestorationModel

    ours = RestorationModel("swinir_m", tasks=["sr_x4"]).cuda().eval()
    x = torch.rand(1, 3, 256, 256, device="cuda")

    def run(dtype: torch.dtype | None):
        def go() -> None:
            autocast = torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None)
            with torch.inference_mode(), autocast:
                ours(x, "sr_x4")
            torch.cuda.synchronize()
        return go

    t = alternate({"fp32": run(None), "bf16": run(torch.bfloat16)}, repeats=repeats, warmup=2, budget_s=budget_s)
    r = 0.539 / t["fp32"]
    return [
        Row("GPU inference", "swinir_m x4 256x256 forward, fp32, vs published", t["fp32"], 0.539, "s", r,
            reference_name="SwinIR README, RTX 2080 Ti", note="different card: context only; spandrel not installed",
            machine=machine("cuda")),
        Row("GPU inference", "swinir_m x4 256x256 forward, ours bf16 autocast", t["bf16"], None, "s", None,
            note="spandrel not installed: no same-card reference", machine=machine("cuda")),
    ]


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak (default: table)")
    p.add_argument("--budget-s", type=float, default=45.0, help="timing budget of each timed loop, seconds")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit(f"bench_gpu.py: no CUDA device visible to torch {torch.__version__} (CUDA build: "
                 f"{torch.version.cuda or 'no, a CPU build'}); nothing measured")
    setup(args)
    # fp32 rows are fp32 on both sides: no TF32 in matmuls nor in cuDNN's convolutions (whose default is TF32);
    # the current API, where this torch has it
    for knob in (torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)):
        if hasattr(knob, "fp32_precision"):
            knob.fp32_precision = "ieee"
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or peak_tflops(name)
    print(f"{name}: bf16 peak {peak} TFLOP/s" + ("" if peak else " unknown (pass --peak-tflops for MFU)"))
    rows: list[Row] = []
    b = args.budget_s
    import bench_gpu_sections as sec

    cuda = torch.device("cuda")

    def engine_row(variant: str, batch: int) -> Row:
        # one rank: nccl on this card, set up here so that a missing DeepSpeed costs these rows only
        from pretrain.launch import init_distributed, setup_single_rank_env

        if not torch.distributed.is_initialized():
            setup_single_rank_env()
            init_distributed()
        batch = min(batch, FITTED_BATCH.get(variant, batch))
        return sec.engine_train_row(variant, args.steps, peak, b, cuda, (f"batch_size={batch}",))

    for label, fn in (("attention", attention_rows),
                      ("edt_b", lambda: train_row("edt_b", ["sr_x2", "sr_x3", "sr_x4"], 48, 32, args.steps, peak, b)),
                      ("hat", lambda: train_row("hat", ["sr_x4"], 64, 32, args.steps, peak, b)),
                      ("edt_b engine", lambda: engine_row("edt_b", 32)),
                      ("hat engine", lambda: engine_row("hat", 16)),
                      ("bf16 agreement", lambda: [sec.agreement_row(v, cuda) for v in ("edt_b", "hat", "swinir_m")]),
                      ("tiled 4K", lambda: sec.tiled_row("edt_b", cuda)),
                      ("data pipeline", lambda: sec.pipeline_rows(cuda)),
                      ("latency", lambda: latency_rows(args.repeats, b))):
        t = time.perf_counter()
        torch.cuda.reset_peak_memory_stats()  # each section's "peak" is its own
        autotune = torch.backends.cudnn.benchmark  # the engine's Trainer turns it on for the whole process
        try:
            out = fn()
            rows += out if isinstance(out, list) else [out]
        except Exception as err:  # noqa: BLE001 - one failing section must not lose the others' rows
            rows.append(Row("GPU", f"{label}: FAILED", float("nan"), None, "s", None,
                            note=f"{type(err).__name__}: {str(err)[:200]}", machine=machine("cuda")))
        finally:
            torch.backends.cudnn.benchmark = autotune
        print(f"{label}: {time.perf_counter() - t:.0f} s", flush=True)
        for r in rows:
            r.command = "tests/benchmarks/gpu.sh"
        if args.json:  # after every section: gpu.sh's timeout, or a hang, keeps the rows measured so far
            write_rows(rows, args.json)
    emit(rows, args, f"GPU ({name})")


if __name__ == "__main__":
    main()
