#!/usr/bin/env bash
# Create .venv (if missing) and install the suite with its test tools.
# torch is installed first, pinned (TORCH_VERSION), so the suite's own install does not pull
# another build. PyPI's Linux wheel is the multi-GB CUDA build; for the CPU build point
# TORCH_INDEX_URL at a CPU wheel index (e.g. https://download.pytorch.org/whl/cpu). On a GPU box,
# install the torch build you want before running this script (an importable torch is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip "setuptools>=77" wheel
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch==${TORCH_VERSION:-2.13.0}"
fi
.venv/bin/python -m pip install --quiet -e ".[dev]"
