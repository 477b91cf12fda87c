import gzip
import math

import numpy as np
import pandas as pd
import pytest

from taskonomy.analysis.affinity_table import (
    AffinityTable,
    join_sources,
    load_affinities,
    split_sources,
)


def _frame() -> pd.DataFrame:
    rows = [
        ("normal", "self", 0.4, 0.5, 0.9),
        ("normal", "random", 0.05, 0.0, 0.1),
        ("normal", "reshading", 0.25, 0.4, 0.8),
        ("normal", "edge_occlusion", 0.1, 0.3, 0.7),
        ("normal", "reshading+edge_occlusion", 0.2, 0.45, 0.85),
        ("depth_zbuffer", "self", 0.5, 0.5, 0.9),
        ("depth_zbuffer", "random", 0.1, 0.0, 0.2),
        ("depth_zbuffer", "normal", 0.4, math.nan, math.nan),
    ]
    return pd.DataFrame(rows, columns=["target", "sources", "affinity", "quality", "gain"])


def test_from_frame_canonicalizes_and_computes_order():
    table = AffinityTable.from_frame(_frame())
    frame = table.frame
    assert "edge_occlusion+reshading" in set(frame["sources"])
    orders = dict(zip(frame["target"] + ":" + frame["sources"], frame["order"], strict=True))
    assert orders["normal:edge_occlusion+reshading"] == 2
    assert orders["normal:self"] == 0 and orders["normal:reshading"] == 1
    assert table.targets() == ["depth_zbuffer", "normal"]
    assert table.sources() == ["edge_occlusion", "normal", "reshading"]
    assert table.max_order() == 2
    assert table.normalization_error().max() < 1e-12


def test_join_and_split_sources():
    assert join_sources(["b", "a"]) == "a+b"
    assert split_sources("a+b") == ("a", "b")
    assert split_sources("self") == ()
    with pytest.raises(ValueError, match="repeats"):
        join_sources(["a", "a"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["affinity"]), "lacks column"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "duplicate rows"),
        (lambda f: f.assign(order=[0, 0, 1, 1, 1, 0, 0, 2]),
         r"row 5 \(line 6 of a CSV file\): order 1 does not match"),
        (lambda f: f.assign(quality=[2.0] + [0.5] * 7), r"\[0, 1\]"),
        (lambda f: f.assign(affinity=["x"] + [0.1] * 7), "numeric"),
        (lambda f: f.assign(target=["self"] + ["normal"] * 7), "baseline"),
    ],
)
def test_from_frame_rejects_bad_input(change, message):
    with pytest.raises(ValueError, match=message):
        AffinityTable.from_frame(change(_frame()))


def test_csv_round_trip_plain_and_gzip(tmp_path):
    table = AffinityTable.from_frame(_frame().assign(affinity_low=0.0, affinity_high=1.0))
    for name in ("affinities.csv", "affinities.csv.gz"):
        path = table.to_csv(tmp_path / name)
        back = AffinityTable.read_csv(path)
        pd.testing.assert_frame_equal(back.frame, table.frame)
        assert back.has_confidence_intervals()
    with gzip.open(tmp_path / "affinities.csv.gz", "rt") as handle:
        assert handle.readline().startswith("target,sources,order,affinity")
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind
    # A results folder resolves to its affinities.csv.
    assert len(load_affinities(tmp_path)) == len(table)


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="paper-2018"):
        load_affinities(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="taskonomy analyze"):
        load_affinities(tmp_path)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv"):
        load_affinities(tmp_path / "bad.csv")


def test_first_order_matrix_and_candidates():
    table = AffinityTable.from_frame(_frame())
    matrix = table.first_order_matrix()
    assert list(matrix.columns) == ["depth_zbuffer", "normal"]
    assert matrix.loc["reshading", "normal"] == pytest.approx(0.25)
    assert np.isnan(matrix.loc["reshading", "depth_zbuffer"])
    with_baselines = table.first_order_matrix("gain", include_baselines=True)
    assert with_baselines.loc["self", "normal"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="valid"):
        table.first_order_matrix("speed")
    top = table.candidates("normal")
    assert list(top["sources"])[:2] == ["self", "reshading"]
    with pytest.raises(ValueError, match="valid targets: depth_zbuffer, normal"):
        table.candidates("nope")
    assert table.affinity("normal", ["reshading", "edge_occlusion"]) == pytest.approx(0.2)


def test_restrict():
    table = AffinityTable.from_frame(_frame())
    first = table.restrict(max_order=1)
    assert first.max_order() == 1 and len(first) == 7
    only_reshading = table.restrict(targets=["normal"], sources=["reshading"])
    assert set(only_reshading.frame["sources"]) == {"self", "random", "reshading"}
    with pytest.raises(ValueError, match="valid sources"):
        table.restrict(sources=["jigsaw"])
    # random is never supervised: sets that pair a source with it stay (as in the paper's data).
    paired = pd.concat([_frame(), pd.DataFrame([("normal", "reshading+random", 0.2, 0.4, 0.8)],
                                               columns=_frame().columns)], ignore_index=True)
    kept = AffinityTable.from_frame(paired).restrict(targets=["normal"], sources=["reshading"])
    assert "random+reshading" in set(kept.frame["sources"])
    assert table.unknown_tasks(["normal", "reshading"]) == ["depth_zbuffer", "edge_occlusion"]
