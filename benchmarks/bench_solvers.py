"""Solve times of the taxonomy BIP per backend on the paper-scale problems, and the budget curve.

Usage::

    python benchmarks/bench_solvers.py [--datasets paper-2018-16k,paper-2018] [--budgets 1..26]
        [--max-order 4] [--solvers highs,gurobi] [--curve-out DIR]

For every data set and budget it solves the same problem with each backend, checks that the
objectives agree, and prints per-backend median and worst solve times with their ratio to HiGHS
(measured in the same process, as these machines are noisy). The HiGHS target is ≤ 1 s per
paper-scale solve. It then prints the "collective performance vs budget" numbers (mean affinity,
quality and gain of the chosen edges) of the first data set, and writes the figure with
``--curve-out``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table

from taskonomy.analysis.affinity_table import load_affinities
from taskonomy.analysis.taxonomy import budget_sweep, build_problem, parse_range, sweep_frame
from taskonomy.analysis.taxonomy_figures import write_budget_curve
from taskonomy.solvers import gurobi_available, solve

HIGHS_TARGET_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="paper-2018-16k,paper-2018-1k,paper-2018")
    parser.add_argument("--budgets", default="1..26")
    parser.add_argument("--max-order", type=int, default=4)
    parser.add_argument("--solvers", default="highs,gurobi")
    parser.add_argument("--curve-out", help="folder for budget_curve.png/.svg/.csv")
    args = parser.parse_args()
    console = Console(width=130)
    budgets = parse_range(args.budgets)
    solvers = [s for s in args.solvers.split(",") if s]
    if "gurobi" in solvers and not gurobi_available():
        console.print("gurobi: not importable or not licensed here; skipped")
        solvers.remove("gurobi")
    summary = Table(title=f"BIP solve times, budgets {args.budgets}, max order {args.max_order}")
    for column in ("data set", "vars × rows", "solver", "median s", "max s", "total s",
                   "× HiGHS (total)", "≤ 1 s"):
        summary.add_column(column, justify="right")
    for name in args.datasets.split(","):
        table = load_affinities(name)
        problem = build_problem(table, max_order=args.max_order)
        variables, rows = problem.size()
        times: dict[str, list[float]] = {}
        objectives: dict[str, list[float]] = {}
        for solver in solvers:
            for budget in budgets:
                start = time.perf_counter()
                solution = solve(problem.with_budget(budget), solver, log=console.print)
                times.setdefault(solver, []).append(time.perf_counter() - start)
                objectives.setdefault(solver, []).append(solution.objective)
        for solver in solvers[1:]:
            worst = max(abs(a - b) for a, b in zip(objectives[solver], objectives[solvers[0]],
                                                   strict=True))
            status = "agree" if worst < 1e-9 else f"DISAGREE by {worst:.2e}"
            console.print(f"{name}: {solver} vs {solvers[0]} objectives {status} "
                          f"on {len(budgets)} budgets")
        base = sum(times.get("highs", times[solvers[0]]))
        for solver in solvers:
            total = sum(times[solver])
            summary.add_row(name, f"{variables} × {rows}", solver,
                            f"{statistics.median(times[solver]):.3f}", f"{max(times[solver]):.3f}",
                            f"{total:.2f}", f"{total / base:.2f}",
                            "yes" if max(times[solver]) <= HIGHS_TARGET_S else "no")
    console.print(summary)
    first = args.datasets.split(",")[0]
    table = load_affinities(first)
    points = budget_sweep(build_problem(table, max_order=args.max_order), budgets,
                          solver=solvers[0], log=console.print)
    curve = sweep_frame(table, points)
    console.print(f"collective performance vs budget ({first}, max order {args.max_order}):")
    console.print(curve[["budget", "status", "objective", "mean_affinity", "mean_quality",
                         "mean_gain", "supervised"]].to_string(index=False, float_format="%.4f"))
    if args.curve_out:
        paths = write_budget_curve(curve, args.curve_out,
                                   title=f"collective performance vs budget ({first})")
        console.print(f"wrote {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
