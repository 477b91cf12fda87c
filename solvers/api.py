"""Solve a taxonomy problem with a chosen backend, falling back to HiGHS where Gurobi cannot."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

from taskonomy.solvers.brute_force import solve_brute_force
from taskonomy.solvers.gurobi import gurobi_available, solve_gurobi
from taskonomy.solvers.highs import smallest_feasible_budget_highs, solve_highs
from taskonomy.solvers.problem import SolverUnavailableError, TaxonomyProblem, TaxonomySolution

#: Accepted values of ``solver``.
SOLVERS = ("auto", "highs", "gurobi", "brute_force")


def print_note(message: str) -> None:
    """Print a one-line solver note to standard error (the default ``log`` of the solves)."""
    print(message, file=sys.stderr)


def solve(problem: TaxonomyProblem, solver: str = "highs", *, time_limit: float | None = None,
          log: Callable[[str], None] | None = None) -> TaxonomySolution:
    """Solve the taxonomy BIP.

    Args:
        problem: The problem.
        solver: ``highs`` (free; the default), ``gurobi``, ``auto`` (Gurobi if importable and
            licensed, else HiGHS) or ``brute_force`` (at most 16 tasks; no time limit). When
            Gurobi cannot solve the
            problem (not installed, no licence, over the size-limited licence) the solve falls
            back to HiGHS and says so in one line.
        time_limit: Seconds before the backend returns its best solution (status
            ``time_limit``); ``None`` for no limit.
        log: Where one-line messages go (default: standard error). They are also kept in
            :attr:`TaxonomySolution.notes`.

    Raises:
        ValueError: On an unknown solver name, a time limit that is not positive, or
            ``brute_force`` on more than 16 tasks.
        NoSolutionInTimeError: If the time limit stopped the backend before any solution.
        InfeasibleBudgetError: If the budget is too small; it names the smallest feasible one.
    """
    emit = log or print_note
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid: {', '.join(SOLVERS)}")
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise ValueError(f"the time limit must be a positive number of seconds, got {time_limit}")
    if solver == "highs":
        return solve_highs(problem, time_limit=time_limit)
    if solver == "brute_force":
        return solve_brute_force(problem)
    if solver == "auto" and not gurobi_available():
        note = "Gurobi is not importable or not licensed; solving with HiGHS"
        emit(note)
        return solve_highs(problem, time_limit=time_limit, notes=(note,))
    try:
        return solve_gurobi(problem, time_limit=time_limit)
    except SolverUnavailableError as error:
        note = f"{error}; solving with HiGHS instead"
        emit(note)
        return solve_highs(problem, time_limit=time_limit, notes=(note,))


def smallest_feasible_budget(problem: TaxonomyProblem) -> float:
    """The least total label cost of a supervised set that gives every target an edge.

    This is itself a small BIP (minimize Σ cost · supervised subject to one edge per target and
    supervised sources), solved with HiGHS.
    """
    return smallest_feasible_budget_highs(problem)
