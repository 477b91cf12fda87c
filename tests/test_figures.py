import json

import numpy as np
import pandas as pd
import pytest

from taskonomy.analysis.affinities import compute_affinities
from taskonomy.analysis.affinity_table import load_affinities
from taskonomy.analysis.figures import (
    all_figures,
    best_transfers,
    budget_curve_figure,
    similarity_tree,
)
from taskonomy.analysis.records import RunRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ["normal", "depth_zbuffer", "reshading", "edge_texture", "keypoints2d"]


def _records(seed=0, n=120):
    """Transfers among 5 tasks with planted quality: 3D sources help 3D targets, 2D help 2D."""
    rng = np.random.default_rng(seed)
    keys = [f"img{i:03d}" for i in range(n)]
    group = {"normal": 0, "depth_zbuffer": 0, "reshading": 0, "edge_texture": 1, "keypoints2d": 1}
    recs = []

    def add(run_id, role, target, sources, offset):
        losses = dict(zip(keys, rng.random(n) + offset, strict=True))
        recs.append(RunRecord(run_id=run_id, role=role, target=target, sources=sources,
                              regime="1k", status="finished", per_image_losses=losses))

    for t in TASKS:
        for s in TASKS:
            add(f"{t}-{s}", "transfer", t, (s,), 0.1 if group[s] == group[t] else 0.7)
        add(f"{t}-random", "baseline", t, ("random",), 1.5)
        add(f"{t}-pixels", "baseline", t, ("pixels",), 0.9)
        add(f"{t}-self", "baseline", t, ("self",), 0.0)
    return recs


def _check_outputs(paths, names):
    by_name = {p.name for p in paths}
    for name in names:
        assert f"{name}.png" in by_name and f"{name}.svg" in by_name
    for path in paths:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC
        if path.suffix == ".svg":
            assert "<svg" in path.read_text()[:500]


def test_figures_from_constructed_records(tmp_path):
    table = compute_affinities(_records()).table
    sweep = pd.DataFrame({"budget": [1, 2, 3], "mean_quality": [0.2, 0.3, 0.45],
                          "mean_gain": [0.8, 0.85, 0.9], "objective": [1.0, 1.5, 2.0],
                          "status": ["optimal"] * 3})
    paths = all_figures(table, tmp_path, sweep=sweep, chosen={"normal": "reshading"})
    _check_outputs(paths, ["affinity_before_ahp", "affinity_after_ahp", "quality_gain",
                           "quality_gain_taxonomy", "similarity_tree", "budget_curve"])
    # the numbers beside the figures are the table's numbers
    after = pd.read_csv(tmp_path / "affinity_after_ahp.csv", index_col=0)
    expected = table.first_order_matrix("affinity")
    assert after.loc["reshading", "normal"] == pytest.approx(expected.loc["reshading", "normal"],
                                                             rel=1e-5)
    before = pd.read_csv(tmp_path / "affinity_before_ahp.csv", index_col=0)
    assert before.loc["edge_texture", "keypoints2d"] > before.loc["normal", "keypoints2d"]
    tree = json.loads((tmp_path / "similarity_tree.json").read_text())
    clusters = similarity_tree(table, n_clusters=2)["clusters"]
    assert clusters["normal"] == clusters["depth_zbuffer"] == clusters["reshading"]
    assert clusters["edge_texture"] == clusters["keypoints2d"] != clusters["normal"]
    assert sorted(tree["leaves"]) == sorted(TASKS)
    chosen = pd.read_csv(tmp_path / "quality_gain_taxonomy.csv", index_col=0)
    assert chosen.loc["normal", "sources"] == "reshading"


def test_figures_from_the_paper_data(tmp_path):
    table = load_affinities("paper-2018-16k")
    paths = all_figures(table, tmp_path)
    _check_outputs(paths, ["affinity_before_ahp", "affinity_after_ahp", "quality_gain",
                           "similarity_tree"])
    matrix = pd.read_csv(tmp_path / "affinity_after_ahp.csv", index_col=0)
    assert matrix.shape == (26, 22)
    # the tree recovers the paper's groups: 3D tasks together, 2D tasks together
    clusters = similarity_tree(table)["clusters"]
    assert clusters["normal"] == clusters["depth_zbuffer"] == clusters["reshading"]
    assert clusters["edge_texture"] == clusters["keypoints2d"] == clusters["autoencoding"]
    assert clusters["normal"] != clusters["edge_texture"]
    assert clusters["class_object"] == clusters["class_scene"]


def test_budget_curve(tmp_path):
    with pytest.raises(ValueError, match="budget"):
        budget_curve_figure(pd.DataFrame({"x": [1]}), tmp_path)
    paths = budget_curve_figure(pd.DataFrame({"budget": [2, 1], "objective": [3.0, 2.0]}),
                                tmp_path)
    assert list(pd.read_csv(paths[-1])["budget"]) == [1, 2]


def test_win_rate_figure_orders_strongest_first(tmp_path):
    result = compute_affinities(_records())
    from taskonomy.analysis.figures import win_rate_figure

    paths = win_rate_figure(result.tournaments["normal"].win_rate_frame(), "normal", tmp_path)
    _check_outputs(paths, ["normal"])
    matrix = pd.read_csv(tmp_path / "normal.csv", index_col=0)
    assert list(matrix.index) == list(matrix.columns)
    assert matrix.index[0] == "self" and matrix.index[-1] == "random"
    np.testing.assert_allclose(matrix.to_numpy() + matrix.to_numpy().T, 1.0, atol=1e-6)


def test_best_transfers_respect_the_max_order_and_leave_out_t_to_t():
    table = load_affinities("paper-2018-16k")
    every = best_transfers(table)
    first = best_transfers(table, max_order=1)
    assert (first["order"] == 1).all() and (every["order"] > 1).any()
    assert all(s != t for t, s in zip(first.index, first["sources"], strict=True))
