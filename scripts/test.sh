#!/usr/bin/env bash
# Install everything from scratch if needed, then run lint, types and the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=offline WANDB_SILENT=true
.venv/bin/ruff check .
.venv/bin/mypy experiments tasks datamodules solvers analysis
.venv/bin/pytest "$@"
