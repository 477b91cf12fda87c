"""Run every benchmark of this folder in a quick mode and print one table of ratios and targets.

Each benchmark runs as its own process (so one crash or one heavy import does not distort the
others) with small arguments; its full output goes to ``--logs`` and the key figures are read
back from it. Every ratio compares two paths measured in the same process, as these machines are
noisy. Usage::

    python benchmarks/run_all.py [--full] [--only renderer,solvers] [--logs DIR]

``--full`` runs each benchmark with its own defaults (minutes to tens of minutes each).
``task_quality.py`` trains every task and is run only with ``--only quality``.
A ``bench_*.py`` script added later and unknown here is still run (with no arguments) and
listed with its last output line.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent

Row = tuple[str, str, str]  # measure, value, target


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script, its quick arguments and how to read its output."""

    key: str
    script: str
    quick: tuple[str, ...]
    parse: Callable[[str], list[Row]]
    default: bool = True


def _find(pattern: str, text: str) -> re.Match[str] | None:
    return re.search(pattern, text, re.MULTILINE)


def _renderer(text: str) -> list[Row]:
    rows = []
    for match in re.finditer(r"workers=(\d+): .*?= ([\d.]+) views/s with every label", text):
        rows.append((f"renderer views/s at 256², {match.group(1)} worker(s)", match.group(2),
                     "~18 on 2 free cores"))
    m = _find(r"pipeline \(render \+ labels \+ encoding\)\s+([\d.]+) ms", text)
    if m:
        rows.append(("renderer CPU per view", f"{m.group(1)} ms", ""))
    return rows


def _datamodule(text: str) -> list[Row]:
    rows = []
    m = _find(r"shards packed at \d+²:\s+([\d.]+) samples/s\s+\(([\d.]+)x\)", text)
    if m:
        rows.append(("datamodule shards vs PNG tree", f"{m.group(2)}x ({m.group(1)} samples/s)",
                     "> 1x"))
    m = _find(r"saving: ([\d.]+)x fewer bytes", text)
    if m:
        rows.append(("bytes read: aligned folders vs one tar", f"{m.group(1)}x fewer", "> 1x"))
    m = _find(r"growth epoch 0 → 2: ([+\-\d.]+) MiB", text)
    if m:
        rows.append(("datamodule RSS growth over 3 epochs", f"{m.group(1)} MiB", "flat"))
    return rows


def _solvers(text: str) -> list[Row]:
    rows = []
    # rich table rows: data set │ size │ solver │ median │ worst │ total │ ratio │ ok
    for match in re.finditer(r"(paper-2018\S*)\s*│[^│]*│\s*(\w+)\s*│\s*([\d.]+)\s*│\s*([\d.]+)\s*│"
                         r"[^│]*│\s*([\d.]+)\s*│", text):
        rows.append((f"BIP solve {match.group(1)}, {match.group(2)}",
                     f"median {match.group(3)} s, worst {match.group(4)} s "
                     f"({match.group(5)}x HiGHS)",
                     "≤ 1 s"))
    if not rows:
        m = _find(r"objectives (agree|DISAGREE[^\n]*)", text)
        if m:
            rows.append(("BIP backends", m.group(1), "agree"))
    return rows


def _training(text: str) -> list[Row]:
    rows = []
    for match in re.finditer(r"^\s*([\w+-]+): +([\d.]+) img/s \(median", text, re.MULTILINE):
        rows.append((f"training {match.group(1)}", f"{match.group(2)} img/s", ""))
    m = _find(r"ratio (\S+) / (\S+): ([\d.]+)x", text)
    if m:
        rows.append((f"training {m.group(1)} vs {m.group(2)}", f"{m.group(3)}x",
                     "≥ 1x on GPU; < 1x on CPUs without AMX"))
    return rows


def _cache(text: str) -> list[Row]:
    rows: list[Row] = []
    for mode in ("end to end", "compute only"):
        # the summary row of a mode: its last ratio is the median over repeats
        line = next((ln for ln in text.splitlines() if ln.strip("│ ").startswith(mode)), None)
        ratios = re.findall(r"([\d.]+)x", line or "")
        if ratios:
            rows.append((f"representation cache speed-up ({mode})", f"{ratios[-1]}x",
                         "≥ 5x (issue 6; bounded near 1.4-1.6x, see the script)"))
    return rows


def _start(text: str) -> list[Row]:
    m = _find(r"both stages: ([\d.]+) s → ([\d.]+) s \(warm starts ([\d.]+)x", text)
    return [("local sweep, warm vs fresh point processes",
             f"{m.group(3)}x ({m.group(1)} s → {m.group(2)} s)", "> 1x")] if m else []


def _quality(text: str) -> list[Row]:
    m = _find(r"(\d+)/(\d+) tasks? pass", text)
    return [("tasks below the constant predictor", f"{m.group(1)}/{m.group(2)}", "all")] if m \
        else []


BENCHMARKS = (
    Benchmark("renderer", "bench_renderer.py",
              ("--resolution", "256", "--buildings", "2", "--points", "1", "--views", "2",
               "--workers", "1", "2"), _renderer),
    Benchmark("datamodule", "bench_datamodule.py",
              ("--buildings", "1", "--points", "2", "--views", "2", "--epoch-size", "16",
               "--rounds", "2"),
              _datamodule),
    Benchmark("solvers", "bench_solvers.py",
              ("--datasets", "paper-2018-16k", "--budgets", "2,8,14,20"), _solvers),
    Benchmark("training", "bench_training.py", ("--steps", "3", "--rounds", "2"), _training),
    Benchmark("cache", "bench_representation_cache.py",
              ("--limit", "32", "--epochs", "3", "--repeats", "1",
               "--targets", "normal", "depth_zbuffer", "edge_texture"), _cache),
    Benchmark("start", "bench_sweep_start.py",
              ("--task-steps", "20", "--transfers", "4"), _start),
    Benchmark("quality", "task_quality.py",
              ("--tasks", "normal", "depth_zbuffer", "--steps", "60", "--buildings", "32"),
              _quality, default=False),
)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:90] if lines else "(no output)"


def run_benchmark(bench: Benchmark, *, full: bool, logs: Path) -> tuple[list[Row], float, int]:
    """Run one benchmark; returns its rows, wall seconds and exit status."""
    argv = [sys.executable, str(HERE / bench.script), *(() if full else bench.quick)]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=HERE.parent)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    (logs / f"{bench.key}.log").write_text(" ".join(argv) + "\n\n" + output)
    rows = bench.parse(output) if proc.returncode == 0 else []
    if not rows:
        status = "failed" if proc.returncode else "no figures found"
        rows = [(f"{bench.key} ({status})", _last_line(output), "")]
    return rows, seconds, proc.returncode


def main() -> int:
    """Run the chosen benchmarks and print the table; exit 1 if one failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="each benchmark's own defaults")
    parser.add_argument("--only", default=None,
                        help="comma-separated keys: " + ", ".join(b.key for b in BENCHMARKS))
    parser.add_argument("--logs", type=Path, default=None,
                        help="folder for the full outputs (default: a temporary folder)")
    args = parser.parse_args()
    known = {b.key: b for b in BENCHMARKS}
    chosen = [b for b in BENCHMARKS if b.default]
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = [k for k in keys if k not in known]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; valid: {', '.join(known)}")
        chosen = [known[k] for k in keys]
    else:
        listed = {b.script for b in BENCHMARKS}
        for path in sorted(HERE.glob("bench_*.py")):
            if path.name not in listed:  # a new benchmark: run it as it is
                chosen.append(Benchmark(path.stem, path.name, (), lambda text: []))
    logs = args.logs or Path(tempfile.mkdtemp(prefix="taskonomy-bench-"))
    logs.mkdir(parents=True, exist_ok=True)
    console = Console(width=max(120, Console().width))
    console.print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
                  f"full outputs in {logs}")
    table = Table(title="benchmarks" + (" (full)" if args.full else " (quick mode)"))
    for column in ("benchmark", "measure", "value", "target", "wall s"):
        table.add_column(column)
    failed = 0
    for bench in chosen:
        with console.status(f"running {bench.script}"):
            rows, seconds, code = run_benchmark(bench, full=args.full, logs=logs)
        failed += code != 0
        for i, (measure, value, target) in enumerate(rows):
            table.add_row(bench.key if i == 0 else "", measure, value, target,
                          f"{seconds:.0f}" if i == 0 else "")
        console.print(f"{bench.key}: {seconds:.0f} s" + (" [red]failed[/]" if code else ""))
    console.print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
