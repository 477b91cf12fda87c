import pickle

import numpy as np
import pytest

from taskonomy.analysis.affinity_table import PAPER_DATASETS, load_affinities, paper_dataset_path
from taskonomy.analysis.paper_data import build_table, convert_reference, main, parse_key
from taskonomy.tasks.registry import task_names


@pytest.mark.parametrize("name", list(PAPER_DATASETS))
def test_shipped_tables_are_normalized_and_named(name):
    table = load_affinities(name)
    assert len(table.targets()) == 22
    assert table.normalization_error().max() < 1e-9
    assert table.unknown_tasks(task_names()) == []
    frame = table.frame
    # Every target has both baselines; quality of `self` against itself is 1/2 by definition.
    for baseline in ("self", "random"):
        assert (frame["sources"] == baseline).sum() == 22
    assert np.allclose(frame.loc[frame["sources"] == "self", "quality"], 0.5)
    assert frame["quality"].between(0, 1).all() and frame["gain"].between(0, 1).all()
    assert paper_dataset_path(name).stat().st_size < 200_000


def test_regimes_match_the_reference_readme():
    assert load_affinities("paper-2018").max_order() == 2
    assert "class_selected" in load_affinities("paper-2018").targets()
    assert load_affinities("paper-2018-1k").max_order() == 4
    sixteen = load_affinities("paper-2018-16k")
    assert sixteen.max_order() == 24
    assert sixteen.restrict(max_order=4).max_order() == 4
    assert "class_selected" not in sixteen.targets()
    assert "class_selected" in sixteen.sources()


@pytest.mark.parametrize(
    ("target", "expected"),
    [("normal", {"reshading", "edge_occlusion"}), ("depth_zbuffer", {"depth_euclidean",
                                                                      "reshading"})],
)
def test_sanity_top_first_order_sources(target, expected):
    matrix = load_affinities("paper-2018-16k").first_order_matrix()
    column = matrix[target].drop(target)  # the t → t readout is not another task
    assert expected <= set(column.sort_values(ascending=False).index[:3])


def test_parse_key_maps_code_names_and_sorts():
    assert parse_key("rgb2sfnorm__reshade__rgb2depth") == ("normal+reshading", "depth_zbuffer")
    assert parse_key("self__rgb2sfnorm") == ("self", "normal")
    assert parse_key("edge3d__random__reshade__rgb2sfnorm") == (
        "edge_occlusion+random+reshading", "normal")
    with pytest.raises(ValueError, match="known: "):
        parse_key("warp_drive__rgb2sfnorm")
    with pytest.raises(ValueError, match="form"):
        parse_key("rgb2sfnorm")


def test_build_table_keeps_quality_gain_and_drops_pixels():
    affinities = {"self__rgb2sfnorm": 0.6, "random__rgb2sfnorm": 0.1, "reshade__rgb2sfnorm": 0.3}
    quality = {"self__rgb2sfnorm": 0.5, "reshade__rgb2sfnorm": 0.2, "pixels__rgb2sfnorm": 0.01}
    gain = {"reshade__rgb2sfnorm": 0.9}
    frame = build_table(affinities, quality, gain).frame.set_index("sources")
    assert frame.loc["reshading", "quality"] == 0.2 and frame.loc["reshading", "gain"] == 0.9
    assert np.isnan(frame.loc["random", "quality"])
    assert "pixels" not in frame.index


def test_converter_writes_reproducible_files(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    for suffix in ("", "_1k", "_16k"):
        for stem, values in (("all_affinities", (0.7, 0.1, 0.2)), ("wins_vs_task", (0.5, 0, .3)),
                             ("wins_vs_pixels", (0.9, 0.2, 0.6))):
            keys = ("self__rgb2depth", "random__rgb2depth", "reshade__rgb2depth")
            with (ref / f"{stem}{suffix}.pkl").open("wb") as handle:
                pickle.dump({k: np.float64(v) for k, v in zip(keys, values, strict=True)},
                            handle, protocol=2)
    first = convert_reference(ref, tmp_path / "a")
    second = convert_reference(ref, tmp_path / "b")
    for name in PAPER_DATASETS:
        assert first[name].read_bytes() == second[name].read_bytes()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_reference(tmp_path / "missing", tmp_path / "c")
    # The `python -m` entry point writes the same bytes, and reports bad input with status 2.
    assert main([str(ref), "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "paper-2018-16k.csv.gz").read_bytes() == first[
        "paper-2018-16k"].read_bytes()
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "e")]) == 2


def test_a_win_rate_file_in_place_of_the_affinities_is_named(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    keys = ("self__rgb2depth", "pixels__rgb2depth", "reshade__rgb2depth")
    for suffix in ("", "_1k", "_16k"):
        for stem in ("all_affinities", "wins_vs_task", "wins_vs_pixels"):
            with (ref / f"{stem}{suffix}.pkl").open("wb") as handle:
                pickle.dump({k: np.float64(0.5) for k in keys}, handle, protocol=2)
    with pytest.raises(ValueError, match=r"all_affinities\.pkl: .*win-rate files hold 'pixels'"):
        convert_reference(ref, tmp_path / "out")
