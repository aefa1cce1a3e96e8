#!/usr/bin/env bash
# GPU section of the benchmark suite: training images/s and MFU of edt_b and hat (bf16), and x4 256x256 inference
# latency of swinir_m against spandrel on the same card and the published 0.539 s (SwinIR README, RTX 2080 Ti).
#
#   tests/benchmarks/gpu.sh [extra args for bench_gpu.py, e.g. --peak-tflops 989]
#
# Writes benchmarks-gpu.json at the repository root; `python tests/benchmarks/run_all.py --gpu-json
# benchmarks-gpu.json` (or a plain run_all.py, which picks the file up) adds its rows to BENCHMARKS.md.
# Exits 0 with a message on a machine without CUDA. Budget: about 3-5 minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu.sh: no CUDA device visible to torch; the GPU section needs one (the CPU suite is 'make bench')."
  exit 0
fi
"$PY" -c 'import spandrel' 2>/dev/null || "$PY" -m pip install -q "spandrel>=0.4"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
exec timeout 900 "$PY" tests/benchmarks/bench_gpu.py --json benchmarks-gpu.json "$@"
