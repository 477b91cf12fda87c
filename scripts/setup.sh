#!/usr/bin/env bash
# Create .venv (if missing) and install the suite with its test tools.
# torch is pinned first so pip takes the CPU wheel instead of a multi-GB CUDA build; on a GPU box,
# install the torch build you want before running this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip "setuptools>=69" wheel
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
fi
.venv/bin/python -m pip install --quiet -e ".[dev]"
