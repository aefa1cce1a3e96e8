"""Inference time of the ONNX export under onnxruntime (CPU execution provider) against PyTorch on the CPU.

    .venv/bin/python tests/benchmarks/bench_onnx.py [--configs swinir_s:2:64 edt_t:2:64] [--threads 1]

Each configuration builds the variant with random weights, exports its task with `restore.export.export_onnx`
(fp32, opset 18, dynamic batch/height/width), and times batch-1 forwards of the same input alternating
onnxruntime and ``RestorationModel.forward`` under ``torch.inference_mode`` in this process (`common.alternate`,
median). Both run on the same number of threads (``--threads``; onnxruntime's intra-op pool is set to torch's).
"ours" is the exported graph under onnxruntime, the reference PyTorch eager: ratio > 1 means onnxruntime is faster.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import Row, alternate, command, emit, machine, parser, setup, time_ratio_note

DEFAULT = ["swinir_s:2:64", "edt_t:2:64"]


def bench_config(spec: str, repeats: int, budget_s: float, folder: Path) -> Row:
    import onnxruntime as ort

    import restore
    from restore.export import DEFAULT_OPSET, export_onnx

    variant, scale, size = spec.split(":")
    task, size = f"sr_x{scale}", int(size)
    torch.manual_seed(0)
    model = restore.create_model(variant, tasks=[task]).eval()
    path = export_onnx(model, folder / f"{variant}_{task}.onnx", task)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    feed = {"lq": x.numpy()}

    def run_onnx() -> np.ndarray:
        return session.run(["out"], feed)[0]

    def run_torch() -> torch.Tensor:
        with torch.inference_mode():
            return model(x, task)

    diff = float(np.abs(run_onnx() - run_torch().numpy()).max())  # also the warm-up of both
    t = alternate({"onnx": run_onnx, "torch": run_torch}, repeats=repeats, warmup=0, budget_s=budget_s)
    ratio = t["torch"] / t["onnx"]
    return Row("inference (CPU)", f"{variant} x{scale} {size}x{size} forward, onnxruntime vs PyTorch (fp32)",
               t["onnx"], t["torch"], "s", ratio, reference_name="PyTorch eager",
               note=f"{time_ratio_note(ratio)}; opset {DEFAULT_OPSET}; onnxruntime {ort.__version__}; "
                    f"max diff {diff:.1e}", machine=machine())


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", help="variant:scale:size (default: swinir_s x2 and edt_t x2 at 64x64)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--budget", type=float, default=30.0, help="seconds of timed rounds per configuration")
    args = p.parse_args(argv)
    setup(args)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as folder:
        for spec in args.configs or DEFAULT:
            t = time.perf_counter()
            rows.append(bench_config(spec, args.repeats, args.budget, Path(folder)))
            rows[-1].command = command()
            print(f"{spec}: onnxruntime {rows[-1].ours * 1e3:.1f} ms vs PyTorch {rows[-1].reference * 1e3:.1f} ms "
                  f"(ratio {rows[-1].ratio:.2f}) [{time.perf_counter() - t:.0f} s]", flush=True)
    emit(rows, args, "Inference: onnxruntime vs PyTorch (CPU, batch 1)")


if __name__ == "__main__":
    main()
