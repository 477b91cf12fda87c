"""Wall time of a local sweep whose points start fresh vs warm (forked from an imported suite).

Each point of ``taskonomy sweep run`` is a process of its own. Started fresh, it spends seconds
importing torch, Lightning, torchmetrics and W&B; started warm
(:mod:`taskonomy.experiments.warm_start`) it is forked from a process that imported them once.
This benchmark runs the demo's sweep files, cut down (by default 3 task networks of 100 steps
and 8 transfer points on 24 buildings; the demo trains 5 networks of 1,200 steps on 192), both
ways on the same synthetic shards, in the same process, and prints the wall-time ratio per
stage. Start-up is a fixed cost per point, so the shorter the points the larger the ratio: the
whole demo gains less (about 1.1x).

1. **tasks**: the demo's task sweep (``--tasks`` networks of ``--task-steps`` steps);
2. **transfers**: the first ``--transfers`` points of the demo's first-order sweep (transfers and
   baselines; 256 images × 20 epochs each, as in the demo), reading each arm's own task runs.

The arms alternate which goes first from round to round (so use an even ``--rounds``); each
round starts from empty runs folders. Every point must finish, and every point of the warm arm
must have started warm, or the benchmark fails. Measured on a shared 2-core CPU (2 workers,
defaults, three invocations): 1.30x to 1.68x for both stages together, 1.37x as the median of
two rounds.

    python benchmarks/bench_sweep_start.py                       # defaults: about 5 min
    python benchmarks/bench_sweep_start.py --transfers 4 --task-steps 20 --buildings 8  # quick
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from taskonomy.experiments.demo import (
    SHARDS,
    Demo,
    DemoSettings,
    task_sweep,
    transfer_sweep,
    write_yaml,
)
from taskonomy.experiments.sweep_executor import run_sweep
from taskonomy.experiments.sweep_files import load_sweep_file

ARMS = ("fresh", "warm")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["depth_zbuffer", "normal", "reshading"],
                        help="task networks of the task stage (the transfers' sources/targets)")
    parser.add_argument("--task-steps", type=int, default=100, help="steps per task network")
    parser.add_argument("--transfers", type=int, default=8,
                        help="first-order sweep points timed per arm")
    parser.add_argument("--workers", type=int, default=2, help="points run at once")
    parser.add_argument("--rounds", type=int, default=2,
                        help="repeats of both arms (each arm goes first in half of them)")
    parser.add_argument("--buildings", type=int, default=24, help="synthetic buildings")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder for the synthetic data (reused when there; default: temp)")
    return parser.parse_args()


def timed_sweep(path: Path, runs: Path, workers: int, start: str, limit: int | None) -> float:
    """Seconds to run a sweep file's first ``limit`` points into ``runs``; fails loudly."""
    sweep = load_sweep_file(path)
    points = sweep.points()[:limit]
    began = time.perf_counter()
    results = run_sweep(sweep, runs, workers=workers, points=points, start=start)
    seconds = time.perf_counter() - began
    failed = [r.point.run_id for r in results if r.outcome != "finished"]
    if failed:
        log = (runs / failed[0] / "executor.log").read_text()
        raise SystemExit(f"{start}: points did not finish: {failed}; the first one's log ends:\n"
                         + "\n".join(log.strip().splitlines()[-5:]))
    other = [r.point.run_id for r in results if r.started != start]
    if other:
        raise SystemExit(f"{start} arm: points started otherwise: {other}; see "
                         f"{runs}/.sweeps/*.warm-start.log")
    return seconds


def main() -> None:
    args = parse_args()
    console = Console()
    settings = DemoSettings(tasks=tuple(args.tasks), buildings=args.buildings,
                            task_steps=args.task_steps)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-start-") as tmp:
        data = args.data or Path(tmp) / "demo"
        demo = Demo(data, settings, workers=args.workers, console=console)
        demo.synth()
        demo.pack()
        shards = demo.path(SHARDS)
        sweeps = Path(tmp) / "sweeps"
        tasks_file = write_yaml(sweeps / "tasks.yaml", task_sweep(settings, shards))
        transfers_file = write_yaml(sweeps / "transfers.yaml", transfer_sweep(settings, shards))
        seconds: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for arm in ARMS if round_ % 2 == 0 else ARMS[::-1]:
                runs = Path(tmp) / f"runs-{arm}-{round_}"
                console.rule(f"round {round_ + 1}: {arm} starts")
                seconds.setdefault(("tasks", arm), []).append(
                    timed_sweep(tasks_file, runs, args.workers, arm, None))
                seconds.setdefault(("transfers", arm), []).append(
                    timed_sweep(transfers_file, runs, args.workers, arm, args.transfers))
                shutil.rmtree(runs)
    table = Table(title=f"sweep wall time, {args.workers} worker(s), median of {args.rounds} "
                        "round(s)")
    for column in ("stage", "points", "fresh s", "warm s", "fresh / warm"):
        table.add_column(column)
    counts = {"tasks": len(args.tasks), "transfers": args.transfers}
    for stage, count in counts.items():
        fresh = statistics.median(seconds[(stage, "fresh")])
        warm = statistics.median(seconds[(stage, "warm")])
        table.add_row(stage, str(count), f"{fresh:.1f}", f"{warm:.1f}", f"{fresh / warm:.2f}x")
    console.print(table)
    total_fresh = sum(statistics.median(seconds[(s, "fresh")]) for s in counts)
    total_warm = sum(statistics.median(seconds[(s, "warm")]) for s in counts)
    console.print(f"both stages: {total_fresh:.1f} s → {total_warm:.1f} s "
                  f"(warm starts {total_fresh / total_warm:.2f}x faster)")


if __name__ == "__main__":
    main()
