"""``taskonomy analyze``: run records → win rates, AHP affinities, figures and taxonomies."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from taskonomy.analysis.affinities import AffinityResult, compute_affinities
from taskonomy.analysis.affinity_table import RESULTS_FILE_NAME, AffinityTable, load_affinities
from taskonomy.analysis.figures import all_figures, quality_gain_figure, win_rate_figure
from taskonomy.analysis.losses_table import losses_frame, losses_summary
from taskonomy.analysis.novel_task import place_novel_task_from_records
from taskonomy.analysis.records import RecordScan, RunRecord, records_to_frame, scan_records
from taskonomy.analysis.taxonomy import (
    CONVENTIONS,
    budget_sweep,
    build_problem,
    missing_transfers,
    parse_range,
    solution_record,
    sweep_frame,
)
from taskonomy.analysis.taxonomy_figures import write_taxonomy_figure
from taskonomy.datamodules.domains import atomic_write_bytes

COMMAND = ("analyze",)
HELP = "Turn run records into win rates, AHP affinities, quality/gain, figures and taxonomies."
#: What an interrupt (Ctrl-C) leaves, printed in its place.
INTERRUPTED = ("the results folder holds the previous analysis, or the new one whole; repeat "
               "the command")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("runs", nargs="?", type=Path,
                        help="runs folder holding <run_id>/record.json (written by training)")
    parser.add_argument("--affinities", metavar="SPEC",
                        help="instead of run records, draw the figures and taxonomies of an "
                             "affinity source: paper-2018, paper-2018-1k, paper-2018-16k, a "
                             "results folder or an affinities CSV")
    parser.add_argument("--out", type=Path, required=True, help="results folder to write")
    parser.add_argument("--wandb-project", metavar="ENTITY/PROJECT",
                        help="also read the runs of an online W&B project (public API)")
    parser.add_argument("--wandb-offline", type=Path, metavar="DIR",
                        help="also read offline W&B run folders under DIR (wandb leet inspect)")
    parser.add_argument("--regime", help="data regime to analyze (default: the only one present)")
    parser.add_argument("--targets", help="comma-separated targets (default: all with transfers)")
    parser.add_argument("--strict", action="store_true",
                        help="fail on mismatched sample keys instead of comparing shared keys")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="bootstrap resamples of test images for confidence intervals")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--budgets", default=None,
                        help="taxonomy budgets, A..B or a comma list (default: 1..number of "
                             "tasks); 'none' skips taxonomies")
    parser.add_argument("--figure-budgets", default=None,
                        help="budgets whose taxonomy graph is drawn, A..B or a comma list "
                             "(default: 4 spread over the feasible budgets)")
    parser.add_argument("--max-order", type=int, default=4, help="highest transfer order")
    parser.add_argument("--solver", default="highs", choices=("highs", "gurobi", "auto"),
                        help="BIP backend (highs, the default; gurobi; auto: Gurobi if "
                             "importable and licensed, else HiGHS)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="paper",
                        help="the taxonomies' program: paper (default) or supervision-api "
                             "(the authors' released solver; see `taskonomy taxonomy --help`)")
    parser.add_argument("--novel-task", metavar="TASK",
                        help="place TASK (its transfer records are in RUNS) onto --base")
    parser.add_argument("--base", default="paper-2018-16k", metavar="AFFINITIES",
                        help="base affinities for --novel-task: a shipped data set or a results "
                             "folder (default: paper-2018-16k)")
    parser.add_argument("--budget", type=float, default=None,
                        help="budget for --novel-task (default: half the tasks, rounded up)")


def _write_text(path: Path, text: str) -> Path:
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def _load(args: argparse.Namespace, console: Console) -> list[RunRecord]:
    """Records from the runs folder, the online project and offline W&B folders."""
    if args.runs is None and not args.wandb_project and args.wandb_offline is None:
        raise ValueError("give a runs folder, --wandb-project ENTITY/PROJECT or --wandb-offline")
    scans: list[tuple[str, RecordScan]] = []
    if args.runs is not None:
        scans.append((str(args.runs), scan_records(args.runs)))
    if args.wandb_offline is not None or args.wandb_project:
        from taskonomy.analysis import wandb_source  # imports wandb, which is slow to load

        if args.wandb_offline is not None:
            scans.append((str(args.wandb_offline),
                          wandb_source.read_offline_runs(args.wandb_offline, progress=True)))
        if args.wandb_project:
            scans.append((args.wandb_project, wandb_source.read_project(args.wandb_project)))
    records: dict[str, RunRecord] = {}
    for where, scan in scans:
        console.print(f"[bold]{where}[/]: {scan.describe()}")
        for record in scan.records:
            records.setdefault(record.run_id, record)  # the first source (local records) wins
    if not records:
        hint = ""
        if args.runs is not None and (Path(args.runs) / "runs").is_dir():
            hint = f"; {args.runs} holds a runs folder: analyze {Path(args.runs) / 'runs'}"
        raise ValueError("no finished run records found; " + "; ".join(
            f"{where}: {scan.describe()}" for where, scan in scans) + hint)
    return list(records.values())


#: The manifest of what one analysis wrote into its output folder.
SUMMARY_NAME = "summary.json"


def _previous_files(out: Path) -> set[str]:
    """Files the last analysis into ``out`` listed in its manifest (none if unreadable)."""
    try:
        files = json.loads((out / SUMMARY_NAME).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {str(f) for f in files if isinstance(f, str)}


def _write_summary(out: Path, paths: list[Path], summary: dict[str, Any]) -> Path:
    """Write the manifest, then remove what the previous analysis wrote and this one did not.

    A reused ``--out`` folder then shows only this analysis (a report globbing it never picks up
    a tournament or taxonomy of records since removed). Only files a manifest lists are removed.
    """
    previous = _previous_files(out)
    files = sorted(str(p.relative_to(out)) for p in paths)
    path = _write_text(out / SUMMARY_NAME, json.dumps({**summary, "files": files}, indent=1))
    root = out.resolve()
    for name in sorted(previous - set(files) - {SUMMARY_NAME}):
        stale = (out / name).resolve()
        if stale.is_relative_to(root) and stale.is_file():
            stale.unlink()
    return path


def _used_records(records: list[RunRecord], regime: str) -> list[RunRecord]:
    """The records an analysis of one regime reads: its transfers and baselines, task runs."""
    return [r for r in records if r.role == "task" or r.regime == regime]


def _write_tables(result: AffinityResult, records: list[RunRecord], out: Path) -> list[Path]:
    paths = [
        _write_text(out / "records.csv", records_to_frame(records).to_csv(index=False)),
        _write_text(out / "losses_summary.csv",
                    losses_summary(losses_frame(records)).to_csv(index=False)),
        _write_text(out / "alignment.csv", result.alignment_frame().to_csv(index=False)),
        _write_text(out / "candidates.csv",
                    result.candidates_frame().to_csv(index=False, float_format="%.6g")),
    ]
    for target, tournament in result.tournaments.items():
        # the matrix as CSV (rows beat columns), drawn beside it
        paths += win_rate_figure(tournament.win_rate_frame(), target, out / "winrates")
    paths.append(result.table.to_csv(out / RESULTS_FILE_NAME))
    return paths


def _spread(values: list[float], count: int) -> list[float]:
    """Up to ``count`` values spread evenly over a sorted list, ends included."""
    if len(values) <= count:
        return values
    picks = np.linspace(0, len(values) - 1, count).round().astype(int)
    return [values[i] for i in sorted(set(picks.tolist()))]


def _taxonomies(table: AffinityTable, args: argparse.Namespace, out: Path,
                console: Console) -> tuple[Any, list[Path]]:
    """Budget sweep: JSON for every budget, graphs for a few; returns the sweep frame."""
    budgets = parse_range(args.budgets) if args.budgets else list(range(1, len(table.tasks()) + 1))
    missing = missing_transfers(table, table.targets(), table.supervisable())
    if missing:  # solve over what exists; a complete study has none missing
        listed = ", ".join(f"{s} → {t}" for s, t in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        console.print(f"[yellow]warning:[/] {len(missing)} self or first-order run(s) are "
                      f"missing ({listed}{more}); the taxonomies use the transfers present")
    try:
        problem = build_problem(table, max_order=args.max_order, require_complete=False,
                                convention=args.convention)
    except ValueError as error:
        console.print(f"[yellow]warning:[/] no taxonomies: {error}")
        return None, []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("taxonomies", total=len(budgets))
        points = budget_sweep(problem, budgets, solver=args.solver,
                              log=lambda message: _note(console, message),
                              progress=lambda point: bar.advance(task))
    sweep = sweep_frame(table, points)
    paths = [_write_text(out / "taxonomies" / "sweep.csv", sweep.to_csv(index=False))]
    solved = [p for p in points if p.solution is not None]
    # By default a few budgets spread over the distinct taxonomies: past the point where more
    # supervision stops paying, larger budgets choose the same tasks and would be drawn twice.
    distinct: dict[frozenset[str], float] = {}
    for p in solved:
        assert p.solution is not None
        distinct.setdefault(frozenset(p.solution.supervised), p.budget)
    drawn = (set(parse_range(args.figure_budgets)) if args.figure_budgets
             else set(_spread(sorted(distinct.values()), 4)))
    unswept = sorted(drawn - {p.budget for p in solved})
    if unswept:
        console.print(f"[yellow]warning:[/] --figure-budgets {', '.join(f'{b:g}' for b in unswept)}"
                      " not among the solved budgets of --budgets; no taxonomy drawn for them")
    for point in points:
        if point.solution is None:
            continue
        stem = f"budget_{point.budget:g}"
        record = {"convention": args.convention, **solution_record(table, point.solution)}
        paths.append(_write_text(out / "taxonomies" / f"{stem}.json",
                                 json.dumps(record, indent=1, default=str)))
        if point.budget in drawn:
            paths += write_taxonomy_figure(point.solution, out / "taxonomies", stem=stem)
            chosen = {t: edge.label for t, edge in point.solution.edges.items()}
            paths += quality_gain_figure(
                table, out / "taxonomies", chosen=chosen, name=f"{stem}_quality_gain",
                title=f"Quality and gain of the taxonomy at budget {point.budget:g}")
    infeasible = [p for p in points if p.solution is None]
    if infeasible and infeasible[0].min_budget is not None:
        console.print(f"infeasible budgets {[f'{p.budget:g}' for p in infeasible]}; the "
                      f"smallest feasible budget is {infeasible[0].min_budget:g}")
    return sweep, paths


def _note(console: Console, message: str) -> None:
    # Plain text: solver notes hold brackets (pip extras) that rich would read as markup.
    console.print(message, markup=False, highlight=False)


def _figures_and_taxonomies(table: AffinityTable, args: argparse.Namespace, out: Path,
                            console: Console) -> list[Path]:
    paths: list[Path] = []
    sweep = None
    if (args.budgets or "").lower() != "none":
        sweep, paths = _taxonomies(table, args, out, console)
    return paths + all_figures(table, out / "figures", sweep=sweep, max_order=args.max_order)


def _place_novel(records: list[RunRecord], args: argparse.Namespace, out: Path,
                 console: Console) -> list[Path]:
    base = load_affinities(args.base)
    budget = args.budget if args.budget is not None else math.ceil((len(base.tasks()) + 1) / 2)
    result = place_novel_task_from_records(
        records, args.novel_task, base, budget, regime=args.regime, strict=args.strict,
        bootstrap=args.bootstrap, seed=args.seed, solver=args.solver, max_order=args.max_order,
        log=lambda message: _note(console, message), convention=args.convention)
    folder = out / "novel_task"
    record = solution_record(result.table, result.placement.solution)
    record.update(task=result.task, base=args.base, unknown_sources=list(result.unknown_sources),
                  convention=args.convention)
    paths = [
        _write_text(folder / "ranking.csv",
                    result.ranking.to_csv(index=False, float_format="%.6g")),
        _write_text(folder / "taxonomy.json", json.dumps(record, indent=1, default=str)),
        result.table.to_csv(folder / RESULTS_FILE_NAME),
        *write_taxonomy_figure(result.placement.solution, folder, stem="taxonomy"),
    ]
    edge = result.placement.solution.edges[result.task]
    console.print(f"novel task [bold]{result.task}[/]: best sources "
                  f"{', '.join(result.best_sources(3))}; in the taxonomy (budget {budget:g}) it "
                  f"gets {edge.label} → {result.task}")
    return paths


def _print_summary(result: AffinityResult, console: Console) -> None:
    table = Table(title=f"affinities, regime {result.regime}")
    for column in ("target", "candidates", "images", "best transfer", "affinity", "quality",
                   "gain"):
        table.add_column(column)
    for target, tournament in result.tournaments.items():
        frame = tournament.frame()
        transfers = frame[~frame["candidate"].isin(["self", "random"])]
        best = transfers.sort_values("affinity", ascending=False).head(1)
        if best.empty:
            table.add_row(target, str(len(frame)), str(tournament.n_images), "-", "", "", "")
            continue
        row = best.iloc[0]
        table.add_row(target, str(len(frame)), str(tournament.n_images), str(row["candidate"]),
                      f"{row['affinity']:.3f}", f"{row['quality']:.2f}", f"{row['gain']:.2f}")
    console.print(table)


def _check_budgets(args: argparse.Namespace) -> None:
    """Refuse bad budget options before anything is read or written."""
    for option, text in (("--budgets", args.budgets), ("--figure-budgets", args.figure_budgets)):
        if not text or (option == "--budgets" and text.lower() == "none"):
            continue
        budgets = parse_range(text)
        if not budgets or min(budgets) < 0:
            raise ValueError(f"{option} {text}: budgets must be integers ≥ 0 (e.g. 1..26)")


def _publish(stage: Path, out: Path) -> list[Path]:
    """Move everything written into the staging folder to ``out``; returns the new paths."""
    published = []
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        target = out / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        published.append(target)
    return published


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold a Ctrl-C until the block is done (it is raised then), so the block runs whole."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _write_staged(out: Path, write: Callable[[Path], dict[str, Any] | None]) -> int:
    """Run ``write`` into a staging folder inside ``out``, then publish it with its summary.

    A failure or an interrupt while writing leaves ``out`` as it was (the staging folder is
    removed); publishing (renames within one file system) holds a Ctrl-C until it is done, and
    the summary, written last, names the files of one whole analysis.

    Returns:
        The number of files published.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        summary = write(stage)
        with _deferred_interrupt():
            paths = _publish(stage, out)
            if summary is not None:
                paths.append(_write_summary(out, paths, summary))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out.iterdir()):  # no empty results folder after an error
            out.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)
    return len(paths)


def run(args: argparse.Namespace) -> int:
    """Read records, write tables, figures and taxonomies."""
    console = Console(stderr=True)
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be ≥ 0, got {args.bootstrap}")
    if args.max_order < 1:
        raise ValueError(f"--max-order must be ≥ 1 (1: first-order transfers only), got "
                         f"{args.max_order}")
    _check_budgets(args)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder; choose another path")
    if args.affinities:
        if args.runs is not None or args.novel_task:
            raise ValueError("--affinities replaces run records; drop RUNS and --novel-task")
        table = load_affinities(args.affinities)

        def write_from_table(stage: Path) -> dict[str, Any]:
            _figures_and_taxonomies(table, args, stage, console)
            table.to_csv(stage / RESULTS_FILE_NAME)
            return {"affinities": args.affinities, "targets": table.targets()}

        count = _write_staged(out, write_from_table)
        console.print(f"{args.affinities}: {len(table.targets())} targets, transfers up to "
                      f"order {table.max_order()}; wrote {count} files to {out}")
        return 0
    records = _load(args, console)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    results: list[AffinityResult] = []

    def write_from_records(stage: Path) -> dict[str, Any] | None:
        usable = records
        if args.novel_task:
            _place_novel(records, args, stage, console)
            usable = [r for r in records if r.target != args.novel_task]
            if not any(r.role == "transfer" for r in usable):
                return None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = compute_affinities(usable, targets=targets, regime=args.regime,
                                        strict=args.strict, bootstrap=args.bootstrap,
                                        level=args.level, seed=args.seed,
                                        progress=sys.stderr.isatty())
        for warning in caught:  # key mismatches and duplicate runs, with their counts
            console.print(f"[yellow]warning:[/] {warning.message}")
        used = _used_records(usable, result.regime)
        _write_tables(result, used, stage)
        _figures_and_taxonomies(result.table, args, stage, console)
        results.append(result)
        return {"regime": result.regime, "records": len(used),
                "targets": result.table.targets(), "bootstrap": args.bootstrap}

    count = _write_staged(out, write_from_records)
    if results:
        _print_summary(results[0], console)
    console.print(f"wrote {count} files to {out}")
    return 0
