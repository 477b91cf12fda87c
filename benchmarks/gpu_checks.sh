#!/usr/bin/env bash
# The GPU measurements of the paper setting, in one short run (about 5 minutes on one H100/H200):
#   1. training throughput of a task network (ResNet-50 at 256², batch 32): fp32 vs
#      bf16-mixed + channels_last (bench_training.py --gpu);
#   2. the representation cache, one source into every target, compute only (in-memory batches,
#      the paper's networks, bf16-mixed): what the cache removes from a step on a GPU;
#   3. the same end to end on real 256² synthetic shards with the Lightning Trainer, for a few
#      targets (rendering and packing included before the timed part).
# Each step has its own time limit, so one overrun still leaves the others' figures.
# Logs go to ${LOGS:-gpu-logs}/. Usage: bash benchmarks/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${LOGS:-gpu-logs}
# The project's virtualenv when there is one (scripts/setup.sh makes it), else `python`.
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
PY=${PYTHON:-python}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
PAPER=experiments/configs/transfer_paper.yaml

step() {  # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
step training 150 "$PY" benchmarks/bench_training.py --gpu --task normal --steps 15 \
    --warmup 5 --rounds 2
step cache_compute 170 "$PY" benchmarks/bench_representation_cache.py --config "$PAPER" \
    --device cuda --mode compute --batches 8 --epochs 2 --repeats 1 --threads 4
step cache_e2e 200 "$PY" benchmarks/bench_representation_cache.py --config "$PAPER" \
    --device cuda --mode e2e --limit 256 --epochs 2 --repeats 1 --threads 4 \
    --targets normal depth_zbuffer segment_semantic class_scene room_layout vanishing_point
