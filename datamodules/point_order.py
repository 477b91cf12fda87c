"""Order a building's points so that points that see each other lie close in the stream.

Non-fixated pose pairs a view with a view of another point of the same building when the two
images see a common point (:func:`~taskonomy.datamodules.multiview.overlapping`), and the
stream can only reach the points read just before and after
(:data:`~taskonomy.datamodules.multiview.PARTNER_WINDOW` on each side). Released point numbers
do not follow visibility (the sample record's point 0 sees points 171 to 1418), so packing in
point-number order leaves most real pairs out of reach. The packer therefore orders each
building's points by reverse Cuthill–McKee, the classic ordering that keeps the edges of a
sparse graph near its diagonal, run on the graph linking each point to the points its images
see (and to itself, which they show at their centre): two points that share a neighbour there
have images that see a common point. This graph has one edge per sighting, where the graph of
co-visible pairs grows with the square of how many points see a point (an open hall: millions).

Sightings come from the per-point ``nonfixated_matches`` files (every image in which a point
is visible) where a building has them, else from the per-view ``point_info`` records'
``nonfixated_points_in_view``. A building with neither keeps point-number order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy.datamodules.layouts import SourceLayout, ViewRef, view_sort_key
from taskonomy.datamodules.multiview import PARTNER_WINDOW


@dataclass(frozen=True)
class BuildingOrder:
    """The packing order of one building's views and what it gains.

    Attributes:
        views: The building's views, grouped by point (views of a point in view order).
        source: Where the sightings came from (``nonfixated_matches``, ``point_info``), or
            ``none`` (point-number order kept).
        points: The building's points.
        paired_before: Points with a co-visible point within the partner window, in
            point-number order.
        paired: The same in the chosen order.
    """

    views: list[ViewRef]
    source: str
    points: int
    paired_before: int
    paired: int


def sighting_sets(points: Sequence[str], seen: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """Per point, the points its images show: those they see, and itself (at their centre).

    Two points whose sets meet have images that see a common point: a non-fixated pair
    (:func:`~taskonomy.datamodules.multiview.overlapping`). Sightings of points outside
    ``points`` (another building, or absent from the pack) are ignored.

    Args:
        points: The building's points.
        seen: ``(point whose image sees, point seen)`` pairs (:func:`sightings`).
    """
    shows = {p: {p} for p in points}
    for viewer, point in seen:
        if viewer in shows and point in shows:
            shows[viewer].add(point)
    return shows


def visibility_order(points: Sequence[str], shows: dict[str, set[str]]) -> list[str]:
    """Points in reverse Cuthill–McKee order of their sightings.

    Args:
        points: The points (the same list gives the same order; without sightings it is kept).
        shows: :func:`sighting_sets` of the points.

    Returns:
        ``points`` reordered; points whose images see common points come out close together.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    index = {p: i for i, p in enumerate(points)}
    n = len(points)
    # Nodes 0..n-1 are the points, n..2n-1 the points as seen: one edge per sighting.
    pairs = sorted({(index[p], n + index[q]) for p in points for q in shows.get(p, set()) | {p}})
    if len(pairs) == n:  # nothing but the points themselves
        return list(points)
    rows, cols = np.array(pairs).T
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(2 * n, 2 * n)).tocsr()
    graph = ((graph + graph.T) > 0).astype(np.int8).tocsr()
    return [points[i] for i in reverse_cuthill_mckee(graph, symmetric_mode=True) if i < n]


def paired_points(order: Sequence[str], shows: dict[str, set[str]],
                  window: int = PARTNER_WINDOW) -> int:
    """How many points of ``order`` have a co-visible point within ``window`` positions."""
    count = 0
    for i, point in enumerate(order):
        near = order[max(0, i - window):i + window + 1]
        mine = shows.get(point, set())
        count += any(other != point and not mine.isdisjoint(shows.get(other, ()))
                     for other in near)
    return count


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # a missing or corrupt file only loses its edges; packing reports it
    return value if isinstance(value, dict) else None


def sightings(layout: SourceLayout, building: str, views: Sequence[ViewRef]
              ) -> tuple[str, list[tuple[str, str]]]:
    """Which points' images see which points, and the domain this was read from.

    Returns:
        ``(source, pairs)`` of ``(point whose image sees, point seen)``; ``("none", [])`` when
        the building has neither domain.
    """
    points = list(dict.fromkeys(ref.point for ref in views))
    pairs: list[tuple[str, str]] = []
    if layout.domain_dir(building, "nonfixated_matches").is_dir():
        for point in points:
            record = _read_json(layout.file_path(ViewRef(building, point, "all"),
                                                 "nonfixated_matches"))
            for seen_in in (record or {}).get("views", []):
                if isinstance(seen_in, dict) and "point_uuid" in seen_in:
                    pairs.append((str(seen_in["point_uuid"]), point))
        return "nonfixated_matches", pairs
    if layout.domain_dir(building, "point_info").is_dir():
        for ref in views:
            record = _read_json(layout.file_path(ref, "point_info"))
            for seen in (record or {}).get("nonfixated_points_in_view", []):
                pairs.append((ref.point, str(seen)))
        return "point_info", pairs
    return "none", pairs


def order_building(layout: SourceLayout, building: str, views: Sequence[ViewRef],
                   window: int = PARTNER_WINDOW) -> BuildingOrder:
    """Order one building's views for packing (see the module docstring).

    Args:
        layout: The source.
        building: The building.
        views: Its views (any order).
        window: The partner window the gain is measured with.
    """
    by_point: dict[str, list[ViewRef]] = {}
    for ref in sorted(views, key=view_sort_key):
        by_point.setdefault(ref.point, []).append(ref)
    numbered = list(by_point)
    source, seen = sightings(layout, building, views)
    shows = sighting_sets(numbered, seen)
    order = visibility_order(numbered, shows)
    before = paired_points(numbered, shows, window)
    after = paired_points(order, shows, window)
    if after < before:  # the heuristic can lose on an already banded numbering
        order, after = numbered, before
    return BuildingOrder(views=[ref for point in order for ref in by_point[point]],
                         source=source, points=len(numbered), paired_before=before,
                         paired=after)
