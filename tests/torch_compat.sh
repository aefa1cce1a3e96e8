#!/usr/bin/env bash
# The CPU suite under another PyTorch release than constraints.txt pins, by default the GPU machine's (2.11.0 with
# torchvision 0.26.0: the image gpu.sh runs on has them and no network, so an API newer than that would first fail
# there). Everything else comes from this checkout's .venv: a venv holding only torch and torchvision reads .venv's
# site-packages after its own (a .pth file), and gets a `deepspeed` launcher of its own so that launched ranks run
# the same interpreter. pip takes the two from its registry (a CUDA build: about 4 GB in /tmp, once).
#
#   tests/torch_compat.sh [torch version [torchvision version]] [-- pytest args, default -q]
#
# Exit status: pytest's; 2 without a .venv (run 'make install' first).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=2.11.0 VISION=0.26.0
if [ $# -gt 0 ] && [ "$1" != "--" ]; then TORCH="$1"; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ]; then VISION="$1"; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi
[ -x .venv/bin/python ] || { echo "torch_compat.sh: no .venv here: run 'make install' first" >&2; exit 2; }
VENV="${TMPDIR:-/tmp}/restore-torch-$TORCH-vision-$VISION"
if [ ! -f "$VENV/.installed" ]; then  # made once per pair of versions; a failed install is redone
  rm -rf "$VENV"
  .venv/bin/python -m venv "$VENV"
  "$VENV/bin/pip" install -q "torch==$TORCH" "torchvision==$VISION"
  touch "$VENV/.installed"
fi
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
main_site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# .pth files run in name order: first the path, then the editable install's finder that lives there
echo "$main_site" > "$site/zz_restore_venv.pth"
cp "$main_site"/__editable__.restore-*.pth "$site/zzz_restore_editable.pth"
sed "1s|.*|#!$VENV/bin/python|" .venv/bin/deepspeed > "$VENV/bin/deepspeed" && chmod +x "$VENV/bin/deepspeed"
"$VENV/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
exec "$VENV/bin/python" -m pytest "${@:--q}"
