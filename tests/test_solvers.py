import dataclasses
import itertools
import math
import sys

import numpy as np
import pytest

from taskonomy.solvers import (
    Edge,
    InfeasibleBudgetError,
    TaxonomyProblem,
    smallest_feasible_budget,
    solve,
    solve_brute_force,
)
from taskonomy.solvers import gurobi as gurobi_backend

needs_gurobi = pytest.mark.skipif(not gurobi_backend.gurobi_available(),
                                  reason="gurobipy is not importable or not licensed here")


def random_problem(seed: int) -> TaxonomyProblem:
    """A small random instance: 3–6 tasks, orders ≤ 2, random weights, costs and budget."""
    rng = np.random.default_rng(seed)
    n_tasks = int(rng.integers(3, 7))
    tasks = [f"t{i}" for i in range(n_tasks)]
    n_targets = int(rng.integers(1, n_tasks + 1))
    targets = list(rng.choice(tasks, size=n_targets, replace=False))
    sources = [t for t in tasks if t not in targets]
    edges = []
    for target in targets:
        if rng.random() < 0.9:  # sometimes a target cannot be supervised itself
            edges.append(Edge(target, (target,), float(rng.random()), 0, "self"))
        for source in tasks:
            if source != target and rng.random() < 0.7:
                edges.append(Edge(target, (source,), float(rng.random()), 1, source))
        for pair in itertools.combinations([t for t in tasks if t != target], 2):
            if rng.random() < 0.4:
                edges.append(Edge(target, pair, float(rng.random()), 2, "+".join(pair)))
        if not any(e.target == target for e in edges):
            edges.append(Edge(target, (target,), float(rng.random()), 0, "self"))
    importance = {t: float(rng.choice([0.5, 1.0, 2.0])) for t in targets}
    cost = {t: float(rng.integers(1, 4)) for t in tasks}
    budget = float(rng.integers(0, 2 * n_tasks))
    return TaxonomyProblem(tuple(targets), tuple(sources), tuple(edges), importance, cost, budget)


def _check_agreement(problem, solver):
    try:
        expected = solve_brute_force(problem)
    except InfeasibleBudgetError as error:
        with pytest.raises(InfeasibleBudgetError) as raised:
            solve(problem, solver)
        assert raised.value.min_budget == pytest.approx(error.min_budget)
        assert smallest_feasible_budget(problem) == pytest.approx(error.min_budget)
        return "infeasible"
    got = solve(problem, solver)
    assert got.objective == pytest.approx(expected.objective, abs=1e-9)
    assert got.status == "optimal"
    # The answer is a valid taxonomy: one edge per target, sources supervised, within budget.
    assert set(got.edges) == set(problem.targets)
    for target, edge in got.edges.items():
        assert edge.target == target and set(edge.sources) <= set(got.supervised)
    assert got.cost <= problem.budget + 1e-9
    return "optimal"


def test_highs_matches_brute_force_on_random_instances():
    outcomes = [_check_agreement(random_problem(seed), "highs") for seed in range(80)]
    # The instance generator must exercise both outcomes, with most instances feasible.
    assert outcomes.count("optimal") >= 50 and outcomes.count("infeasible") >= 3


@pytest.mark.gurobi
@needs_gurobi
def test_gurobi_matches_brute_force_on_random_instances():
    for seed in range(50):
        _check_agreement(random_problem(seed), "gurobi")


@pytest.mark.parametrize("solver", ["highs", pytest.param("gurobi", marks=needs_gurobi)])
def test_a_budget_just_short_of_a_set_does_not_buy_it(solver: str) -> None:
    # Gurobi's default tolerances bought three tasks of 0.1 for 0.2999999.
    edges = tuple(e for t in "abc" for e in (Edge(t, (t,), 1.0, 0, "self"),
                                               Edge(t, ("z",), 0.01, 1, "z")))
    costs = {"a": 0.1, "b": 0.1, "c": 0.1, "z": 0.1}
    problem = TaxonomyProblem(("a", "b", "c"), ("z",), edges, None, costs, 0.2999999)
    assert len(solve(problem, solver).supervised) == 2
    assert len(solve(problem.with_budget(0.3), solver).supervised) == 3  # 0.1 * 3 in floats


def _tiny() -> TaxonomyProblem:
    edges = (
        Edge("a", ("a",), 0.6, 0, "self"),
        Edge("a", ("b",), 0.3, 1, "b"),
        Edge("c", ("c",), 0.5, 0, "self"),
        Edge("c", ("b",), 0.2, 1, "b"),
        Edge("c", ("a", "b"), 0.45, 2, "a+b"),
    )
    return TaxonomyProblem(("a", "c"), ("b",), edges, budget=2)


def test_known_small_answer_and_higher_order_edge():
    solution = solve(_tiny(), "highs")
    # Budget 2: {a, c} self-supervised gives 0.6 + 0.5 = 1.1, more than {a, b} with the
    # order-2 edge into c (0.6 + 0.45) or {b, c} (0.3 + 0.5).
    assert solution.supervised == ("a", "c")
    assert solution.objective == pytest.approx(1.1)
    cheaper = solve(_tiny().with_budget(1), "highs")
    assert cheaper.supervised == ("b",) and cheaper.objective == pytest.approx(0.5)
    record = solution.to_dict()
    assert record["edges"][0] == {"target": "a", "sources": ["a"], "label": "self", "order": 0,
                                  "affinity": 0.6}


def test_importance_changes_the_choice():
    problem = TaxonomyProblem(("a", "c"), ("b",), _tiny().edges, {"c": 10.0}, {"a": 2.0}, 2)
    solution = solve(problem, "highs")
    # a costs 2 now: only {c} or {b} or {b, c} fit; c's self edge weighs 10×.
    assert solution.supervised == ("b", "c")
    assert solution.objective == pytest.approx(0.3 + 10 * 0.5)


def test_infeasible_budget_names_smallest_feasible_budget():
    problem = _tiny().with_budget(0)
    with pytest.raises(InfeasibleBudgetError, match="smallest budget .* is 1") as raised:
        solve(problem, "highs")
    assert raised.value.min_budget == 1
    assert isinstance(raised.value, ValueError)  # the CLI prints it as bad input


def test_dominated_edges_are_pruned_without_changing_the_optimum():
    edges = _tiny().edges + (
        Edge("c", ("a", "b"), 0.1, 2, "b+a"),  # dominated by b → c (0.2)
        Edge("a", ("b",), 0.3, 1, "b-again"),  # a tie with b → a: one of them stays
    )
    problem = TaxonomyProblem(("a", "c"), ("b",), edges, budget=1)
    kept = problem.undominated_edges()
    assert Edge("c", ("a", "b"), 0.1, 2, "b+a") not in kept
    assert sum(e.target == "a" and e.sources == ("b",) for e in kept) == 1
    assert solve(problem, "highs").objective == pytest.approx(solve_brute_force(problem).objective)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TaxonomyProblem((), (), ()), "at least one target"),
        (lambda: TaxonomyProblem(("a", "c"), ("b",), _tiny().edges[:2]), r"\['c'\] have no"),
        (lambda: TaxonomyProblem(("a",), (), (Edge("a", ("b",), 1, 1, "b"),)), "neither"),
        (lambda: TaxonomyProblem(("a",), (), (Edge("a", ("a", "b"), 1, 0, "self"),)), "self"),
        (lambda: TaxonomyProblem(("a",), (), _tiny().edges[:1], {"z": 1.0}), r"unknown task"),
        (lambda: TaxonomyProblem(("a",), (), _tiny().edges[:1], {}, {"a": -1.0}), "≥ 0"),
        (lambda: TaxonomyProblem(("a",), (), _tiny().edges[:1], budget=-1), "budget"),
        (lambda: TaxonomyProblem(("a",), (), (Edge("a", ("a",), math.nan, 0, "self"),)), "finite"),
    ],
)
def test_problem_validation(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_unknown_solver_is_rejected():
    with pytest.raises(ValueError, match="valid: auto, highs, gurobi"):
        solve(_tiny(), "cplex")


def test_auto_without_gurobipy_falls_back_with_one_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "gurobipy", None)  # import gurobipy → ImportError
    messages = []
    solution = solve(_tiny(), "auto", log=messages.append)
    assert solution.solver == "highs" and len(messages) == 1
    assert "HiGHS" in messages[0] and solution.notes == tuple(messages)


def test_the_fallback_keeps_the_time_limit(monkeypatch):
    from taskonomy.solvers import api

    monkeypatch.setattr(api, "gurobi_available", lambda: False)
    seen = []

    def spy(problem, **kwargs):
        seen.append(kwargs.get("time_limit"))
        return real(problem, **kwargs)

    real = api.solve_highs
    monkeypatch.setattr(api, "solve_highs", spy)
    solve(_tiny(), "auto", time_limit=7.0, log=lambda message: None)
    assert seen == [7.0]


def test_brute_force_may_supervise_every_task():
    # Both targets' own networks fit the budget exactly: the best set is all tasks.
    edges = (Edge("a", ("a",), 0.6, 0, "self"), Edge("b", ("b",), 0.5, 0, "self"))
    problem = TaxonomyProblem(("a", "b"), (), edges, budget=2)
    solution = solve_brute_force(problem)
    assert set(solution.supervised) == {"a", "b"}
    assert solution.objective == pytest.approx(solve(problem, "highs").objective)


@pytest.mark.gurobi
@needs_gurobi
def test_size_limited_licence_falls_back_to_highs(monkeypatch):
    import gurobipy

    def too_large(self):
        raise gurobipy.GurobiError(10010, "Model too large for size-limited license")

    monkeypatch.setattr(gurobipy.Model, "optimize", too_large)
    messages = []
    solution = solve(_tiny(), "auto", log=messages.append)
    assert solution.solver == "highs" and solution.objective == pytest.approx(1.1)
    assert len(messages) == 1 and "size-limited" in messages[0]


@pytest.mark.gurobi
@needs_gurobi
def test_real_size_limit_falls_back_on_a_large_problem():
    rng = np.random.default_rng(0)
    targets = tuple(f"t{i}" for i in range(30))
    edges = []
    for target in targets:
        edges.append(Edge(target, (target,), 0.5, 0, "self"))
        # Increasing affinity with increasing source sets: nothing is dominated.
        for k, pair in enumerate(itertools.combinations(targets, 2)):
            if k < 80 and target not in pair:
                edges.append(Edge(target, pair, 0.01 + 0.001 * k + rng.random() * 1e-4, 2,
                                  "+".join(pair)))
    problem = TaxonomyProblem(targets, (), tuple(edges), budget=5)
    assert max(problem.size()) > 2000
    messages = []
    solution = solve(problem, "gurobi", log=messages.append)
    if gurobi_backend.gurobi_available() and not messages:
        pytest.skip("this Gurobi licence is not size-limited")
    assert solution.solver == "highs" and "size-limited" in messages[0]


@pytest.mark.gurobi
@needs_gurobi
@pytest.mark.parametrize("name", ["paper-2018", "paper-2018-16k"])
def test_highs_and_gurobi_agree_on_the_paper_scale_problem(name):
    from taskonomy.analysis.affinity_table import load_affinities
    from taskonomy.analysis.taxonomy import build_problem

    problem = build_problem(load_affinities(name), max_order=4)
    # The full paper-scale program fits the pip licence (≤ 2000 variables and constraints).
    assert max(problem.size()) <= 2000 and len(problem.edges) > 700
    for budget in (1, 4, 8, 14):
        highs = solve(problem.with_budget(budget), "highs")
        grb = solve(problem.with_budget(budget), "gurobi", log=pytest.fail)
        assert grb.solver == "gurobi"
        assert grb.objective == pytest.approx(highs.objective, abs=1e-9)
        assert grb.status == highs.status == "optimal"


def test_brute_force_is_a_solver_choice_for_small_problems_only():
    problem = random_problem(3)
    try:
        expected = solve_brute_force(problem)
    except InfeasibleBudgetError:
        problem = TaxonomyProblem(problem.targets, problem.sources, problem.edges,
                                  problem.importance, problem.cost, sum(problem.cost.values()))
        expected = solve_brute_force(problem)
    assert solve(problem, "brute_force").objective == pytest.approx(expected.objective)
    tasks = tuple(f"t{i}" for i in range(17))
    big = TaxonomyProblem(tasks, (), tuple(Edge(t, (t,), 1.0, 0, "self") for t in tasks),
                          dict.fromkeys(tasks, 1.0), dict.fromkeys(tasks, 1.0), 17.0)
    with pytest.raises(ValueError, match=r"2\^17 sets.*solve with 'highs'"):
        solve(big, "brute_force")
    assert solve(big, "highs").objective == pytest.approx(17.0)


def _as_authors_solver(problem: TaxonomyProblem) -> TaxonomyProblem:
    return dataclasses.replace(problem, reward="sqrt", self_when_supervised=True)


def test_the_authors_solvers_program_matches_brute_force_on_random_instances():
    outcomes = [_check_agreement(_as_authors_solver(random_problem(seed)), "highs")
                for seed in range(80)]
    assert outcomes.count("optimal") >= 50 and outcomes.count("infeasible") >= 3


def test_the_authors_solvers_program_rewards_sqrt_and_keeps_supervised_targets_on_self():
    # b → a (0.64) beats a's own network (0.36), and a is supervised anyway as c's source.
    edges = (Edge("a", ("a",), 0.36, 0, "self"), Edge("a", ("b",), 0.64, 1, "b"),
             Edge("c", ("a",), 0.25, 1, "a"), Edge("c", ("c",), 0.01, 0, "self"))
    paper = TaxonomyProblem(("a", "c"), ("b",), edges, budget=2)
    chosen = solve(paper, "highs")
    assert chosen.supervised == ("a", "b") and chosen.edges["a"].label == "b"
    assert chosen.objective == pytest.approx(0.64 + 0.25)
    authors = solve(_as_authors_solver(paper), "highs")
    # A supervised task keeps its own network: a → a (√.36) and a → c (√.25) beat b → a with
    # c → c (√.64 + √.01) — and the reward is √affinity, floored at 1e-5.
    assert authors.supervised == ("a",) and authors.edges["a"].is_self
    assert authors.objective == pytest.approx(0.6 + 0.5)
    assert _as_authors_solver(paper).edge_reward(Edge("c", ("c",), 0.0, 0, "self")) == 1e-5
    with pytest.raises(ValueError, match="unknown reward 'log'; valid: affinity, sqrt"):
        dataclasses.replace(paper, reward="log")
