"""``taskonomy taxonomy``: compute a task taxonomy (the BIP) from affinities, for any budget.

Examples::

    taskonomy taxonomy --affinities paper-2018-16k --budget 8
    taskonomy taxonomy --affinities results/ --budget 4 --targets normal,depth_zbuffer --json
    taskonomy taxonomy --affinities paper-2018-1k --budget-sweep 1..26 --out figures/
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from taskonomy.analysis.affinity_table import PAPER_DATASETS, AffinityTable, load_affinities
from taskonomy.analysis.taxonomy import (
    CONVENTIONS,
    DEFAULT_MAX_ORDER,
    SweepPoint,
    budget_sweep,
    build_problem,
    default_sources,
    parse_range,
    solution_record,
    sweep_frame,
)
from taskonomy.analysis.taxonomy_figures import write_budget_curve, write_taxonomy_figure
from taskonomy.datamodules.domains import atomic_write_bytes
from taskonomy.solvers import SOLVERS, TaxonomySolution, solve

COMMAND = ("taxonomy",)
HELP = "Compute a task taxonomy (supervised set + one transfer per target) for a budget."
#: What an interrupt (Ctrl-C) leaves, printed in its place.
INTERRUPTED = "each file is written whole (or not at all); repeat the command"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--affinities", default="paper-2018-16k",
        help=f"a shipped data set ({', '.join(PAPER_DATASETS)}), a results folder of "
             "`taskonomy analyze` or an affinities CSV (default: paper-2018-16k)",
    )
    parser.add_argument("--budget", type=float, help="total label cost of supervised tasks")
    parser.add_argument("--budget-sweep", metavar="A..B",
                        help="solve for every budget in a range (e.g. 1..26) or a comma list")
    parser.add_argument("--targets", help="comma list of target tasks (default: all in the data)")
    parser.add_argument("--sources",
                        help="comma list of tasks that may be supervised (default: all); a "
                             "target left out is target-only: served by a transfer, never "
                             "by its own network")
    parser.add_argument("--max-order", type=int, default=DEFAULT_MAX_ORDER,
                        help=f"highest transfer order (default {DEFAULT_MAX_ORDER})")
    parser.add_argument("--importance", metavar="TASK=W,...",
                        help="importance of targets (default 1 each)")
    parser.add_argument("--cost", metavar="TASK=C,...",
                        help="label cost of tasks (default 1 each)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="paper",
                        help="paper: the program as the paper states it (default); "
                             "supervision-api: as the authors' released solver builds it "
                             "(√affinity rewards, a supervised target keeps its own network, "
                             "random is a paid source, no t→t edges)")
    parser.add_argument("--solver", choices=[s for s in SOLVERS if s != "brute_force"],
                        default="highs",
                        help="BIP backend: highs (free; the default), gurobi (falls back to "
                             "HiGHS past the pip licence's size), or auto (Gurobi if importable "
                             "and licensed, else HiGHS)")
    parser.add_argument("--time-limit", type=float, help="seconds per solve (default: none)")
    parser.add_argument("--out", type=Path,
                        help="folder for taxonomy.json and the figures (PNG and SVG)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout instead of the summary")


def parse_names(text: str | None) -> list[str] | None:
    """A comma list of task names, or ``None`` when not given."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("an empty task list was given; pass comma-separated task names")
    return names


def parse_weights(text: str | None, option: str) -> dict[str, float]:
    """Parse ``task=value,task=value`` into a dict.

    Raises:
        ValueError: On a malformed item, naming the option and the expected form.
    """
    weights: dict[str, float] = {}
    if not text:
        return weights
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{option}: {item!r} is not of the form task=number "
                             f"(e.g. {option} normal=2,depth_zbuffer=0.5)") from None
    return weights


def run(args: argparse.Namespace) -> int:
    """Build the problem, solve it (or sweep budgets), print and write the results."""
    if (args.budget is None) == (args.budget_sweep is None):
        raise ValueError("give exactly one of --budget B or --budget-sweep A..B")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise NotADirectoryError(f"--out {args.out} is a file; --out names the folder to write "
                                 "taxonomy.json and its figures into")
    table = load_affinities(args.affinities)
    sources = parse_names(args.sources)
    problem = build_problem(
        table,
        targets=parse_names(args.targets),
        sources=sources,
        max_order=args.max_order,
        importance=parse_weights(args.importance, "--importance"),
        cost=parse_weights(args.cost, "--cost"),
        convention=args.convention,
    )
    options = {
        "affinities": str(args.affinities),
        "convention": args.convention,
        "targets": list(problem.targets),
        "sources": sources if sources is not None else default_sources(table, args.convention),
        "max_order": args.max_order,
        "importance": dict(problem.importance),
        "label_cost": dict(problem.cost),
        "solver_requested": args.solver,
    }
    log_console = Console(stderr=True)

    def log(message: str) -> None:
        log_console.print(f"[yellow]note:[/yellow] {escape(message)}", highlight=False)

    if args.budget_sweep is not None:
        return _run_sweep(args, table, problem, options, log)
    if not math.isfinite(args.budget):
        raise ValueError(f"--budget must be a finite number, got {args.budget}")
    solution = solve(problem.with_budget(args.budget), args.solver, time_limit=args.time_limit,
                     log=log)
    record = {**options, **solution_record(table, solution)}
    if args.out is not None:
        _write_json(args.out / "taxonomy.json", record)
        write_taxonomy_figure(solution, args.out)
    if args.json:
        print(json.dumps(record))
    else:
        _print_solution(solution, record)
        if args.out is not None:
            print(f"wrote {args.out / 'taxonomy.json'} and taxonomy.png/.svg")
    return 0


def _run_sweep(args: argparse.Namespace, table: AffinityTable, problem: Any,
               options: dict[str, Any], log: Any) -> int:
    budgets = parse_range(args.budget_sweep)
    if not budgets:
        raise ValueError(f"--budget-sweep {args.budget_sweep!r} names no budget")
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"),
                  console=Console(stderr=True), transient=True,
                  disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("solving budgets", total=len(budgets))

        def advance(point: SweepPoint) -> None:
            progress.update(task, advance=1, description=f"budget {point.budget:g}: "
                                                         f"{point.status}")

        points = budget_sweep(problem, budgets, solver=args.solver, time_limit=args.time_limit,
                              log=log, progress=advance)
    solves = []
    for point in points:
        if point.solution is None:
            finite = point.min_budget is not None and math.isfinite(point.min_budget)
            solves.append({"budget": point.budget, "status": point.status,
                           "min_budget": point.min_budget if finite else None})
        else:
            solves.append(solution_record(table, point.solution))
    record = {**options, "solves": solves}
    frame = sweep_frame(table, points)
    if args.out is not None:
        _write_json(args.out / "taxonomy.json", record)
        write_budget_curve(frame, args.out)
    if args.json:
        print(json.dumps(record))
        return 0
    summary = Table(title=f"budget sweep on {args.affinities} (max order {args.max_order}, "
                          f"{args.convention} convention)")
    for column in ("budget", "status", "objective", "mean quality", "mean gain", "supervised",
                   "solver", "seconds"):
        summary.add_column(column, justify="right" if column != "status" else "left")
    for point, row in zip(points, frame.to_dict("records"), strict=True):
        if point.solution is None:
            status = (f"infeasible (needs ≥ {point.min_budget:g})"
                      if point.status == "infeasible" and point.min_budget is not None
                      else "no solution within --time-limit" if point.status == "time_limit"
                      else point.status)
            summary.add_row(f"{point.budget:g}", status, *[""] * 6)
            continue
        summary.add_row(f"{point.budget:g}", point.status, f"{row['objective']:.4f}",
                        _fmt(row["mean_quality"]), _fmt(row["mean_gain"]),
                        str(len(point.solution.supervised)), point.solution.solver,
                        f"{point.solution.seconds:.3f}")
    Console(width=140).print(summary)
    if args.out is not None:
        print(f"wrote {args.out / 'taxonomy.json'} and budget_curve.png/.svg/.csv")
    return 0


def _fmt(value: float | None, missing: str = "") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:.3f}")


def _write_json(path: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())
    path.chmod(0o644)


def _print_solution(solution: TaxonomySolution, record: dict[str, Any]) -> None:
    console = Console(width=140)
    console.print(
        f"[bold]supervised[/bold] ({len(solution.supervised)}, cost {solution.cost:g} of budget "
        f"{solution.budget:g}): {', '.join(solution.supervised)}", highlight=False)
    console.print(
        f"[bold]objective[/bold] {solution.objective:.4f} ({record['convention']} convention)  "
        f"[bold]status[/bold] {solution.status}  [bold]solver[/bold] {solution.solver} "
        f"({solution.seconds:.3f} s)", highlight=False)
    edges = Table(title="chosen edge per target")
    for column in ("target", "from", "order", "affinity", "quality", "gain"):
        edges.add_column(column, justify="left" if column in ("target", "from") else "right")
    for edge_record in record["edges"]:
        edges.add_row(edge_record["target"], edge_record["label"], str(edge_record["order"]),
                      f"{edge_record['affinity']:.4f}", _fmt(edge_record["quality"]),
                      _fmt(edge_record["gain"]))
    console.print(edges)
    console.print(f"mean quality {_fmt(record['mean_quality'], 'n/a')}, mean gain "
                  f"{_fmt(record['mean_gain'], 'n/a')} over {len(record['edges'])} targets",
                  highlight=False)
