"""The taxonomy Binary Integer Program as pure data: problem, solution and errors.

A :class:`TaxonomyProblem` lists the targets, the tasks that may be supervised, the candidate
edges (a source set, a target, an affinity) and the user's weights. It knows nothing about where
the affinities came from; :mod:`taskonomy.analysis.taxonomy` builds one from an affinity table.

The program (Zamir et al., CVPR 2018, Sec. 3.4): one binary per edge and one per task
("supervised"); maximize Σ importance(target) · affinity over chosen edges such that every target
gets exactly one incoming edge, an edge is chosen only if all its sources are supervised, and
Σ cost · supervised ≤ budget. Supervising a target itself is the edge ``({t}, t)`` labelled
``self``.

Two options give the program of the authors' released solver instead (the Supervision API
behind taskonomy.vision, ``taxonomy_api.py``): a reward of √affinity (clipped to [1e-5, 1]), and
a supervised target served by its own ``self`` edge only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

#: Label of the "supervise the target itself" edge.
SELF_LABEL = "self"
#: How an edge's affinity becomes its reward: as it is (the paper's text), or its square root
#: clipped to [1e-5, 1] (the authors' released solver).
REWARDS = ("affinity", "sqrt")
#: The authors' solver's floor on a reward.
_SQRT_FLOOR = 1e-5


class InfeasibleBudgetError(ValueError):
    """The budget cannot give every target an incoming edge.

    Attributes:
        budget: The budget that was asked for.
        min_budget: The smallest feasible budget (``math.inf`` if no budget suffices).
    """

    def __init__(self, budget: float, min_budget: float) -> None:
        self.budget = budget
        self.min_budget = min_budget
        super().__init__(
            f"budget {budget:g} is infeasible: the smallest budget that gives every target an "
            f"incoming edge is {min_budget:g}; raise --budget to at least {min_budget:g}, or "
            "drop targets / lower label costs"
        )


class NoSolutionInTimeError(ValueError):
    """The time limit stopped the solver before it found any taxonomy."""

    def __init__(self, solver: str, time_limit: float | None, status: str) -> None:
        self.solver = solver
        self.time_limit = time_limit
        limit = f"within the time limit of {time_limit:g} s" if time_limit else f"({status})"
        super().__init__(f"{solver} found no taxonomy {limit}; raise --time-limit or drop it")


class SolverUnavailableError(RuntimeError):
    """A backend cannot solve this problem here (not installed, no licence, size limit).

    Attributes:
        reason: One of ``"not_installed"``, ``"no_licence"``, ``"size_limit"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class Edge:
    """One candidate incoming edge of a target.

    Attributes:
        target: The target task.
        sources: Tasks that must be supervised for this edge, sorted (``(target,)`` for
            ``self``). Label-free sources (the random encoder) are not listed.
        affinity: The edge's affinity for its target (the BIP's reward before importance).
        order: The transfer order as the data states it (0 for ``self``).
        label: How the data names the candidate: ``self`` or the ``+``-joined source set.
    """

    target: str
    sources: tuple[str, ...]
    affinity: float
    order: int
    label: str

    @property
    def is_self(self) -> bool:
        """Whether this is the "supervise the target itself" edge."""
        return self.label == SELF_LABEL

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "target": self.target,
            "sources": list(self.sources),
            "label": self.label,
            "order": self.order,
            "affinity": self.affinity,
        }


def _frozen_weights(weights: Mapping[str, float] | None, names: tuple[str, ...],
                    what: str) -> Mapping[str, float]:
    given = dict(weights or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"{what} given for unknown task(s) {unknown}; valid: {', '.join(names)}")
    for name, value in given.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{what} of {name!r} must be a finite number ≥ 0, got {value!r}")
    return MappingProxyType({name: float(given.get(name, 1.0)) for name in names})


@dataclass(frozen=True)
class TaxonomyProblem:
    """The BIP's data; validated on construction.

    Attributes:
        targets: Target tasks; each must get exactly one incoming edge.
        sources: Tasks that may be supervised besides the targets. A target is supervised
            only through edges that list it (its ``self`` edge, or as another target's source);
            a target-only task has neither.
        edges: Candidate edges. Every edge source must be a target or a source.
        importance: Weight r_t per target (default 1 for every target not given).
        cost: Label cost per task (default 1 for every task not given).
        budget: Upper bound on Σ cost of supervised tasks.
        reward: ``affinity`` (the paper: an edge earns importance · affinity) or ``sqrt``
            (the authors' solver: importance · √affinity, clipped to [1e-5, 1]).
        self_when_supervised: A supervised target is served by its ``self`` edge and no other
            (the authors' solver: a task is either supervised or transferred to). ``False``
            (the paper's text) lets a supervised target take a transfer that beats ``self``.

    Raises:
        ValueError: On duplicate names, edges into non-targets or from unknown tasks, a target
            without any edge (named), negative or non-finite weights, a negative or NaN
            budget (an infinite one means no budget), an unknown reward.
    """

    targets: tuple[str, ...]
    sources: tuple[str, ...]
    edges: tuple[Edge, ...]
    importance: Mapping[str, float] = field(default_factory=dict)
    cost: Mapping[str, float] = field(default_factory=dict)
    budget: float = math.inf
    reward: str = "affinity"
    self_when_supervised: bool = False

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; valid: {', '.join(REWARDS)}")
        targets, sources = tuple(self.targets), tuple(self.sources)
        if not targets:
            raise ValueError("a taxonomy needs at least one target")
        for names, what in ((targets, "targets"), (sources, "sources")):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} repeat a task: {sorted(names)}")
        tasks = tuple(dict.fromkeys(targets + sources))
        task_set = set(tasks)
        for edge in self.edges:
            if edge.target not in targets:
                raise ValueError(f"edge {edge.label} → {edge.target}: {edge.target!r} is not a "
                                 f"target; valid targets: {', '.join(targets)}")
            if not edge.sources:
                raise ValueError(f"edge {edge.label} → {edge.target} has no source to supervise")
            missing = [s for s in edge.sources if s not in task_set]
            if missing:
                raise ValueError(f"edge {edge.label} → {edge.target} needs {missing}, which are "
                                 "neither targets nor eligible sources")
            if edge.is_self and edge.sources != (edge.target,):
                raise ValueError(f"the self edge of {edge.target!r} must have sources "
                                 f"({edge.target!r},), got {edge.sources}")
            if not math.isfinite(edge.affinity):
                raise ValueError(f"edge {edge.label} → {edge.target} has affinity "
                                 f"{edge.affinity!r}; affinities must be finite")
        with_edge = {edge.target for edge in self.edges}
        without = [t for t in targets if t not in with_edge]
        if without:
            raise ValueError(f"target(s) {without} have no eligible incoming edge under the "
                             "given sources and max order; add sources or drop those targets")
        if math.isnan(self.budget) or self.budget < 0:
            raise ValueError(f"budget must be ≥ 0, got {self.budget!r}")
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "edges", tuple(self.edges))
        object.__setattr__(self, "importance",
                           _frozen_weights(self.importance, targets, "importance"))
        object.__setattr__(self, "cost", _frozen_weights(self.cost, tasks, "label cost"))

    @property
    def tasks(self) -> tuple[str, ...]:
        """All tasks that have a "supervised" variable: targets, then the other sources."""
        return tuple(dict.fromkeys(self.targets + self.sources))

    def with_budget(self, budget: float) -> TaxonomyProblem:
        """The same problem under another budget."""
        return replace(self, importance=dict(self.importance), cost=dict(self.cost),
                       budget=budget)

    def undominated_edges(self) -> tuple[Edge, ...]:
        """The edges the backends model: dominated edges removed.

        An edge is dominated when another edge into the same target needs a subset of its
        sources and has at least its affinity: any solution using it can switch to the other
        edge without breaking a constraint or lowering the objective, so the optimum is
        unchanged. On the paper's 16k data this removes about 30 % of the edges and halves
        HiGHS's solve time. Order of the kept edges follows :attr:`edges`. With
        :attr:`self_when_supervised` a ``self`` edge is always kept (a supervised target needs it).
        """
        by_target: dict[str, list[int]] = {}
        for index, edge in enumerate(self.edges):
            by_target.setdefault(edge.target, []).append(index)
        kept: set[int] = set()
        for indices in by_target.values():
            # Best first; among equal affinities the smaller source set dominates the larger.
            ranked = sorted(indices, key=lambda i: (-self.edges[i].affinity,
                                                    len(self.edges[i].sources), i))
            chosen: list[frozenset[str]] = []
            for index in ranked:
                sources = frozenset(self.edges[index].sources)
                keep_self = self.self_when_supervised and self.edges[index].is_self
                if any(other <= sources for other in chosen) and not keep_self:
                    continue
                chosen.append(sources)
                kept.add(index)
        return tuple(edge for index, edge in enumerate(self.edges) if index in kept)

    def size(self) -> tuple[int, int]:
        """(variables, linear constraints) of the BIP as the backends build it."""
        edges = len(self.undominated_edges())
        rows = edges + len(self.targets) + 1
        return edges + len(self.tasks), rows + (len(self.targets) if self.self_when_supervised
                                                else 0)

    def edge_reward(self, edge: Edge) -> float:
        """What choosing ``edge`` adds to the objective (:attr:`reward`, times importance)."""
        value = edge.affinity
        if self.reward == "sqrt":
            value = min(max(math.sqrt(max(value, 0.0)), _SQRT_FLOOR), 1.0)
        return self.importance[edge.target] * value

    def objective_of(self, edges: Mapping[str, Edge]) -> float:
        """Σ reward of one chosen edge per target (:meth:`edge_reward`)."""
        return sum(self.edge_reward(edge) for edge in edges.values())


@dataclass(frozen=True)
class TaxonomySolution:
    """An optimal (or best found) taxonomy.

    Attributes:
        status: ``"optimal"``, or ``"time_limit"`` when a limit stopped the search early.
        objective: Σ reward over the chosen edges (:meth:`TaxonomyProblem.edge_reward`).
        supervised: Tasks to supervise (the union of the chosen edges' sources), sorted.
        edges: The chosen incoming edge per target.
        solver: The backend that produced it (``highs``, ``gurobi``, ``brute_force``).
        seconds: Wall time of the backend's solve.
        budget: The budget of the problem.
        cost: Σ label cost of the supervised tasks.
        notes: One-line messages from the solve (e.g. a fallback from Gurobi to HiGHS).
    """

    status: str
    objective: float
    supervised: tuple[str, ...]
    edges: Mapping[str, Edge]
    solver: str
    seconds: float
    budget: float
    cost: float
    notes: tuple[str, ...] = ()

    @classmethod
    def from_edges(cls, problem: TaxonomyProblem, edges: Mapping[str, Edge], *, status: str,
                   solver: str, seconds: float, notes: tuple[str, ...] = ()) -> TaxonomySolution:
        """Assemble a solution from one chosen edge per target (supervised set derived)."""
        supervised = tuple(sorted({s for edge in edges.values() for s in edge.sources}))
        ordered = {t: edges[t] for t in problem.targets}
        return cls(
            status=status,
            objective=problem.objective_of(ordered),
            supervised=supervised,
            edges=MappingProxyType(ordered),
            solver=solver,
            seconds=seconds,
            budget=problem.budget,
            cost=sum(problem.cost[s] for s in supervised),
            notes=notes,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (``edges`` as a list in target order)."""
        return {
            "status": self.status,
            "objective": self.objective,
            "supervised": list(self.supervised),
            "edges": [edge.to_dict() for edge in self.edges.values()],
            "solver": self.solver,
            "seconds": self.seconds,
            "budget": None if math.isinf(self.budget) else self.budget,
            "cost": self.cost,
            "notes": list(self.notes),
        }
