import json
import re

import numpy as np
import pandas as pd
import pytest

from taskonomy.analysis.affinity_table import AffinityTable, load_affinities
from taskonomy.analysis.taxonomy import (
    budget_sweep,
    build_problem,
    missing_transfers,
    parse_range,
    place_novel_task,
    sweep_frame,
)
from taskonomy.experiments.cli import main
from taskonomy.solvers import solve


def _results_table() -> AffinityTable:
    """A small results table of ours: three tasks, complete first order, one order-2 edge."""
    rows = []
    tasks = ("normal", "reshading", "depth_zbuffer")
    for target in tasks:
        rows += [(target, "self", 0.5, 0.5, 0.9), (target, "random", 0.02, 0.0, 0.1)]
        others = [t for t in tasks if t != target]
        rows += [(target, others[0], 0.2, 0.3, 0.7), (target, others[1], 0.18, 0.25, 0.6)]
        rows.append((target, "+".join(others), 0.1, 0.35, 0.8))
    return AffinityTable.from_frame(
        pd.DataFrame(rows, columns=["target", "sources", "affinity", "quality", "gain"]))


def _run(capsys, *argv):
    code = main(["taxonomy", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_output_is_one_object_with_the_answer(capsys):
    code, out, _ = _run(capsys, "--affinities", "paper-2018", "--budget", "3", "--json",
                        "--solver", "highs")
    assert code == 0
    record = json.loads(out)  # exactly one JSON document on stdout
    assert record["status"] == "optimal" and len(record["supervised"]) <= 3
    assert {e["target"] for e in record["edges"]} == set(load_affinities("paper-2018").targets())
    for edge in record["edges"]:
        assert set(edge["sources"]) <= set(record["supervised"])
    expected = solve(build_problem(load_affinities("paper-2018"), 3), "highs")
    assert record["objective"] == pytest.approx(expected.objective)


def test_out_writes_json_and_figures(tmp_path, capsys):
    code, out, _ = _run(capsys, "--affinities", "paper-2018-1k", "--budget", "4",
                        "--max-order", "3", "--out", str(tmp_path), "--solver", "highs")
    assert code == 0 and "objective" in out and "supervised" in out
    record = json.loads((tmp_path / "taxonomy.json").read_text())
    assert max(e["order"] for e in record["edges"]) <= 3
    for suffix in ("png", "svg"):
        assert (tmp_path / f"taxonomy.{suffix}").stat().st_size > 10_000
    assert (tmp_path / "taxonomy.png").read_bytes()[:4] == b"\x89PNG"


def test_options_reach_the_problem(tmp_path, capsys):
    csv = _results_table().to_csv(tmp_path / "results" / "affinities.csv")
    code, out, _ = _run(capsys, "--affinities", str(csv.parent), "--budget", "1", "--json",
                        "--targets", "normal,reshading", "--sources", "depth_zbuffer,normal",
                        "--importance", "normal=3", "--cost", "depth_zbuffer=1,normal=1",
                        "--solver", "highs")
    record = json.loads(out)
    assert code == 0 and record["importance"] == {"normal": 3.0, "reshading": 1.0}
    # the label costs asked for, beside the solution's total cost
    assert record["label_cost"] == {"normal": 1.0, "reshading": 1.0, "depth_zbuffer": 1.0}
    assert record["cost"] == 1.0
    # Budget 1 with normal weighted 3×: supervise normal (self 0.5·3) and transfer
    # normal → reshading (0.2) beats supervising depth_zbuffer for both (0.18·3 + 0.2).
    assert record["supervised"] == ["normal"]
    assert record["objective"] == pytest.approx(3 * 0.5 + 0.2)
    # Without normal among the sources, it cannot feed reshading: depth_zbuffer feeds both.
    code, out, _ = _run(capsys, "--affinities", str(csv), "--budget", "1", "--json",
                        "--targets", "normal,reshading", "--sources", "depth_zbuffer",
                        "--importance", "normal=3", "--solver", "highs")
    record = json.loads(out)
    assert record["supervised"] == ["depth_zbuffer"]
    assert record["objective"] == pytest.approx(3 * 0.18 + 0.18)


def test_json_edges_carry_their_rows_quality_and_gain(tmp_path, capsys):
    # Distinct quality and gain in every row (never equal to each other): each JSON edge must
    # carry its own row's pair, the right way round, and the means must be theirs.
    frame = _results_table().frame.reset_index(drop=True)
    frame["quality"] = 0.11 + 0.01 * frame.index
    frame["gain"] = 0.93 - 0.02 * frame.index
    assert not (frame["quality"] == frame["gain"]).any()
    csv = AffinityTable.from_frame(frame).to_csv(tmp_path / "affinities.csv")
    rows = AffinityTable.read_csv(csv).frame.set_index(["target", "sources"])
    code, out, _ = _run(capsys, "--affinities", str(csv), "--budget", "2", "--json",
                        "--solver", "highs")
    record = json.loads(out)
    assert code == 0 and len(record["edges"]) == 3
    # Budget 2 serves one target by a transfer: not every edge is a self edge.
    assert {e["label"] for e in record["edges"]} != {"self"}
    for edge in record["edges"]:
        row = rows.loc[(edge["target"], edge["label"])]
        assert edge["quality"] == pytest.approx(row["quality"])
        assert edge["gain"] == pytest.approx(row["gain"])
    assert record["mean_quality"] == pytest.approx(np.mean([e["quality"] for e in record["edges"]]))
    assert record["mean_gain"] == pytest.approx(np.mean([e["gain"] for e in record["edges"]]))


def test_budget_sweep_json_reports_each_status(capsys):
    code, out, _ = _run(capsys, "--affinities", "paper-2018", "--budget-sweep", "0..3",
                        "--json", "--solver", "highs")
    record = json.loads(out)
    assert code == 0 and [s["budget"] for s in record["solves"]] == [0, 1, 2, 3]
    assert [s["status"] for s in record["solves"]] == ["infeasible"] + ["optimal"] * 3
    assert record["solves"][0]["min_budget"] == 1
    objectives = [s["objective"] for s in record["solves"][1:]]
    assert objectives == sorted(objectives)  # more budget never hurts


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "2", "--targets", "normal,warp"], "valid targets in these affinities: "),
        (["--budget", "2", "--sources", "warp"], "valid sources"),
        (["--budget", "0"], "smallest budget .* is 1"),
        (["--budget", "2", "--importance", "normal"], "task=number"),
        (["--budget", "2", "--cost", "warp=1"], "unknown task"),
        (["--budget-sweep", "5..1"], "runs backwards"),
        ([], "exactly one of --budget"),
        (["--budget", "2", "--affinities", "nowhere.csv"], "neither a shipped data set"),
        (["--budget", "2", "--max-order", "0"], "max-order"),
        (["--budget", "2", "--time-limit", "-1"], "positive number of seconds"),
        (["--budget-sweep", "1..2", "--time-limit", "0"], "positive number of seconds"),
    ],
)
def test_bad_input_exits_2_with_a_named_problem(capsys, argv, message):
    code, out, err = _run(capsys, "--affinities", "paper-2018", *argv)
    assert code == 2 and out == ""
    assert re.search(message, err), err


def test_missing_transfers_are_listed(tmp_path, capsys):
    frame = _results_table().frame
    frame = frame[~((frame["target"] == "normal") & (frame["sources"] == "reshading"))]
    csv = AffinityTable.from_frame(frame).to_csv(tmp_path / "affinities.csv")
    assert missing_transfers(AffinityTable.read_csv(csv), ["normal"],
                             ["reshading", "normal"]) == [("reshading", "normal")]
    code, _, err = _run(capsys, "--affinities", str(csv), "--budget", "2")
    assert code == 2 and "(reshading → normal)" in err


def test_sources_restriction_names_targets_without_edges():
    frame = _results_table().frame
    frame = frame[~((frame["target"] == "normal") & (frame["sources"] == "self"))]
    table = AffinityTable.from_frame(frame)
    with pytest.raises(ValueError, match=r"\['normal'\] have no eligible incoming edge"):
        build_problem(table, 2, targets=["normal"], sources=["normal"], require_complete=False)


def test_target_only_task_is_served_by_a_transfer_never_by_itself():
    # normal is a target but not among the sources: the paper's target-only task (T − T∩S).
    table = _results_table()
    assert missing_transfers(table, ["normal"], ["reshading", "depth_zbuffer"]) == []
    frame = table.frame  # nor is its own `self` row needed: it cannot be supervised
    no_self = AffinityTable.from_frame(
        frame[~((frame["target"] == "normal") & (frame["sources"] == "self"))])
    assert missing_transfers(no_self, ["normal"], ["reshading", "depth_zbuffer"]) == []
    problem = build_problem(table, 1, targets=["normal"],
                            sources=["reshading", "depth_zbuffer"])
    assert all(not edge.is_self for edge in problem.edges)
    solution = solve(problem, "highs")
    assert solution.supervised == ("reshading",)  # the better of the two first-order sources
    assert solution.edges["normal"].sources == ("reshading",)
    # With normal among the sources its self edge (affinity 0.5) wins at the same budget.
    assert solve(build_problem(table, 1, targets=["normal"]), "highs").supervised == ("normal",)


def test_random_is_never_an_edge_and_is_free_inside_source_sets():
    problem = build_problem(load_affinities("paper-2018-16k"), 5)
    assert all("random" not in edge.sources for edge in problem.edges)
    assert all(edge.label != "random" for edge in problem.edges)
    with_random = [e for e in problem.edges if "random" in e.label.split("+")]
    assert with_random and all(len(e.sources) == e.order - 1 for e in with_random)


def test_the_supervision_api_convention_builds_the_authors_solvers_program():
    table = load_affinities("paper-2018-16k")
    problem = build_problem(table, 2, convention="supervision-api")
    assert problem.reward == "sqrt" and problem.self_when_supervised
    assert "random" in problem.sources and "class_selected" not in problem.tasks
    assert not any(edge.label == edge.target for edge in problem.edges)  # no t → t
    random_edges = [e for e in problem.edges if e.label == "random"]
    assert len(random_edges) == 22 and all(e.sources == ("random",) for e in random_edges)
    assert any(len(e.sources) > 1 and "random" in e.sources for e in problem.edges)
    # Budget 2 of the 16k data: the authors' program (emulated from their taxonomy_api.py in a
    # review) supervises denoising and normal; the paper's text gives another pair.
    authors = solve(problem, "highs")
    assert authors.supervised == ("denoising", "normal")
    assert solve(build_problem(table, 2), "highs").supervised != authors.supervised
    for target, edge in authors.edges.items():  # a supervised target keeps its own network
        assert edge.is_self == (target in authors.supervised)


def test_convention_option_reaches_the_record(capsys):
    code, out, _ = _run(capsys, "--budget", "2", "--convention", "supervision-api", "--json")
    record = json.loads(out)
    assert code == 0 and record["convention"] == "supervision-api"
    assert record["supervised"] == ["denoising", "normal"] and "random" in record["sources"]
    with pytest.raises(SystemExit):
        _run(capsys, "--budget", "2", "--convention", "website")
    assert "invalid choice: 'website'" in capsys.readouterr().err


def test_shipped_16k_sweep_1_to_26_max_order_4():
    table = load_affinities("paper-2018-16k")
    problem = build_problem(table, max_order=4)
    assert len(problem.targets) == 22
    assert max(e.order for e in problem.edges) == 4
    points = budget_sweep(problem, parse_range("1..26"), solver="highs")
    frame = sweep_frame(table, points)
    assert list(frame["status"]) == ["optimal"] * 26
    assert frame["objective"].is_monotonic_increasing
    # Importance 1 under the paper's program: the objective sums the edges' affinities.
    assert np.allclose(frame["mean_affinity"], frame["objective"] / len(problem.targets))
    # Once every target can afford its best edge, more budget changes nothing.
    assert frame["objective"].iloc[-1] == pytest.approx(
        sum(table.candidates(t)["affinity"].iloc[0] for t in table.targets()), rel=0.05)


def test_novel_task_is_ranked_and_placed():
    frame = _results_table().frame
    novel = pd.DataFrame([("sketch", "self", 0.3), ("sketch", "random", 0.05),
                          ("sketch", "normal", 0.45), ("sketch", "reshading", 0.2)],
                         columns=["target", "sources", "affinity"])
    table = AffinityTable.from_frame(pd.concat([frame, novel], ignore_index=True))
    placement = place_novel_task(table, "sketch", budget=3, solver="highs")
    assert list(placement.ranking["sources"][:2]) == ["normal", "self"]
    assert "sketch" in placement.solution.edges
    assert placement.solution.edges["sketch"].label == "normal"
    with pytest.raises(ValueError, match="no transfers into 'nothing'"):
        place_novel_task(table, "nothing", budget=3)
    # Its own network, however good, is not an option: the novel task has few labels.
    mine = novel.assign(affinity=np.where(novel["sources"] == "self", 0.9, novel["affinity"]))
    table = AffinityTable.from_frame(pd.concat([frame, mine], ignore_index=True))
    placement = place_novel_task(table, "sketch", budget=3, solver="highs")
    assert not placement.solution.edges["sketch"].is_self
    assert "sketch" not in placement.solution.supervised


def test_gurobi_banner_never_reaches_stdout(capsys):
    pytest.importorskip("gurobipy")
    code, out, _ = _run(capsys, "--affinities", "paper-2018", "--budget", "2", "--json",
                        "--solver", "auto")
    assert code == 0 and json.loads(out)["solver"] in ("gurobi", "highs")


def test_highs_is_the_default_solver(capsys):
    code, out, err = _run(capsys, "--affinities", "paper-2018", "--budget", "2", "--json")
    assert code == 0 and json.loads(out)["solver"] == "highs" and "Gurobi" not in err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["taxonomy", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in ("--affinities", "--budget-sweep", "--max-order", "--importance", "--cost",
                   "--solver", "--out", "--json"):
        assert option in out


def test_sweep_out_writes_budget_curve(tmp_path, capsys):
    code, out, _ = _run(capsys, "--affinities", "paper-2018", "--budget-sweep", "1,3",
                        "--out", str(tmp_path), "--solver", "highs")
    assert code == 0 and "budget sweep" in out
    curve = pd.read_csv(tmp_path / "budget_curve.csv")
    assert list(curve["budget"]) == [1, 3] and curve["mean_gain"].between(0, 1).all()
    assert (tmp_path / "budget_curve.png").stat().st_size > 10_000
    assert len(json.loads((tmp_path / "taxonomy.json").read_text())["solves"]) == 2


def test_a_target_with_its_own_network_may_be_supervised_though_no_transfer_reads_it():
    # c has a `self` row but no transfer uses it as a source (say its c → c run failed): it is
    # still in S by default, so at budget 2 it is supervised rather than served by a → c.
    rows = [("a", "self", 0.6), ("b", "self", 0.6), ("c", "self", 0.7),
            ("a", "b", 0.4), ("b", "a", 0.4), ("c", "a", 0.3), ("c", "b", 0.2)]
    table = AffinityTable.from_frame(pd.DataFrame(
        [(t, s, a, 0.5, 0.5) for t, s, a in rows],
        columns=["target", "sources", "affinity", "quality", "gain"]))
    assert table.sources() == ["a", "b"] and table.supervisable() == ["a", "b", "c"]
    solution = solve(build_problem(table, 2, require_complete=False), "highs")
    assert "c" in solution.supervised and solution.edges["c"].is_self


def test_a_fallback_note_keeps_its_brackets(capsys, monkeypatch):
    from taskonomy.solvers import SolverUnavailableError, api

    def unavailable(*args, **kwargs):
        raise SolverUnavailableError(
            "not_installed", "gurobipy is not installed (pip install 'taskonomy[gurobi]')")

    monkeypatch.setattr(api, "solve_gurobi", unavailable)
    code, _, err = _run(capsys, "--affinities", "paper-2018", "--budget", "3", "--solver",
                        "gurobi")
    assert code == 0 and "pip install 'taskonomy[gurobi]'" in " ".join(err.split())
    code, _, err = _run(capsys, "--affinities", "paper-2018", "--budget-sweep", "0..3",
                        "--solver", "gurobi")
    assert code == 0 and err.count("not installed") == 1  # HiGHS from the infeasible budget 0 on


def test_a_time_limit_without_a_solution_is_one_line_and_a_sweep_point(capsys, monkeypatch):
    from scipy.optimize import OptimizeResult

    from taskonomy.solvers import highs

    monkeypatch.setattr(highs, "_run", lambda *args: OptimizeResult(
        status=1, x=None, message="Time limit reached"))
    code, _, err = _run(capsys, "--affinities", "paper-2018", "--budget", "3", "--solver",
                        "highs", "--time-limit", "0.001")
    assert code == 2 and "HiGHS found no taxonomy within the time limit of 0.001 s" in err
    problem = build_problem(load_affinities("paper-2018"), max_order=1)
    points = budget_sweep(problem, [2, 3], solver="highs", time_limit=0.001)
    assert [(p.status, p.solution) for p in points] == [("time_limit", None)] * 2
    code, out, _ = _run(capsys, "--affinities", "paper-2018", "--budget-sweep", "2..3",
                        "--solver", "highs", "--time-limit", "0.001", "--max-order", "1")
    assert code == 0 and out.count("no solution within --time-limit") == 2


@pytest.mark.parametrize("budget", [8, 21])
def test_taxonomy_graph_sets_each_diamond_beside_its_target_and_explains_its_boxes(budget):
    from taskonomy.analysis.taxonomy_figures import plot_taxonomy

    solution = solve(build_problem(load_affinities("paper-2018-16k"), budget), "highs")
    figure = plot_taxonomy(solution)
    axes = figure.axes[0]
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    served = [t for t, e in solution.edges.items() if e.is_self]
    assert ("supervised, serves itself (self)" in labels) == bool(served)
    assert ("supervised as a source only" in labels) == (len(served) < budget)
    assert "(0.123): the edge's affinity" in labels
    # One diamond per distinct higher-order source set, clear of the others (at budget 21
    # three nearly overlapped); rows are a unit apart.
    spots = np.array([c.get_offsets()[0] for c in axes.collections])
    hubs = {(e.sources, e.order) for e in solution.edges.values()
            if not e.is_self and len(e.sources) > 1}
    assert len(spots) == len(hubs) > 0
    gaps = [np.hypot(*(a - b)) for i, a in enumerate(spots) for b in spots[i + 1:]]
    assert min(gaps, default=1.0) >= 0.9  # the former layout: 0.63
