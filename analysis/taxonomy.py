"""Taxonomies from an affinity table: build the BIP from user options, solve, sweep budgets.

This is the glue between :mod:`taskonomy.analysis.affinity_table` (where affinities come from)
and :mod:`taskonomy.solvers` (the pure-data program). Defaults follow the paper: every target
and every source of the data is eligible, transfers up to order 4, importance 1 per target,
label cost 1 per task. ``random`` is a baseline and never an edge; as one member of a higher-order
source set (the authors' beam search) it is the label-free random encoder and needs no
supervision.

``convention="supervision-api"`` builds the program of the authors' released solver instead
(``taxonomy_api.py``, the Supervision API of taskonomy.vision), which departs from the paper's
text: an edge earns √affinity; the ``t → t`` readout is no edge; a supervised target takes its
``self`` value and no transfer; ``random`` is a source task like any other (a first-order
source, and a member of higher-order sets) and costs its label cost; ``class_selected`` is left
out unless named. On the paper's affinities the two conventions choose other supervised sets at
several budgets. One quirk of that solver is not copied: its floor of 1e-5 on every reward lets
it mark unused source-only tasks as supervised when budget is left over; here a supervised task
is always a source of a chosen edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from taskonomy.analysis.affinity_table import (
    RANDOM_SOURCE,
    AffinityTable,
    split_sources,
)
from taskonomy.solvers import (
    SELF_LABEL,
    Edge,
    InfeasibleBudgetError,
    NoSolutionInTimeError,
    TaxonomyProblem,
    TaxonomySolution,
    print_note,
    smallest_feasible_budget,
    solve,
)

#: Default highest transfer order (the paper's).
DEFAULT_MAX_ORDER = 4
#: How the program is built: as the paper's text states it, or as the authors' released solver.
CONVENTIONS = ("paper", "supervision-api")
#: Tasks the authors' solver leaves out unless asked for (its 100-class object task).
_API_UNUSED = ("class_selected",)
#: How many missing transfers an error message lists before summarizing.
_MAX_LISTED = 30


def _check_names(names: Iterable[str], valid: Sequence[str], role: str) -> list[str]:
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown {role}(s) {unknown}; valid {role}s in these affinities: "
                         f"{', '.join(valid)}")
    return names


def missing_transfers(table: AffinityTable, targets: Sequence[str],
                      sources: Sequence[str]) -> list[tuple[str, str]]:
    """First-order transfers and ``self`` rows a taxonomy over these tasks needs but lacks.

    Returns:
        ``(sources, target)`` pairs, ``sources`` being a task name or ``self``. The ``t → t``
        readout is optional and never reported; so is the ``self`` row of a target-only task
        (one not among ``sources``), which cannot be supervised.
    """
    frame = table.frame
    present = set(zip(frame["sources"], frame["target"], strict=True))
    missing = []
    for target in targets:
        needed = (SELF_LABEL, *sources) if target in sources else tuple(sources)
        for source in needed:
            if source != target and (source, target) not in present:
                missing.append((source, target))
    return missing


def eligible_sources(table: AffinityTable, convention: str = "paper") -> list[str]:
    """The tasks a taxonomy may supervise under a convention, sorted.

    The table's supervisable tasks (:meth:`AffinityTable.supervisable`); under
    ``supervision-api`` also ``random`` when the table has its rows (a task to pay for there).
    """
    supervisable = table.supervisable()
    if convention == "supervision-api" and (table.frame["sources"] == RANDOM_SOURCE).any():
        supervisable = sorted({*supervisable, RANDOM_SOURCE})
    return supervisable


def default_sources(table: AffinityTable, convention: str = "paper") -> list[str]:
    """The sources a taxonomy uses when none are named.

    :func:`eligible_sources`; the authors' solver leaves out ``class_selected``.
    """
    eligible = eligible_sources(table, convention)
    if convention == "supervision-api":
        return [s for s in eligible if s not in _API_UNUSED]
    return eligible


def build_problem(table: AffinityTable, budget: float = math.inf, *,
                  targets: Sequence[str] | None = None, sources: Sequence[str] | None = None,
                  max_order: int = DEFAULT_MAX_ORDER,
                  importance: Mapping[str, float] | None = None,
                  cost: Mapping[str, float] | None = None,
                  require_complete: bool = True,
                  convention: str = "paper") -> TaxonomyProblem:
    """The taxonomy BIP for an affinity table and the user's choices.

    Args:
        table: Affinities (a shipped paper data set or a results table).
        budget: Upper bound on the total label cost of supervised tasks.
        targets: Target tasks (default: every target of the table).
        sources: Tasks that may be supervised and used as sources (default: every source of the
            table and every target with a ``self`` row, :meth:`AffinityTable.supervisable`).
            A target among them may be supervised itself (its ``self`` edge); a target outside
            them is *target-only* (the paper's T − T∩S, e.g. a novel task with few labels) and
            must be served by a transfer.
        max_order: Highest transfer order kept (≥ 1).
        importance: Weight per target (default 1).
        cost: Label cost per task (default 1).
        require_complete: Require a ``self`` row and a first-order transfer from every
            eligible source for every target (``False`` for a novel task with few transfers).
        convention: ``paper`` (the paper's text) or ``supervision-api`` (the authors' released
            solver; see the module docstring).

    Raises:
        ValueError: On unknown task names (valid names listed), missing ``self`` or first-order
            transfers for a requested target (the missing pairs listed), a target without an
            eligible edge (named), bad weights, or an unknown convention.
    """
    if max_order < 1:
        raise ValueError(f"--max-order must be ≥ 1, got {max_order}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
    api = convention == "supervision-api"
    supervisable = eligible_sources(table, convention)
    default_targets = table.targets()
    if api:
        default_targets = [t for t in default_targets if t not in _API_UNUSED]
    target_list = _check_names(targets if targets is not None else default_targets,
                               table.targets(), "target")
    source_list = _check_names(sources if sources is not None
                               else default_sources(table, convention), supervisable, "source")
    missing = missing_transfers(table, target_list, source_list) if require_complete else []
    if missing:
        listed = ", ".join(f"({s} → {t})" for s, t in missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise ValueError(
            f"the affinities lack {len(missing)} transfer(s) needed for these targets and "
            f"sources: {listed}{more}. Train and analyze those transfers, or restrict "
            "--targets/--sources"
        )
    allowed = set(source_list)
    edges = []
    rows = table.restrict(targets=target_list, max_order=max_order).frame
    for target, label, order, affinity in zip(rows["target"], rows["sources"], rows["order"],
                                              rows["affinity"], strict=True):
        if label == SELF_LABEL:
            # The edge ({t}, t) needs t ∈ S (Zamir et al., Sec. 3.4): a target-only task has none.
            if target in allowed:
                edges.append(Edge(target, (target,), float(affinity), 0, SELF_LABEL))
            continue
        if api:
            # The authors' solver: random is a task to pay for; t → t is no transfer.
            needed = split_sources(label) or (RANDOM_SOURCE,)  # (the rest are baselines)
            if label == target:
                continue
        elif order == 0:  # the random baseline is never an edge
            continue
        else:
            needed = tuple(s for s in split_sources(label) if s != RANDOM_SOURCE)
        if set(needed) <= allowed:
            edges.append(Edge(target, needed, float(affinity), max(int(order), 1), label))
    return TaxonomyProblem(
        targets=tuple(target_list),
        sources=tuple(s for s in source_list if s not in target_list),
        edges=tuple(edges),
        importance=dict(importance or {}),
        cost=dict(cost or {}),
        budget=budget,
        reward="sqrt" if api else "affinity",
        self_when_supervised=api,
    )


def _score_lookup(table: AffinityTable) -> dict[tuple[str, str], tuple[float, float]]:
    frame = table.frame
    return {(t, s): (float(q), float(g)) for t, s, q, g in zip(
        frame["target"], frame["sources"], frame["quality"], frame["gain"], strict=True)}


def edge_scores(table: AffinityTable, edge: Edge) -> dict[str, float]:
    """Quality and gain of an edge's candidate in the table (NaN where unknown)."""
    quality, gain = _score_lookup(table).get((edge.target, edge.label), (math.nan, math.nan))
    return {"quality": quality, "gain": gain}


def solution_record(table: AffinityTable, solution: TaxonomySolution) -> dict[str, Any]:
    """A JSON-ready solution whose edges carry quality and gain, plus their means."""
    record = solution.to_dict()
    lookup = _score_lookup(table)
    qualities, gains = [], []
    for edge_record, edge in zip(record["edges"], solution.edges.values(), strict=True):
        quality, gain = lookup.get((edge.target, edge.label), (math.nan, math.nan))
        scores = {"quality": quality, "gain": gain}
        edge_record.update({k: (None if math.isnan(v) else v) for k, v in scores.items()})
        qualities.append(scores["quality"])
        gains.append(scores["gain"])
    record["mean_quality"] = _nanmean(qualities)
    record["mean_gain"] = _nanmean(gains)
    return record


def _nanmean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


@dataclass(frozen=True)
class SweepPoint:
    """One budget of a sweep.

    Attributes:
        budget: The budget.
        status: ``optimal``, ``time_limit`` or ``infeasible``.
        solution: The solution (``None`` when infeasible).
        min_budget: For an infeasible budget, the smallest feasible one.
    """

    budget: float
    status: str
    solution: TaxonomySolution | None
    min_budget: float | None = None


def budget_sweep(problem: TaxonomyProblem, budgets: Iterable[float], *, solver: str = "highs",
                 time_limit: float | None = None, log: Callable[[str], None] | None = None,
                 progress: Callable[[SweepPoint], None] | None = None) -> list[SweepPoint]:
    """Solve one problem under several budgets; infeasible budgets are reported, not raised.

    When the first solve falls back from Gurobi to HiGHS, the remaining solves use HiGHS
    directly (one message, not one per budget), also when that budget was infeasible. A budget
    that the time limit stopped before any solution gets status ``time_limit`` and no solution.
    """
    points = []
    fell_back = False

    def note(message: str) -> None:  # solve() speaks only to say it falls back to HiGHS
        nonlocal fell_back
        fell_back = True
        (log or print_note)(message)

    for budget in budgets:
        try:
            solution = solve(problem.with_budget(budget), solver, time_limit=time_limit,
                             log=note)
        except InfeasibleBudgetError as error:
            point = SweepPoint(budget, "infeasible", None, error.min_budget)
        except NoSolutionInTimeError:
            point = SweepPoint(budget, "time_limit", None)
        else:
            point = SweepPoint(budget, solution.status, solution)
        if fell_back and solver in ("auto", "gurobi"):
            solver = "highs"
        points.append(point)
        if progress is not None:
            progress(point)
    return points


def sweep_frame(table: AffinityTable, points: Sequence[SweepPoint]) -> pd.DataFrame:
    """The "collective performance vs budget" numbers of a sweep, one row per budget.

    Columns: budget, status, objective, mean_affinity (unweighted mean over targets),
    mean_quality, mean_gain, supervised (count), seconds, solver, min_budget.
    """
    rows = []
    for point in points:
        row: dict[str, Any] = {"budget": point.budget, "status": point.status}
        if point.solution is not None:
            record = solution_record(table, point.solution)
            affinities = [e.affinity for e in point.solution.edges.values()]
            row.update(
                objective=point.solution.objective,
                mean_affinity=float(np.mean(affinities)),
                mean_quality=record["mean_quality"],
                mean_gain=record["mean_gain"],
                supervised=len(point.solution.supervised),
                seconds=point.solution.seconds,
                solver=point.solution.solver,
            )
        else:
            row["min_budget"] = point.min_budget
        rows.append(row)
    columns = ["budget", "status", "objective", "mean_affinity", "mean_quality", "mean_gain",
               "supervised", "seconds", "solver", "min_budget"]
    return pd.DataFrame(rows).reindex(columns=columns)


def parse_range(text: str) -> list[int]:
    """Parse a budget range ``A..B`` (inclusive) or a comma list ``1,2,5``.

    Raises:
        ValueError: On anything else, naming the accepted forms.
    """
    try:
        if ".." in text:
            low, high = (int(part) for part in text.split("..", 1))
        else:
            return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"budget range {text!r} is not of the form A..B (e.g. 1..26) or a "
                         "comma list of integers") from None
    if high < low:
        raise ValueError(f"budget range {text!r} runs backwards; write it from low to high "
                         f"({high}..{low})")
    return list(range(low, high + 1))


@dataclass(frozen=True)
class NovelPlacement:
    """Where a novel task sits in a taxonomy.

    Attributes:
        task: The novel task.
        ranking: Its candidates (transfers and baselines), highest affinity first, with
            quality and gain.
        solution: The taxonomy re-solved with the task among the targets.
    """

    task: str
    ranking: pd.DataFrame
    solution: TaxonomySolution


def place_novel_task(table: AffinityTable, task: str, budget: float, *,
                     targets: Sequence[str] | None = None, solver: str = "highs",
                     max_order: int = DEFAULT_MAX_ORDER,
                     log: Callable[[str], None] | None = None,
                     convention: str = "paper") -> NovelPlacement:
    """Rank a novel task's sources and re-solve the taxonomy with it as a target.

    ``table`` must hold the transfers into ``task`` (from its few labels) besides the
    dictionary's affinities; the task joins the targets (default: all targets of the table).

    Raises:
        ValueError: If the table has no transfers into ``task``.
        InfeasibleBudgetError: If the budget cannot cover the targets.
    """
    if task not in table.targets():
        raise ValueError(f"the affinities hold no transfers into {task!r}; analyze its "
                         f"transfer runs first (targets present: {', '.join(table.targets())})")
    ranking = table.candidates(task)
    chosen_targets = list(targets) if targets is not None else table.targets()
    if task not in chosen_targets:
        chosen_targets.append(task)
    # A novel task has transfers from some sources only: use what exists. It is target-only
    # (the paper's T − T∩S), even with a `self` row of its own.
    sources = [s for s in default_sources(table, convention) if s != task]
    problem = build_problem(table, budget, targets=chosen_targets, sources=sources,
                            max_order=max_order, require_complete=False, convention=convention)
    return NovelPlacement(task, ranking, solve(problem, solver, log=log))


__all__ = [
    "CONVENTIONS",
    "DEFAULT_MAX_ORDER",
    "NovelPlacement",
    "SweepPoint",
    "budget_sweep",
    "build_problem",
    "default_sources",
    "edge_scores",
    "eligible_sources",
    "missing_transfers",
    "parse_range",
    "place_novel_task",
    "smallest_feasible_budget",
    "solution_record",
    "sweep_frame",
]
