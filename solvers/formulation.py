"""The BIP in matrix form, shared by the backends, and decoding of a 0/1 vector.

Variables: ``x = [edge_0 .. edge_{E-1}, supervised_0 .. supervised_{V-1}]``, all binary.
Rows, as in the paper's formulation (one linking row per edge keeps the model within the
size-limited Gurobi licence at paper scale):

- ``Σ_{i→t} edge_i = 1`` for each target t;
- ``|S_i| · edge_i − Σ_{j∈S_i} supervised_j ≤ 0`` for each edge i;
- ``supervised_t − self_t ≤ 0`` for each target t when a supervised target must take its
  ``self`` edge (:attr:`TaxonomyProblem.self_when_supervised`);
- ``Σ_j cost_j · supervised_j ≤ budget`` (omitted for an infinite budget).

Only undominated edges get a variable (:meth:`TaxonomyProblem.undominated_edges`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from taskonomy.solvers.problem import Edge, TaxonomyProblem


@dataclass(frozen=True)
class MatrixForm:
    """``maximize reward·x`` s.t. ``eq_matrix x = 1``, ``ub_matrix x ≤ ub_bound``, x binary."""

    edges: tuple[Edge, ...]
    reward: np.ndarray
    eq_matrix: sp.csr_matrix
    ub_matrix: sp.csr_matrix
    ub_bound: np.ndarray
    task_cost: np.ndarray

    @property
    def num_edges(self) -> int:
        """Number of edge variables (they come first in ``x``)."""
        return int(self.reward.size - self.task_cost.size)


def build_matrix_form(problem: TaxonomyProblem, *, with_budget: bool = True) -> MatrixForm:
    """The problem's objective and constraint matrices.

    Args:
        problem: The taxonomy problem.
        with_budget: Include the budget row (``False`` for the smallest-budget program).
    """
    tasks = problem.tasks
    task_index = {name: k for k, name in enumerate(tasks)}
    target_index = {name: k for k, name in enumerate(problem.targets)}
    edges = problem.undominated_edges()
    n_edges, n_tasks = len(edges), len(tasks)
    reward = np.zeros(n_edges + n_tasks)
    eq_rows, eq_cols = [], []
    ub_rows, ub_cols, ub_vals = [], [], []
    for i, edge in enumerate(edges):
        reward[i] = problem.edge_reward(edge)
        eq_rows.append(target_index[edge.target])
        eq_cols.append(i)
        ub_rows.append(i)
        ub_cols.append(i)
        ub_vals.append(float(len(edge.sources)))
        for source in edge.sources:
            ub_rows.append(i)
            ub_cols.append(n_edges + task_index[source])
            ub_vals.append(-1.0)
    task_cost = np.array([problem.cost[name] for name in tasks], dtype=float)
    bounds = [0.0] * n_edges
    if problem.self_when_supervised:
        self_edge = {edge.target: i for i, edge in enumerate(edges) if edge.is_self}
        for target in problem.targets:
            row = len(bounds)
            ub_rows.append(row)
            ub_cols.append(n_edges + task_index[target])
            ub_vals.append(1.0)
            if target in self_edge:  # without one, the target cannot be supervised at all
                ub_rows.append(row)
                ub_cols.append(self_edge[target])
                ub_vals.append(-1.0)
            bounds.append(0.0)
    if with_budget and not math.isinf(problem.budget):
        budget_row = len(bounds)
        for k, value in enumerate(task_cost):
            ub_rows.append(budget_row)
            ub_cols.append(n_edges + k)
            ub_vals.append(value)
        bounds.append(float(problem.budget))
    shape_cols = n_edges + n_tasks
    eq_matrix = sp.csr_matrix(
        (np.ones(len(eq_rows)), (eq_rows, eq_cols)), shape=(len(problem.targets), shape_cols)
    )
    ub_matrix = sp.csr_matrix((ub_vals, (ub_rows, ub_cols)), shape=(len(bounds), shape_cols))
    return MatrixForm(edges, reward, eq_matrix, ub_matrix, np.asarray(bounds), task_cost)


def decode_edges(problem: TaxonomyProblem, form: MatrixForm, x: np.ndarray) -> dict[str, Edge]:
    """The chosen edge per target from a (near-)binary solution vector.

    Raises:
        RuntimeError: If the vector does not choose exactly one edge per target (a backend bug).
    """
    chosen: dict[str, Edge] = {}
    for i, edge in enumerate(form.edges):
        if x[i] > 0.5:
            if edge.target in chosen:
                raise RuntimeError(f"solver chose two edges into {edge.target!r}")
            chosen[edge.target] = edge
    missing = [t for t in problem.targets if t not in chosen]
    if missing:
        raise RuntimeError(f"solver chose no edge into {missing}")
    return chosen
