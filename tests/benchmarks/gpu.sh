#!/usr/bin/env bash
# GPU section of the benchmark suite (the steps and their times: bench_gpu.py's docstring): fused-attention check
# of swinir_m/hat/edt_b, training images/s and MFU of edt_b and hat (bf16; a plain loop and the platform's ZeRO-2
# DeepSpeed engine), bf16-vs-fp32 agreement, tiled 4K inference time and memory, the data pipeline with the
# degradation and the JPEG decoding on the GPU (and a blind pipeline there against a CPU worker), and x4 256x256
# inference latency of swinir_m against spandrel on the same card and the published 0.539 s (SwinIR README, RTX 2080
# Ti).
#
#   tests/benchmarks/gpu.sh [extra args for bench_gpu.py, e.g. --peak-tflops 989 --budget-s 60]
#
# Writes benchmarks-gpu.json at the repository root; `python tests/benchmarks/run_all.py --gpu-json
# benchmarks-gpu.json` (or a plain run_all.py, which picks the file up) adds its rows to BENCHMARKS.md.
# Installs nothing from the network (the GPU machine may have none): where .whl/ holds wheels
# (tests/benchmarks/gpu_wheels.sh makes them, for an image whose Python has PyTorch but not DeepSpeed, webdataset,
# spandrel, ...), they are installed into /tmp/site first. A missing spandrel leaves out the reference rows. Where
# $OUT is set (a machine that sends back only that folder), the JSON is copied there too, also after a timeout.
# Fails fast (exit 2) without an NVIDIA GPU, and loudly (exit 1) when there is one that torch cannot use (a CPU
# build of torch, a driver too old for its CUDA). Budget: about 4-5 minutes on an H100/H200; killed at 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu.sh: no NVIDIA GPU on this machine (nvidia-smi -L fails); the GPU section needs one (the CPU suite is 'make bench')." >&2
  exit 2
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu.sh: nvidia-smi sees $(nvidia-smi -L | head -1) but torch cannot use it:" >&2
  "$PY" -c 'import torch; print("  torch", torch.__version__, "CUDA build:", torch.version.cuda or "none (a CPU build: install a CUDA wheel)")' >&2 \
    || echo "  torch does not import with $PY" >&2
  nvidia-smi --query-gpu=driver_version --format=csv,noheader | sed 's/^/  driver: /' >&2 || true
  exit 1
fi
export DS_ACCELERATOR=cuda  # a Makefile or shell may have exported cpu; this script is the GPU run
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
rc=0
timeout 480 "$PY" tests/benchmarks/bench_gpu.py --json benchmarks-gpu.json "$@" || rc=$?
if [ -n "${OUT:-}" ] && [ -f benchmarks-gpu.json ]; then cp -f benchmarks-gpu.json "$OUT/"; fi
exit "$rc"
