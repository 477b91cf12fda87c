"""taskonomy.solvers: the taxonomy Binary Integer Program as pure data, and its backends.

This package imports nothing else of the suite: a problem is built from plain names and numbers
(see :mod:`taskonomy.analysis.taxonomy` for building one from an affinity table).
"""

from taskonomy.solvers.api import SOLVERS, print_note, smallest_feasible_budget, solve
from taskonomy.solvers.brute_force import solve_brute_force
from taskonomy.solvers.gurobi import gurobi_available
from taskonomy.solvers.problem import (
    SELF_LABEL,
    Edge,
    InfeasibleBudgetError,
    NoSolutionInTimeError,
    SolverUnavailableError,
    TaxonomyProblem,
    TaxonomySolution,
)

__all__ = [
    "SELF_LABEL",
    "SOLVERS",
    "Edge",
    "InfeasibleBudgetError",
    "NoSolutionInTimeError",
    "SolverUnavailableError",
    "TaxonomyProblem",
    "TaxonomySolution",
    "gurobi_available",
    "print_note",
    "smallest_feasible_budget",
    "solve",
    "solve_brute_force",
]
