#!/usr/bin/env bash
# Wheels for a GPU machine whose Python has PyTorch but none of our other dependencies, and no network: run this
# where pip reaches a registry; it fills .whl/ (git-ignored) with the packages gpu.sh needs that such an image
# lacks, at the versions this checkout's .venv runs (DeepSpeed, which PyPI has as an sdist only, is built into a
# pure-Python wheel here, without its C++ ops). gpu.sh installs them from .whl/ into /tmp/site when the folder is
# there. About 5 MB.
#
#   tests/benchmarks/gpu_wheels.sh [python version of the GPU machine, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYV="${1:-3.12}"
PY=.venv/bin/python
[ -x "$PY" ] || { echo "gpu_wheels.sh: no .venv here: run 'make install' first (it pins the versions)" >&2; exit 2; }
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl.tmp && mkdir -p .whl.tmp
# pure-Python packages and compiled ones (pydantic-core) for the GPU machine's interpreter
pins=()
for pkg in hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions webdataset braceexpand \
           spandrel; do
  pins+=("$pkg==$(version "$pkg")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl.tmp "${pins[@]}"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl.tmp "deepspeed==$(version deepspeed)"
rm -rf .whl && mv .whl.tmp .whl
ls -1 .whl
du -sh .whl
