#!/usr/bin/env bash
# A newcomer's first command: install everything from scratch if needed, then run the demo
# (synthetic data, task networks, transfers, analysis, taxonomies, HTML report). Arguments go to
# `taskonomy demo`, e.g. `bash scripts/demo.sh --out ~/taskonomy-demo --workers 4`. Rerun to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true
.venv/bin/taskonomy demo "$@"
echo "open $(pwd)/demo/report.html (or the report.html of --out) in a browser"
