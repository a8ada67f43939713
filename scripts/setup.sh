#!/usr/bin/env bash
# One set-up for every place rkdsc runs (README, CI, Dockerfile): a virtual environment
# with the CPU build of torch 2.13.0 first, then rkdsc with the extras given (default dev).
#   scripts/setup.sh [EXTRAS] [VENV]      e.g. scripts/setup.sh dev .venv; "" for runtime only
set -euo pipefail
extras="${1-dev}"   # "" = runtime only (the Dockerfile)
venv="${2:-.venv}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first, pinned: any other spec may pull a multi-GB CUDA build. No torchvision. The CPU
# build comes from PyTorch's index: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# (the Dockerfile sets it; this workspace's pip configuration provides it).
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e "$root${extras:+[$extras]}"
"$venv/bin/python" - <<'PY'
import torch, rkdsc_core
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"rkdsc {rkdsc_core.__version__} ready (torch {torch.__version__})")
PY
