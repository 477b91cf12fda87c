"""The HiGHS backend (free, the default) through :func:`scipy.optimize.milp`."""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp

from taskonomy.solvers.formulation import MatrixForm, build_matrix_form, decode_edges
from taskonomy.solvers.problem import (
    InfeasibleBudgetError,
    NoSolutionInTimeError,
    TaxonomyProblem,
    TaxonomySolution,
)

_STATUS = {0: "optimal", 1: "time_limit", 2: "infeasible", 3: "unbounded", 4: "error"}
# The default relative gap (1e-4) could stop short of the optimum; this program is small
# enough to close the gap completely.
_OPTIONS = {"mip_rel_gap": 0.0, "presolve": True}


def _run(form: MatrixForm, objective: np.ndarray, time_limit: float | None) -> OptimizeResult:
    constraints = [LinearConstraint(form.eq_matrix, 1.0, 1.0)]
    if form.ub_matrix.shape[0]:
        constraints.append(LinearConstraint(form.ub_matrix, -np.inf, form.ub_bound))
    options: dict[str, float | bool] = dict(_OPTIONS)
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    return milp(
        objective,
        constraints=constraints,
        integrality=np.ones(objective.size),
        bounds=Bounds(0.0, 1.0),
        options=options,
    )


def smallest_feasible_budget_highs(problem: TaxonomyProblem) -> float:
    """The least Σ cost of a supervised set that gives every target an incoming edge."""
    form = build_matrix_form(problem, with_budget=False)
    objective = np.concatenate([np.zeros(form.num_edges), form.task_cost])
    result = _run(form, objective, None)
    if result.status != 0 or result.x is None:
        return math.inf
    chosen = decode_edges(problem, form, result.x)
    supervised = {s for edge in chosen.values() for s in edge.sources}
    return float(sum(problem.cost[s] for s in supervised))


def solve_highs(problem: TaxonomyProblem, *, time_limit: float | None = None,
                notes: tuple[str, ...] = ()) -> TaxonomySolution:
    """Solve the BIP with HiGHS.

    Raises:
        InfeasibleBudgetError: If the budget is too small (names the smallest feasible one).
        NoSolutionInTimeError: If the time limit stopped HiGHS before any solution.
        RuntimeError: If HiGHS fails otherwise without a solution.
    """
    form = build_matrix_form(problem)
    start = time.perf_counter()
    result = _run(form, -form.reward, time_limit)
    seconds = time.perf_counter() - start
    status = _STATUS.get(result.status, "error")
    if status == "infeasible":
        raise InfeasibleBudgetError(problem.budget, smallest_feasible_budget_highs(problem))
    if result.x is None:
        if status == "time_limit":
            raise NoSolutionInTimeError("HiGHS", time_limit, status)
        raise RuntimeError(f"HiGHS stopped with status {status!r} and no solution: "
                           f"{result.message}")
    edges = decode_edges(problem, form, result.x)
    return TaxonomySolution.from_edges(problem, edges, status=status, solver="highs",
                                       seconds=seconds, notes=notes)
