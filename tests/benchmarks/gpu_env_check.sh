#!/usr/bin/env bash
# gpu.sh's software without its GPU: a venv of the GPU image's Python and package versions (device/KINDS.md,
# nvidia-h200, as read in 2026-11: Python 3.12, torch 2.11.0, torchvision 0.26.0, numpy 2.5.2, huggingface_hub
# 1.33.0, safetensors 0.8.0), the .whl/ wheels installed the way gpu.sh installs them (pip --target into a folder
# on PYTHONPATH), then the CPU tests of the code gpu.sh runs (its sections, the CUDA-path and on-device
# degradation tests), DS_ACCELERATOR=cpu. Run it after gpu_wheels.sh, before spending device time: an import or an
# API that the image lacks fails here instead. pip takes the packages from its registry (a CUDA torch: about 4 GB
# in /tmp, once).
#
#   tests/benchmarks/gpu_env_check.sh [a Python 3.12 interpreter, default python3.12; e.g. ~/.pyenv/versions/3.12.1/bin/python]
#
# Left out: the two-rank ZeRO-3 EMA test, whose launched ranks do not inherit the wheel folder (gpu.sh launches
# no second rank; tests/torch_compat.sh runs that test under the image's torch). Exit status: pytest's; 2 without
# .whl/ or the interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${1:-python3.12}"
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null \
  || { echo "gpu_env_check.sh: $PY is not a working Python 3.12 (the GPU image's); pass one as the argument" >&2; exit 2; }
compgen -G ".whl/*.whl" >/dev/null || { echo "gpu_env_check.sh: no .whl/: run tests/benchmarks/gpu_wheels.sh first" >&2; exit 2; }
VENV="${TMPDIR:-/tmp}/restore-gpu-image"
SITE="${TMPDIR:-/tmp}/restore-gpu-image-site"
if [ ! -f "$VENV/.installed" ]; then  # made once; a failed install is redone
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  # the image's versions where KINDS.md gives them; the rest as the image holds them, at pip's choice
  "$VENV/bin/pip" install -q torch==2.11.0 torchvision==0.26.0 numpy==2.5.2 huggingface_hub==1.33.0 safetensors==0.8.0 \
    timm scipy pillow pytest scikit-image opencv-python-headless tensorboard psutil py-cpuinfo msgpack packaging tqdm \
    ninja einops pyyaml
  touch "$VENV/.installed"
fi
rm -rf "$SITE"
"$VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE:$PWD" DS_ACCELERATOR=cpu
"$VENV/bin/python" -c "import torch, numpy, deepspeed, webdataset, spandrel, restore, pretrain.engine, finetune.train
print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__,
      'deepspeed', deepspeed.__version__)"
exec "$VENV/bin/python" -m pytest -q tests/pretrain/test_gpu_sections.py tests/pretrain/test_gpu_paths.py \
  tests/pretrain/test_device_degradation.py tests/pretrain/test_input_bound.py -k "not sharded_ema_on_two_ranks"
