#!/usr/bin/env bash
# Creates bench/torch_reference/.venv: PyTorch 2.13.0 (CPU) + numpy, for the
# side-by-side reference steps of bench/train_step.py.
#
#   bash bench/torch_reference/setup.sh
#
# torch is never a dependency of jointcxr itself (ENVIRONMENT.md G14): a bare
# `torch` requirement pulls a multi-GB CUDA build, and torchvision from the
# index does not import beside the CPU wheel. The pinned CPU wheel is taken
# from the local wheel directory (pip's find-links), so this works offline.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
if [[ ! -x "${here}/.venv/bin/python" ]]; then
  "${python}" -m venv "${here}/.venv"
fi
"${here}/.venv/bin/python" -m pip install -q --disable-pip-version-check \
  "torch==2.13.0" numpy
"${here}/.venv/bin/python" -c \
  "import torch; print('torch', torch.__version__, 'threads', \
torch.get_num_threads())"
