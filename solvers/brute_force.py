"""Exhaustive search over supervised sets: the reference answer for small problems."""

from __future__ import annotations

import itertools
import math
import time

from taskonomy.solvers.problem import Edge, InfeasibleBudgetError, TaxonomyProblem, TaxonomySolution

#: Above this many tasks the 2^V enumeration is refused.
MAX_BRUTE_FORCE_TASKS = 16


def _best_edges(problem: TaxonomyProblem, supervised: frozenset[str]) -> dict[str, Edge] | None:
    best: dict[str, Edge] = {}
    for edge in problem.edges:
        if not set(edge.sources) <= supervised:
            continue
        if problem.self_when_supervised and edge.target in supervised and not edge.is_self:
            continue
        current = best.get(edge.target)
        if current is None or problem.edge_reward(edge) > problem.edge_reward(current):
            best[edge.target] = edge
    return best if len(best) == len(problem.targets) else None


def solve_brute_force(problem: TaxonomyProblem) -> TaxonomySolution:
    """Enumerate every supervised set within the budget; each target takes its best edge.

    Raises:
        ValueError: If the problem has more than :data:`MAX_BRUTE_FORCE_TASKS` tasks.
        InfeasibleBudgetError: If no supervised set within the budget covers every target.
    """
    tasks = problem.tasks
    if len(tasks) > MAX_BRUTE_FORCE_TASKS:
        raise ValueError(f"brute force enumerates 2^{len(tasks)} sets; use it for at most "
                         f"{MAX_BRUTE_FORCE_TASKS} tasks, or solve with 'highs'")
    start = time.perf_counter()
    best: dict[str, Edge] | None = None
    best_value = -math.inf
    min_budget = math.inf
    for size in range(len(tasks) + 1):
        for subset in itertools.combinations(tasks, size):
            spent = sum(problem.cost[t] for t in subset)
            edges = _best_edges(problem, frozenset(subset))
            if edges is None:
                continue
            min_budget = min(min_budget, spent)
            if spent > problem.budget + 1e-9:
                continue
            value = problem.objective_of(edges)
            if value > best_value:
                best, best_value = edges, value
    if best is None:
        raise InfeasibleBudgetError(problem.budget, min_budget)
    return TaxonomySolution.from_edges(problem, best, status="optimal", solver="brute_force",
                                       seconds=time.perf_counter() - start)
