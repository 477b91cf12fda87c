"""The Gurobi backend (optional: ``pip install taskonomy[gurobi]``).

The pip wheel ships a size-limited licence (2000 variables and 2000 linear constraints); a
larger model raises ``GurobiError`` 10010 at ``optimize()``. Every licence problem surfaces here
as :class:`~taskonomy.solvers.problem.SolverUnavailableError` so that :func:`~taskonomy.solvers.
api.solve` can fall back to HiGHS.
"""

from __future__ import annotations

import time
from typing import Any

from taskonomy.solvers.formulation import build_matrix_form, decode_edges
from taskonomy.solvers.highs import smallest_feasible_budget_highs
from taskonomy.solvers.problem import (
    InfeasibleBudgetError,
    NoSolutionInTimeError,
    SolverUnavailableError,
    TaxonomyProblem,
    TaxonomySolution,
)

#: GurobiError codes: size-limited licence exceeded; no licence / licence not valid.
SIZE_LIMIT_ERROR = 10010
LICENCE_ERRORS = frozenset({10009, 10030, 10032})
# 4 (infeasible or unbounded) can only mean infeasible: every variable is bounded.
_STATUS = {2: "optimal", 3: "infeasible", 4: "infeasible", 9: "time_limit"}


def _import_gurobipy() -> Any:
    try:
        import gurobipy
    except ImportError as error:
        raise SolverUnavailableError(
            "not_installed", "gurobipy is not installed (pip install 'taskonomy[gurobi]')"
        ) from error
    return gurobipy


def _quiet_env(gp: Any) -> Any:
    """A started environment that prints nothing (not even the licence banner)."""
    try:
        env = gp.Env(empty=True)
        env.setParam("OutputFlag", 0)
        env.start()
    except gp.GurobiError as error:
        raise SolverUnavailableError("no_licence", f"no usable Gurobi licence: {error}") from error
    return env


def gurobi_available() -> bool:
    """Whether gurobipy is importable and a licence (possibly size-limited) starts."""
    try:
        _quiet_env(_import_gurobipy()).dispose()
    except SolverUnavailableError:
        return False
    return True


def solve_gurobi(problem: TaxonomyProblem, *, time_limit: float | None = None,
                 notes: tuple[str, ...] = ()) -> TaxonomySolution:
    """Solve the BIP with Gurobi.

    Raises:
        SolverUnavailableError: Gurobi is not installed, has no licence, or the model exceeds
            the size-limited licence (``reason == "size_limit"``).
        InfeasibleBudgetError: If the budget is too small (names the smallest feasible one).
    """
    gp = _import_gurobipy()
    form = build_matrix_form(problem)
    env = _quiet_env(gp)
    model = None
    try:
        model = gp.Model("taxonomy", env=env)
        model.Params.MIPGap = 0.0
        # Default tolerances (1e-6, 1e-5) let a taxonomy exceed its budget by up to 1e-6 (a
        # budget of 0.2999999 bought three tasks of 0.1); the tightest values keep it within
        # rounding, as HiGHS does.
        model.Params.FeasibilityTol = 1e-9
        model.Params.IntFeasTol = 1e-9
        if time_limit is not None:
            model.Params.TimeLimit = float(time_limit)
        x = model.addMVar(form.reward.size, vtype=gp.GRB.BINARY, name="x")
        model.setObjective(form.reward @ x, gp.GRB.MAXIMIZE)
        model.addConstr(form.eq_matrix @ x == 1.0, name="one_edge_per_target")
        if form.ub_matrix.shape[0]:
            model.addConstr(form.ub_matrix @ x <= form.ub_bound, name="sources_and_budget")
        start = time.perf_counter()
        try:
            model.optimize()
        except gp.GurobiError as error:
            if error.errno == SIZE_LIMIT_ERROR:
                variables, constraints = problem.size()
                raise SolverUnavailableError(
                    "size_limit",
                    f"the Gurobi licence is size-limited and this problem has {variables} "
                    f"variables and {constraints} constraints",
                ) from error
            if error.errno in LICENCE_ERRORS:
                raise SolverUnavailableError("no_licence", f"Gurobi licence: {error}") from error
            raise
        seconds = time.perf_counter() - start
        status = _STATUS.get(model.Status, f"gurobi_status_{model.Status}")
        if status == "infeasible":
            raise InfeasibleBudgetError(problem.budget, smallest_feasible_budget_highs(problem))
        if model.SolCount == 0:
            if status == "time_limit":
                raise NoSolutionInTimeError("Gurobi", time_limit, status)
            raise RuntimeError(f"Gurobi stopped with status {status!r} and no solution")
        edges = decode_edges(problem, form, x.X)
    finally:
        if model is not None:
            model.dispose()
        env.dispose()
    return TaxonomySolution.from_edges(problem, edges, status=status, solver="gurobi",
                                       seconds=seconds, notes=notes)
