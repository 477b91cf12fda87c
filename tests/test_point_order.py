import json
from pathlib import Path

import numpy as np
import pytest

from taskonomy.datamodules.layouts import detect_layout, parse_key
from taskonomy.datamodules.multiview import PARTNER_WINDOW, build_units
from taskonomy.datamodules.packer import PackConfig, pack
from taskonomy.datamodules.point_order import (
    order_building,
    paired_points,
    sighting_sets,
    visibility_order,
)

VIEWS = 2


def _rooms(seed: int = 0, rooms: int = 30) -> tuple[list[str], list[tuple[str, str]]]:
    """Points in rooms of 5-15, numbered at random (as released buildings are); each point is
    seen from half of its room's other points and from one point of the next room."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 16, rooms)
    numbers = rng.permutation(int(sizes.sum()))
    members, start = [], 0
    for size in sizes:
        members.append([str(n) for n in numbers[start:start + size]])
        start += size
    edges = []
    for r, room in enumerate(members):
        for a in room:
            edges += [(a, b) for b in room if b != a and rng.random() < 0.5]
        if r + 1 < rooms:
            edges.append((room[0], members[r + 1][0]))
    points = sorted((p for room in members for p in room), key=int)
    return points, edges


def test_visibility_order_brings_the_partners_of_a_randomly_numbered_building_in_reach():
    points, seen = _rooms(seed=3, rooms=300)  # about 3000 points
    shows = sighting_sets(points, seen)
    order = visibility_order(points, shows)
    assert sorted(order, key=int) == points  # a permutation
    before, after = paired_points(points, shows), paired_points(order, shows)
    assert before < 0.15 * len(points) and after > 0.99 * len(points), (before, after)


def test_an_open_hall_is_ordered_without_listing_its_co_visible_pairs():
    # 3000 points each seeing 30 others: about 1.2 million co-visible pairs, which the order
    # never lists (one graph edge per sighting); every point keeps a partner in reach.
    rng = np.random.default_rng(0)
    points = [str(i) for i in range(3000)]
    seen = [(a, str(b)) for a in points for b in rng.choice(3000, 30, replace=False)]
    shows = sighting_sets(points, seen)
    assert paired_points(visibility_order(points, shows), shows) == len(points)


def test_visibility_order_ignores_foreign_points_and_keeps_an_unseen_order():
    assert visibility_order(["1", "2", "3"], sighting_sets(["1", "2", "3"], [])) == ["1", "2", "3"]
    shows = sighting_sets(["1", "2"], [("1", "9"), ("2", "2")])
    assert shows == {"1": {"1"}, "2": {"2"}}
    assert visibility_order(["1", "2"], shows) == ["1", "2"]


def test_points_whose_images_see_a_common_point_are_partners():
    # 1's image sees 2; 3's and 4's images see 5; 6 is seen by nobody and sees nothing.
    points = ["1", "2", "3", "4", "5", "6"]
    shows = sighting_sets(points, [("1", "2"), ("3", "5"), ("4", "5"), ("3", "5")])
    assert paired_points(points, shows, window=1) == 5  # 1-2, 3-4 and 4-5 are neighbours
    assert paired_points(["3", "1", "6", "4", "2", "5"], shows, window=1) == 0
    assert paired_points(["3", "1", "6", "4", "2", "5"], shows, window=5) == 5  # all but 6


def test_two_images_that_see_a_third_point_make_a_non_fixated_pair():
    from taskonomy.datamodules.multiview import overlapping

    def view(point: str, sees: list[str], building: str = "b") -> dict:
        return {"__key__": f"{building}__{point}__0",
                "point_info": {"nonfixated_points_in_view": sees}}

    assert overlapping(view("1", ["9"]), view("2", ["9", "7"]))  # both see point 9
    assert overlapping(view("1", ["2"]), view("2", []))  # 1's image shows point 2
    assert not overlapping(view("1", ["8"]), view("2", ["9"]))
    assert not overlapping(view("1", ["9"]), view("1", ["9"]))  # one point: fixated pose
    assert not overlapping(view("1", ["9"]), view("2", ["9"], building="c"))


def _write_building(root: Path, name: str, points: list[str], edges: list[tuple[str, str]],
                    graph_domain: str) -> None:
    """A released-layout building: empty rgb files name the views; the visibility graph is
    written as ``point_info`` records or as ``nonfixated_matches`` files."""
    (root / name / "rgb").mkdir(parents=True)
    (root / name / graph_domain).mkdir()
    seen_by: dict[str, set[str]] = {p: set() for p in points}
    for a, b in edges:
        seen_by[b].add(a)  # b is visible in a's images
    for point in points:
        for view in range(VIEWS):
            (root / name / "rgb" / f"point_{point}_view_{view}_domain_rgb.png").write_bytes(b"")
            if graph_domain == "point_info":
                sees = [b for a, b in edges if a == point]
                record = {"point_uuid": point, "view_id": view, "nonfixated_points_in_view": sees}
                (root / name / "point_info" / f"point_{point}_view_{view}_domain_point_info.json"
                 ).write_text(json.dumps(record))
        if graph_domain == "nonfixated_matches":
            record = {"point_uuid": point, "views": [
                {"point_uuid": a, "view_id": "0"} for a in sorted(seen_by[point])]}
            name_of = f"point_{point}_view_all_domain_nonfixated_matches.json"
            (root / name / "nonfixated_matches" / name_of).write_text(json.dumps(record))


@pytest.mark.parametrize("graph_domain", ["point_info", "nonfixated_matches"])
def test_a_building_is_ordered_by_either_visibility_record(tmp_path: Path, graph_domain: str):
    points, edges = _rooms(seed=1, rooms=60)
    _write_building(tmp_path, "hanson", points, edges, graph_domain)
    layout = detect_layout(tmp_path)
    order = order_building(layout, "hanson", layout.views("hanson"))
    assert order.source == graph_domain and order.points == len(points)
    assert order.paired > 2 * order.paired_before
    # Views stay grouped by point, in view order.
    keys = [(ref.point, ref.view) for ref in order.views]
    assert len(keys) == len(points) * VIEWS
    assert all(keys[i][0] == keys[i + 1][0] and keys[i + 1][1] == str(int(keys[i][1]) + 1)
               for i in range(0, len(keys), VIEWS))


def test_both_visibility_records_give_one_order(tmp_path: Path):
    # The same sightings written either way (who sees whom is read in the right direction),
    # from views listed in any order.
    points, edges = _rooms(seed=4, rooms=20)
    orders = {}
    for domain in ("point_info", "nonfixated_matches"):
        _write_building(tmp_path / domain, "hanson", points, edges, domain)
        layout = detect_layout(tmp_path / domain)
        made = order_building(layout, "hanson", list(reversed(layout.views("hanson"))))
        orders[domain] = ([(ref.point, ref.view) for ref in made.views], made.paired)
    assert orders["point_info"] == orders["nonfixated_matches"]
    views = orders["point_info"][0]
    assert views[:VIEWS] == [(views[0][0], str(v)) for v in range(VIEWS)]


def test_an_order_worse_than_the_numbers_is_not_used(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    from taskonomy.datamodules import point_order

    points, edges = _rooms(seed=5, rooms=40)
    # Numbered room by room (as the edges list them): a banded numbering, every room in reach.
    numbering = {p: str(i) for i, p in enumerate(dict.fromkeys([a for a, _ in edges] + points))}
    banded = [(numbering[a], numbering[b]) for a, b in edges]
    _write_building(tmp_path, "b", sorted(numbering.values(), key=int), banded, "point_info")
    monkeypatch.setattr(point_order, "visibility_order", lambda numbered, shows: list(
        np.random.default_rng(0).permutation(numbered)))  # scatters every room
    layout = detect_layout(tmp_path)
    made = order_building(layout, "b", layout.views("b"))
    assert made.paired == made.paired_before
    assert [ref.point for ref in made.views][::VIEWS] == sorted(numbering.values(), key=int)


def test_a_building_without_visibility_records_keeps_point_numbers(tmp_path: Path):
    (tmp_path / "b" / "rgb").mkdir(parents=True)
    for p in (10, 2, 1):
        (tmp_path / "b" / "rgb" / f"point_{p}_view_0_domain_rgb.png").write_bytes(b"")
    layout = detect_layout(tmp_path)
    order = order_building(layout, "b", layout.views("b"))
    assert order.source == "none" and [r.point for r in order.views] == ["1", "2", "10"]


def _units(keys: list[str], edges: list[tuple[str, str]]) -> int:
    """Non-fixated pose units the stream makes from views in this order."""
    sees: dict[str, list[str]] = {}
    for a, b in edges:
        sees.setdefault(a, []).append(b)
    groups: list[list[dict]] = []
    for key in keys:
        ref = parse_key(key)
        info = {"nonfixated_points_in_view": sees.get(ref.point, [])}
        view = {"__key__": key, "point_info": info}
        if groups and parse_key(groups[-1][0]["__key__"]).point == ref.point:
            groups[-1].append(view)
        else:
            groups.append([view])
    units = build_units(groups, ["nonfixated_pose"], lambda key: np.random.default_rng(0))
    return sum(1 for _ in units)


def test_the_packed_order_gives_non_fixated_pose_its_pairs(tmp_path: Path):
    points, edges = _rooms(seed=2, rooms=80)
    _write_building(tmp_path / "src", "hanson", points, edges, "point_info")
    made = {}
    for order in ("number", "visibility"):
        out = tmp_path / order
        result = pack(PackConfig(source=tmp_path / "src", out=out, split="train",
                                 domains=["point_info"], shard_size=400, point_order=order),
                      progress=False)
        assert result.manifest is not None
        keys = [k for shard in result.manifest["shards"] for k in shard["keys"]]
        made[order] = _units(keys, edges)
        assert result.point_order["kind"] == order
    summary = result.point_order
    assert summary["graph"] == ["point_info"] and summary["window"] == PARTNER_WINDOW
    assert summary["points"] == len(points)
    assert summary["paired"] > 2 * summary["paired_by_number"]
    assert "see each other" in result.manifest["grouping"]
    # Nearly every point finds a partner in visibility order, few in number order.
    assert made["visibility"] >= 0.9 * len(points) > 2 * made["number"], (made, len(points))


def test_an_unknown_point_order_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="point_order must be one of visibility, number"):
        pack(PackConfig(source=tmp_path, out=tmp_path / "o", split="train",
                        point_order="random"), progress=False)



def test_point_matching_negatives_also_come_from_beyond_the_recent_points():
    # 60 points of 2 views in 3 buildings: negatives are drawn from the 16 points just read
    # (in visibility order, mostly neighbours) and from a sample of earlier views, so some
    # come from far back and from other buildings, as the authors' did.
    groups = [[{"__key__": f"b{p // 20}__{p}__{v}"} for v in range(2)] for p in range(60)]
    units = list(build_units(groups, ["point_matching"], lambda key: np.random.default_rng(
        int(parse_key(key).point))))
    gaps, other_building = [], 0
    for unit in units:
        if unit["point_match"] == 0:
            keys = unit["__key__"].split("+")
            a, b = (parse_key(keys[i]) for i in unit["roles"]["point_matching"])
            gaps.append(int(a.point) - int(b.point))
            other_building += a.building != b.building
    assert min(gaps) >= 1 and max(gaps) > PARTNER_WINDOW and other_building > 0
    assert 0.3 < len(gaps) / len(units) < 0.7


def test_a_match_listed_by_either_image_pairs_them_both_ways():
    from taskonomy.datamodules.multiview import overlapping

    def view(point: str, view_id: int = 0, matches: list[tuple[str, int]] | None = None) -> dict:
        sample: dict = {"__key__": f"b__{point}__{view_id}", "point_info": {}}
        if matches is not None:  # the views in which this point is visible
            sample["nonfixated_matches"] = {"views": [
                {"point_uuid": p, "view_id": str(v)} for p, v in matches]}
        return sample

    a, b = view("1"), view("2", matches=[("1", 0)])  # b's point is visible in a's view 0
    assert overlapping(a, b) and overlapping(b, a)
    elsewhere = view("2", matches=[("1", 5)])  # visible in another view of point 1 only
    assert not overlapping(a, elsewhere) and not overlapping(elsewhere, a)


def test_a_partner_at_the_edge_of_the_window_is_reached_from_both_sides():
    # Point 0's image shows point 16, PARTNER_WINDOW points later: 0 reads ahead to it, and 16
    # still holds 0 among its recent points. Nothing else overlaps.
    groups = [[{"__key__": f"b__{p}__0",
                "point_info": {"nonfixated_points_in_view": [str(PARTNER_WINDOW)] if p == 0
                               else []}}] for p in range(PARTNER_WINDOW + 4)]
    units = list(build_units(groups, ["nonfixated_pose"], lambda key: np.random.default_rng(0)))
    assert sorted(unit["__key__"] for unit in units) == [
        f"b__0__0+b__{PARTNER_WINDOW}__0", f"b__{PARTNER_WINDOW}__0+b__0__0"]


def test_the_negatives_reservoir_is_a_uniform_sample_of_earlier_views():
    from taskonomy.datamodules.multiview import _Reservoir

    positions = []
    for seed in range(300):
        rng, reservoir = np.random.default_rng(seed), _Reservoir(32)
        for start in range(0, 320, 8):
            reservoir.add([{"at": start + i} for i in range(8)], rng)
        positions += [view["at"] for view in reservoir.views]
    positions_array = np.array(positions)
    assert len(positions) == 300 * 32
    assert abs(positions_array.mean() - 159.5) < 5  # a uniform position's mean, ±5 standard errors
    assert 0.08 < float(np.mean(positions_array < 32)) < 0.12  # the first tenth of the stream
