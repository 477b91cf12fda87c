import numpy as np
import pytest

from taskonomy.analysis.affinities import compute_affinities
from taskonomy.analysis.affinity_table import load_affinities
from taskonomy.analysis.novel_task import (
    candidate_scale_warning,
    place_novel_task_from_records,
    source_use_note,
)
from taskonomy.analysis.records import RunRecord

DICTIONARY = ["normal", "depth_zbuffer", "reshading", "edge_texture"]
NOVEL = "surface_wetness"  # not a task of the dictionary


def _add(recs, rng, keys, run_id, role, target, sources, offset):
    losses = dict(zip(keys, rng.random(len(keys)) + offset, strict=True))
    recs.append(RunRecord(run_id=run_id, role=role, target=target, sources=sources,
                          regime="1k", status="finished", per_image_losses=losses))


def _novel_records(rng, keys, offsets):
    recs = []
    for source, offset in offsets.items():
        _add(recs, rng, keys, f"{NOVEL}-{source}", "transfer", NOVEL, (source,), offset)
    _add(recs, rng, keys, f"{NOVEL}-pair", "transfer", NOVEL, ("normal", "reshading"), 0.15)
    _add(recs, rng, keys, f"{NOVEL}-random", "baseline", NOVEL, ("random",), 2.0)
    _add(recs, rng, keys, f"{NOVEL}-self", "baseline", NOVEL, ("self",), 0.0)
    _add(recs, rng, keys, f"{NOVEL}-pixels", "baseline", NOVEL, ("pixels",), 0.8)
    return recs


def _base(rng, keys):
    recs = []
    for t in DICTIONARY:
        for s in DICTIONARY:
            _add(recs, rng, keys, f"{t}-{s}", "transfer", t, (s,), 0.1 if s == t else 0.5)
        _add(recs, rng, keys, f"{t}-random", "baseline", t, ("random",), 2.0)
        _add(recs, rng, keys, f"{t}-self", "baseline", t, ("self",), 0.0)
    return compute_affinities(recs).table


def test_novel_task_ranking_and_placement_on_constructed_records():
    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(150)]
    base = _base(rng, keys)
    planted = {"reshading": 0.1, "normal": 0.3, "depth_zbuffer": 0.6, "edge_texture": 1.0}
    recs = _novel_records(rng, keys, planted)
    result = place_novel_task_from_records(recs, NOVEL, base, budget=2, solver="highs")
    transfers = [s for s in result.best_sources(10) if "+" not in s]
    assert transfers == ["reshading", "normal", "depth_zbuffer", "edge_texture"]
    assert result.ranking["affinity"].sum() == pytest.approx(1.0)
    assert result.ranking["affinity"].is_monotonic_decreasing
    assert set(result.ranking["sources"]) >= {"self", "random", "normal+reshading"}
    assert "pixels" not in set(result.ranking["sources"])
    assert result.unknown_sources == ()
    solution = result.placement.solution
    assert NOVEL in solution.edges and len(solution.supervised) <= 2
    # the novel task's edge is its best candidate among those the supervised set allows
    edge = solution.edges[NOVEL]
    rows = result.table.candidates(NOVEL)
    allowed = [s for s, order in zip(rows["sources"], rows["order"], strict=True)
               if order > 0 and set(s.split("+")) <= set(solution.supervised)
               or (s == "self" and NOVEL in solution.supervised)]
    assert edge.label == allowed[0]
    # the dictionary's rows are unchanged
    merged = result.table.frame.set_index(["target", "sources"])["affinity"]
    original = base.frame.set_index(["target", "sources"])["affinity"]
    assert (merged.loc[original.index] == original).all()


def test_novel_task_against_the_paper_affinities():
    rng = np.random.default_rng(1)
    keys = [f"k{i}" for i in range(100)]
    recs = _novel_records(rng, keys, {"normal": 0.1, "edge_texture": 0.9, "class_scene": 1.2})
    base = load_affinities("paper-2018-16k")
    notes: list[str] = []
    result = place_novel_task_from_records(recs, NOVEL, base, budget=8, solver="highs",
                                           max_order=2, log=notes.append)
    assert result.best_sources(1) in (["normal"], ["normal+reshading"])
    # a handful of candidates against the paper's dozens per target: each weighs far more
    warning = candidate_scale_warning(base, NOVEL, len(result.ranking))
    assert warning in notes and "Record transfers into it from more sources" in warning
    assert candidate_scale_warning(base, NOVEL, 80) is None
    assert candidate_scale_warning(base, NOVEL, 30) is not None  # under half the mean (~78)
    assert NOVEL in result.placement.solution.edges
    assert len(result.placement.solution.edges) == len(base.targets()) + 1


def test_novel_task_bad_input():
    rng = np.random.default_rng(2)
    keys = [f"k{i}" for i in range(20)]
    base = _base(rng, keys)
    recs = _novel_records(rng, keys, {"normal": 0.1})
    with pytest.raises(ValueError, match="no transfer records into the novel task 'other'"):
        place_novel_task_from_records(recs, "other", base, budget=2)
    with pytest.raises(ValueError, match="'surface_wetnes' \\(did you mean 'surface_wetness'"):
        place_novel_task_from_records(recs, "surface_wetnes", base, budget=2)
    moved = [RunRecord.from_dict({**r.to_dict(), "target": "normal"}) for r in recs]
    with pytest.raises(ValueError, match="already a target of the base"):
        place_novel_task_from_records(moved, "normal", base, budget=2)


def test_transfers_from_the_novel_task_are_named_and_the_joint_analysis_weighs_them():
    rng = np.random.default_rng(2)
    keys = [f"k{i}" for i in range(100)]
    recs = _novel_records(rng, keys, {"normal": 0.1, "reshading": 0.5})
    assert source_use_note(recs, NOVEL) is None
    # The novel task read out into itself is a candidate of its own, not a use as a source.
    into_itself: list[RunRecord] = []
    _add(into_itself, rng, keys, f"{NOVEL}-{NOVEL}", "transfer", NOVEL, (NOVEL,), 0.1)
    assert source_use_note([*recs, *into_itself], NOVEL) is None
    out_of_it = []
    for t in DICTIONARY:
        for s in (*DICTIONARY, NOVEL):
            _add(out_of_it, rng, keys, f"{t}-{s}", "transfer", t, (s,), 0.05 if s == NOVEL else 0.5)
        _add(out_of_it, rng, keys, f"{t}-random", "baseline", t, ("random",), 2.0)
    notes: list[str] = []
    place_novel_task_from_records([*recs, *out_of_it], NOVEL, _base(rng, keys), budget=2,
                                  solver="highs", log=notes.append)
    assert any("4 target(s) (depth_zbuffer, edge_texture, normal, reshading) have transfers "
               f"from the novel task {NOVEL!r}" in n and "analyze all records" in n
               and "`taskonomy analyze RUNS`" in n
               for n in notes)
    # Analyzed together, the novel task is a source of every target (here, the best one).
    joint = compute_affinities([*recs, *out_of_it])
    assert NOVEL in joint.table.sources()
    assert all(joint.table.candidates(t).iloc[0]["sources"] == NOVEL for t in DICTIONARY)


def test_a_source_that_is_a_target_only_of_the_base_is_known():
    # edge_texture is a target of the base but never one of its sources.
    rng = np.random.default_rng(5)
    keys = [f"k{i}" for i in range(60)]
    recs: list[RunRecord] = []
    for t in DICTIONARY:
        for s in DICTIONARY[:3]:
            _add(recs, rng, keys, f"{t}-{s}", "transfer", t, (s,), 0.1 if s == t else 0.5)
        _add(recs, rng, keys, f"{t}-random", "baseline", t, ("random",), 2.0)
    base = compute_affinities(recs).table
    assert "edge_texture" in base.targets() and "edge_texture" not in base.sources()
    novel = _novel_records(rng, keys, {"normal": 0.1, "edge_texture": 0.5})
    result = place_novel_task_from_records(novel, NOVEL, base, budget=4, solver="highs")
    assert result.unknown_sources == ()


def test_the_ranking_follows_affinity_where_quality_disagrees():
    # normal beats self on more images (quality 0.4 vs 0.3) but loses to reshading on most.
    keys = [f"k{i}" for i in range(10)]
    losses = {
        "normal": [0.5] * 4 + [5.0] * 6,
        "reshading": [2.0] * 4 + [1.1] * 3 + [0.9] * 3,
        "self": [1.0] * 10,
        "random": [9.0] * 10,
    }
    recs = [RunRecord(run_id=f"{NOVEL}-{name}",
                      role="baseline" if name in ("self", "random") else "transfer",
                      target=NOVEL, sources=(name,), regime="1k", status="finished",
                      per_image_losses=dict(zip(keys, values, strict=True)))
            for name, values in losses.items()]
    result = place_novel_task_from_records(recs, NOVEL, _base(np.random.default_rng(6), keys),
                                           budget=2, solver="highs")
    frame = result.ranking.set_index("sources")
    assert frame.loc["normal", "quality"] > frame.loc["reshading", "quality"]
    assert list(result.ranking["sources"][:3]) == ["self", "reshading", "normal"]
